//! Console sessions as credentials: the cookie's secret names a stored session, and the member
//! behind it is re-read from the store on every request, so a removal or role change applies to
//! the member's next request on every replica. Agent keys are never sessions (different shape,
//! different table).

use super::MemberCaller;
use crate::service::ServiceResult;
use crate::service::console::{SESSION_IDLE, secret_hash};
use crate::store::{ConsoleSessionRow, Store};

/// How stale `last_seen_at` may get before a request refreshes it (saves a write per request).
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// A signed-in console member and their session.
#[derive(Debug, Clone)]
pub struct ConsoleMember {
    pub caller: MemberCaller,
    pub session: ConsoleSessionRow,
}

/// The member behind a session secret, or `None` when the session is unknown, ended, idle too
/// long, past its absolute end, or its member or workspace is gone.
pub async fn console_session(store: &Store, secret: &str) -> ServiceResult<Option<ConsoleMember>> {
    if secret.is_empty() || secret.len() > 100 {
        return Ok(None);
    }
    let hash = secret_hash(secret);
    let at = crate::service::now();
    let tx = store.read().await?;
    let Some(session) = tx.console_session(&hash).await? else {
        return Ok(None);
    };
    if session.ended_at.is_some()
        || session.expires_at <= at
        || session.last_seen_at + SESSION_IDLE <= at
    {
        return Ok(None);
    }
    let Some(workspace) = tx.workspace_by_id(&session.workspace_id).await? else {
        return Ok(None);
    };
    let Some(member) = tx
        .member_by_id(&session.workspace_id, &session.member_id)
        .await?
    else {
        return Ok(None);
    };
    drop(tx);
    if session.last_seen_at + TOUCH_EVERY <= at {
        let tx = store.write().await?;
        tx.touch_console_session(&hash, at).await?;
        tx.commit().await?;
    }
    Ok(Some(ConsoleMember {
        caller: MemberCaller { workspace, member },
        session,
    }))
}
