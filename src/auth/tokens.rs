//! Short-lived tokens: member tokens for the admin API (`typ: member+jwt`) and agent access tokens
//! for `/mcp` (`typ: at+jwt`, RFC 9068), both HS256 — this server is issuer and resource server,
//! so nothing else needs a public key, and the algorithm is pinned so a token cannot pick its own.
//!
//! Keys live in the store (shared by replicas) unless `[auth] signing_key` is configured. They are
//! cached in memory: the hot path does no extra query. An unknown `kid` (another replica rotated)
//! reloads them, at most once per second, and minting refreshes them every half minute.
//!
//! A valid token only identifies a credential: every request re-checks it against the store
//! exactly as for an API key (the snapshot, confirmed current by one statement), so a token never
//! outlives a revocation, and its scope only ever narrows the grant.

use super::{AgentAuthError, AgentAuthRefusal, AgentCaller, MemberCaller, check_credential};
use crate::config::{AuthConfig, MAX_TOKEN_TTL};
use crate::domain::PermissionSet;
use crate::service::{ServiceError, ServiceResult};
use crate::store::{CredentialView, SigningKeyRow, Store, StoreError};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// `typ` of a member token.
pub const MEMBER_TYP: &str = "member+jwt";
/// `typ` of an agent access token (RFC 9068).
pub const AGENT_TYP: &str = "at+jwt";
/// `aud` of a member token: the admin API, whatever URL it is served at.
pub const MEMBER_AUDIENCE: &str = "parallax-mcp:admin";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// Longer bearer strings are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// An unknown `kid` reloads the keys at most this often.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Minting re-reads the keys this often, so a rotation by another process is picked up.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How many times start-up or rotation retries after losing a race to another replica.
const RACE_RETRIES: usize = 5;
/// Verified tokens remembered at most; the memo is emptied when it is full. Each entry keeps the
/// token, which this server signed (about 600 bytes), so the memo stays under a few megabytes.
const VERIFIED_MAX: usize = 4096;

/// Why a token was refused. The reason never contains the token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct TokenRefusal {
    pub reason: String,
}

fn refusal<T>(reason: impl Into<String>) -> ServiceResult<Result<T, TokenRefusal>> {
    Ok(Err(TokenRefusal {
        reason: reason.into(),
    }))
}

/// A freshly minted agent access token, as `/oauth/token` returns it.
pub struct AgentToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: PermissionSet,
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentToken")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    ws: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// `scope` parsed, once: a token verified before is asked for it on every request.
    #[serde(skip)]
    parsed_scope: OnceLock<Option<PermissionSet>>,
}

impl Claims {
    /// The credential and the scope an agent token's claims name, or why they name none.
    fn credential(&self) -> Result<(&str, PermissionSet), &'static str> {
        let (Some(cid), Some(scope)) = (&self.cid, &self.scope) else {
            return Err("access token without a credential or scope");
        };
        let parsed = self.parsed_scope.get_or_init(|| {
            PermissionSet::parse_all(&scope.split_whitespace().collect::<Vec<_>>()).ok()
        });
        let scope = parsed.clone().ok_or("access token with an unknown scope")?;
        Ok((cid, scope))
    }

    /// Whether `view` is the credential of the workspace and agent these claims name.
    fn names(&self, view: &CredentialView) -> bool {
        view.credential.workspace_id == self.ws && view.credential.agent_id == self.sub
    }
}

struct Key {
    kid: String,
    enc: EncodingKey,
    dec: DecodingKey,
}

impl Key {
    fn new(secret: &str) -> Key {
        // Every sign and verify goes through a key, so the provider is in place before either.
        super::jwt_crypto::install();
        Key {
            kid: kid_for(secret),
            enc: EncodingKey::from_secret(secret.as_bytes()),
            dec: DecodingKey::from_secret(secret.as_bytes()),
        }
    }
}

/// A key id that names a secret without revealing it.
fn kid_for(secret: &str) -> String {
    let digest = blake3::derive_key("parallax-mcp signing key id v1", secret.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

struct KeySet {
    current: Arc<Key>,
    by_kid: HashMap<String, Arc<Key>>,
    loaded: Instant,
}

impl KeySet {
    fn from_keys(keys: Vec<Key>) -> Option<KeySet> {
        let mut keys = keys.into_iter().map(Arc::new);
        let current = keys.next()?;
        let mut by_kid: HashMap<_, _> = keys.map(|k| (k.kid.clone(), k)).collect();
        by_kid.insert(current.kid.clone(), current.clone());
        Some(KeySet {
            current,
            by_kid,
            loaded: Instant::now(),
        })
    }
}

/// Mints and verifies tokens. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    issuer: String,
    ttl: Duration,
    /// Keys come from configuration and never change while running.
    fixed: bool,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last reloaded for an unknown `kid`; also makes reloads single-flight.
    reloaded: tokio::sync::Mutex<Option<Instant>>,
    verified: Verified,
}

/// Tokens that passed verification, found by their signature and then compared whole, with the
/// type and audience they were verified for. Verifying the same token again would give the same
/// claims: what is signed cannot change, and a key id names one secret (it is derived from it).
/// What can change is checked on every use: the clock against `exp` and `nbf`, and whether the
/// key is still one we verify with. A token that fails either is verified afresh, which refuses
/// it with the reason. Refusals are never remembered. Signature checks cost more than the rest of
/// a request's authentication, and hashing a whole token (500 bytes and more) was most of what
/// the memo itself cost, so the map is keyed by the signature's 43 characters instead.
#[derive(Default)]
struct Verified {
    by_signature: std::sync::Mutex<HashMap<Box<str>, VerifiedToken>>,
}

struct VerifiedToken {
    /// The whole token, compared in constant time: a forged payload under a copied signature
    /// finds the entry but does not match it.
    token: Box<str>,
    typ: &'static str,
    aud: Box<str>,
    kid: Arc<str>,
    claims: Arc<Claims>,
}

/// A compact JWS's last segment (the whole string when it has no dot; such a string is never
/// verified, so never found).
fn signature_of(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(_, sig)| sig)
}

impl Verified {
    /// The claims of `token` verified before for `typ` and `aud`, if its key is in `keys` and
    /// `now` is inside its validity (with the leeway, as jsonwebtoken checks it).
    fn get(
        &self,
        token: &str,
        typ: &'static str,
        aud: &str,
        keys: &KeySet,
        now: i64,
    ) -> Option<Arc<Claims>> {
        let map = self.by_signature.lock().unwrap_or_else(|e| e.into_inner());
        let hit = map.get(signature_of(token))?;
        let same = crate::domain::constant_time_eq(&hit.token, token)
            && hit.typ == typ
            && *hit.aud == *aud;
        let leeway = LEEWAY_SECS as i64;
        let current = same
            && hit.claims.exp >= now - leeway
            && hit.claims.nbf <= now + leeway
            && keys.by_kid.contains_key(&*hit.kid);
        current.then(|| hit.claims.clone())
    }

    fn put(&self, token: &str, typ: &'static str, aud: &str, kid: &str, claims: Arc<Claims>) {
        let mut map = self.by_signature.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_MAX {
            map.clear();
        }
        map.insert(
            signature_of(token).into(),
            VerifiedToken {
                token: token.into(),
                typ,
                aud: aud.into(),
                kid: kid.into(),
                claims,
            },
        );
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.inner.issuer)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

/// How long a retired key still verifies: the longest token it may have signed, the leeway, and
/// the time a replica may go on signing with it before it notices the rotation.
fn retired_key_lifetime() -> chrono::Duration {
    chrono::Duration::from_std(MAX_TOKEN_TTL + REFRESH_EVERY).unwrap_or(chrono::Duration::MAX)
        + chrono::Duration::seconds(LEEWAY_SECS as i64)
}

/// A new random signing secret: 256 bits, hex.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn stored_keys(store: &Store) -> ServiceResult<Vec<SigningKeyRow>> {
    let since = Utc::now() - retired_key_lifetime();
    Ok(store.read().await?.signing_keys(since).await?)
}

/// Makes a new current key with the next generation. Losing the race to another process is
/// fine: its key becomes everyone's, and we return that one.
async fn insert_next_key(store: &Store, only_if_none: bool) -> ServiceResult<String> {
    for _ in 0..RACE_RETRIES {
        let tx = store.write().await?;
        // One read inside the write transaction decides both whether a key exists and the next
        // generation: on SQLite the transaction holds the write lock, so a replica that got here
        // first has committed; on PostgreSQL the unique generation makes the loser retry.
        let latest = tx.latest_signing_key().await?;
        if only_if_none && let Some(current) = latest.as_ref().filter(|k| k.retired_at.is_none()) {
            return Ok(current.kid.clone());
        }
        let generation = latest.map_or(0, |k| k.generation) + 1;
        let secret = generate_secret();
        let row = SigningKeyRow {
            kid: kid_for(&secret),
            generation,
            secret,
            created_at: crate::service::now(),
            retired_at: None,
        };
        match tx.insert_signing_key(&row).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        match tx.commit().await {
            Ok(()) => return Ok(row.kid),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Conflict(
        "another process kept changing the signing keys; try again".into(),
    ))
}

impl Tokens {
    /// The configured key, or the stored ones (generating the first on first start).
    pub async fn load(store: Store, config: &AuthConfig) -> ServiceResult<Tokens> {
        let (keys, fixed) = match &config.signing_key {
            Some(secret) => (vec![Key::new(secret)], true),
            None => {
                let mut rows = stored_keys(&store).await?;
                if rows.first().is_none_or(|k| k.retired_at.is_some()) {
                    insert_next_key(&store, true).await?;
                    rows = stored_keys(&store).await?;
                }
                (rows.iter().map(|r| Key::new(&r.secret)).collect(), false)
            }
        };
        let keys = KeySet::from_keys(keys)
            .ok_or_else(|| ServiceError::Conflict("no signing key could be loaded".into()))?;
        Ok(Tokens {
            inner: Arc::new(Inner {
                store,
                issuer: config.issuer.clone(),
                ttl: config.token_ttl(),
                fixed,
                keys: RwLock::new(Arc::new(keys)),
                reloaded: tokio::sync::Mutex::new(None),
                verified: Verified::default(),
            }),
        })
    }

    /// Makes a new current signing key in the store; the previous one keeps verifying the tokens
    /// it signed until they expire. Returns the new key id.
    pub async fn rotate(store: &Store) -> ServiceResult<String> {
        insert_next_key(store, false).await
    }

    /// The lifetime of agent access tokens.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    fn keys(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere mid-swap of an Arc: the value is whole.
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn reload(&self) -> ServiceResult<()> {
        if self.inner.fixed {
            return Ok(());
        }
        let rows = stored_keys(&self.inner.store).await?;
        if let Some(set) = KeySet::from_keys(rows.iter().map(|r| Key::new(&r.secret)).collect()) {
            *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        }
        Ok(())
    }

    /// The current key for signing, refreshed if the cache is old.
    async fn signing_key(&self) -> ServiceResult<Arc<Key>> {
        if !self.inner.fixed
            && self.keys().loaded.elapsed() > REFRESH_EVERY
            && let Err(e) = self.reload().await
        {
            tracing::warn!(error = %e, "could not refresh signing keys; using the cached ones");
        }
        Ok(self.keys().current.clone())
    }

    /// The key named `kid`, reloading the keys (rate-limited) if it is not cached.
    async fn verifying_key(&self, kid: &str) -> ServiceResult<Option<Arc<Key>>> {
        if let Some(k) = self.keys().by_kid.get(kid) {
            return Ok(Some(k.clone()));
        }
        if self.inner.fixed {
            return Ok(None);
        }
        let mut last = self.inner.reloaded.lock().await;
        if last.is_none_or(|at| at.elapsed() >= RELOAD_AT_MOST_EVERY) {
            *last = Some(Instant::now());
            self.reload().await?;
        }
        drop(last);
        Ok(self.keys().by_kid.get(kid).cloned())
    }

    fn sign(&self, key: &Key, typ: &str, claims: &Claims) -> ServiceResult<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.enc)
            .map_err(|e| ServiceError::Invalid(format!("cannot sign a token: {e}")))
    }

    fn claims(&self, aud: &str, sub: &str, ws: &str, ttl: Duration) -> ServiceResult<Claims> {
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(ServiceError::Invalid(format!(
                "token lifetime must be between 1 and {} seconds",
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        let now = Utc::now().timestamp();
        Ok(Claims {
            iss: self.inner.issuer.clone(),
            aud: aud.to_owned(),
            sub: sub.to_owned(),
            ws: ws.to_owned(),
            exp: now + ttl.as_secs() as i64,
            nbf: now,
            iat: now,
            jti: crate::domain::new_id(),
            email: None,
            cid: None,
            scope: None,
            parsed_scope: OnceLock::new(),
        })
    }

    /// A member token for the admin API, valid for `ttl`.
    pub async fn mint_member(&self, caller: &MemberCaller, ttl: Duration) -> ServiceResult<String> {
        let mut claims = self.claims(
            MEMBER_AUDIENCE,
            &caller.member().id,
            &caller.workspace().id,
            ttl,
        )?;
        claims.email = Some(caller.member().email.clone());
        let key = self.signing_key().await?;
        self.sign(&key, MEMBER_TYP, &claims)
    }

    /// Verifies a member token and re-reads the member from the store (removed member → refused).
    pub async fn member(&self, bearer: &str) -> ServiceResult<Result<MemberCaller, TokenRefusal>> {
        let claims = match self.verify(bearer, MEMBER_TYP, MEMBER_AUDIENCE).await? {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let Some(email) = &claims.email else {
            return refusal("member token without an email");
        };
        let view = self.inner.store.member_view(&claims.ws, email).await?;
        let Some(workspace) = view.workspace.clone() else {
            return refusal("the token's workspace no longer exists");
        };
        match &view.member {
            Some(member) if member.id == claims.sub => Ok(Ok(MemberCaller {
                workspace,
                member: member.clone(),
            })),
            _ => refusal("the token's member is no longer in the workspace"),
        }
    }

    /// An access token for `caller` (authenticated by its API key) on `resource`, narrowed to
    /// `scope` (which must be within the caller's permissions; the OAuth layer checks that).
    pub async fn mint_agent(
        &self,
        caller: &AgentCaller,
        scope: PermissionSet,
        resource: &str,
    ) -> ServiceResult<AgentToken> {
        if !scope.is_subset(&caller.permissions()) {
            return Err(ServiceError::Forbidden(
                "the requested scope exceeds the agent's permissions".into(),
            ));
        }
        let mut claims = self.claims(
            resource,
            caller.agent_id(),
            caller.workspace_id(),
            self.inner.ttl,
        )?;
        claims.cid = Some(caller.credential_id().to_owned());
        claims.scope = Some(scope.names().join(" "));
        let key = self.signing_key().await?;
        Ok(AgentToken {
            access_token: self.sign(&key, AGENT_TYP, &claims)?,
            expires_in: self.inner.ttl.as_secs(),
            scope,
        })
    }

    /// Verifies an agent access token for `resource`, then re-checks its credential, agent and
    /// workspace in the store like an API key. The caller's permissions are the current grant
    /// narrowed by the token's scope.
    pub async fn agent(
        &self,
        bearer: &str,
        resource: &str,
    ) -> ServiceResult<Result<AgentCaller, AgentAuthRefusal>> {
        let refuse = |reason: String| {
            Ok(Err(AgentAuthRefusal {
                error: AgentAuthError::InvalidToken(reason),
                owner: None,
            }))
        };
        let claims = match self.verify(bearer, AGENT_TYP, resource).await? {
            Ok(c) => c,
            Err(r) => return refuse(r.reason),
        };
        let (cid, scope) = match claims.credential() {
            Ok(named) => named,
            Err(reason) => return refuse(reason.into()),
        };
        let (view, seen) = self.inner.store.credential_view_by_id(cid).await?;
        let Some(view) = view.filter(|v| claims.names(v)) else {
            return Ok(Err(AgentAuthRefusal {
                error: AgentAuthError::UnknownKey,
                owner: None,
            }));
        };
        Ok(check_credential(&view, seen, Some(scope)))
    }

    /// [`Tokens::agent`] from what is in memory alone, unconfirmed (see
    /// [`super::agent_unconfirmed`]): a token verified before (its expiry and key checked now),
    /// whose credential the store's snapshot holds. `None` when memory cannot say, when it
    /// refuses the token, or when the token's scope is narrower than the grant (such a caller
    /// is checked against the scope before anything else, which an unconfirmed one skips).
    pub fn agent_unconfirmed(&self, bearer: &str, resource: &str) -> Option<super::Unconfirmed> {
        if bearer.len() > MAX_TOKEN_LEN {
            return None;
        }
        let claims = self.inner.verified.get(
            bearer,
            AGENT_TYP,
            resource,
            &self.keys(),
            Utc::now().timestamp(),
        )?;
        let (cid, scope) = claims.credential().ok()?;
        let (view, seen) = self.inner.store.unconfirmed_credential_view_by_id(cid)?;
        if !claims.names(&view) {
            return None;
        }
        let caller = check_credential(&view, seen, Some(scope)).ok()?;
        (!caller.is_narrowed()).then_some(super::Unconfirmed { caller })
    }

    /// Signature, algorithm, type, key and claims, or what an earlier verification of the same
    /// token found (see [`Verified`]). Never panics on any input.
    async fn verify(
        &self,
        token: &str,
        typ: &'static str,
        aud: &str,
    ) -> ServiceResult<Result<Arc<Claims>, TokenRefusal>> {
        if token.len() > MAX_TOKEN_LEN {
            return refusal("token too long");
        }
        let verified = &self.inner.verified;
        let now = Utc::now().timestamp();
        if let Some(claims) = verified.get(token, typ, aud, &self.keys(), now) {
            return Ok(Ok(claims));
        }
        let (kid, claims) = match self.verify_signed(token, typ, aud).await? {
            Ok(signed) => signed,
            Err(r) => return Ok(Err(r)),
        };
        let claims = Arc::new(claims);
        verified.put(token, typ, aud, &kid, claims.clone());
        Ok(Ok(claims))
    }

    /// The full check: the signature under the key the token names, and every claim. Returns
    /// the key id with the claims.
    async fn verify_signed(
        &self,
        token: &str,
        typ: &str,
        aud: &str,
    ) -> ServiceResult<Result<(String, Claims), TokenRefusal>> {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return refusal("malformed token");
        };
        if header.alg != Algorithm::HS256 {
            return refusal("token algorithm not accepted");
        }
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(typ)
                || t.strip_prefix("application/")
                    .is_some_and(|t| t.eq_ignore_ascii_case(typ))
        });
        if !typ_ok {
            return refusal("wrong token type");
        }
        let Some(kid) = header.kid else {
            return refusal("token without a key id");
        };
        let Some(key) = self.verifying_key(&kid).await? else {
            return refusal("unknown signing key");
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_audience(&[aud]);
        v.set_issuer(&[&self.inner.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        match jsonwebtoken::decode::<Claims>(token, &key.dec, &v) {
            Ok(data) => Ok(Ok((kid, data.claims))),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                refusal(match e.kind() {
                    K::InvalidSignature => "bad token signature",
                    K::ExpiredSignature => "token expired",
                    K::ImmatureSignature => "token not valid yet",
                    K::InvalidAudience => "token for another audience",
                    K::InvalidIssuer => "token from another issuer",
                    K::InvalidAlgorithm => "token algorithm not accepted",
                    K::MissingRequiredClaim(_) => "token missing a required claim",
                    _ => "malformed token claims",
                })
            }
        }
    }
}
