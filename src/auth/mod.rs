//! Who is calling. The caller types here can only be constructed by this module, after the caller
//! proved who it is: services take them as arguments, so no service runs for an unknown caller.

pub mod jwt_crypto;
pub mod oidc;
pub mod session;
pub mod tokens;

pub use tokens::{AgentToken, TokenRefusal, Tokens};

use crate::domain::*;
use crate::service::{ServiceError, ServiceResult};
use crate::store::{CredentialView, Seen, Store};

/// A human member of a workspace, identified by the operator's CLI (`--as`) or a member token.
#[derive(Debug, Clone)]
pub struct MemberCaller {
    workspace: Workspace,
    member: Member,
}

impl MemberCaller {
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    pub fn actor(&self) -> Actor {
        Actor::Member(self.member.email.clone())
    }
}

/// Resolves `email` to a member of the workspace named by `workspace` (slug or id).
pub async fn member(store: &Store, workspace: &str, email: &str) -> ServiceResult<MemberCaller> {
    let email = Email::parse(email)?;
    let tx = store.read().await?;
    let ws = match tx.workspace_by_slug(workspace).await? {
        Some(ws) => ws,
        None => tx
            .workspace_by_id(workspace)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", workspace))?,
    };
    let member = tx
        .member_by_email(&ws.id, email.as_str())
        .await?
        .ok_or_else(|| {
            ServiceError::Unauthenticated(format!(
                "{email} is not a member of workspace {}",
                ws.slug
            ))
        })?;
    Ok(MemberCaller {
        workspace: ws,
        member,
    })
}

/// An approved agent, identified by its API key or an access token minted from it.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    /// Shared with the store's snapshot: a request costs no copy of the agent.
    agent: std::sync::Arc<Agent>,
    credential_id: String,
    /// The access token's scope; `None` for an API key (the full grant).
    scope: Option<PermissionSet>,
    /// The workspace's rate limit for this agent, read with the credential.
    rate: RateLimit,
    /// The store generations this request authenticated at; the work snapshot is served as of them.
    seen: Seen,
}

/// Requests per minute and burst, from the workspace settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl AgentCaller {
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    pub fn workspace_id(&self) -> &str {
        &self.agent.workspace_id
    }

    pub fn agent_id(&self) -> &str {
        &self.agent.id
    }

    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }

    /// Whether the caller may use `p` now: granted, and within the token's scope if any.
    pub fn has(&self, p: Permission) -> bool {
        self.agent.granted_permissions.contains(p)
            && self.scope.as_ref().is_none_or(|s| s.contains(p))
    }

    /// Whether `p` is granted to the agent, whatever this token's scope.
    pub fn is_granted(&self, p: Permission) -> bool {
        self.agent.granted_permissions.contains(p)
    }

    /// True when a token's scope leaves out something the agent is granted.
    pub fn is_narrowed(&self) -> bool {
        self.scope
            .as_ref()
            .is_some_and(|s| !self.agent.granted_permissions.is_subset(s))
    }

    /// What the caller may use: the grant, narrowed by the token's scope.
    pub fn permissions(&self) -> PermissionSet {
        match &self.scope {
            Some(s) => self.agent.granted_permissions.intersection(s),
            None => self.agent.granted_permissions.clone(),
        }
    }

    pub fn rate_limit(&self) -> RateLimit {
        self.rate
    }

    pub fn actor(&self) -> Actor {
        Actor::Agent(self.agent.id.clone())
    }

    /// The store generations read when this caller was authenticated.
    pub fn seen(&self) -> Seen {
        self.seen
    }
}

/// Why an agent's credential was refused. The messages never echo the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    #[error("malformed API key")]
    Malformed,
    #[error("unknown API key")]
    UnknownKey,
    #[error("API key revoked")]
    KeyRevoked,
    #[error("API key expired")]
    KeyExpired,
    #[error("agent access is {0}")]
    NotApproved(AgentStatus),
    #[error("agents are disabled in this workspace")]
    WorkspaceDisabled,
    /// The grant ran out; a human can extend it.
    #[error("agent access expired")]
    AccessExpired,
    /// An access token that failed verification (signature, claims, key).
    #[error("invalid access token: {0}")]
    InvalidToken(String),
}

impl AgentAuthError {
    /// A fixed word for the reason, for metrics labels (never the token or key).
    pub fn reason(&self) -> &'static str {
        match self {
            AgentAuthError::Malformed => "malformed",
            AgentAuthError::UnknownKey => "unknown_key",
            AgentAuthError::KeyRevoked => "key_revoked",
            AgentAuthError::KeyExpired => "key_expired",
            AgentAuthError::NotApproved(_) => "not_approved",
            AgentAuthError::WorkspaceDisabled => "workspace_disabled",
            AgentAuthError::AccessExpired => "access_expired",
            AgentAuthError::InvalidToken(_) => "invalid_token",
        }
    }
}

/// The outcome of checking a key: the caller, or a refusal with enough context to audit it.
#[derive(Debug, Clone)]
pub struct AgentAuthRefusal {
    pub error: AgentAuthError,
    /// Workspace and agent the key belonged to, when it matched a stored key.
    pub owner: Option<(String, String)>,
}

/// Authenticates an agent from its raw API key: shape and checksum first (no lookup for garbage),
/// then the stored hash, then the key's and the agent's state. The store serves the key from its
/// snapshot only after one statement confirms no authorization change committed since (see
/// `store::auth_cache`), so a revocation or permission change applies to the very next request on
/// every replica and from every process.
pub async fn agent(
    store: &Store,
    raw_key: &str,
) -> ServiceResult<Result<AgentCaller, AgentAuthRefusal>> {
    agent_presented(store, &PresentedKey::new(raw_key)).await
}

/// An API key as its client presented it, reduced to what authenticating it takes: its hash,
/// or that it is malformed. The secret itself is not kept. A stdio session's key is fixed for
/// the life of the process, so it is parsed and hashed once there, not on every call (about 3,200
/// instructions of a lone stdio read's 126,000); what the key may do is still looked up on
/// every call.
#[derive(Debug, Clone)]
pub struct PresentedKey(Option<KeyHash>);

impl PresentedKey {
    pub fn new(raw_key: &str) -> Self {
        Self(ApiKey::parse(raw_key).ok().map(|key| key.hash()))
    }
}

/// [`agent`] for a key already parsed and hashed.
pub async fn agent_presented(
    store: &Store,
    key: &PresentedKey,
) -> ServiceResult<Result<AgentCaller, AgentAuthRefusal>> {
    let refuse = |error, owner| Ok(Err(AgentAuthRefusal { error, owner }));
    let Some(hash) = &key.0 else {
        return refuse(AgentAuthError::Malformed, None);
    };
    let (Some(view), seen) = store.credential_view(hash).await? else {
        return refuse(AgentAuthError::UnknownKey, None);
    };
    if !view.key_hash.matches(hash) {
        return refuse(AgentAuthError::UnknownKey, None);
    }
    Ok(check_credential(&view, seen, None))
}

/// An agent authenticated from the store's snapshot without reading the generations (see
/// `Store::unconfirmed_credential_view`). Not an [`AgentCaller`]: services take
/// only confirmed callers, but for `Service::log_agent_note_checked`, which takes this. Its
/// one use is a decision whose entries commit only if the generations are still those it was
/// made on (`AuditWriter::record_checked` or `append_checked` with [`Unconfirmed::seen`]);
/// anything else authenticates the credential again.
#[derive(Debug, Clone)]
pub struct Unconfirmed {
    caller: AgentCaller,
}

impl Unconfirmed {
    /// The caller as the snapshot has it. Only for a decision audited with
    /// `AuditWriter::record_checked` on [`Unconfirmed::seen`], which makes it current.
    pub fn caller(&self) -> &AgentCaller {
        &self.caller
    }

    /// The generations the snapshot was read at.
    pub fn seen(&self) -> Seen {
        self.caller.seen
    }

    /// The caller confirmed by one read of the generations, for a request that is not decided
    /// unconfirmed: `None` when the authorization generation moved since the snapshot was
    /// read, and the credential must be authenticated again. While it has not moved, the
    /// snapshot's entry is what authenticating again would read, and the key was checked
    /// against it when it was taken; so this is [`agent`] (or `Tokens::agent`) without hashing
    /// and looking up the credential a second time.
    pub async fn confirm(&self, store: &Store) -> ServiceResult<Option<AgentCaller>> {
        let seen = store.read_and_note_generations().await?;
        Ok((seen.auth == self.caller.seen.auth).then(|| AgentCaller {
            seen,
            ..self.caller.clone()
        }))
    }
}

/// [`agent`] from the store's snapshot alone, unconfirmed: `None` when the snapshot cannot
/// say (see `Store::unconfirmed_credential_view`) or when it refuses the key, which then goes
/// through [`agent`] to be refused on current data and audited.
pub fn agent_unconfirmed(store: &Store, raw_key: &str) -> Option<Unconfirmed> {
    agent_unconfirmed_presented(store, &PresentedKey::new(raw_key))
}

/// [`agent_unconfirmed`] for a key already parsed and hashed.
pub fn agent_unconfirmed_presented(store: &Store, key: &PresentedKey) -> Option<Unconfirmed> {
    let hash = key.0.as_ref()?;
    let (view, seen) = store.unconfirmed_credential_view(hash)?;
    if !view.key_hash.matches(hash) {
        return None;
    }
    let caller = check_credential(&view, seen, None).ok()?;
    Some(Unconfirmed { caller })
}

/// The checks every request repeats after the credential is identified: not revoked or expired
/// (against the clock, now), agent approved, workspace enabled. `scope` narrows the grant
/// (access tokens).
pub(crate) fn check_credential(
    view: &CredentialView,
    seen: Seen,
    scope: Option<PermissionSet>,
) -> Result<AgentCaller, AgentAuthRefusal> {
    let cred = &view.credential;
    // The owner is named in a refusal only: a call that passes copies nothing for it.
    let refuse = |error| {
        Err(AgentAuthRefusal {
            error,
            owner: Some((cred.workspace_id.clone(), cred.agent_id.clone())),
        })
    };
    if cred.revoked_at.is_some() {
        return refuse(AgentAuthError::KeyRevoked);
    }
    if cred.expires_at.is_some_and(|exp| exp <= chrono::Utc::now()) {
        return refuse(AgentAuthError::KeyExpired);
    }
    let Some(agent) = &view.agent else {
        return Err(AgentAuthRefusal {
            error: AgentAuthError::UnknownKey,
            owner: None,
        });
    };
    if agent.status != AgentStatus::Approved {
        return refuse(AgentAuthError::NotApproved(agent.status));
    }
    // Time-based, so it holds at the instant of expiry on every replica, before anyone records it;
    // a cached agent can never outlive its grant.
    let at = chrono::Utc::now();
    if agent.access_expired(at) {
        return refuse(AgentAuthError::AccessExpired);
    }
    // Temporary permissions that are still running count as granted for this request.
    let agent = match agent.permissions_at(at) {
        Some(granted) => {
            let mut now = Agent::clone(agent);
            now.granted_permissions = granted;
            std::sync::Arc::new(now)
        }
        None => agent.clone(),
    };
    // A key whose workspace is gone cannot be used; refuse it like a disabled workspace.
    let Some(ws) = view.workspace.as_ref().filter(|ws| ws.settings.enabled) else {
        return refuse(AgentAuthError::WorkspaceDisabled);
    };
    Ok(AgentCaller {
        agent,
        credential_id: cred.id.clone(),
        scope,
        seen,
        rate: RateLimit {
            per_minute: ws.settings.rate_limit_per_minute,
            burst: ws.settings.rate_limit_burst,
        },
    })
}
