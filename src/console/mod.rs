//! The humans' console (issue 10): a web dashboard served at `/` on the same listener, for
//! approving agents, managing their grants, work, delegations, settings and reading the audit
//! trail. Server-rendered with `maud` (templates compiled in); the only script is our own
//! `console.js` plus a vendored, pinned htmx (`static/`, embedded in the binary).
//!
//! It is a client of the services, like `api`: every rule, role check, quota, audit entry and
//! event is the services'. It adds only what a browser needs: sessions ([`session`]: login
//! links, cookies, CSRF), pages and forms. A member session never reaches `/mcp` (that route
//! reads no cookie) and an agent key is never accepted here (only the session cookie is read).
//! Never imports `sea_orm` or `rmcp`.

mod activity;
mod agents;
mod assets;
mod delegations;
mod form;
mod inbox;
pub(crate) mod oidc;
pub(crate) mod session;
mod settings;
mod views;
mod work;

use crate::http::HttpContext;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

/// The console's routes, with its security headers on every answer.
pub fn router(ctx: &HttpContext) -> Router {
    Router::new()
        .route("/", get(inbox::page))
        .route("/inbox/requests", get(inbox::requests))
        .route("/inbox/count", get(inbox::count))
        .route("/login", get(session::login_page))
        .route("/login/link", post(session::redeem_link))
        .route("/login/oidc", get(oidc::begin))
        .route(oidc::CALLBACK_PATH, get(oidc::callback))
        .route("/logout", post(session::logout))
        .route("/events", get(session::events))
        .route("/agents", get(agents::list))
        .route("/agents/{agent_id}", get(agents::show))
        .route("/agents/{agent_id}/approve", post(inbox::approve))
        .route("/agents/{agent_id}/deny", post(inbox::deny))
        .route("/agents/{agent_id}/grant", post(agents::grant))
        .route("/agents/{agent_id}/rotate-key", post(agents::rotate_key))
        .route(
            "/agents/{agent_id}/revoke",
            get(agents::confirm_revoke).post(agents::revoke),
        )
        .route("/work", get(work::page))
        .route("/work/assign", post(work::assign))
        .route(
            "/work/assignments/{assignment_id}/end",
            post(work::unassign),
        )
        .route("/delegations", get(delegations::page))
        .route(
            "/delegations/{delegation_id}/{decision}",
            post(delegations::resolve),
        )
        .route("/activity", get(activity::page))
        .route("/activity/rows", get(activity::rows))
        .route("/activity/export.csv", get(activity::export_csv))
        .route("/activity/export.jsonl", get(activity::export_jsonl))
        .route("/settings", get(settings::page).post(settings::save))
        .route("/settings/webhook-secret", post(settings::rotate_secret))
        .route(
            "/settings/deliveries/{delivery_id}/redeliver",
            post(settings::redeliver),
        )
        .route("/settings/members", post(settings::member))
        .route("/console/static/{file}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            ctx.inflight.clone(),
            crate::http::count_in_flight,
        ))
        .with_state(ctx.clone())
}

/// The Content-Security-Policy of every console answer: our own script and styles only (no
/// inline script, no eval), no framing, forms only to ourselves.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
frame-ancestors 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let is_static = req.uri().path().starts_with("/console/static/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_static {
        // Pages show private data and keys shown once: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
