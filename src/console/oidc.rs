//! Console sign-in with OpenID Connect: `GET /login/oidc?workspace=SLUG` sends the browser to
//! the provider, `GET /login/oidc/callback` finishes the sign-in ([`crate::auth::oidc`]) and
//! opens the console session ([`super::session::sign_in`]). Both answer 404 unless `[oidc]` is
//! configured. A refused sign-in is audited and shown on the sign-in page
//! ([`super::session::sign_in_refused`]), and counts as a failed authentication of the client's
//! address (`[limits]`): a blocked address gets 429 on both routes.

use super::session::{sign_in, sign_in_refused};
use super::views;
use crate::auth::oidc::{OidcError, OidcRefusal};
use crate::http::HttpContext;
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

/// The callback's path; its public URL is the redirect URI registered with the provider.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

/// The sign-in page's "Sign in with …" form, when `[oidc]` is configured.
pub(super) fn button(ctx: &HttpContext) -> Markup {
    let Some(oidc) = ctx.oidc.as_deref() else {
        return html! {};
    };
    html! {
        section.sso aria-labelledby="sso-title" {
            h2 #sso-title { "Or use your organisation's account" }
            form #oidc method="get" action="/login/oidc" {
                input type="hidden" name="via" value="form";
                label for="oidc-workspace" { "Workspace" }
                input #oidc-workspace type="text" name="workspace" required
                    autocomplete="organization" placeholder="acme";
                button type="submit" { "Sign in with " (oidc.display_name()) }
            }
        }
    }
}

/// The cookie that ties a sign-in to the browser that started it (`__Host-` when served over
/// https, which needs `Secure`).
fn cookie_name(ctx: &HttpContext) -> &'static str {
    if secure(ctx) {
        "__Host-parallax_oidc"
    } else {
        "parallax_oidc"
    }
}

fn secure(ctx: &HttpContext) -> bool {
    ctx.urls.origin.starts_with("https://")
}

/// `Set-Cookie` for the browser key; `None` clears it. `SameSite=Lax` so it comes back on the
/// provider's redirect (a top-level GET).
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

#[derive(serde::Deserialize)]
pub struct BeginQuery {
    workspace: Option<String>,
    /// `form` from the sign-in page's form (see [`onward`]).
    via: Option<String>,
}

/// `GET /login/oidc?workspace=SLUG`: records the sign-in and sends the browser to the provider.
pub async fn begin(
    State(ctx): State<HttpContext>,
    extensions: Extensions,
    Query(q): Query<BeginQuery>,
) -> Response {
    let Some(oidc) = ctx.oidc.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ip = crate::http::oauth::peer(&extensions);
    if let Some(res) = blocked(&ctx, ip) {
        return res;
    }
    let Some(slug) = q.workspace.filter(|s| !s.trim().is_empty()) else {
        let mut res = sign_in_refused(&ctx, None, "say which workspace to sign in to").await;
        *res.status_mut() = StatusCode::BAD_REQUEST;
        return res;
    };
    match oidc.begin(ctx.service.store(), slug.trim()).await {
        Ok(start) => {
            let mut res = if q.via.as_deref() == Some("form") {
                onward(oidc.display_name(), &start.url)
            } else {
                redirect(&start.url)
            };
            if let Some(c) = set_cookie(&ctx, Some(&start.browser_key)) {
                res.headers_mut().insert(header::SET_COOKIE, c);
            }
            res
        }
        Err(e) => {
            tracing::warn!(reason = e.reason(), error = %e, "OIDC sign-in could not start");
            count_failure(&ctx, ip, &e);
            refusal_page(&ctx, OidcRefusal::from(e)).await
        }
    }
}

#[derive(serde::Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: the provider's answer; signs the member in, or says why not.
pub async fn callback(
    State(ctx): State<HttpContext>,
    headers: HeaderMap,
    extensions: Extensions,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = ctx.oidc.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ip = crate::http::oauth::peer(&extensions);
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
        Ok(s) => {
            tracing::info!(workspace = %s.workspace.slug, member = %s.member.email, "signed in with OIDC");
            sign_in(&ctx, &s.workspace, &s.member, "oidc")
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.error.reason(), error = %refusal.error, "OIDC sign-in refused");
            count_failure(&ctx, ip, &refusal.error);
            refusal_page(&ctx, refusal).await
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

/// 429 for an address with too many refused sign-ins (or other failed authentications).
fn blocked(ctx: &HttpContext, ip: Option<std::net::IpAddr>) -> Option<Response> {
    let wait = ctx.failed_auth.blocked(ip?)?;
    crate::telemetry::metrics::rate_limited("failed_auth");
    let secs = crate::http::ratelimit::retry_after_secs(wait);
    let page = views::bare_page(
        "Too many attempts",
        &format!("Too many refused sign-ins from your address: try again in {secs} seconds."),
    );
    let mut res = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
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

/// The sign-in page saying why, audited in the workspace the sign-in was for (when known).
async fn refusal_page(ctx: &HttpContext, r: OidcRefusal) -> Response {
    let status = StatusCode::from_u16(r.error.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut res = sign_in_refused(ctx, r.workspace.as_ref(), &r.error.to_string()).await;
    *res.status_mut() = status;
    res
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

/// For the sign-in page's form: a page that moves on to the provider, instead of a redirect.
/// Chrome applies the console's `form-action 'self'` to a form submission's redirects, so a
/// redirect to the provider would be blocked; a refresh is a navigation of its own.
fn onward(provider: &str, url: &str) -> Response {
    let page = views::bare(
        "Signing in",
        html! {
            meta http-equiv="refresh" content={ "0; url=" (url) };
            main.narrow {
                h1 { "Signing in" }
                p { "Taking you to " (provider) "… " a #oidc-continue href=(url) { "Continue" } }
            }
        },
    );
    page.into_response()
}
