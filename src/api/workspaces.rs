//! The workspace, its settings, its webhook secret and its members.

use super::error::ApiResult;
use super::extract::{Body, Ids};
use super::member::Member;
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::DEFAULT_SECRET_GRACE_SECS;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub async fn show(State(ctx): State<HttpContext>, Member(m): Member) -> ApiResult<Json<Workspace>> {
    Ok(Json(ctx.service.workspace(&m).await?))
}

pub async fn settings(
    State(ctx): State<HttpContext>,
    Member(m): Member,
) -> ApiResult<Json<WorkspaceSettings>> {
    Ok(Json(ctx.service.workspace(&m).await?.settings))
}

/// Settings to change, by key (the keys of `workspace settings --set`). A list may be given as
/// an array or a comma-separated string; `null` clears an optional value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SettingsChange(pub BTreeMap<String, Value>);

pub async fn update_settings(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(change): Body<SettingsChange>,
) -> ApiResult<Json<WorkspaceSettings>> {
    let changes: Vec<(String, String)> = change
        .0
        .into_iter()
        .map(|(k, v)| (k, setting_text(v)))
        .collect();
    Ok(Json(
        ctx.service.update_settings(&m, &changes).await?.settings,
    ))
}

/// A JSON value in the text form `WorkspaceSettings::apply` reads, as the CLI passes it.
fn setting_text(v: Value) -> String {
    match v {
        Value::Null => "none".to_owned(),
        Value::String(s) => s,
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secrets stay valid, in seconds [default: 86400].
    pub grace_secs: Option<u64>,
}

// No Debug: it carries key material.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewSecret {
    /// The new `whsec_…` secret; shown once.
    pub secret: String,
    pub previous_valid_for_secs: u64,
}

pub async fn rotate_webhook_secret(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<RotateSecret>,
) -> ApiResult<(StatusCode, Json<NewSecret>)> {
    let grace = b.grace_secs.unwrap_or(DEFAULT_SECRET_GRACE_SECS);
    let secret = ctx.service.rotate_webhook_secret(&m, grace).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewSecret {
            secret: secret.expose(),
            previous_valid_for_secs: grace,
        }),
    ))
}

pub async fn members(
    State(ctx): State<HttpContext>,
    Member(m): Member,
) -> ApiResult<Json<Vec<crate::domain::Member>>> {
    Ok(Json(ctx.service.list_members(&m).await?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMember {
    pub email: String,
    pub role: Role,
    /// Display name [default: the email].
    #[serde(default)]
    pub name: String,
}

pub async fn add_member(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<NewMember>,
) -> ApiResult<(StatusCode, Json<crate::domain::Member>)> {
    let added = ctx
        .service
        .add_member(&m, &b.email, &b.name, b.role)
        .await?;
    Ok((StatusCode::CREATED, Json(added)))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

pub async fn set_role(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, email)): Ids<(String, String)>,
    Body(b): Body<RoleChange>,
) -> ApiResult<Json<crate::domain::Member>> {
    Ok(Json(ctx.service.set_member_role(&m, &email, b.role).await?))
}

pub async fn remove_member(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, email)): Ids<(String, String)>,
) -> ApiResult<Json<crate::domain::Member>> {
    Ok(Json(ctx.service.remove_member(&m, &email).await?))
}
