//! Signing in and out, and the session behind every console request.
//!
//! A login link (`parallax-mcp member login-link`) carries its one-time token in the URL's
//! `#fragment`, which browsers never send to servers or in `Referer`; `console.js` posts it to
//! `/login/link`. A session is a random secret in an `HttpOnly`, `SameSite=Lax` cookie
//! (`__Host-`-prefixed and `Secure` when the public URL is https), stored hashed with idle and
//! absolute ends (`service::console`). The member is re-read on every request
//! (`auth::session`). The CSRF token is derived from the session secret, so it needs no storage
//! and dies with the session.
//!
//! Other sign-in methods (OpenID Connect) call [`sign_in`] once they know the member, or
//! [`sign_in_refused`], and add their button in [`other_sign_in_methods`].

use super::form::{Posted, cross_site};
use super::views;
use crate::auth::MemberCaller;
use crate::auth::session::{ConsoleMember, console_session};
use crate::domain::{Member, Workspace};
use crate::events::sse::{self, StreamContext, StreamFilter};
use crate::http::HttpContext;
use crate::service::ServiceError;
use crate::service::console::SESSION_ABSOLUTE;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

/// Why a console request got no page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No (live) session: to the sign-in page.
    SignedOut {
        htmx: bool,
    },
    Forbidden(String),
    Invalid(String),
    Service(ServiceError),
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        ConsoleError::Service(e)
    }
}

/// The HTTP status a service error is shown with (as the admin API maps it).
pub fn status_of(e: &ServiceError) -> StatusCode {
    match e.code() {
        "not_found" => StatusCode::NOT_FOUND,
        "invalid" => StatusCode::UNPROCESSABLE_ENTITY,
        "forbidden" => StatusCode::FORBIDDEN,
        "conflict" | "quota_exceeded" => StatusCode::CONFLICT,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a person is told about a service error; internal details stay in the log.
pub fn message_of(e: &ServiceError) -> String {
    match e {
        ServiceError::Store(inner) => {
            tracing::warn!(error = %inner, "console: store error");
            "The server could not complete this right now; try again.".into()
        }
        e => e.to_string(),
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::SignedOut { htmx: true } => {
                // htmx follows this header with a full navigation.
                return (StatusCode::UNAUTHORIZED, [("hx-redirect", "/login")]).into_response();
            }
            ConsoleError::SignedOut { htmx: false } => {
                return Redirect::to("/login").into_response();
            }
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ConsoleError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
            ConsoleError::Service(e) => (status_of(&e), message_of(&e)),
        };
        (status, views::bare_page("Not possible", &message)).into_response()
    }
}

/// The session cookie's name: `__Host-` (which browsers accept only with `Secure`, `Path=/` and
/// no `Domain`) when the console is served over https.
fn cookie_name(ctx: &HttpContext) -> &'static str {
    if is_https(ctx) {
        "__Host-parallax_session"
    } else {
        "parallax_session"
    }
}

fn is_https(ctx: &HttpContext) -> bool {
    ctx.urls.origin.starts_with("https://")
}

fn session_cookie(ctx: &HttpContext, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if is_https(ctx) { "; Secure" } else { "" };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}",
        cookie_name(ctx)
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session secret from the `Cookie` header, if any.
fn cookie_secret<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A CSRF token for the session: a derived key of its secret, so only someone who holds the
/// cookie (our own pages) knows it.
fn csrf_for(secret: &str) -> String {
    let key = blake3::derive_key("parallax-mcp console csrf v1", secret.as_bytes());
    blake3::Hash::from_bytes(key).to_hex().to_string()
}

/// The signed-in member behind a console request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub caller: MemberCaller,
    pub session_hash: String,
    pub csrf: String,
}

impl Signed {
    pub fn member(&self) -> &Member {
        self.caller.member()
    }

    pub fn workspace(&self) -> &Workspace {
        self.caller.workspace()
    }

    pub fn csrf_matches(&self, sent: &str) -> bool {
        // Constant time: the token is a secret.
        let (a, b) = (self.csrf.as_bytes(), sent.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Audits a refused request (`member.denied`) and returns the 403 to answer with.
    pub async fn refuse(&self, ctx: &HttpContext, action: &str, reason: &str) -> ConsoleError {
        if let Err(e) = ctx
            .service
            .refuse_console_request(&self.caller, action, reason)
            .await
        {
            tracing::warn!(error = %e, "console: refusal could not be audited");
        }
        ConsoleError::Forbidden(format!("Refused: {reason}."))
    }
}

impl FromRequestParts<HttpContext> for Signed {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &HttpContext,
    ) -> Result<Self, ConsoleError> {
        let htmx = parts.headers.contains_key("hx-request");
        let Some(secret) = cookie_secret(&parts.headers, cookie_name(ctx)) else {
            return Err(ConsoleError::SignedOut { htmx });
        };
        match console_session(ctx.service.store(), secret).await? {
            Some(ConsoleMember { caller, session }) => Ok(Signed {
                csrf: csrf_for(secret),
                session_hash: session.id_hash,
                caller,
            }),
            None => Err(ConsoleError::SignedOut { htmx }),
        }
    }
}

/// Signs `member` in: opens a session (audited `member.signed_in` with `method`), sets the
/// cookie and sends the browser to the inbox. `method` is `link` or `oidc`.
pub(crate) async fn sign_in(
    ctx: &HttpContext,
    workspace: &Workspace,
    member: &Member,
    method: &'static str,
) -> Result<Response, ConsoleError> {
    let secret = ctx
        .service
        .start_console_session(workspace, member, method)
        .await?;
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(ctx, &secret.0, SESSION_ABSOLUTE.num_seconds()),
    );
    Ok(res)
}

/// A refused OpenID Connect sign-in: audited as `member.sign_in_failed` in `workspace` (when the
/// sign-in named one), answered with the sign-in page saying why (`email_or_reason`, e.g.
/// "bob@x.test is not a member of workspace acme").
pub(crate) async fn sign_in_refused(
    ctx: &HttpContext,
    workspace: Option<&Workspace>,
    email_or_reason: &str,
) -> Response {
    refused(ctx, workspace, Some("oidc"), email_or_reason).await
}

async fn refused(
    ctx: &HttpContext,
    workspace: Option<&Workspace>,
    method: Option<&str>,
    reason: &str,
) -> Response {
    if let Some(ws) = workspace
        && let Err(e) = ctx.service.refuse_sign_in(ws, method, reason).await
    {
        tracing::warn!(error = %e, "console: refused sign-in could not be audited");
    }
    (StatusCode::FORBIDDEN, login_markup(ctx, Some(reason), None)).into_response()
}

/// Buttons of sign-in methods other than the login link: OpenID Connect's, when `[oidc]` is
/// configured.
fn other_sign_in_methods(ctx: &HttpContext) -> Markup {
    super::oidc::button(ctx)
}

fn login_markup(ctx: &HttpContext, error: Option<&str>, notice: Option<&str>) -> Markup {
    views::bare(
        "Sign in",
        html! {
            main.narrow {
                h1 { "Sign in to the console" }
                @if let Some(e) = error {
                    p.flash.error role="alert" { "Sign-in refused: " (e) }
                }
                @if let Some(n) = notice {
                    p.flash.ok role="status" { (n) }
                }
                p { "Open the one-time sign-in link your administrator gave you. An operator makes one with:" }
                pre { code { "parallax-mcp member login-link -w WORKSPACE --as you@example.com" } }
                form #login-link method="post" action="/login/link" {
                    label for="token" { "Sign-in link or code" }
                    input #token type="password" name="token" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
                (other_sign_in_methods(ctx))
            }
        },
    )
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    signed_out: Option<String>,
}

pub async fn login_page(
    State(ctx): State<HttpContext>,
    q: axum::extract::Query<LoginQuery>,
) -> Markup {
    let notice = q.signed_out.as_ref().map(|_| "You are signed out.");
    login_markup(&ctx, None, notice)
}

/// `POST /login/link`: spends the link's token and signs its member in.
pub async fn redeem_link(
    State(ctx): State<HttpContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    if let Some(reason) = cross_site(&headers) {
        // No session yet, so no workspace to audit in; the log keeps it.
        tracing::warn!(reason, "console: cross-site sign-in refused");
        return Err(ConsoleError::Forbidden(format!("Refused: {reason}.")));
    }
    let fields = super::form::Fields::parse(&body);
    // Accept the whole link pasted, or the code after `#`.
    let raw = fields.get("token");
    let token = raw.rsplit_once('#').map_or(raw, |(_, t)| t).trim();
    match ctx.service.redeem_login_link(token).await? {
        Ok((ws, member)) => sign_in(&ctx, &ws, &member, "link").await,
        Err(refusal) => Ok(refused(
            &ctx,
            refusal.workspace.as_ref(),
            Some("link"),
            refusal.reason,
        )
        .await),
    }
}

/// `POST /logout`: ends the session here and on every replica.
pub async fn logout(State(ctx): State<HttpContext>, p: Posted) -> Result<Response, ConsoleError> {
    ctx.service
        .end_console_session(&p.who.caller, &p.who.session_hash)
        .await?;
    let mut res = Redirect::to("/login?signed_out=1").into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&ctx, "", 0));
    Ok(res)
}

/// `GET /events`: the workspace's live events for the open page (the members' event stream,
/// under the session instead of a token). Pages refresh their live parts on each one.
pub async fn events(State(ctx): State<HttpContext>, who: Signed) -> Response {
    let limit = ctx.opts.max_event_streams_per_member;
    let Some(slot) = ctx.event_streams.acquire(&who.caller, limit) else {
        crate::telemetry::metrics::rate_limited("event_streams");
        return (StatusCode::TOO_MANY_REQUESTS, "too many open pages").into_response();
    };
    let sctx = StreamContext {
        service: ctx.service.clone(),
        feed: ctx.feed.clone(),
        opts: ctx.opts.events.clone(),
        closing: ctx.closing.clone(),
    };
    sse::stream(sctx, who.caller, StreamFilter::default(), None, slot).await
}
