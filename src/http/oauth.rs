//! OAuth 2.0 for agents: `POST /oauth/token` (client credentials, RFC 6749 §4.4 — the client
//! secret is the agent's API key) and the RFC 8414 authorization server metadata.
//!
//! The access tokens are short-lived `at+jwt` (RFC 9068) for `/mcp`; see [`crate::auth::tokens`].

use super::HttpContext;
use super::ratelimit::retry_after_secs;
use crate::auth::{self, AgentAuthError, AgentAuthRefusal};
use crate::domain::{Permission, PermissionSet};
use crate::mcp::gate::Gate;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};

/// Token requests are a few short parameters.
const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct OAuthState {
    ctx: HttpContext,
    gate: Gate,
}

/// `/oauth/token` and `/.well-known/oauth-authorization-server`.
pub fn router(ctx: &HttpContext) -> Router {
    let state = OAuthState {
        ctx: ctx.clone(),
        gate: ctx.gate.clone(),
    };
    Router::new()
        .route("/oauth/token", post(token))
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server_metadata),
        )
        .with_state(state)
}

/// The permission names, which are the scopes.
pub fn scopes_supported() -> Vec<&'static str> {
    Permission::ALL.iter().map(|p| p.as_str()).collect()
}

/// RFC 8414 metadata. This server only issues tokens to clients (no authorization endpoint).
async fn authorization_server_metadata(State(st): State<OAuthState>) -> Response {
    let origin = &*st.ctx.urls.origin;
    axum::Json(json!({
        "issuer": origin,
        "token_endpoint": format!("{origin}/oauth/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": [],
        "scopes_supported": scopes_supported(),
    }))
    .into_response()
}

/// The client address of a request (the TCP peer, or the forwarded client behind a trusted
/// proxy), when the server recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The credential of an `Authorization: Bearer …` header (the scheme is case-insensitive,
/// RFC 7235), trimmed; `None` when the header is absent or uses another scheme.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("bearer "))
        .map(|_| value[7..].trim())
}

/// 429 with `Retry-After`, as both `/mcp` and `/oauth/token` send it.
pub fn too_many_requests(wait: std::time::Duration, message: &str) -> Response {
    let secs = retry_after_secs(wait);
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(super::limits::error_body(
            "rate_limited",
            message,
            Some(json!({ "retryAfterSecs": secs })),
        )),
    )
        .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// An RFC 6749 §5.2 error. `no-store`, like every token endpoint response.
fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut res = (
        status,
        axum::Json(json!({ "error": code, "error_description": description })),
    )
        .into_response();
    no_store(res.headers_mut());
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"parallax-mcp\""),
        );
    }
    res
}

fn invalid_request(description: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `client_id` and `client_secret` from HTTP Basic (RFC 6749 §2.3.1), if that scheme is used.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Some(encoded) = value.to_str().ok().and_then(|v| {
        v.get(..6)
            .filter(|s| s.eq_ignore_ascii_case("basic "))
            .map(|_| v[6..].trim())
    }) else {
        return Some(Err(()));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(
        decoded
            .and_then(|s| {
                let (id, secret) = s.split_once(':')?;
                Some((form_decode(id)?, form_decode(secret)?))
            })
            .ok_or(()),
    )
}

/// Basic credentials are form-encoded before base64 (RFC 6749 §2.3.1).
fn form_decode(raw: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={raw}")).ok()?;
    match pairs.as_slice() {
        [(_, v)] => Some(v.clone()),
        [] => Some(String::new()),
        _ => None,
    }
}

async fn token(State(st): State<OAuthState>, req: Request) -> Response {
    let _guard = st.ctx.inflight.enter();
    let peer = peer(req.extensions());
    let (parts, body) = req.into_parts();
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return invalid_request("the body must be application/x-www-form-urlencoded");
    }
    let body: Bytes = match axum::body::to_bytes(body, MAX_TOKEN_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => return invalid_request("the request body is too large or unreadable"),
    };
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return invalid_request("the body is not valid form encoding");
    };
    let mut params = std::collections::HashMap::new();
    for (k, v) in pairs {
        // RFC 6749 §3.2: parameters must not repeat.
        if params.insert(k.clone(), v).is_some() {
            return invalid_request(&format!("parameter {k} is repeated"));
        }
    }
    let param = |k: &str| params.get(k).map(String::as_str);

    match param("grant_type") {
        None => return invalid_request("grant_type is required"),
        Some("client_credentials") => {}
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }

    let (client_id, secret) = match (basic_credentials(&parts.headers), param("client_secret")) {
        (Some(_), Some(_)) => {
            return invalid_request("use one client authentication method, not two");
        }
        (Some(Err(())), None) => {
            return st
                .client_failed(peer, None, None, "malformed HTTP Basic credentials")
                .await;
        }
        (Some(Ok((id, secret))), None) => (Some(id), secret),
        (None, Some(secret)) => (param("client_id").map(str::to_owned), secret.to_owned()),
        (None, None) => {
            return st
                .client_failed(peer, None, None, "client authentication is required")
                .await;
        }
    };
    if let Some(wait) = st.ctx.failed_auth.credential_blocked(&secret) {
        crate::telemetry::metrics::rate_limited("failed_auth");
        return too_many_requests(wait, "too many failed authentications with this credential");
    }
    let caller = match auth::agent(st.ctx.service.store(), &secret).await {
        Ok(Ok(caller)) => caller,
        Ok(Err(refusal)) => {
            return st
                .client_failed(
                    peer,
                    Some(&secret),
                    Some(&refusal),
                    &refusal.error.to_string(),
                )
                .await;
        }
        Err(e) => {
            tracing::error!(error = %e, "token request failed on the store");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the workspace store is unavailable",
            );
        }
    };
    if let Some(id) = client_id.filter(|id| !id.is_empty())
        && id != caller.agent_id()
    {
        let refusal = AgentAuthRefusal {
            error: AgentAuthError::UnknownKey,
            owner: Some((
                caller.workspace_id().to_owned(),
                caller.agent_id().to_owned(),
            )),
        };
        return st
            .client_failed(
                peer,
                Some(&secret),
                Some(&refusal),
                "client_id does not match the key",
            )
            .await;
    }

    let granted = caller.permissions();
    let scope = match param("scope").map(str::trim).filter(|s| !s.is_empty()) {
        None => granted,
        Some(raw) => {
            let names: Vec<&str> = raw.split_whitespace().collect();
            let Ok(asked) = PermissionSet::parse_all(&names) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "unknown scope; see scopes_supported",
                );
            };
            if !asked.is_subset(&granted) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!(
                        "the agent is not granted: {}",
                        asked.difference(&granted).names().join(" ")
                    ),
                );
            }
            asked
        }
    };
    match st
        .ctx
        .tokens
        .mint_agent(&caller, scope, &st.ctx.urls.resource)
        .await
    {
        Ok(t) => {
            let body: Value = json!({
                "access_token": t.access_token,
                "token_type": "Bearer",
                "expires_in": t.expires_in,
                "scope": t.scope.names().join(" "),
            });
            let mut res = axum::Json(body).into_response();
            no_store(res.headers_mut());
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "could not mint an access token");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "could not issue a token",
            )
        }
    }
}

impl OAuthState {
    /// `invalid_client`: counted against the address and the presented secret, audited where the
    /// key's owner is known; 429 once either is over its quota.
    async fn client_failed(
        &self,
        peer: Option<IpAddr>,
        secret: Option<&str>,
        refusal: Option<&AgentAuthRefusal>,
        description: &str,
    ) -> Response {
        let blocked = self.ctx.failed_auth.failed(peer, secret);
        match refusal {
            Some(r) => self.gate.audit_refusal(r, "token request").await,
            None => crate::telemetry::metrics::auth_refused("invalid_client"),
        }
        if let Some(wait) = blocked {
            crate::telemetry::metrics::rate_limited("failed_auth");
            return too_many_requests(wait, "too many failed authentications");
        }
        error(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }
}
