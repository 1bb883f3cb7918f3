//! Delegations between agents: pending ones first, approved or denied with a note.

use super::form::Posted;
use super::inbox::{Done, done_notice, urlencode};
use super::session::{ConsoleError, Signed, message_of, status_of};
use super::views::{self, Nav, Notice};
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::DelegationResolution;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

pub async fn page(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(done): Query<Done>,
) -> Result<Markup, ConsoleError> {
    delegations_page(&ctx, &who, done_notice(&done)).await
}

async fn delegations_page(
    ctx: &HttpContext,
    who: &Signed,
    notice: Option<Notice>,
) -> Result<Markup, ConsoleError> {
    let mut all = ctx.service.list_delegations(&who.caller, None).await?;
    // Pending first, then newest first (the service lists newest first).
    all.sort_by_key(|d| d.status != DelegationStatus::Pending);
    let write = views::can(who, Role::Write);
    let agent = |id: &str| html! { a href=(format!("/agents/{}", urlencode(id))) { (id) } };
    let body = html! {
        p.lead { "An agent may ask to hand a task to another agent; when the workspace requires approval, a person decides here." }
        @if all.is_empty() {
            (views::empty("No delegations yet.", html! {}))
        } @else {
            table.delegations {
                thead { tr { th { "Task" } th { "From → to" } th { "Reason" } th { "Status" } th { "Requested" } th { "Decision" } } }
                tbody {
                    @for d in &all {
                        tr {
                            td { code { (d.task_id) } }
                            td { (agent(&d.from_agent_id)) " → " (agent(&d.to_agent_id)) }
                            td { (d.reason) }
                            td { (views::status(d.status)) }
                            td { (views::age(&d.requested_at)) }
                            td {
                                @if d.status == DelegationStatus::Pending && write {
                                    form.inline method="post" action=(format!("/delegations/{}/approve", d.id)) {
                                        (views::csrf(who))
                                        label.sr for=(format!("note-a-{}", d.id)) { "Note" }
                                        input id=(format!("note-a-{}", d.id)) name="note" placeholder="Note (optional)";
                                        button.primary type="submit" { "Approve" }
                                    }
                                    form.inline method="post" action=(format!("/delegations/{}/deny", d.id)) {
                                        (views::csrf(who))
                                        label.sr for=(format!("note-d-{}", d.id)) { "Reason" }
                                        input id=(format!("note-d-{}", d.id)) name="note" required placeholder="Reason";
                                        button.danger type="submit" { "Deny" }
                                    }
                                } @else {
                                    @if let Some(by) = &d.resolved_by { (by) }
                                    @if let Some(n) = &d.resolution_note { ": " (n) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(views::page(ctx, who, Nav::Delegations, "Delegations", notice, body).await)
}

pub async fn resolve(
    State(ctx): State<HttpContext>,
    Path((id, decision)): Path<(String, String)>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    let resolution = match decision.as_str() {
        "approve" => DelegationResolution::Approve,
        "deny" => DelegationResolution::Deny,
        _ => return Err(ConsoleError::Invalid("approve or deny".into())),
    };
    let note = Some(p.fields.get("note")).filter(|n| !n.is_empty());
    match ctx
        .service
        .resolve_delegation(&p.who.caller, &id, resolution, note)
        .await
    {
        Ok(_) => {
            let done = match resolution {
                DelegationResolution::Approve => "approved-delegation",
                DelegationResolution::Deny => "denied-delegation",
            };
            Ok(Redirect::to(&format!("/delegations?ok={done}")).into_response())
        }
        Err(e) => Ok((
            status_of(&e),
            delegations_page(
                &ctx,
                &p.who,
                Some(Notice::Error(format!(
                    "Could not {decision}: {}",
                    message_of(&e)
                ))),
            )
            .await?,
        )
            .into_response()),
    }
}
