//! Console sign-in with OpenID Connect: `GET /login/oidc?workspace=SLUG` sends the browser to
//! the provider, `GET /login/oidc/callback` finishes the sign-in ([`crate::auth::oidc`]). Both
//! routes exist only while `[oidc]` is configured. A refused sign-in counts as a failed
//! authentication of the client's address (`[limits]`); a blocked address gets 429 on both.

use super::HttpContext;
use crate::auth::oidc::{OidcError, OidcRefusal, OidcSignIn};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The callback's path; its public URL is the redirect URI registered with the provider.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

/// The cookie that ties a sign-in to the browser that started it (`__Host-` when served over
/// https, which needs `Secure`).
fn cookie_name(ctx: &HttpContext) -> &'static str {
    if secure(ctx) {
        "__Host-parallax-oidc"
    } else {
        "parallax-oidc"
    }
}

fn secure(ctx: &HttpContext) -> bool {
    ctx.urls.origin.starts_with("https://")
}

/// `Set-Cookie` for the browser key; `None` clears it. `SameSite=Lax` so it comes back on the
/// provider's redirect (a top-level GET), and only then.
fn set_cookie(ctx: &HttpContext, value: Option<&str>) -> Option<HeaderValue> {
    let secure = if secure(ctx) { "; Secure" } else { "" };
    let (value, age) = match value {
        Some(v) => (v, crate::auth::oidc::LOGIN_TTL.as_secs()),
        None => ("", 0),
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(ctx)
    ))
    .ok()
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn router(ctx: &HttpContext) -> Router {
    if ctx.oidc.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/login/oidc", get(begin))
        .route(CALLBACK_PATH, get(callback))
        .with_state(ctx.clone())
}

#[derive(serde::Deserialize)]
struct BeginQuery {
    workspace: Option<String>,
}

async fn begin(
    State(ctx): State<HttpContext>,
    extensions: Extensions,
    Query(q): Query<BeginQuery>,
) -> Response {
    let Some(oidc) = ctx.oidc.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ip = super::oauth::peer(&extensions);
    if let Some(res) = blocked(&ctx, ip) {
        return res;
    }
    let Some(slug) = q.workspace.filter(|s| !s.trim().is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "Say which workspace to sign in to: /login/oidc?workspace=SLUG.",
        );
    };
    match oidc.begin(ctx.service.store(), slug.trim()).await {
        Ok(start) => {
            let mut res = redirect(&start.url);
            if let Some(c) = set_cookie(&ctx, Some(&start.browser_key)) {
                res.headers_mut().insert(header::SET_COOKIE, c);
            }
            res
        }
        Err(e) => {
            tracing::warn!(reason = e.reason(), error = %e, "OIDC sign-in could not start");
            count_failure(&ctx, ip, &e);
            refusal_page(&e)
        }
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(ctx): State<HttpContext>,
    headers: HeaderMap,
    extensions: Extensions,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = ctx.oidc.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ip = super::oauth::peer(&extensions);
    if let Some(res) = blocked(&ctx, ip) {
        return res;
    }
    let browser_key = cookie(&headers, cookie_name(&ctx));
    let store = ctx.service.store();
    let state = q.state.unwrap_or_default();
    let result = match (q.error, q.code) {
        // The provider said no (the person cancelled, or policy): the state is used up.
        (Some(error), _) => {
            let workspace = oidc.abandon(store, &state).await;
            let said = match q.error_description {
                Some(d) => format!("{error} ({d})"),
                None => error,
            };
            Err(OidcRefusal {
                error: if workspace.is_some() {
                    OidcError::Denied(said)
                } else {
                    OidcError::BadState
                },
                workspace,
                email: None,
            })
        }
        (None, Some(code)) => oidc.finish(store, &code, &state, browser_key).await,
        (None, None) => Err(OidcError::BadState.into()),
    };
    let mut res = match result {
        Ok(signed_in) => signed_in_response(&ctx, signed_in).await,
        Err(refusal) => {
            count_failure(&ctx, ip, &refusal.error);
            refused(&ctx, refusal).await
        }
    };
    // The key has done its job, whatever the outcome.
    if browser_key.is_some()
        && let Some(c) = set_cookie(&ctx, None)
    {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// The member is known: record the sign-in. (The console's session is created here.)
async fn signed_in_response(ctx: &HttpContext, s: OidcSignIn) -> Response {
    if let Err(e) = ctx
        .service
        .record_sign_in(&s.workspace, &s.member, "oidc")
        .await
    {
        tracing::error!(error = %e, "could not record a sign-in");
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "The server could not record the sign-in. Try again.",
        );
    }
    tracing::info!(workspace = %s.workspace.slug, member = %s.member.email, "signed in with OIDC");
    page(
        StatusCode::OK,
        "Signed in",
        &format!("Signed in to {} as {}.", s.workspace.name, s.member.email),
    )
}

/// Audits the refusal in the workspace it was for (when the state named one) and says why.
async fn refused(ctx: &HttpContext, r: OidcRefusal) -> Response {
    tracing::warn!(reason = r.error.reason(), error = %r.error, "OIDC sign-in refused");
    if let Some(ws) = &r.workspace
        && let Err(e) = ctx
            .service
            .record_sign_in_failure(
                ws,
                r.email.as_deref(),
                "oidc",
                r.error.reason(),
                &r.error.to_string(),
            )
            .await
    {
        tracing::error!(error = %e, "could not record a refused sign-in");
    }
    refusal_page(&r.error)
}

/// 429 for an address with too many refused sign-ins (or other failed authentications).
fn blocked(ctx: &HttpContext, ip: Option<std::net::IpAddr>) -> Option<Response> {
    let wait = ctx.failed_auth.blocked(ip?)?;
    crate::telemetry::metrics::rate_limited("failed_auth");
    let secs = super::ratelimit::retry_after_secs(wait);
    let mut res = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!("Too many refused sign-ins from your address: try again in {secs} seconds."),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Some(res)
}

/// A refusal the person (or someone guessing) caused counts against the address; the
/// provider or the database failing does not.
fn count_failure(ctx: &HttpContext, ip: Option<std::net::IpAddr>, e: &OidcError) {
    if !matches!(e, OidcError::Provider(_) | OidcError::Store(_)) {
        ctx.failed_auth.failed(ip, None);
    }
}

fn refusal_page(e: &OidcError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
    page(
        status,
        "Sign-in refused",
        &format!("{}.", capitalise(&e.to_string())),
    )
}

/// A sentence's first letter in upper case, unless it starts with an email address.
fn capitalise(s: &str) -> String {
    if s.split_whitespace().next().is_some_and(|w| w.contains('@')) {
        return s.to_owned();
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn redirect(url: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(url) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut res = StatusCode::FOUND.into_response();
    res.headers_mut().insert(header::LOCATION, location);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A plain page until the console renders these.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · parallax</title></head>\
         <body><main><h1>{t}</h1><p>{m}</p></main></body></html>",
        t = escape(title),
        m = escape(message)
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    res
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
