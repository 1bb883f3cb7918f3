//! Agents and their access lifecycle. New key material is in the response once, never again.

use super::error::{ApiError, ApiResult};
use super::extract::{Body, Ids, Params};
use super::member::Member;
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::{AccessRequest, AgentDetails};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentFilter {
    pub status: Option<AgentStatus>,
}

pub async fn list(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<AgentFilter>,
) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(ctx.service.list_agents(&m, q.status).await?))
}

/// An access request filed by a member on an agent's behalf (as `agent request`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRequest {
    pub agent_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Permissions asked for; empty asks for the workspace's default permissions.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    pub endpoint: Option<String>,
    pub metadata: Option<Value>,
    pub justification: Option<String>,
}

// No Debug: it carries key material.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestOutcome {
    pub agent: Agent,
    /// False when the agent was already pending or approved (requests are idempotent).
    pub created: bool,
    /// Present only when the request was auto-approved; shown once.
    pub api_key: Option<String>,
}

pub async fn request(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<NewRequest>,
) -> ApiResult<(StatusCode, Json<RequestOutcome>)> {
    let req = AccessRequest {
        agent_id: b.agent_id,
        name: b.name,
        description: b.description,
        capabilities: b.capabilities,
        permissions: b
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        endpoint: b.endpoint,
        metadata: b.metadata,
        justification: b.justification,
    };
    let out = ctx.service.request_access(&m, req).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(RequestOutcome {
            api_key: out.api_key.as_ref().map(|k| k.expose().to_owned()),
            created: out.created,
            agent: out.agent,
        }),
    ))
}

pub async fn show(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
) -> ApiResult<Json<AgentDetails>> {
    Ok(Json(ctx.service.agent_details(&m, &id).await?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Approval {
    /// Permissions to grant, a subset of those requested [default: the workspace's
    /// default_permissions that were requested].
    pub grant: Option<Vec<Permission>>,
    /// Grant access for this long, e.g. `8h` or `7d` (not with `until`).
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// Grant access until this time, RFC 3339 (not with `for`).
    pub until: Option<String>,
}

// No Debug: it carries key material.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approved {
    pub agent: Agent,
    /// The agent's API key; shown once.
    pub api_key: String,
}

pub async fn approve(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Approval>,
) -> ApiResult<Json<Approved>> {
    let grant = b.grant.map(PermissionSet::new);
    let until = grant_end(b.for_.as_deref(), b.until.as_deref(), chrono::Utc::now())
        .map_err(|e| ApiError::invalid(&e.0))?;
    let (agent, key) = ctx
        .service
        .approve_agent_until(&m, &id, grant, until)
        .await?;
    Ok(Json(Approved {
        agent,
        api_key: key.expose().to_owned(),
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

pub async fn deny(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Reason>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(ctx.service.deny_agent(&m, &id, &b.reason).await?))
}

pub async fn revoke(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Reason>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(ctx.service.revoke_agent(&m, &id, &b.reason).await?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// The complete new grant, a subset of what the agent requested; with `for` or `until`,
    /// extra permissions added on top of the grant until then.
    pub permissions: Vec<Permission>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    pub until: Option<String>,
}

pub async fn set_permissions(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Grant>,
) -> ApiResult<Json<Agent>> {
    let perms = PermissionSet::new(b.permissions);
    let until = grant_end(b.for_.as_deref(), b.until.as_deref(), chrono::Utc::now())
        .map_err(|e| ApiError::invalid(&e.0))?;
    Ok(Json(match until {
        Some(until) => ctx.service.grant_temporary(&m, &id, perms, until).await?,
        None => ctx.service.set_agent_permissions(&m, &id, perms).await?,
    }))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extension {
    /// Access for this long from now, e.g. `8h` (not with `until`).
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// Access until this time, RFC 3339 (not with `for`).
    pub until: Option<String>,
    /// True to remove the end: access lasts until revoked.
    #[serde(default)]
    pub forever: bool,
}

pub async fn extend(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Extension>,
) -> ApiResult<Json<Agent>> {
    let until = grant_end(b.for_.as_deref(), b.until.as_deref(), chrono::Utc::now())
        .map_err(|e| ApiError::invalid(&e.0))?;
    if until.is_some() == b.forever {
        return Err(ApiError::invalid("give one of for, until or forever: true"));
    }
    Ok(Json(ctx.service.extend_access(&m, &id, until).await?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotation {
    /// Make the new key expire after this many days [default: the workspace's key_ttl_days].
    pub expires_in_days: Option<u32>,
}

// No Debug: it carries key material.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedKey {
    pub credential: Credential,
    /// The new API key; shown once.
    pub api_key: String,
}

pub async fn rotate_key(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Rotation>,
) -> ApiResult<Json<RotatedKey>> {
    let (credential, key) = ctx
        .service
        .rotate_agent_key(&m, &id, b.expires_in_days)
        .await?;
    Ok(Json(RotatedKey {
        credential,
        api_key: key.expose().to_owned(),
    }))
}
