//! `POST /api/v1/workspaces/{workspace}/access-requests`: the control plane's signed access
//! requests. The Standard Webhooks signature is the only credential; see
//! [`Service::receive_access_request`](crate::service::Service::receive_access_request).

use super::error::{ApiError, ApiResult};
use super::extract::Ids;
use crate::domain::{Agent, ApiKey};
use crate::http::HttpContext;
use crate::service::SignedMessage;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Set on an answer served from the replay guard instead of being processed again.
pub const REPLAYED_HEADER: &str = "webhook-replayed";

/// The challenge on a refusal: this route takes a signature, not a bearer token.
const SIGNATURE_CHALLENGE: &str =
    "Webhook-Signature realm=\"parallax-api\", scheme=\"standard-webhooks\"";

pub async fn access_request(
    ctx: State<HttpContext>,
    workspace: Ids<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match receive(ctx, workspace, headers, body).await {
        Ok(res) => res,
        Err(e) => {
            let mut res = e.into_response();
            if res.status() == StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(SIGNATURE_CHALLENGE),
                );
            }
            res
        }
    }
}

async fn receive(
    State(ctx): State<HttpContext>,
    Ids(workspace): Ids<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let _guard = ctx.inflight.enter();
    let msg = SignedMessage {
        webhook_id: text_header(&headers, "webhook-id")?,
        timestamp: text_header(&headers, "webhook-timestamp")?,
        signature: text_header(&headers, "webhook-signature")?,
        body: &body,
    };
    let reply = match ctx
        .service
        .receive_access_request(&workspace, msg, render)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // The reason only: never the signature or the body.
            tracing::info!(%workspace, code = e.code(), reason = %e, "refused a signed access request");
            return Err(e.into());
        }
    };
    let status = StatusCode::from_u16(reply.status_code).unwrap_or(StatusCode::OK);
    let mut res = (status, reply.body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if reply.replayed {
        res.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// A header as text; one that is not visible ASCII is malformed (401, like a bad signature).
fn text_header<'a>(headers: &'a HeaderMap, name: &'static str) -> ApiResult<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::unauthenticated(format!("malformed {name} header"))),
    }
}

/// 201 for a new request, 200 when the agent was already pending or approved (requests are
/// idempotent). The key appears only when the request was auto-approved, and only live.
fn render(agent: &Agent, created: bool, key: Option<&ApiKey>) -> (u16, Value) {
    let status = if created { 201 } else { 200 };
    (
        status,
        json!({ "agent": agent, "created": created, "apiKey": key.map(ApiKey::expose) }),
    )
}
