//! MCP resources: an agent's assignments as `parallax://me/assignments` (identity from the
//! credential, never from the URI), readable and subscribable through the [`Gate`] with the same
//! permission as `agent_my_assignments`.
//!
//! Subscriptions (`resources/subscribe` on 2025-11-25, `subscriptions/listen` on 2026-07-28) are
//! fed by the process's event [`Feed`](crate::events::Feed): the agent hears
//! `notifications/resources/updated` when it is assigned or unassigned and when its delegation is
//! resolved. An `agent.access_revoked` for the agent ends its subscriptions (the feed sees other
//! replicas' revocations too).

use super::catalogue;
use crate::domain::{Event, EventType};
use rmcp::model::Resource;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

pub const ASSIGNMENTS_URI: &str = "parallax://me/assignments";

/// The tool whose data (and so whose permission) a resource shares.
pub fn tool_for(uri: &str) -> Option<&'static str> {
    (uri == ASSIGNMENTS_URI).then_some(catalogue::MY_ASSIGNMENTS)
}

pub fn assignments_resource() -> Resource {
    Resource::new(ASSIGNMENTS_URI, "my-assignments")
        .with_title("My assignments")
        .with_description(
            "The projects and tasks you are assigned to (the same data as agent_my_assignments). \
             Subscribe to hear when you are assigned, unassigned or a delegation of yours is resolved.",
        )
        .with_mime_type("application/json")
}

/// What an event means for one agent's subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Updated,
    Revoked,
}

pub fn effect(e: &Event, workspace_id: &str, agent_id: &str) -> Effect {
    if e.workspace_id != workspace_id {
        return Effect::None;
    }
    let about_me = e.agent_id.as_deref() == Some(agent_id)
        || e.data.get("toAgentId").and_then(|v| v.as_str()) == Some(agent_id);
    match e.event_type {
        EventType::AccessRevoked if about_me => Effect::Revoked,
        EventType::TaskAssigned
        | EventType::ProjectAssigned
        | EventType::Unassigned
        | EventType::DelegationApproved
        | EventType::DelegationDenied
            if about_me =>
        {
            Effect::Updated
        }
        _ => Effect::None,
    }
}

/// Calls `notify` for each event that changes the agent's assignments, until `notify` fails,
/// `stop` is cancelled, the agent is revoked or the feed closes. `events` is the feed's receiver,
/// taken before the subscription was acknowledged, so no event committed after the
/// acknowledgement can be missed.
pub async fn watch<F, Fut>(
    mut events: broadcast::Receiver<Arc<Event>>,
    workspace_id: &str,
    agent_id: &str,
    stop: &CancellationToken,
    mut notify: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            n = events.recv() => n,
        };
        let fire = match next {
            Ok(e) => match effect(&e, workspace_id, agent_id) {
                Effect::None => false,
                Effect::Updated => true,
                Effect::Revoked => return,
            },
            // Missed events might have touched the assignments: say so rather than stay silent.
            Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => return,
        };
        if fire && !notify().await {
            return;
        }
    }
}
