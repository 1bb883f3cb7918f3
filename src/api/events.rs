//! The member event stream and the webhook deliveries (docs/design.md §4): the same member extractor and
//! error shape as every other route.

use super::error::{ApiError, ApiResult};
use super::extract::{Ids, Params};
use super::member::Member;
use crate::domain::{DeliveryStatus, WebhookDelivery};
use crate::events::sse::{self, StreamContext, StreamFilter};
use crate::http::HttpContext;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated event types to keep, e.g. `agent.access_approved,agent.task_assigned`.
    pub types: Option<String>,
    /// Only events about this agent.
    pub agent: Option<String>,
}

/// One `text/event-stream` frame: `id:` is the event's sequence number in the workspace (send it
/// back as `Last-Event-ID` to resume), `event:` its type, `data:` this JSON.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventFrame {
    #[serde(rename = "type")]
    pub event_type: String,
    pub seq: i64,
    pub event_id: String,
    pub agent_id: Option<String>,
    pub timestamp: String,
    pub data: serde_json::Value,
}

pub async fn stream(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let filter =
        StreamFilter::parse(q.types.as_deref(), q.agent.as_deref()).map_err(ApiError::invalid)?;
    let last = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let last = sse::parse_last_event_id(last).map_err(ApiError::invalid)?;
    let limit = ctx.opts.max_event_streams_per_member;
    let slot = ctx.event_streams.acquire(&m, limit).ok_or_else(|| {
        crate::telemetry::metrics::rate_limited("event_streams");
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("this member already has {limit} open event streams; close one first"),
        );
        e.retry_after = Some(5);
        e
    })?;
    let sctx = StreamContext {
        service: ctx.service.clone(),
        feed: ctx.feed.clone(),
        opts: ctx.opts.events.clone(),
        closing: ctx.closing.clone(),
    };
    Ok(sse::stream(sctx, m, filter, last, slot).await)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered`, `failed` or `disabled`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    pub deliveries: Vec<WebhookDelivery>,
}

pub async fn deliveries(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let status = q
        .status
        .as_deref()
        .map(DeliveryStatus::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(e.0))?;
    Ok(Json(DeliveryList {
        deliveries: ctx.service.list_deliveries(&m, status).await?,
    }))
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redelivery {
    pub delivery: WebhookDelivery,
}

pub async fn redeliver(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
) -> ApiResult<(StatusCode, Json<Redelivery>)> {
    let delivery = ctx.service.redeliver(&m, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(Redelivery { delivery })))
}
