//! Console sign-in with an OpenID Connect provider: the authorization code flow with PKCE (S256)
//! and a nonce, through the `openidconnect` crate (discovery, token exchange, ID token signature
//! and claims), over our own hyper client.
//!
//! [`Oidc::begin`] stores the pending sign-in (state hash, nonce, PKCE verifier, workspace) in
//! the database, so whichever replica gets the callback can finish it; [`Oidc::finish`] takes it
//! once, exchanges the code, verifies the ID token (signature, issuer, audience, nonce, expiry),
//! reads the email from the configured claim (or userinfo), checks `email_verified` and the
//! allowed domains, and finds the member. It returns identities; sessions are the console's.

use crate::config::{ConfigError, OidcConfig};
use crate::domain::{Email, Member, Workspace, constant_time_eq};
use crate::store::{PendingOidcLogin, Store, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AsyncHttpClient, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a started sign-in may take to come back.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long discovery metadata and keys are reused before they are read again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Time allowed for one request to the provider.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a provider's answer we read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Claims beyond the standard ones, kept so `email_claim` can name any claim.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    claims: HashMap<String, Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = openidconnect::Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in with the provider did not give a member. The messages are for the person
/// signing in (shown on the refusal page) and never contain a token, code or secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("there is no workspace {0:?}")]
    UnknownWorkspace(String),
    #[error("this sign-in is not valid or was already used: start again from the sign-in page")]
    BadState,
    #[error("this sign-in took longer than 10 minutes: start again from the sign-in page")]
    Expired,
    #[error("this sign-in was started in another browser: start again from the sign-in page")]
    OtherBrowser,
    #[error("the identity provider refused the sign-in: {0}")]
    Denied(String),
    #[error("the identity provider could not be used: {0}")]
    Provider(String),
    #[error("the identity provider's ID token is not valid: {0}")]
    InvalidToken(String),
    #[error(
        "the identity provider did not give an email address (no {0:?} claim): ask your administrator"
    )]
    NoEmail(String),
    #[error("the identity provider says {0} is not verified")]
    EmailNotVerified(String),
    #[error("{0} is not in a domain allowed to sign in here")]
    DomainNotAllowed(String),
    #[error("{email} is not a member of workspace {workspace}: ask one of its admins to add you")]
    NotMember { email: String, workspace: String },
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
}

impl OidcError {
    /// A fixed word for the reason, for audit metadata and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::UnknownWorkspace(_) => "unknown_workspace",
            OidcError::BadState => "bad_state",
            OidcError::Expired => "expired",
            OidcError::OtherBrowser => "other_browser",
            OidcError::Denied(_) => "denied_by_provider",
            OidcError::Provider(_) => "provider_unavailable",
            OidcError::InvalidToken(_) => "invalid_id_token",
            OidcError::NoEmail(_) => "no_email",
            OidcError::EmailNotVerified(_) => "email_not_verified",
            OidcError::DomainNotAllowed(_) => "domain_not_allowed",
            OidcError::NotMember { .. } => "not_member",
            OidcError::Store(_) => "internal",
        }
    }

    /// The HTTP status of the refusal page.
    pub fn status(&self) -> u16 {
        match self {
            OidcError::UnknownWorkspace(_) => 404,
            OidcError::Provider(_) => 502,
            OidcError::Store(_) => 500,
            _ => 403,
        }
    }
}

/// A refused sign-in, with what was known when it was refused (for the audit entry).
#[derive(Debug)]
pub struct OidcRefusal {
    pub error: OidcError,
    /// The workspace the sign-in was for, once the state named it.
    pub workspace: Option<Workspace>,
    /// The email the provider vouched for, once known.
    pub email: Option<String>,
}

impl From<OidcError> for OidcRefusal {
    fn from(error: OidcError) -> Self {
        Self {
            error,
            workspace: None,
            email: None,
        }
    }
}

impl From<StoreError> for OidcRefusal {
    fn from(e: StoreError) -> Self {
        OidcError::Store(e).into()
    }
}

/// A started sign-in: where to send the browser, and the key to keep in its cookie (the
/// callback must bring it back).
pub struct OidcStart {
    pub url: String,
    pub browser_key: String,
}

impl std::fmt::Debug for OidcStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcStart").finish_non_exhaustive()
    }
}

/// A finished sign-in: the member the provider vouched for.
#[derive(Debug, Clone)]
pub struct OidcSignIn {
    pub workspace: Workspace,
    pub member: Member,
}

/// The relying party: settings, an HTTP client, and the provider's metadata once read.
pub struct Oidc {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    email_claim: String,
    domains: Vec<String>,
    scopes: Vec<String>,
    display_name: String,
    http: Http,
    metadata: tokio::sync::Mutex<Option<(Arc<CoreProviderMetadata>, Instant)>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .field("redirect", &self.redirect.as_str())
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// The relying party for `[oidc]`, or `None` when it is off. `redirect` is the callback's
    /// public URL (`{origin}/login/oidc/callback`). Nothing is fetched yet: discovery happens on
    /// the first sign-in, so a provider that is down does not stop the server.
    pub fn from_config(config: &OidcConfig, redirect: &str) -> Result<Option<Oidc>, ConfigError> {
        let Some(issuer) = &config.issuer else {
            return Ok(None);
        };
        let bad =
            |what: &str, e: &dyn std::fmt::Display| ConfigError::new(format!("[oidc] {what}: {e}"));
        let issuer = IssuerUrl::new(issuer.trim_end_matches('/').to_owned())
            .map_err(|e| bad("issuer", &e))?;
        let redirect =
            RedirectUrl::new(redirect.to_owned()).map_err(|e| bad("redirect URL", &e))?;
        Ok(Some(Oidc {
            issuer,
            client_id: ClientId::new(config.client_id.clone().unwrap_or_default()),
            client_secret: config.client_secret()?.map(ClientSecret::new),
            redirect,
            email_claim: config.email_claim.trim().to_owned(),
            domains: config.domains(),
            scopes: config.scopes.clone(),
            display_name: config.display_name.clone(),
            http: Http::new().map_err(|e| bad("TLS roots", &e))?,
            metadata: tokio::sync::Mutex::new(None),
        }))
    }

    /// The provider's name for the sign-in button.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// Starts a sign-in to workspace `slug`: records it and returns the provider's authorization
    /// URL to send the browser to, with the key the browser must keep.
    pub async fn begin(&self, store: &Store, slug: &str) -> Result<OidcStart, OidcError> {
        let workspace = {
            let tx = store.read().await?;
            tx.workspace_by_slug(slug)
                .await?
                .ok_or_else(|| OidcError::UnknownWorkspace(slug.to_owned()))?
        };
        // Before the write transaction: no lock is held while the provider answers.
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let browser_key = CsrfToken::new_random().secret().clone();
        let now = crate::service::now();
        let pending = PendingOidcLogin {
            state_hash: state_hash(state.secret()),
            workspace_id: workspace.id.clone(),
            browser_hash: state_hash(&browser_key),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            created_at: now,
            expires_at: now + chrono::Duration::from_std(LOGIN_TTL).unwrap_or_default(),
        };
        let tx = store.write().await?;
        tx.prune_oidc_logins(now).await?;
        tx.insert_oidc_login(&pending).await?;
        tx.commit().await?;
        Ok(OidcStart {
            url: url.to_string(),
            browser_key,
        })
    }

    /// Takes the pending sign-in `state` names (once), for a callback that carries the
    /// provider's error instead of a code: the workspace, so the refusal can be audited there.
    pub async fn abandon(&self, store: &Store, state: &str) -> Option<Workspace> {
        let taken = self.take(store, state).await.ok()?;
        let tx = store.read().await.ok()?;
        tx.workspace_by_id(&taken.workspace_id).await.ok().flatten()
    }

    /// Finishes a sign-in from the provider's callback, in the browser holding `browser_key`:
    /// the member the provider vouched for, or why not.
    pub async fn finish(
        &self,
        store: &Store,
        code: &str,
        state: &str,
        browser_key: Option<&str>,
    ) -> Result<OidcSignIn, OidcRefusal> {
        let pending = self.take(store, state).await?;
        let workspace = {
            let tx = store.read().await?;
            tx.workspace_by_id(&pending.workspace_id)
                .await?
                .ok_or(OidcError::BadState)?
        };
        let refuse = |error, workspace, email| OidcRefusal {
            error,
            workspace: Some(workspace),
            email,
        };
        // A callback URL opened elsewhere (sent to someone, say) must not sign that person in
        // as whoever started the sign-in.
        if browser_key.is_none_or(|k| !constant_time_eq(&state_hash(k), &pending.browser_hash)) {
            return Err(refuse(OidcError::OtherBrowser, workspace, None));
        }
        if pending.expires_at < crate::service::now() {
            return Err(refuse(OidcError::Expired, workspace, None));
        }
        let email = match self.verified_email(&pending, code).await {
            Ok(email) => email,
            Err((error, email)) => return Err(refuse(error, workspace, email)),
        };
        let member = match store.read().await {
            Ok(tx) => tx.member_by_email(&workspace.id, &email).await,
            Err(e) => Err(e),
        };
        match member {
            Ok(Some(member)) => Ok(OidcSignIn { workspace, member }),
            Ok(None) => {
                let error = OidcError::NotMember {
                    email: email.clone(),
                    workspace: workspace.slug.clone(),
                };
                Err(refuse(error, workspace, Some(email)))
            }
            Err(e) => Err(refuse(e.into(), workspace, Some(email))),
        }
    }

    /// Deletes and returns the pending sign-in for `state`; unknown or used → `BadState`.
    async fn take(&self, store: &Store, state: &str) -> Result<PendingOidcLogin, OidcError> {
        if state.is_empty() || state.len() > 512 {
            return Err(OidcError::BadState);
        }
        let tx = store.write().await?;
        let taken = tx.take_oidc_login(&state_hash(state)).await?;
        tx.commit().await?;
        taken.ok_or(OidcError::BadState)
    }

    /// Exchanges the code and checks what the provider says about the person: the email (lower
    /// case) it vouches for. A refusal after the email is known carries it.
    async fn verified_email(
        &self,
        pending: &PendingOidcLogin,
        code: &str,
    ) -> Result<String, (OidcError, Option<String>)> {
        let client = self.client(false).await.map_err(|e| (e, None))?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| (OidcError::Provider(e.to_string()), None))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| (OidcError::Denied(token_error(&e)), None))?;
        let id_token = tokens.id_token().ok_or((
            OidcError::InvalidToken("the token response has no ID token".into()),
            None,
        ))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let first = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .cloned();
        let (claims, client) = match first {
            Ok(claims) => (claims, client),
            // Keys rotate: one more look at the provider's keys before refusing.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let client = self.client(true).await.map_err(|e| (e, None))?;
                let claims = id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .cloned()
                    .map_err(|e| (OidcError::InvalidToken(e.to_string()), None))?;
                (claims, client)
            }
            Err(e) => return Err((OidcError::InvalidToken(e.to_string()), None)),
        };
        // The access token must be the one the ID token was issued with.
        if let Some(expected) = claims.access_token_hash() {
            let verifier = client.id_token_verifier();
            let actual = id_token
                .signing_alg()
                .map_err(|e| e.to_string())
                .and_then(|alg| {
                    let key = id_token.signing_key(&verifier).map_err(|e| e.to_string())?;
                    AccessTokenHash::from_token(tokens.access_token(), alg, key)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| (OidcError::InvalidToken(e), None))?;
            if actual != *expected {
                return Err((
                    OidcError::InvalidToken("at_hash does not match the access token".into()),
                    None,
                ));
            }
        }
        let mut found = serde_json::to_value(&claims).unwrap_or(Value::Null);
        if found.get(&self.email_claim).is_none() {
            // Many providers put profile claims in userinfo only.
            if let Some(info) = self
                .user_info(&client, &tokens, claims.subject().clone())
                .await
                .map_err(|e| (e, None))?
            {
                found = info;
            }
        }
        let email = match found.get(&self.email_claim) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_lowercase(),
            _ => return Err((OidcError::NoEmail(self.email_claim.clone()), None)),
        };
        let email = match Email::parse(&email) {
            Ok(e) => e.as_str().to_owned(),
            Err(_) => return Err((OidcError::NoEmail(self.email_claim.clone()), None)),
        };
        let refuse = |e: OidcError| Err((e, Some(email.clone())));
        // A provider that says the address is unverified is believed; one that says nothing
        // vouches for it by giving it.
        if matches!(found.get("email_verified"), Some(Value::Bool(false)))
            || matches!(found.get("email_verified"), Some(Value::String(s)) if s == "false")
        {
            return refuse(OidcError::EmailNotVerified(email.clone()));
        }
        if !self.domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !self.domains.iter().any(|d| d == domain) {
                return refuse(OidcError::DomainNotAllowed(email.clone()));
            }
        }
        Ok(email)
    }

    /// The userinfo claims as JSON, when the provider has the endpoint; the subject must be the
    /// ID token's.
    async fn user_info(
        &self,
        client: &OidcClient,
        tokens: &Tokens,
        subject: openidconnect::SubjectIdentifier,
    ) -> Result<Option<Value>, OidcError> {
        let Ok(request) = client.user_info(tokens.access_token().clone(), Some(subject)) else {
            return Ok(None);
        };
        let info: UserInfoClaims<ExtraClaims, CoreGenderClaim> = request
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("userinfo: {e}")))?;
        Ok(serde_json::to_value(&info).ok())
    }

    /// A client for the provider's current metadata; `refresh` reads it again (new keys).
    async fn client(&self, refresh: bool) -> Result<OidcClient, OidcError> {
        let metadata = {
            let mut cached = self.metadata.lock().await;
            match &*cached {
                Some((m, at)) if !refresh && at.elapsed() < METADATA_TTL => m.clone(),
                _ => {
                    let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                        .await
                        .map_err(|e| {
                            OidcError::Provider(format!(
                                "discovery at {} failed: {}",
                                self.issuer.as_str(),
                                error_chain(&e)
                            ))
                        })?;
                    let m = Arc::new(m);
                    *cached = Some((m.clone(), Instant::now()));
                    m
                }
            }
        };
        Ok(OidcClient::from_provider_metadata(
            (*metadata).clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        )
        .set_redirect_uri(self.redirect.clone()))
    }
}

/// The hash stored for a `state`: the state itself is only ever in the browser's URL.
fn state_hash(state: &str) -> String {
    blake3::hash(state.as_bytes()).to_hex().to_string()
}

/// A token endpoint failure in one line: the provider's error code and description, if any.
fn token_error<E: std::error::Error + 'static>(
    e: &openidconnect::RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
) -> String {
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => match r.error_description() {
            Some(d) => format!("{} ({d})", r.error()),
            None => r.error().to_string(),
        },
        other => error_chain(other),
    }
}

/// An error and its causes, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Requests to the provider: our hyper client (rustls for https), with a timeout and a size
/// limit, never following redirects (the library's advice against SSRF).
#[derive(Clone)]
struct Http(HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>);

/// A failed request to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Http {
    fn new() -> std::io::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self(
            HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(https),
        ))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
            let exchange = async {
                let response = self
                    .0
                    .request(request)
                    .await
                    .map_err(|e| HttpError(error_chain(&e)))?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| HttpError(format!("reading the answer: {e}")))?
                    .to_bytes();
                Ok(http::Response::from_parts(parts, body.to_vec()))
            };
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| HttpError(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        })
    }
}
