//! Assignments, delegations and the activity trail.

use super::error::{ApiError, ApiResult};
use super::extract::{Body, Ids, Params};
use super::member::Member;
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::{AssignTarget, DelegationResolution};
use crate::store::ActivityQuery;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentFilter {
    /// Only this agent's assignments.
    pub agent: Option<String>,
    /// Only assignments in this project (to it or to its tasks).
    pub project: Option<String>,
    /// Include ended assignments.
    #[serde(default)]
    pub all: bool,
}

pub async fn list(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<AssignmentFilter>,
) -> ApiResult<Json<Vec<Assignment>>> {
    Ok(Json(
        ctx.service
            .list_assignments(&m, q.agent.as_deref(), q.project.as_deref(), q.all)
            .await?,
    ))
}

/// Assign an approved agent to a project or to a task (exactly one of the two).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAssignment {
    pub agent_id: String,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    /// [default: member]
    pub role: Option<AssignmentRole>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignOutcome {
    pub assignment: Assignment,
    /// False when the agent was already assigned there.
    pub created: bool,
}

pub async fn assign(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<NewAssignment>,
) -> ApiResult<(StatusCode, Json<AssignOutcome>)> {
    let to = match (b.project_id, b.task_id) {
        (None, Some(task)) => AssignTarget::Task(task),
        (Some(project), None) => AssignTarget::Project(project),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of project_id and task_id",
            ));
        }
    };
    let role = b.role.unwrap_or(AssignmentRole::Member);
    let (assignment, created) = ctx.service.assign(&m, &b.agent_id, to, role).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(AssignOutcome {
            assignment,
            created,
        }),
    ))
}

pub async fn unassign(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
) -> ApiResult<Json<Assignment>> {
    Ok(Json(ctx.service.unassign(&m, &id).await?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelegationFilter {
    pub status: Option<DelegationStatus>,
}

pub async fn delegations(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<DelegationFilter>,
) -> ApiResult<Json<Vec<Delegation>>> {
    Ok(Json(ctx.service.list_delegations(&m, q.status).await?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Note {
    /// A note for the audit trail.
    pub note: Option<String>,
}

pub async fn approve_delegation(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<Note>,
) -> ApiResult<Json<Delegation>> {
    Ok(Json(
        ctx.service
            .resolve_delegation(&m, &id, DelegationResolution::Approve, b.note.as_deref())
            .await?,
    ))
}

pub async fn deny_delegation(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<super::agents::Reason>,
) -> ApiResult<Json<Delegation>> {
    Ok(Json(
        ctx.service
            .resolve_delegation(&m, &id, DelegationResolution::Deny, Some(&b.reason))
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivityFilter {
    pub agent: Option<String>,
    pub project: Option<String>,
    pub task: Option<String>,
    /// Only entries of this type, e.g. `agent.access_approved` or `tool.call`.
    #[serde(rename = "type")]
    pub activity_type: Option<String>,
    /// Page size, 1 to 500 [default: 50].
    pub limit: Option<u64>,
    /// Only entries older than this entry id: the previous page's `next_before`.
    pub before: Option<String>,
}

/// A page of the trail, newest first.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityPage {
    pub entries: Vec<ActivityEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<String>,
    /// The name or title of every project and task the entries refer to, by id.
    pub titles: std::collections::BTreeMap<String, String>,
}

pub async fn activity(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<ActivityFilter>,
) -> ApiResult<Json<ActivityPage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let entries = ctx
        .service
        .list_activity(
            &m,
            ActivityQuery {
                agent_id: q.agent,
                project_id: q.project,
                task_id: q.task,
                activity_type: q.activity_type,
                before: q.before,
                limit,
                ..Default::default()
            },
        )
        .await?;
    // A full page probably has more behind it.
    let next_before = entries
        .last()
        .filter(|_| entries.len() as u64 >= limit)
        .map(|e| e.id.clone());
    let titles = ctx.service.activity_titles(&m, &entries).await?;
    Ok(Json(ActivityPage {
        entries,
        next_before,
        titles,
    }))
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub removed: u64,
}

pub async fn prune(State(ctx): State<HttpContext>, Member(m): Member) -> ApiResult<Json<Pruned>> {
    Ok(Json(Pruned {
        removed: ctx.service.prune_activity(&m).await?,
    }))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyQuery {
    /// Start at this position (the entry before it is trusted) [default: the chain's start].
    pub from: Option<i64>,
}

/// Walks the hash chain; `intact` is false and `problem` names the first bad entry when it broke.
pub async fn verify(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<VerifyQuery>,
) -> ApiResult<Json<ChainVerification>> {
    Ok(Json(ctx.service.verify_activity(&m, q.from).await?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportQuery {
    /// Only entries after this position [default: 0, from the start].
    pub since: Option<i64>,
    /// Page size, 1 to 1000 [default: 1000].
    pub limit: Option<u64>,
}

/// Entries oldest first with their chain position and hash; page with `since` = the last `seq`.
pub async fn export(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Json<Vec<ChainedActivity>>> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let since = q.since.unwrap_or(0);
    if since < 0 {
        return Err(ApiError::invalid("since must be 0 or more"));
    }
    Ok(Json(ctx.service.export_activity(&m, since, limit).await?))
}

/// The workspace's signed checkpoints of the chain, newest first.
pub async fn checkpoints(
    State(ctx): State<HttpContext>,
    Member(m): Member,
) -> ApiResult<Json<Vec<SignedCheckpoint>>> {
    Ok(Json(ctx.service.list_checkpoints(&m).await?))
}

/// Signs a checkpoint of the chain's head now (the latest one when nothing was added since).
pub async fn create_checkpoint(
    State(ctx): State<HttpContext>,
    Member(m): Member,
) -> ApiResult<(StatusCode, Json<SignedCheckpoint>)> {
    Ok((
        StatusCode::CREATED,
        Json(ctx.service.create_checkpoint(&m).await?),
    ))
}

/// Whether the chain still extends a checkpoint exported earlier; `extends` says, `problem` why
/// not.
pub async fn verify_checkpoint(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(cp): Body<SignedCheckpoint>,
) -> ApiResult<Json<CheckpointVerification>> {
    if cp.workspace_id != m.workspace().id {
        return Err(ApiError::invalid("the checkpoint is of another workspace"));
    }
    Ok(Json(ctx.service.verify_checkpoint_as(&m, cp).await?))
}
