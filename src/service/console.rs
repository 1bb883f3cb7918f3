//! The console's sign-in (issue 10): one-time login links, server-side sessions, and the audit
//! entries of signing in, failing to, and signing out. Secrets are random, shown once, and
//! stored only as blake3 hashes; the transport (cookie, URL fragment) is `console`'s business.

use super::*;
use crate::store::{AgentOrder, ConsoleSessionRow, LoginLinkRow};
use rand::Rng;

/// A session ends after this long without a request.
pub const SESSION_IDLE: chrono::Duration = chrono::Duration::hours(2);
/// A session ends this long after sign-in, however busy.
pub const SESSION_ABSOLUTE: chrono::Duration = chrono::Duration::hours(12);
/// A login link lasts this long unless told otherwise.
pub const LOGIN_LINK_TTL_SECS: u64 = 600;
/// The longest a login link may last: one day.
pub const MAX_LOGIN_LINK_TTL_SECS: u64 = 24 * 3600;
/// Prefix of login-link tokens, so a leaked one is recognisable.
const LINK_PREFIX: &str = "pxl_";

/// 32 random bytes, URL-safe, with `prefix`.
fn random_secret(prefix: &str) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a link token or session id. The secrets are 256 random bits, so a fast
/// hash is enough.
pub fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// A new login link's secret; shown once. No `Debug`: it is a credential.
pub struct LoginLink {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a login link did not sign anyone in. `workspace` is known when the link was (so the
/// refusal is audited there).
#[derive(Debug)]
pub struct LinkRefusal {
    pub workspace: Option<Workspace>,
    pub reason: &'static str,
}

/// A new session's secret (the cookie value); no `Debug`.
pub struct SessionSecret(pub String);

impl Service {
    /// A one-time link that signs `caller` in to the console, valid for `ttl_secs`. The operator
    /// makes it with the CLI (`member login-link`), which already trusts `--as`.
    pub async fn create_login_link(
        &self,
        caller: &MemberCaller,
        ttl_secs: u64,
    ) -> ServiceResult<LoginLink> {
        if ttl_secs == 0 || ttl_secs > MAX_LOGIN_LINK_TTL_SECS {
            return Err(ServiceError::Invalid(format!(
                "a login link lasts 1 to {MAX_LOGIN_LINK_TTL_SECS} seconds"
            )));
        }
        let token = random_secret(LINK_PREFIX);
        let at = now();
        let expires_at = at + chrono::Duration::seconds(ttl_secs as i64);
        let ws = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.insert_login_link(&LoginLinkRow {
            token_hash: secret_hash(&token),
            workspace_id: ws.clone(),
            member_id: caller.member().id.clone(),
            email: caller.member().email.clone(),
            created_at: at,
            expires_at,
            used_at: None,
        })
        .await?;
        // Old links are of no use to anyone; forget them while we are here.
        tx.prune_login_links(at - chrono::Duration::days(1)).await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "member.login_link_created")
                .description(&format!(
                    "console login link for {} (valid {ttl_secs} s)",
                    caller.member().email
                ))
                .metadata(json!({ "expiresAt": expires_at }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(LoginLink { token, expires_at })
    }

    /// Spends a login link: the member it names, as they are now, or why not. A link works once,
    /// before it expires, and only while its member still is one.
    pub async fn redeem_login_link(
        &self,
        token: &str,
    ) -> ServiceResult<Result<(Workspace, Member), LinkRefusal>> {
        let refuse = |workspace, reason| Ok(Err(LinkRefusal { workspace, reason }));
        if !token.starts_with(LINK_PREFIX) || token.len() > 100 {
            return refuse(None, "this is not a login link");
        }
        let hash = secret_hash(token);
        let tx = self.store.write().await?;
        let Some(link) = tx.login_link(&hash).await? else {
            return refuse(None, "this login link is not known");
        };
        let ws = tx.workspace_by_id(&link.workspace_id).await?;
        let at = now();
        if link.expires_at <= at {
            return refuse(ws, "this login link has expired");
        }
        if !tx.spend_login_link(&hash, at).await? {
            return refuse(ws, "this login link was already used");
        }
        let member = tx.member_by_id(&link.workspace_id, &link.member_id).await?;
        tx.commit().await?;
        match (ws, member) {
            (Some(ws), Some(m)) => Ok(Ok((ws, m))),
            (ws, _) => refuse(
                ws,
                "the member this link was made for is no longer a member",
            ),
        }
    }

    /// Opens a console session for `member` (signed in by `method`: `link` or `oidc`) and audits
    /// `member.signed_in`. Returns the session secret, for the cookie only.
    pub async fn start_console_session(
        &self,
        ws: &Workspace,
        member: &Member,
        method: &str,
    ) -> ServiceResult<SessionSecret> {
        let secret = random_secret("");
        let at = now();
        let tx = self.store.write().await?;
        tx.insert_console_session(&ConsoleSessionRow {
            id_hash: secret_hash(&secret),
            workspace_id: ws.id.clone(),
            member_id: member.id.clone(),
            method: method.to_owned(),
            created_at: at,
            last_seen_at: at,
            expires_at: at + SESSION_ABSOLUTE,
            ended_at: None,
        })
        .await?;
        tx.prune_console_sessions(at - chrono::Duration::days(1))
            .await?;
        tx.insert_activity(
            &Activity::new(
                &ws.id,
                &Actor::Member(member.email.clone()),
                "member.signed_in",
            )
            .outcome("allowed")
            .description(&format!(
                "{} signed in to the console ({method})",
                member.email
            ))
            .metadata(json!({ "method": method }))
            .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(SessionSecret(secret))
    }

    /// Audits a refused sign-in (`member.sign_in_failed`) in the workspace it was for.
    pub async fn refuse_sign_in(
        &self,
        ws: &Workspace,
        method: Option<&str>,
        reason: &str,
    ) -> ServiceResult<()> {
        let tx = self.store.write().await?;
        tx.insert_activity(
            &Activity::new(&ws.id, &Actor::System, "member.sign_in_failed")
                .outcome("denied")
                .description(&format!("console sign-in refused: {reason}"))
                .metadata(json!({ "method": method, "reason": reason }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the caller's console session (`member.signed_out`).
    pub async fn end_console_session(
        &self,
        caller: &MemberCaller,
        session_hash: &str,
    ) -> ServiceResult<()> {
        let tx = self.store.write().await?;
        if tx.end_console_session(session_hash, now()).await? {
            tx.insert_activity(
                &Activity::new(&caller.workspace().id, &caller.actor(), "member.signed_out")
                    .description(&format!(
                        "{} signed out of the console",
                        caller.member().email
                    ))
                    .build(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many access requests wait for a decision (the console's badge): a count, not a list.
    pub async fn count_pending_requests(&self, caller: &MemberCaller) -> ServiceResult<u64> {
        self.require(caller, Role::Read, "listing agents").await?;
        Ok(self
            .store
            .read()
            .await?
            .count_agents(&caller.workspace().id, &[AgentStatus::Pending])
            .await?)
    }

    /// One page of agents (with `status`, in `order`) and how many there are in all.
    pub async fn agents_page(
        &self,
        caller: &MemberCaller,
        status: Option<AgentStatus>,
        order: AgentOrder,
        offset: u64,
        limit: u64,
    ) -> ServiceResult<(Vec<Agent>, u64)> {
        self.require(caller, Role::Read, "listing agents").await?;
        let ws = &caller.workspace().id;
        let tx = self.store.read().await?;
        let statuses = match status {
            Some(s) => vec![s],
            None => AgentStatus::ALL.to_vec(),
        };
        let total = tx.count_agents(ws, &statuses).await?;
        let page = tx.agents_page(ws, status, order, offset, limit).await?;
        Ok((page, total))
    }

    /// The most recently auto-approved agents (the inbox shows them as such).
    pub async fn recent_auto_approved(
        &self,
        caller: &MemberCaller,
        limit: u64,
    ) -> ServiceResult<Vec<Agent>> {
        self.require(caller, Role::Read, "listing agents").await?;
        Ok(self
            .store
            .read()
            .await?
            .recent_auto_approved(&caller.workspace().id, limit)
            .await?)
    }

    /// Audits a console request refused before any service ran (a forged or cross-site form):
    /// `member.denied`, like a refused role check.
    pub async fn refuse_console_request(
        &self,
        caller: &MemberCaller,
        action: &str,
        reason: &str,
    ) -> ServiceResult<()> {
        let tx = self.store.write().await?;
        tx.insert_activity(
            &Activity::new(&caller.workspace().id, &caller.actor(), "member.denied")
                .outcome("denied")
                .description(&format!("console request refused: {reason}"))
                .metadata(json!({ "action": action, "reason": reason }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
