//! The event routes under `/api/v1/workspaces/{workspace}`: the member event stream and the
//! webhook deliveries. Members authenticate with a member token; the path's workspace must be the
//! token's. Errors use the API's shape, `{"error": {"code", "message"}}`.

use super::sse::{self, StreamContext, StreamFilter};
use crate::auth::MemberCaller;
use crate::domain::DeliveryStatus;
use crate::http::HttpContext;
use crate::service::ServiceError;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn router(ctx: &HttpContext) -> Router {
    Router::new()
        .route("/api/v1/workspaces/{workspace}/events", get(events))
        .route("/api/v1/workspaces/{workspace}/deliveries", get(deliveries))
        .route(
            "/api/v1/workspaces/{workspace}/deliveries/{id}/redeliver",
            post(redeliver),
        )
        .with_state(ctx.clone())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn service_error(e: ServiceError) -> Response {
    let status = match &e {
        ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::QuotaExceeded { .. } => StatusCode::CONFLICT,
        ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ServiceError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let message = match &e {
        // The database's own text stays in the log.
        ServiceError::Store(_) => {
            tracing::warn!(error = %e, "store error on an event route");
            "the server could not complete the request".to_owned()
        }
        _ => e.to_string(),
    };
    error(status, e.code(), &message)
}

/// The member behind the bearer token, when it belongs to `workspace` (slug or id).
async fn member(
    ctx: &HttpContext,
    headers: &HeaderMap,
    workspace: &str,
) -> Result<MemberCaller, Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(bearer) = bearer else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a member token is required (Authorization: Bearer …)",
        ));
    };
    let caller = match ctx.tokens.member(bearer).await {
        Ok(Ok(c)) => c,
        Ok(Err(refusal)) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                &refusal.reason,
            ));
        }
        Err(e) => return Err(service_error(e)),
    };
    let ws = caller.workspace();
    if ws.slug != workspace && ws.id != workspace {
        // Another workspace does not exist from this member's side.
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("workspace {workspace:?} not found"),
        ));
    }
    Ok(caller)
}

#[derive(Deserialize)]
struct EventsQuery {
    types: Option<String>,
    agent: Option<String>,
}

async fn events(
    State(ctx): State<HttpContext>,
    Path(workspace): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let caller = match member(&ctx, &headers, &workspace).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let filter = match StreamFilter::parse(q.types.as_deref(), q.agent.as_deref()) {
        Ok(f) => f,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "invalid", &msg),
    };
    let last = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let last = match sse::parse_last_event_id(last) {
        Ok(l) => l,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "invalid", &msg),
    };
    let sctx = StreamContext {
        service: ctx.service.clone(),
        feed: ctx.feed.clone(),
        opts: ctx.opts.events.clone(),
        closing: ctx.closing.clone(),
    };
    sse::stream(sctx, caller, filter, last).await
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
}

async fn deliveries(
    State(ctx): State<HttpContext>,
    Path(workspace): Path<String>,
    Query(q): Query<DeliveriesQuery>,
    headers: HeaderMap,
) -> Response {
    let caller = match member(&ctx, &headers, &workspace).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let status = match q.status.as_deref().map(DeliveryStatus::parse).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", &e.0),
    };
    match ctx.service.list_deliveries(&caller, status).await {
        Ok(list) => Json(json!({ "deliveries": list })).into_response(),
        Err(e) => service_error(e),
    }
}

async fn redeliver(
    State(ctx): State<HttpContext>,
    Path((workspace, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let caller = match member(&ctx, &headers, &workspace).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match ctx.service.redeliver(&caller, &id).await {
        Ok(d) => (StatusCode::ACCEPTED, Json(json!({ "delivery": d }))).into_response(),
        Err(e) => service_error(e),
    }
}
