//! Work: projects and tasks with their assignees; assign an approved agent (quota errors shown
//! next to the picker) and end assignments.

use super::form::Posted;
use super::inbox::{Done, done_notice, urlencode};
use super::session::{ConsoleError, Signed, message_of, status_of};
use super::views::{self, Nav, Notice};
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::AssignTarget;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

#[derive(Debug, Default, serde::Deserialize)]
pub struct Selected {
    project: Option<String>,
}

/// Tasks shown for one project at most.
const TASKS: usize = 200;

pub async fn page(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(done): Query<Done>,
    Query(sel): Query<Selected>,
) -> Result<Markup, ConsoleError> {
    work_page(&ctx, &who, sel.project.as_deref(), done_notice(&done), None).await
}

/// One project at a time (the first unless `selected`): its tasks and assignees, so the page
/// stays small however much work the workspace holds.
async fn work_page(
    ctx: &HttpContext,
    who: &Signed,
    selected: Option<&str>,
    notice: Option<Notice>,
    assign_error: Option<String>,
) -> Result<Markup, ConsoleError> {
    let projects = ctx.service.list_projects(&who.caller).await?;
    let project = selected
        .and_then(|id| projects.iter().find(|p| p.id == id))
        .or(projects.first());
    let (tasks, assignments) = match project {
        Some(p) => (
            ctx.service
                .list_tasks(&who.caller, Some(&p.id), None)
                .await?,
            ctx.service
                .list_assignments(&who.caller, None, Some(&p.id), false)
                .await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let more_tasks = tasks.len().saturating_sub(TASKS);
    let tasks: Vec<Task> = tasks.into_iter().take(TASKS).collect();
    let approved = ctx
        .service
        .list_agents(&who.caller, Some(AgentStatus::Approved))
        .await?;
    let write = views::can(who, Role::Write);
    let assignees = |project: &str, task: Option<&str>| -> Vec<&Assignment> {
        assignments
            .iter()
            .filter(|s| s.project_id == project && s.task_id.as_deref() == task)
            .collect()
    };
    let people = |list: Vec<&Assignment>| {
        html! {
            @if list.is_empty() { span.muted { "nobody" } }
            @for s in list {
                span.assignee {
                    a href=(format!("/agents/{}", urlencode(&s.agent_id))) { (s.agent_id) }
                    @if s.role == AssignmentRole::Lead { " (lead)" }
                    @if write {
                        form.inline method="post" action=(format!("/work/assignments/{}/end", s.id)) {
                            (views::csrf(who))
                            input type="hidden" name="project" value=(s.project_id);
                            button.link type="submit" aria-label=(format!("End assignment of {}", s.agent_id)) { "end" }
                        }
                    }
                }
                " "
            }
        }
    };
    let body = html! {
        @if projects.is_empty() {
            (views::empty("No projects yet.", html! { p.muted { "Create one with " code { "parallax-mcp project create NAME" } "." } }))
        }
        @if projects.len() > 1 {
            nav.tabs aria-label="Projects" {
                @for p in &projects {
                    a href=(format!("/work?project={}", urlencode(&p.id)))
                        aria-current=[(project.map(|x| &x.id) == Some(&p.id)).then_some("page")] { (p.name) }
                }
            }
        }
        @if let Some(p) = project {
            @if write {
                section.assign {
                    h2 { "Assign an agent" }
                    @if approved.is_empty() {
                        p.muted { "No approved agents yet: approve one in the " a href="/" { "inbox" } " first." }
                    } @else {
                        form method="post" action="/work/assign" {
                            (views::csrf(who))
                            input type="hidden" name="project" value=(p.id);
                            div.field {
                                label for="w-agent" { "Agent (approved only)" }
                                select #w-agent name="agent" required {
                                    @for a in &approved { option value=(a.id) { (a.name) " (" (a.id) ")" } }
                                }
                            }
                            div.field {
                                label for="w-target" { "Project or task" }
                                select #w-target name="target" required {
                                    option value=(format!("project:{}", p.id)) { "Project: " (p.name) }
                                    @for t in &tasks {
                                        option value=(format!("task:{}", t.id)) { "Task: " (t.title) }
                                    }
                                }
                            }
                            div.field {
                                label for="w-role" { "Role" }
                                select #w-role name="role" {
                                    @for r in AssignmentRole::ALL { option value=(r) { (r) } }
                                }
                            }
                            div.field { button.primary type="submit" { "Assign" } }
                            @if let Some(e) = &assign_error {
                                p.field-error #assign-error role="alert" { (e) }
                            }
                        }
                    }
                }
            }
            section.project {
                h2 { (p.name) " " (views::status(p.status)) }
                @if !p.description.is_empty() { p { (p.description) } }
                p { "Project assignees: " (people(assignees(&p.id, None))) }
                @if tasks.is_empty() {
                    p.muted { "No tasks. Create one with " code { "parallax-mcp task create --project " (p.id) " TITLE" } "." }
                } @else {
                    table {
                        thead { tr { th { "Task" } th { "Status" } th { "Assignees" } } }
                        tbody {
                            @for t in &tasks {
                                tr {
                                    td { (t.title) br; code.muted { (t.id) } }
                                    td { (views::status(t.status)) }
                                    td { (people(assignees(&p.id, Some(&t.id)))) }
                                }
                            }
                        }
                    }
                    @if more_tasks > 0 {
                        p.muted { "… and " (more_tasks) " more tasks (the CLI lists them all: " code { "parallax-mcp task list" } ")." }
                    }
                }
            }
        }
    };
    Ok(views::page(ctx, who, Nav::Work, "Work", notice, body).await)
}

pub async fn assign(State(ctx): State<HttpContext>, p: Posted) -> Result<Response, ConsoleError> {
    let f = &p.fields;
    let target = match f.get("target").split_once(':') {
        Some(("project", id)) => AssignTarget::Project(id.to_owned()),
        Some(("task", id)) => AssignTarget::Task(id.to_owned()),
        _ => return Err(ConsoleError::Invalid("pick a project or a task".into())),
    };
    let role = match f.get("role") {
        "" => AssignmentRole::Member,
        r => AssignmentRole::parse(r).map_err(|e| ConsoleError::Invalid(e.0))?,
    };
    match ctx
        .service
        .assign(&p.who.caller, f.get("agent"), target, role)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!(
            "/work?ok=assigned&project={}",
            urlencode(f.get("project"))
        ))
        .into_response()),
        Err(e) => Ok((
            status_of(&e),
            work_page(
                &ctx,
                &p.who,
                Some(f.get("project")),
                None,
                Some(message_of(&e)),
            )
            .await?,
        )
            .into_response()),
    }
}

pub async fn unassign(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    match ctx.service.unassign(&p.who.caller, &id).await {
        Ok(a) => Ok(Redirect::to(&format!(
            "/work?ok=unassigned&project={}",
            urlencode(&a.project_id)
        ))
        .into_response()),
        Err(e) => Ok((
            status_of(&e),
            work_page(
                &ctx,
                &p.who,
                None,
                Some(Notice::Error(format!(
                    "Could not end the assignment: {}",
                    message_of(&e)
                ))),
                None,
            )
            .await?,
        )
            .into_response()),
    }
}
