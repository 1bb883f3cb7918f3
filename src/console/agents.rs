//! Agents: the list (status and capability filters) and one agent's page — its grant editor
//! (a subset of what it requested), working status, keys (never a secret), key rotation (the new
//! key shown once), revocation with a confirmation step, assignment history and its activity.

use super::form::Posted;
use super::inbox::{Done, done_notice, urlencode};
use super::session::{ConsoleError, Signed, message_of, status_of};
use super::views::{self, Nav, Notice};
use crate::domain::*;
use crate::http::HttpContext;
use crate::store::{ActivityQuery, AgentOrder};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

#[derive(Debug, Default, serde::Deserialize)]
pub struct Filter {
    status: Option<String>,
    capability: Option<String>,
    /// Zero-based page of [`PAGE`] agents.
    page: Option<usize>,
}

/// Agents per page of the list.
const PAGE: usize = 100;

pub async fn list(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(f): Query<Filter>,
) -> Result<Markup, ConsoleError> {
    let status = f
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(AgentStatus::parse)
        .transpose()
        .map_err(|e| ConsoleError::Invalid(e.0))?;
    let cap = f.capability.as_deref().unwrap_or("").trim().to_owned();
    // Without a capability filter the store pages; with one, the filter runs here.
    let (agents, total, page) = if cap.is_empty() {
        let want = f.page.unwrap_or(0);
        let (agents, total) = ctx
            .service
            .agents_page(
                &who.caller,
                status,
                AgentOrder::Id,
                (want * PAGE) as u64,
                PAGE as u64,
            )
            .await?;
        (agents, total as usize, want)
    } else {
        let mut agents = ctx.service.list_agents(&who.caller, status).await?;
        agents.retain(|a| a.capabilities.iter().any(|c| c == &cap));
        let total = agents.len();
        let page = f.page.unwrap_or(0).min(total.saturating_sub(1) / PAGE);
        let agents: Vec<Agent> = agents.into_iter().skip(page * PAGE).take(PAGE).collect();
        (agents, total, page)
    };
    let link = |p: usize| {
        format!(
            "/agents?status={}&capability={}&page={p}",
            status.map_or("", |s| s.as_str()),
            urlencode(&cap)
        )
    };
    let body = html! {
        form.filters method="get" action="/agents" {
            label for="f-status" { "Status" }
            select #f-status name="status" {
                option value="" { "any" }
                @for s in AgentStatus::ALL {
                    option value=(s) selected[status == Some(*s)] { (s) }
                }
            }
            label for="f-cap" { "Capability" }
            input #f-cap name="capability" value=(cap) placeholder="e.g. docs";
            button type="submit" { "Filter" }
        }
        @if agents.is_empty() {
            (views::empty("No agents match.", html! {
                p.muted { "Agents appear here once they ask for access; pending ones wait in the " a href="/" { "inbox" } "." }
            }))
        } @else {
            table {
                thead { tr { th { "Agent" } th { "Status" } th { "Working" } th { "Capabilities" } th { "Granted" } th { "Last seen" } } }
                tbody {
                    @for a in &agents {
                        tr {
                            td { a href=(format!("/agents/{}", urlencode(&a.id))) { (a.name) } br; code.muted { (a.id) } }
                            td { (views::status(a.status)) @if a.auto_approved { " " span.tag { "auto" } } }
                            td { (a.working_status) }
                            td { @for c in &a.capabilities { span.tag { (c) } " " } }
                            td { @for p in a.granted_permissions.iter() { code.perm { (p) } " " } }
                            td { (views::opt_time(&a.last_seen_at)) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                span.muted {
                    "Agents " (page * PAGE + 1) "–" (page * PAGE + agents.len()) " of " (total)
                }
                @if page > 0 { a href=(link(page - 1)) { "← Previous" } }
                @if (page + 1) * PAGE < total { a href=(link(page + 1)) { "Next →" } }
            }
        }
    };
    Ok(views::page(&ctx, &who, Nav::Agents, "Agents", None, body).await)
}

pub async fn show(
    State(ctx): State<HttpContext>,
    who: Signed,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Markup, ConsoleError> {
    agent_page(&ctx, &who, &id, done_notice(&done), None).await
}

async fn agent_page(
    ctx: &HttpContext,
    who: &Signed,
    id: &str,
    notice: Option<Notice>,
    once: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let d = ctx.service.agent_details(&who.caller, id).await?;
    let a = &d.agent;
    let activity = ctx
        .service
        .list_activity(
            &who.caller,
            ActivityQuery {
                agent_id: Some(a.id.clone()),
                limit: 20,
                ..Default::default()
            },
        )
        .await?;
    let admin = views::can(who, Role::Admin);
    let approved = a.status == AgentStatus::Approved;
    let body = html! {
        @if let Some(once) = once { (once) }
        section.summary {
            dl {
                dt { "Id" } dd { code { (a.id) } }
                dt { "Status" } dd { (views::status(a.status)) @if a.auto_approved { " " span.tag { "auto-approved" } } }
                dt { "Working status" } dd { (a.working_status) @if let Some(m) = &a.status_message { " — " (m) } }
                dt { "Current task" } dd { @match &a.current_task_id { Some(t) => code { (t) }, None => span.muted { "none" } } }
                dt { "Last seen" } dd { (views::opt_time(&a.last_seen_at)) }
                dt { "Capabilities" } dd { @for c in &a.capabilities { span.tag { (c) } " " } }
                dt { "Requested" } dd { @for p in a.requested_permissions.iter() { code.perm { (p) } " " } }
                dt { "Access ends" } dd { (views::opt_time(&a.access_expires_at)) }
                @if let Some(r) = &a.denial_reason { dt { "Denied because" } dd { (r) } }
                @if let Some(r) = &a.revocation_reason { dt { "Revoked because" } dd { (r) } }
            }
        }
        section {
            h2 { "Grant" }
            @if approved && admin {
                form.grant method="post" action=(format!("/agents/{}/grant", urlencode(&a.id))) {
                    (views::csrf(who))
                    fieldset {
                        legend { "Permissions (only what it requested)" }
                        @for p in a.requested_permissions.iter() {
                            label.check {
                                input type="checkbox" name="perm" value=(p) checked[a.granted_permissions.contains(p)];
                                " " (p)
                            }
                        }
                    }
                    button.primary type="submit" { "Save grant" }
                }
            } @else {
                p { @for p in a.granted_permissions.iter() { code.perm { (p) } " " } @if a.granted_permissions.iter().next().is_none() { span.muted { "nothing granted" } } }
            }
        }
        section {
            h2 { "Keys" }
            @if d.credentials.is_empty() {
                p.muted { "No keys." }
            } @else {
                table {
                    thead { tr { th { "Key" } th { "Created" } th { "Last used" } th { "Expires" } th { "Revoked" } } }
                    tbody {
                        @for c in &d.credentials {
                            tr {
                                td { code { (c.key_prefix) } }
                                td { (views::time(&c.created_at)) }
                                td { (views::opt_time(&c.last_used_at)) }
                                td { (views::opt_time(&c.expires_at)) }
                                td { (views::opt_time(&c.revoked_at)) }
                            }
                        }
                    }
                }
            }
            @if approved && admin {
                div.actions {
                    form method="post" action=(format!("/agents/{}/rotate-key", urlencode(&a.id))) {
                        (views::csrf(who))
                        button type="submit" { "Rotate key" }
                        span.muted { " The old keys stop working; the new one is shown once." }
                    }
                    a.button.danger href=(format!("/agents/{}/revoke", urlencode(&a.id))) { "Revoke…" }
                }
            }
        }
        section {
            h2 { "Assignments" }
            @if d.assignments.is_empty() {
                p.muted { "Never assigned. Assign it on the " a href="/work" { "Work" } " page." }
            } @else {
                table {
                    thead { tr { th { "Project" } th { "Task" } th { "Role" } th { "Assigned" } th { "Ended" } } }
                    tbody {
                        @for s in &d.assignments {
                            tr {
                                td { code { (s.project_id) } }
                                td { @match &s.task_id { Some(t) => code { (t) }, None => span.muted { "whole project" } } }
                                td { (s.role) }
                                td { (views::time(&s.assigned_at)) " by " (s.assigned_by) }
                                td { (views::opt_time(&s.unassigned_at)) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Activity" }
            (super::activity::table(&activity))
            p { a href=(format!("/activity?agent={}", urlencode(&a.id))) { "All activity of " (a.id) } }
        }
    };
    Ok(views::page(ctx, who, Nav::Agents, &a.name, notice, body).await)
}

fn failed(what: &str, e: &crate::service::ServiceError) -> Notice {
    Notice::Error(format!("Could not {what}: {}", message_of(e)))
}

/// `POST /agents/{id}/grant`: the checked permissions become the grant.
pub async fn grant(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    let perms = p
        .fields
        .all("perm")
        .map(Permission::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConsoleError::Invalid(e.0))?;
    match ctx
        .service
        .set_agent_permissions(&p.who.caller, &id, PermissionSet::new(perms))
        .await
    {
        Ok(a) => Ok(Redirect::to(&format!(
            "/agents/{}?ok=granted&agent={0}",
            urlencode(&a.id)
        ))
        .into_response()),
        Err(e) => Ok((
            status_of(&e),
            agent_page(
                &ctx,
                &p.who,
                &id,
                Some(failed("change the grant", &e)),
                None,
            )
            .await?,
        )
            .into_response()),
    }
}

/// `POST /agents/{id}/rotate-key`: the new key, shown on this answer only.
pub async fn rotate_key(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    match ctx.service.rotate_agent_key(&p.who.caller, &id, None).await {
        Ok((_, key)) => {
            let once = views::shown_once(&format!("New API key for {id}"), key.expose());
            Ok(agent_page(
                &ctx,
                &p.who,
                &id,
                Some(Notice::Ok(
                    "Key rotated; the old keys no longer work.".into(),
                )),
                Some(once),
            )
            .await?
            .into_response())
        }
        Err(e) => Ok((
            status_of(&e),
            agent_page(&ctx, &p.who, &id, Some(failed("rotate the key", &e)), None).await?,
        )
            .into_response()),
    }
}

/// `GET /agents/{id}/revoke`: the confirmation step, with the reason to give.
pub async fn confirm_revoke(
    State(ctx): State<HttpContext>,
    who: Signed,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let d = ctx.service.agent_details(&who.caller, &id).await?;
    let a = &d.agent;
    let body = html! {
        p { "Revoking " strong { (a.name) } " (" code { (a.id) } ") stops its keys at once, on every replica, and ends its assignments. It can ask for access again later." }
        form.revoke method="post" action=(format!("/agents/{}/revoke", urlencode(&a.id))) {
            (views::csrf(&who))
            label for="revoke-reason" { "Reason (recorded in the audit trail)" }
            input #revoke-reason name="reason" required;
            div.actions {
                button.danger type="submit" { "Revoke " (a.id) }
                a.button href=(format!("/agents/{}", urlencode(&a.id))) { "Cancel" }
            }
        }
    };
    Ok(views::page(
        &ctx,
        &who,
        Nav::Agents,
        &format!("Revoke {}?", a.name),
        None,
        body,
    )
    .await)
}

pub async fn revoke(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    match ctx
        .service
        .revoke_agent(&p.who.caller, &id, p.fields.get("reason"))
        .await
    {
        Ok(a) => Ok(Redirect::to(&format!(
            "/agents/{}?ok=revoked&agent={0}",
            urlencode(&a.id)
        ))
        .into_response()),
        Err(e) => Ok((
            status_of(&e),
            agent_page(&ctx, &p.who, &id, Some(failed("revoke", &e)), None).await?,
        )
            .into_response()),
    }
}
