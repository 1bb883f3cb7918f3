//! Projects, tasks and pages.

use super::error::ApiResult;
use super::extract::{Body, Ids, Params};
use super::member::Member;
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::TaskUpdate;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;

pub async fn projects(
    State(ctx): State<HttpContext>,
    Member(m): Member,
) -> ApiResult<Json<Vec<Project>>> {
    Ok(Json(ctx.service.list_projects(&m).await?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewProject {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

pub async fn create_project(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<NewProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let p = ctx
        .service
        .create_project(&m, &b.name, &b.description)
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskFilter {
    /// Only tasks of this project (its id).
    pub project: Option<String>,
    pub status: Option<TaskStatus>,
}

pub async fn tasks(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<TaskFilter>,
) -> ApiResult<Json<Vec<Task>>> {
    Ok(Json(
        ctx.service
            .list_tasks(&m, q.project.as_deref(), q.status)
            .await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTask {
    pub project_id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
}

pub async fn create_task(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<NewTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let t = ctx
        .service
        .create_task(&m, &b.project_id, &b.title, &b.description)
        .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// Fields to change; absent ones stay as they are.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskChange {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
}

pub async fn update_task(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Ids((_, id)): Ids<(String, String)>,
    Body(b): Body<TaskChange>,
) -> ApiResult<Json<Task>> {
    let update = TaskUpdate {
        title: b.title,
        description: b.description,
        status: b.status,
    };
    Ok(Json(ctx.service.update_task(&m, &id, update).await?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PageFilter {
    /// Only pages of this project (its id).
    pub project: Option<String>,
}

pub async fn pages(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Params(q): Params<PageFilter>,
) -> ApiResult<Json<Vec<Page>>> {
    Ok(Json(
        ctx.service.list_pages(&m, q.project.as_deref()).await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewPage {
    pub title: String,
    pub project_id: Option<String>,
    #[serde(default)]
    pub content: String,
}

pub async fn create_page(
    State(ctx): State<HttpContext>,
    Member(m): Member,
    Body(b): Body<NewPage>,
) -> ApiResult<(StatusCode, Json<Page>)> {
    let p = ctx
        .service
        .create_page(&m, b.project_id.as_deref(), &b.title, &b.content)
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}
