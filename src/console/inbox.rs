//! The landing page: pending access requests, to approve (with a subset of what was asked) or
//! deny. The list refreshes itself on every workspace event, and the badge counts what waits.

use super::form::Posted;
use super::session::{ConsoleError, Signed, message_of, status_of};
use super::views::{self, Nav, Notice};
use crate::domain::*;
use crate::http::HttpContext;
use crate::store::AgentOrder;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

/// Request cards on the inbox at most.
const INBOX_PAGE: u64 = 50;

#[derive(Debug, Default, serde::Deserialize)]
pub struct Done {
    ok: Option<String>,
    agent: Option<String>,
}

/// A fixed message for a finished action (never text from the URL).
pub fn done_notice(d: &Done) -> Option<Notice> {
    let agent = d.agent.as_deref().unwrap_or("the agent");
    let text = match d.ok.as_deref()? {
        "denied" => format!("Denied {agent}."),
        "granted" => format!("Updated the grant of {agent}."),
        "revoked" => format!("Revoked {agent}: its keys stopped working."),
        "assigned" => "Assigned.".into(),
        "unassigned" => "Assignment ended.".into(),
        "approved-delegation" => "Delegation approved.".into(),
        "denied-delegation" => "Delegation denied.".into(),
        "settings" => "Settings saved.".into(),
        "member" => "Members updated.".into(),
        "redelivered" => "Delivery queued again.".into(),
        _ => return None,
    };
    Some(Notice::Ok(text))
}

pub async fn page(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(done): Query<Done>,
) -> Result<Markup, ConsoleError> {
    inbox(&ctx, &who, done_notice(&done)).await
}

async fn inbox(
    ctx: &HttpContext,
    who: &Signed,
    notice: Option<Notice>,
) -> Result<Markup, ConsoleError> {
    let list = requests_markup(ctx, who).await?;
    let auto = ctx.service.recent_auto_approved(&who.caller, 10).await?;
    let body = html! {
        p.lead { "Agents asking for access to " (who.workspace().name) ". New requests appear here as they arrive." }
        (list)
        @if !auto.is_empty() {
            section {
                h2 { "Recently auto-approved" }
                p.muted { "These matched the workspace's auto-approve lists and got access without review." }
                table {
                    thead { tr { th { "Agent" } th { "Granted" } th { "Approved" } } }
                    tbody {
                        @for a in &auto {
                            tr {
                                td { a href=(format!("/agents/{}", a.id)) { (a.name) } " " code { (a.id) } }
                                td { (perms(&a.granted_permissions)) }
                                td { (views::opt_time(&a.resolved_at)) " " span.tag { "auto-approved" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(views::page(ctx, who, Nav::Inbox, "Requests", notice, body).await)
}

/// `GET /inbox/requests`: the list alone, for the live refresh.
pub async fn requests(State(ctx): State<HttpContext>, who: Signed) -> Result<Markup, ConsoleError> {
    requests_markup(&ctx, &who).await
}

/// `GET /inbox/count`: the badge alone.
pub async fn count(State(ctx): State<HttpContext>, who: Signed) -> Markup {
    views::badge(views::pending_count(&ctx, &who).await)
}

fn perms(set: &PermissionSet) -> Markup {
    html! {
        @if set.iter().next().is_none() { span.muted { "none" } }
        @for p in set.iter() { code.perm { (p) } " " }
    }
}

async fn requests_markup(ctx: &HttpContext, who: &Signed) -> Result<Markup, ConsoleError> {
    // The oldest first, a page at a time: a flood of requests keeps the page fast and the
    // decisions in order.
    let (pending, waiting) = ctx
        .service
        .agents_page(
            &who.caller,
            Some(AgentStatus::Pending),
            AgentOrder::Requested,
            0,
            INBOX_PAGE,
        )
        .await?;
    let defaults = &who.workspace().settings.default_permissions;
    let admin = views::can(who, Role::Admin);
    Ok(html! {
        section #requests hx-get="/inbox/requests" hx-trigger="console:refresh from:body" hx-swap="outerHTML" aria-live="polite" data-keep-edits {
            @if pending.is_empty() {
                (views::empty("No pending requests. You are all caught up.", html! {
                    p.muted { "Agents ask through MCP (" code { "request_access" } "), the control plane or " code { "parallax-mcp agent request" } "; their requests land here." }
                }))
            }
            @if waiting > pending.len() as u64 {
                p.muted #more-requests { "Showing the " (pending.len()) " oldest of " (waiting) " waiting requests; more appear as these are decided." }
            }
            @for a in &pending {
                article.card #(format!("request-{}", a.id)) data-agent=(a.id) {
                    header {
                        h2 { (a.name) " " code { (a.id) } }
                        span.muted { "asked " (views::age(&a.requested_at)) }
                    }
                    @if !a.description.is_empty() { p { (a.description) } }
                    dl {
                        dt { "Capabilities" }
                        dd { @if a.capabilities.is_empty() { span.muted { "none" } } @for c in &a.capabilities { span.tag { (c) } " " } }
                        dt { "Requested" } dd { (perms(&a.requested_permissions)) }
                        dt { "Justification" }
                        dd { @match &a.justification { Some(j) => (j), None => span.muted { "none given" } } }
                        dt { "Endpoint" }
                        dd { @match &a.endpoint { Some(e) => code { (e) }, None => span.muted { "none" } } }
                    }
                    @if admin {
                        div.actions {
                            form.approve method="post" action=(format!("/agents/{}/approve", a.id)) {
                                (views::csrf(who))
                                fieldset {
                                    legend { "Grant" }
                                    @for p in a.requested_permissions.iter() {
                                        label.check {
                                            input type="checkbox" name="perm" value=(p) checked[defaults.contains(p)];
                                            " " (p)
                                        }
                                    }
                                }
                                button.primary type="submit" { "Approve " (a.id) }
                            }
                            form.deny method="post" action=(format!("/agents/{}/deny", a.id)) {
                                (views::csrf(who))
                                label for=(format!("reason-{}", a.id)) { "Reason" }
                                input id=(format!("reason-{}", a.id)) name="reason" required placeholder="Why not";
                                button.danger type="submit" { "Deny" }
                            }
                        }
                    } @else {
                        p.muted { "An admin decides on access requests." }
                    }
                }
            }
        }
    })
}

/// `POST /agents/{id}/approve`: the checked permissions are the grant; the new key is shown
/// on the answer, once.
pub async fn approve(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    let grant = p
        .fields
        .all("perm")
        .map(Permission::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConsoleError::Invalid(e.0))?;
    let who = &p.who;
    match ctx
        .service
        .approve_agent_until(&who.caller, &id, Some(PermissionSet::new(grant)), None)
        .await
    {
        Ok((agent, key)) => {
            let body = html! {
                p { "Granted: " (perms(&agent.granted_permissions)) }
                (views::shown_once(&format!("API key for {}", agent.id), key.expose()))
                p { "Give it to the agent as its bearer credential (" code { "Authorization: Bearer …" } " on " code { "/mcp" } ", or " code { "PARALLAX_API_KEY" } " for stdio)." }
                p { a href=(format!("/agents/{}", agent.id)) { "Open " (agent.name) } " · " a href="/" { "Back to the inbox" } }
            };
            Ok(views::page(
                &ctx,
                who,
                Nav::Inbox,
                &format!("Approved {}", agent.name),
                None,
                body,
            )
            .await
            .into_response())
        }
        Err(e) => Ok((
            status_of(&e),
            inbox(
                &ctx,
                who,
                Some(Notice::Error(format!(
                    "Could not approve {id}: {}",
                    message_of(&e)
                ))),
            )
            .await?,
        )
            .into_response()),
    }
}

/// `POST /agents/{id}/deny` with a reason.
pub async fn deny(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    let who = &p.who;
    match ctx
        .service
        .deny_agent(&who.caller, &id, p.fields.get("reason"))
        .await
    {
        Ok(a) => {
            Ok(Redirect::to(&format!("/?ok=denied&agent={}", urlencode(&a.id))).into_response())
        }
        Err(e) => Ok((
            status_of(&e),
            inbox(
                &ctx,
                who,
                Some(Notice::Error(format!(
                    "Could not deny {id}: {}",
                    message_of(&e)
                ))),
            )
            .await?,
        )
            .into_response()),
    }
}

/// A query-string value.
pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}
