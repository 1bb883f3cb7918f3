//! Short-lived tokens, OAuth discovery and rate limits, attacked through the real server: every
//! forged, stale or misdirected token is refused with the exact status and `error=` value, and
//! leaves nothing behind but audit entries.

use crate::support::server::*;
use crate::support::{all_activity, snapshot};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parallax_mcp::auth::Tokens;
use parallax_mcp::config::AuthConfig;
use parallax_mcp::domain::{Permission, PermissionSet};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use std::time::Duration;

// ---- member tokens ----

#[tokio::test]
async fn member_tokens_name_the_member_and_nothing_else_passes() {
    let w = world().await;
    let tokens = Tokens::load(w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    let token = tokens
        .mint_member(&w.admin, Duration::from_secs(60))
        .await
        .unwrap();
    let caller = tokens.member(&token).await.unwrap().unwrap();
    assert_eq!(caller.member().id, w.admin.member().id);
    assert_eq!(caller.workspace().id, w.admin.workspace().id);

    // A second loader on the same store (another replica) shares the key.
    let replica = Tokens::load(w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    assert!(replica.member(&token).await.unwrap().is_ok());

    // Tampered payload, truncated, garbage: refused with a reason that never echoes the token.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    for bad in [
        parts.join("."),
        token[..token.len() - 3].to_owned(),
        "x.y.z".to_owned(),
        String::new(),
    ] {
        let refusal = tokens.member(&bad).await.unwrap().unwrap_err();
        assert!(!refusal.reason.contains(&token), "{}", refusal.reason);
    }

    // Lifetimes outside 1 s ..= 24 h are refused at minting.
    assert!(tokens.mint_member(&w.admin, Duration::ZERO).await.is_err());
    assert!(
        tokens
            .mint_member(&w.admin, Duration::from_secs(24 * 3600 + 1))
            .await
            .is_err()
    );

    // A configured key: tokens from the stored key are not accepted, and vice versa.
    let configured = AuthConfig {
        signing_key: Some("k".repeat(40)),
        ..AuthConfig::default()
    };
    let fixed = Tokens::load(w.svc.store().clone(), &configured)
        .await
        .unwrap();
    assert!(fixed.member(&token).await.unwrap().is_err());
    let other = fixed
        .mint_member(&w.other_admin, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        fixed.member(&other).await.unwrap().unwrap().member().email,
        "admin@rival.test"
    );
    assert!(tokens.member(&other).await.unwrap().is_err());

    // A correctly signed token whose member is not (or no longer) in the workspace is refused:
    // the member is re-read on every use.
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("member+jwt".into());
    header.kid = jsonwebtoken::decode_header(&other).unwrap().kid;
    let claims = json!({
        "iss": "parallax-mcp", "aud": "parallax-mcp:admin", "sub": w.other_admin.member().id,
        "ws": w.other_admin.workspace().id, "email": "gone@rival.test",
        "exp": now + 60, "nbf": now, "iat": now, "jti": "x",
    });
    parallax_mcp::auth::jwt_crypto::install();
    let gone = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret("k".repeat(40).as_bytes()),
    )
    .unwrap();
    let refusal = fixed.member(&gone).await.unwrap().unwrap_err();
    assert!(
        refusal.reason.contains("no longer in the workspace"),
        "{refusal}"
    );
}

#[tokio::test]
async fn member_token_cli_prints_only_the_token() {
    let w = world().await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "--database-url",
            &w.db.url,
            "-w",
            "acme",
            "--as",
            "admin@acme.test",
            "member",
            "token",
            "--ttl-secs",
            "120",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let tokens = Tokens::load(w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    let caller = tokens.member(text.trim()).await.unwrap().unwrap();
    assert_eq!(caller.member().email, "admin@acme.test");
}

// ---- fixture: a real server, an approved agent, the server's signing key ----

struct Fixture {
    w: World,
    server: HttpServer,
    key: String,
    http: reqwest::Client,
    secret: String,
    kid: String,
    cid: String,
    ws: String,
}

const GRANT: &[Permission] = &[
    Permission::ReadTasks,
    Permission::ReadAgents,
    Permission::WriteTasks,
];

async fn fixture_with(env: &[(&str, &str)]) -> Fixture {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", GRANT).await;
    let server = spawn_http_env(&w.db.url, env).await;
    let ws = w.admin.workspace().id.clone();
    let tx = w.svc.store().read().await.unwrap();
    let row = tx
        .signing_keys(chrono::Utc::now() - chrono::Duration::days(2))
        .await
        .unwrap()
        .remove(0);
    let cid = tx.list_credentials(&ws, "bot").await.unwrap().remove(0).id;
    drop(tx);
    Fixture {
        w,
        server,
        key,
        http: reqwest::Client::new(),
        secret: row.secret.clone(),
        kid: row.kid.clone(),
        cid,
        ws,
    }
}

/// A server whose failed-authentication limit does not get in the way of attack lists.
async fn fixture() -> Fixture {
    fixture_with(&[("PARALLAX_FAILED_AUTH_BURST", "10000")]).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Fixture {
    /// Rotates the signing key with the CLI, as an operator would, from another process.
    async fn rotate_key(&self) {
        let out = tokio::process::Command::new(BIN)
            .args(["--database-url", &self.w.db.url, "signing-key", "rotate"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The signing keys in the store, newest first, with those retired in the last two days.
    async fn signing_keys(&self) -> Vec<parallax_mcp::store::SigningKeyRow> {
        let tx = self.w.svc.store().read().await.unwrap();
        tx.signing_keys(chrono::Utc::now() - chrono::Duration::days(2))
            .await
            .unwrap()
    }

    fn origin(&self) -> String {
        self.server.url.trim_end_matches("/mcp").to_owned()
    }

    /// Claims of a valid access token for `bot`.
    fn claims(&self) -> Value {
        json!({
            "iss": "parallax-mcp", "aud": self.server.url, "sub": "bot", "ws": self.ws,
            "cid": self.cid, "scope": "read:tasks read:agents write:tasks",
            "exp": now() + 300, "nbf": now() - 1, "iat": now() - 1, "jti": "t-1",
        })
    }

    fn header(&self, alg: Algorithm) -> Header {
        let mut h = Header::new(alg);
        h.typ = Some("at+jwt".into());
        h.kid = Some(self.kid.clone());
        h
    }

    fn sign(&self, header: &Header, claims: &Value) -> String {
        parallax_mcp::auth::jwt_crypto::install();
        jsonwebtoken::encode(
            header,
            claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .unwrap()
    }

    fn sign_hs256(&self, claims: &Value) -> String {
        self.sign(&self.header(Algorithm::HS256), claims)
    }

    /// `initialize` on /mcp with `bearer`.
    async fn mcp(&self, bearer: &str) -> reqwest::Response {
        self.mcp_as(&self.http, &self.server.url, bearer, initialize())
            .await
    }

    async fn mcp_as(
        &self,
        http: &reqwest::Client,
        url: &str,
        bearer: &str,
        body: Value,
    ) -> reqwest::Response {
        http.post(url)
            .header("authorization", format!("Bearer {bearer}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/oauth/token", self.origin()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// An access token from /oauth/token, optionally narrowed.
    async fn access_token(&self, scope: Option<&str>) -> String {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_secret", self.key.as_str()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let res = self.token_request(&form).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Everything but the audit trail, which refusals are expected to add to; waits until
    /// writes of earlier successful calls (last-seen times) have landed.
    async fn state(&self) -> Value {
        let take = || async {
            let mut s = snapshot(&self.w.svc, &self.ws).await;
            s.as_object_mut().unwrap().remove("activity");
            s
        };
        let mut last = take().await;
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = take().await;
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Activity entries after the first `skip`, as (type, outcome).
    async fn activity_after(&self, skip: usize) -> Vec<(String, Option<String>)> {
        let mut all = all_activity(&self.w.svc, &self.ws).await;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.into_iter()
            .skip(skip)
            .map(|e| (e.activity_type, e.outcome))
            .collect()
    }
}

fn without_seen(mut state: Value) -> Value {
    for (list, field) in [("agents", "lastSeenAt"), ("credentials", "lastUsedAt")] {
        for item in state[list].as_array_mut().unwrap() {
            item.as_object_mut().unwrap().remove(field);
        }
    }
    state
}

fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "attack", "version": "1" } }
    })
}

fn www_authenticate(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[track_caller]
fn assert_invalid_token(res: &reqwest::Response, what: &str) {
    assert_eq!(res.status(), 401, "{what}");
    let challenge = www_authenticate(res);
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"")
            && challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
}

/// A 401 `invalid_token` whose JSON-RPC error message gives `reason`.
async fn assert_refused_for(res: reqwest::Response, what: &str, reason: &str) {
    assert_invalid_token(&res, what);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "{what}: {body}");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---- agent access tokens on /mcp ----

#[tokio::test]
async fn forged_stale_and_misdirected_tokens_are_refused() {
    let f = fixture().await;
    let before = f.state().await;
    let entries = all_activity(&f.w.svc, &f.ws).await.len();

    // The genuine article first: a hand-minted valid token and one from /oauth/token work.
    assert_eq!(f.mcp(&f.sign_hs256(&f.claims())).await.status(), 200);
    assert_eq!(f.mcp(&f.access_token(None).await).await.status(), 200);

    let with = |k: &str, v: Value| {
        let mut c = f.claims();
        c[k] = v;
        c
    };
    let header_json = |alg: &str| {
        b64(json!({ "alg": alg, "typ": "at+jwt", "kid": f.kid })
            .to_string()
            .as_bytes())
    };
    let payload = b64(f.claims().to_string().as_bytes());
    // RS256 "signed" with the HMAC secret as if it were a public key: algorithm confusion.
    let rs256 = {
        use hmac::{KeyInit, Mac};
        let msg = format!("{}.{payload}", header_json("RS256"));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(f.secret.as_bytes()).unwrap();
        mac.update(msg.as_bytes());
        format!("{msg}.{}", b64(&mac.finalize().into_bytes()))
    };
    parallax_mcp::auth::jwt_crypto::install();
    let other_key = jsonwebtoken::encode(
        &f.header(Algorithm::HS256),
        &f.claims(),
        &EncodingKey::from_secret(b"an entirely different secret of 32+ bytes"),
    )
    .unwrap();
    let mut unknown_kid = f.header(Algorithm::HS256);
    unknown_kid.kid = Some("0123456789abcdef01234567".into());
    let mut no_kid = f.header(Algorithm::HS256);
    no_kid.kid = None;
    let mut member_typ = f.header(Algorithm::HS256);
    member_typ.typ = Some("member+jwt".into());
    let mut no_typ = f.header(Algorithm::HS256);
    no_typ.typ = None;
    let member_token = Tokens::load(f.w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap()
        .mint_member(&f.w.admin, Duration::from_secs(60))
        .await
        .unwrap();

    let cases: Vec<(&str, &str, String)> = vec![
        (
            "alg none",
            "malformed token",
            format!("{}.{payload}.", header_json("none")),
        ),
        ("alg RS256", "algorithm not accepted", rs256),
        (
            "alg HS512",
            "algorithm not accepted",
            f.sign(&f.header(Algorithm::HS512), &f.claims()),
        ),
        ("bad signature", "bad token signature", other_key),
        (
            "unknown kid",
            "unknown signing key",
            f.sign(&unknown_kid, &f.claims()),
        ),
        ("no kid", "without a key id", f.sign(&no_kid, &f.claims())),
        (
            "wrong typ",
            "wrong token type",
            f.sign(&member_typ, &f.claims()),
        ),
        ("no typ", "wrong token type", f.sign(&no_typ, &f.claims())),
        ("member token on /mcp", "wrong token type", member_token),
        (
            "wrong aud",
            "another audience",
            f.sign_hs256(&with("aud", json!("http://elsewhere/mcp"))),
        ),
        (
            "wrong iss",
            "another issuer",
            f.sign_hs256(&with("iss", json!("someone-else"))),
        ),
        (
            "expired beyond leeway",
            "token expired",
            f.sign_hs256(&with("exp", json!(now() - 45))),
        ),
        (
            "nbf in the future",
            "not valid yet",
            f.sign_hs256(&with("nbf", json!(now() + 120))),
        ),
        (
            "string exp",
            "malformed token claims",
            f.sign_hs256(&with("exp", json!((now() + 300).to_string()))),
        ),
        (
            "string nbf",
            "malformed token claims",
            f.sign_hs256(&with("nbf", json!((now() - 1).to_string()))),
        ),
        ("no exp", "malformed token claims", {
            let mut c = f.claims();
            c.as_object_mut().unwrap().remove("exp");
            f.sign_hs256(&c)
        }),
        (
            "unknown scope",
            "unknown scope",
            f.sign_hs256(&with("scope", json!("root"))),
        ),
        (
            "other credential",
            "unknown API key",
            f.sign_hs256(&with("cid", json!("nope"))),
        ),
        (
            "other workspace",
            "unknown API key",
            f.sign_hs256(&with("ws", json!(f.w.other_admin.workspace().id))),
        ),
        ("garbage", "malformed token", "not.a.token".into()),
    ];
    for (what, reason, token) in &cases {
        let res = f.mcp(token).await;
        assert_invalid_token(&res, what);
        let body: Value = res.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{what}: {message}");
        assert!(!message.contains(token.as_str()), "{what} echoed the token");
    }

    // Within the 30 s leeway an expired token still passes; clocks drift.
    assert_eq!(
        f.mcp(&f.sign_hs256(&with("exp", json!(now() - 10))))
            .await
            .status(),
        200
    );

    // A token in the query string is refused even when the header is fine.
    let token = f.access_token(None).await;
    let res = f
        .mcp_as(
            &f.http,
            &format!("{}?access_token={token}", f.server.url),
            &token,
            initialize(),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(www_authenticate(&res).contains("error=\"invalid_request\""));
    let res = f
        .http
        .post(format!("{}?access_token={token}", f.server.url))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // An agent token is not a member token either.
    let tokens = Tokens::load(f.w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    assert!(tokens.member(&token).await.unwrap().is_err());

    assert_eq!(f.state().await, before, "refusals changed the store");
    // None of these named a stored credential, so nothing was audited as this agent.
    assert!(
        f.activity_after(entries)
            .await
            .iter()
            .all(|(_, outcome)| outcome.as_deref() == Some("denied")),
    );
}

/// The server remembers tokens it verified, found by their signature. A token that reuses a
/// remembered token's signature under another payload, or the same token asked for as another
/// type, must still be verified in full and refused.
#[tokio::test]
async fn a_remembered_tokens_signature_does_not_pass_another_payload() {
    let f = fixture().await;
    let token = f.access_token(Some("read:tasks")).await;
    // Twice: the second use is answered from the memo.
    for _ in 0..2 {
        assert_eq!(f.mcp(&token).await.status(), 200);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["scope"], "read:tasks");

    // The same signature under a widened scope, another agent, a later expiry.
    let forged = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        )
    };
    for (what, token) in [
        (
            "widened scope",
            forged("scope", json!("read:tasks write:tasks")),
        ),
        ("another agent", forged("sub", json!("someone-else"))),
        ("later expiry", forged("exp", json!(now() + 86_400))),
    ] {
        let res = f.mcp(&token).await;
        assert_refused_for(res, what, "bad token signature").await;
    }

    // The remembered token still passes, and one process's memo keeps types apart: a token
    // remembered as an access token is not a member token.
    assert_eq!(f.mcp(&token).await.status(), 200);
    let tokens = Tokens::load(f.w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(tokens.agent(&token, &f.server.url).await.unwrap().is_ok());
    }
    let refusal = tokens.member(&token).await.unwrap().unwrap_err();
    assert!(
        refusal.reason.contains("wrong token type"),
        "{}",
        refusal.reason
    );
    // Nor for another resource than the one it was minted for.
    let refusal = tokens.agent(&token, "http://elsewhere/mcp").await.unwrap();
    assert!(
        refusal.is_err(),
        "a token for one resource passed for another"
    );
    // The type alone keeps them apart too: an access token whose audience is the admin API's,
    // remembered as an access token for it, is still not a member token.
    let admin = parallax_mcp::auth::tokens::MEMBER_AUDIENCE;
    let mut for_admin = f.claims();
    for_admin["aud"] = json!(admin);
    let for_admin = f.sign_hs256(&for_admin);
    assert!(tokens.agent(&for_admin, admin).await.unwrap().is_ok());
    let refusal = tokens.member(&for_admin).await.unwrap().unwrap_err();
    assert!(
        refusal.reason.contains("wrong token type"),
        "{}",
        refusal.reason
    );
}

#[tokio::test]
async fn tokens_of_a_revoked_agent_or_key_are_refused_on_the_next_request() {
    let f = fixture().await;
    let token = f.access_token(None).await;
    assert_eq!(f.mcp(&token).await.status(), 200);

    // Rotating the key revokes the credential the token was minted from.
    let (_, new_key) =
        f.w.svc
            .rotate_agent_key(&f.w.admin, "bot", None)
            .await
            .unwrap();
    let entries = all_activity(&f.w.svc, &f.ws).await.len();
    let res = f.mcp(&token).await;
    assert_invalid_token(&res, "token of a revoked key");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "API key revoked");
    // The refusal named its credential, so it is audited as the agent.
    let audited = f.activity_after(entries).await;
    assert_eq!(
        audited,
        vec![("auth.refused".to_owned(), Some("denied".to_owned()))]
    );

    // A token from the new key works until the agent itself is revoked.
    let f = Fixture {
        key: new_key.expose().to_owned(),
        ..f
    };
    let token = f.access_token(None).await;
    assert_eq!(f.mcp(&token).await.status(), 200);
    f.w.svc
        .revoke_agent(&f.w.admin, "bot", "done here")
        .await
        .unwrap();
    let res = f.mcp(&token).await;
    assert_invalid_token(&res, "token of a revoked agent");
    let body: Value = res.json().await.unwrap();
    // Revoking the agent revokes its keys; either way the token is dead.
    assert_eq!(body["error"]["message"], "API key revoked");
}

#[tokio::test]
async fn a_narrowed_token_gets_insufficient_scope_for_what_it_left_out() {
    let f = fixture().await;
    let token = f.access_token(Some("read:tasks")).await;

    // The scoped token sees and calls only what its scope covers.
    let client = http_client(&f.server.url, &token, ProtocolVersion::V_2025_11_25).await;
    let names = tool_names(&client).await;
    assert!(
        names.contains(&"agent_my_assignments".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"agent_list_workspace".to_owned()),
        "{names:?}"
    );
    ok(&client, "agent_my_assignments", json!({})).await;
    // A tool the agent was never granted stays an ordinary permission refusal.
    let msg = refused(
        &client,
        "agent_delegate_task",
        json!({ "taskId": f.w.task.id, "toAgentId": "x", "reason": "r" }),
    )
    .await;
    assert!(msg.contains("permission denied"), "{msg}");
    client.cancel().await.unwrap();

    // A granted permission outside the token's scope: 403 with a scope challenge.
    let entries = all_activity(&f.w.svc, &f.ws).await.len();
    let before = f.state().await;
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "agent_list_workspace", "arguments": {} }
    });
    for via_header in [false, true] {
        let mut req = f
            .http
            .post(&f.server.url)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(call.to_string());
        if via_header {
            req = req.header("mcp-name", "agent_list_workspace");
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 403);
        let challenge = www_authenticate(&res);
        assert!(
            challenge.starts_with(
                "Bearer error=\"insufficient_scope\", scope=\"read:agents\", resource_metadata=\""
            ),
            "{challenge}"
        );
    }
    // Like any audited tool call, the refusal marks the agent and key as seen; nothing else.
    assert_eq!(without_seen(f.state().await), without_seen(before));
    let audited = f.activity_after(entries).await;
    assert_eq!(
        audited,
        vec![("tool.call".to_owned(), Some("denied".to_owned())); 2]
    );

    // The full-scope token (and the key) call it.
    let full = f.access_token(None).await;
    let client = http_client(&f.server.url, &full, ProtocolVersion::V_2025_11_25).await;
    ok(&client, "agent_list_workspace", json!({})).await;
    client.cancel().await.unwrap();

    // Narrowing cannot widen: a scope beyond the grant is refused.
    let res = f
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_secret", &f.key),
            ("scope", "read:tasks delegate:agents"),
        ])
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");

    // Revoking a granted permission applies to tokens already issued.
    f.w.svc
        .set_agent_permissions(
            &f.w.admin,
            "bot",
            PermissionSet::new([Permission::ReadAgents]),
        )
        .await
        .unwrap();
    let client = http_client(&f.server.url, &full, ProtocolVersion::V_2025_11_25).await;
    assert_eq!(
        tool_names(&client).await,
        vec![
            "agent_list_workspace".to_owned(),
            "agent_log_activity".to_owned(),
            "agent_update_status".to_owned()
        ]
    );
    client.cancel().await.unwrap();
}

/// A token whose credential the server's snapshot holds is taken without reading the store
/// first; when the agent's grant has grown past the token's scope meanwhile (changed by another
/// store on the database), the token is narrower than the grant, and a call outside its scope
/// still gets the scope challenge, not an ordinary refusal.
#[tokio::test]
async fn a_grant_grown_past_a_tokens_scope_elsewhere_gets_insufficient_scope() {
    let f = fixture().await;
    f.w.svc
        .set_agent_permissions(
            &f.w.admin,
            "bot",
            PermissionSet::new([Permission::ReadTasks]),
        )
        .await
        .unwrap();
    // Its scope is the grant as it is now: read:tasks.
    let token = f.access_token(None).await;
    // Checked once, the token's credential is in the snapshot.
    assert_eq!(f.mcp(&token).await.status(), 200);
    f.w.svc
        .set_agent_permissions(
            &f.w.admin,
            "bot",
            PermissionSet::new([Permission::ReadTasks, Permission::ReadAgents]),
        )
        .await
        .unwrap();
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "agent_list_workspace", "arguments": {} }
    });
    let res = f.mcp_as(&f.http, &f.server.url, &token, call).await;
    assert_eq!(res.status(), 403);
    let challenge = www_authenticate(&res);
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\", scope=\"read:agents\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_issued_tokens_valid() {
    let f = fixture().await;
    let old = f.access_token(None).await;
    f.rotate_key().await;

    let keys = f.signing_keys().await;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].retired_at.is_none() && keys[1].retired_at.is_some());
    assert_eq!(keys[1].kid, f.kid);

    // Tokens signed by the retired key still pass…
    assert_eq!(f.mcp(&old).await.status(), 200);
    assert_eq!(f.mcp(&f.sign_hs256(&f.claims())).await.status(), 200);
    // …and the running server learns the new key from its first token (unknown kid → reload).
    let fresh = Fixture {
        secret: keys[0].secret.clone(),
        kid: keys[0].kid.clone(),
        ..f
    };
    assert_eq!(
        fresh.mcp(&fresh.sign_hs256(&fresh.claims())).await.status(),
        200
    );

    // With a configured key there is nothing to rotate in the store.
    let out = tokio::process::Command::new(BIN)
        .args(["--database-url", &fresh.w.db.url, "signing-key", "rotate"])
        .env("PARALLAX_SIGNING_KEY", "s".repeat(40))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&"s".repeat(40)));
}

/// A token that passed is remembered, so its signature is not checked on every request; the
/// clock still is: the same token is refused once it is past its expiry and the leeway.
#[tokio::test]
async fn a_token_that_passed_is_refused_once_it_expires() {
    let f = fixture().await;
    let mut claims = f.claims();
    // Valid for about three more seconds, counting the 30 s leeway.
    claims["exp"] = json!(now() - 27);
    let token = f.sign_hs256(&claims);
    assert_eq!(f.mcp(&token).await.status(), 200);
    assert_eq!(f.mcp(&token).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_refused_for(
        f.mcp(&token).await,
        "expired after passing",
        "token expired",
    )
    .await;
}

/// A remembered token is served only while its key is one the server verifies with: once the
/// key is gone from the store and the server has reloaded its keys, the token is refused.
#[tokio::test]
async fn a_token_that_passed_is_refused_once_its_key_is_gone() {
    let f = fixture().await;
    let old = f.access_token(None).await;
    assert_eq!(f.mcp(&old).await.status(), 200);
    f.rotate_key().await;
    let conn = sea_orm::Database::connect(&f.w.db.url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        &format!("DELETE FROM signing_keys WHERE kid = '{}'", f.kid),
    )
    .await
    .unwrap();
    drop(conn);
    let current = f.signing_keys().await.remove(0);
    // A token under the new key makes the server reload its keys (unknown kid).
    let fresh = Fixture {
        secret: current.secret.clone(),
        kid: current.kid.clone(),
        ..f
    };
    assert_eq!(
        fresh.mcp(&fresh.sign_hs256(&fresh.claims())).await.status(),
        200
    );
    assert_refused_for(
        fresh.mcp(&old).await,
        "token of a removed key",
        "unknown signing key",
    )
    .await;
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_requests_per_rfc_6749() {
    let f = fixture().await;
    let before = f.state().await;
    let url = format!("{}/oauth/token", f.origin());
    let post = |ct: Option<&'static str>, body: String| {
        let mut r = f.http.post(&url).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let form = Some("application/x-www-form-urlencoded");
    let grant = "grant_type=client_credentials";
    let secret = format!("client_secret={}", f.key);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "json body",
            post(Some("application/json"), format!("{grant}&{secret}")),
            400,
            "invalid_request",
        ),
        (
            "no grant_type",
            post(form, secret.clone()),
            400,
            "invalid_request",
        ),
        (
            "password grant",
            post(form, format!("grant_type=password&{secret}")),
            400,
            "unsupported_grant_type",
        ),
        (
            "repeated parameter",
            post(form, format!("{grant}&{secret}&{secret}")),
            400,
            "invalid_request",
        ),
        (
            "no client authentication",
            post(form, grant.to_owned()),
            401,
            "invalid_client",
        ),
        (
            "wrong key",
            post(form, format!("{grant}&client_secret=mcp_agent_nope")),
            401,
            "invalid_client",
        ),
        (
            "client_id of another agent",
            post(form, format!("{grant}&{secret}&client_id=other")),
            401,
            "invalid_client",
        ),
        (
            "two methods",
            post(form, format!("{grant}&{secret}")).basic_auth("bot", Some(&f.key)),
            400,
            "invalid_request",
        ),
        (
            "basic with a wrong secret",
            post(form, grant.to_owned()).basic_auth("bot", Some("mcp_agent_x")),
            401,
            "invalid_client",
        ),
        (
            "unknown scope",
            post(form, format!("{grant}&{secret}&scope=read:tasks+root")),
            400,
            "invalid_scope",
        ),
    ];
    for (what, req, status, code) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{what}");
        assert_eq!(
            res.headers().get("cache-control").unwrap(),
            "no-store",
            "{what}"
        );
        if status == 401 {
            assert!(www_authenticate(&res).starts_with("Basic"), "{what}");
        }
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(!body.to_string().contains(&f.key), "{what} echoed the key");
    }
    assert_eq!(f.state().await, before);

    // HTTP Basic with the agent id works, and the answer is per RFC 6749 §5.1.
    let res = post(form, grant.to_owned())
        .basic_auth("bot", Some(&f.key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read:tasks write:tasks read:agents");
    let header = jsonwebtoken::decode_header(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        (header.alg, header.typ.as_deref(), header.kid.as_deref()),
        (Algorithm::HS256, Some("at+jwt"), Some(f.kid.as_str()))
    );

    // A revoked key is refused, and audited as its agent.
    f.w.svc
        .revoke_agent(&f.w.admin, "bot", "gone")
        .await
        .unwrap();
    let entries = all_activity(&f.w.svc, &f.ws).await.len();
    let res = post(form, format!("{grant}&{secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(
        f.activity_after(entries).await,
        vec![("auth.refused".to_owned(), Some("denied".to_owned()))]
    );
}

#[tokio::test]
async fn discovery_points_agents_at_the_token_endpoint() {
    let f = fixture().await;
    let origin = f.origin();
    let rs: Value = f
        .http
        .get(format!("{origin}/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rs["resource"], f.server.url);
    assert_eq!(rs["authorization_servers"], json!([origin]));
    assert_eq!(
        rs["scopes_supported"].as_array().unwrap().len(),
        Permission::ALL.len()
    );
    let as_meta: Value = f
        .http
        .get(format!("{origin}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(as_meta["issuer"], origin);
    assert_eq!(as_meta["token_endpoint"], format!("{origin}/oauth/token"));
    assert_eq!(
        as_meta["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        as_meta["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post", "client_secret_basic"])
    );
    assert_eq!(as_meta["scopes_supported"], rs["scopes_supported"]);
    // Every 401 points at the resource metadata.
    let res = f
        .http
        .post(&f.server.url)
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        www_authenticate(&res),
        format!("Bearer resource_metadata=\"{origin}/.well-known/oauth-protected-resource/mcp\"")
    );
}

// ---- rate limits ----

#[tokio::test]
async fn failed_logins_block_the_failing_credential_and_not_the_neighbours() {
    let f = fixture_with(&[
        ("PARALLAX_FAILED_AUTH_PER_MINUTE", "2"),
        ("PARALLAX_FAILED_AUTH_BURST", "5"),
    ])
    .await;
    let other = approved_agent(&f.w.svc, &f.w.admin, "bot-neighbour", GRANT).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (one, two, three) = (
        from([127, 0, 0, 1]),
        from([127, 0, 0, 2]),
        from([127, 0, 0, 3]),
    );
    // A revoked agent's key, retried in a loop from behind one NAT address.
    let bad = "mcp_agent_0000000000000000000000000000000000000000_000000";
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let res = f.mcp_as(&one, &f.server.url, bad, initialize()).await;
        *statuses.entry(res.status().as_u16()).or_insert(0) += 1;
    }
    // The burst of failures is answered, and the one that exceeds it (which blocks the address
    // and the key); everything after is refused before any key check.
    assert_eq!(statuses, [(401, 6), (429, 994)].into_iter().collect());
    // The failing key stays refused from any address, with a Retry-After…
    let res = f.mcp_as(&two, &f.server.url, bad, initialize()).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // …another failing key from the blocked address is refused as well…
    let guess = "mcp_agent_1111111111111111111111111111111111111111_000000";
    assert_eq!(
        f.mcp_as(&one, &f.server.url, guess, initialize())
            .await
            .status(),
        429
    );
    // …but the neighbours behind the same address, with valid keys, are served.
    for key in [&f.key, &other] {
        let res = f.mcp_as(&one, &f.server.url, key, initialize()).await;
        assert_eq!(res.status(), 200);
    }

    // The token endpoint shares the limit: the failing key is blocked there too, bad client
    // secrets from .3 count until .3 and the secret are blocked, and valid secrets still pass.
    let token_req = |client: &reqwest::Client, secret: &str| {
        client
            .post(format!("{}/oauth/token", f.origin()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_secret={secret}"
            ))
            .send()
    };
    assert_eq!(token_req(&two, bad).await.unwrap().status(), 429);
    assert_eq!(token_req(&one, &f.key).await.unwrap().status(), 200);
    let other_bad = "mcp_agent_2222222222222222222222222222222222222222_000000";
    for _ in 0..6 {
        assert_eq!(token_req(&three, other_bad).await.unwrap().status(), 401);
    }
    let res = token_req(&three, other_bad).await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(token_req(&three, &f.key).await.unwrap().status(), 200);
    assert_eq!(token_req(&two, &other).await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_agent_over_its_rate_is_throttled_while_another_is_served() {
    let f = fixture().await;
    let other = approved_agent(&f.w.svc, &f.w.admin, "bot-two", GRANT).await;
    let third = approved_agent(&f.w.svc, &f.w.admin, "bot-three", GRANT).await;
    crate::support::set(
        &f.w.svc,
        &f.w.admin,
        &[("rate_limit_per_minute", "1"), ("rate_limit_burst", "3")],
    )
    .await;

    // Key and tokens of one agent share its budget.
    let token = f.access_token(None).await;
    for bearer in [&f.key, &token, &f.key] {
        assert_eq!(f.mcp(bearer).await.status(), 200);
    }
    for bearer in [&f.key, &token] {
        let res = f.mcp(bearer).await;
        assert_eq!(res.status(), 429);
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(body["error"]["retryAfterSecs"].as_u64().unwrap() >= 1);
    }
    assert_eq!(f.mcp(&other).await.status(), 200);

    // On stdio the same limit is a JSON-RPC error saying when to retry.
    let client = stdio_client(&f.w.db.url, &third).await;
    tool_names(&client).await;
    ok(&client, "agent_my_assignments", json!({})).await;
    ok(&client, "agent_my_assignments", json!({})).await;
    match call(&client, "agent_my_assignments", json!({})).await {
        Err(rmcp::ServiceError::McpError(e)) => {
            assert_eq!(e.code.0, -32029);
            assert!(e.message.contains("retry after"), "{}", e.message);
            let secs = e.data.as_ref().unwrap()["retryAfterSecs"].as_u64().unwrap();
            assert!((1..=60).contains(&secs), "{secs}");
        }
        other => panic!("expected a rate-limit error, got {other:?}"),
    }
    client.cancel().await.unwrap();
}

// ---- the verifier against arbitrary input ----

/// A token verifier over a real store with one approved agent, for property tests.
struct Verifier {
    rt: tokio::runtime::Runtime,
    _w: World,
    tokens: Tokens,
    secret: String,
    ws: String,
    cid: String,
}

const RESOURCE: &str = "http://127.0.0.1:1/mcp";

fn verifier() -> Verifier {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = "p".repeat(48);
    let (w, tokens, ws, cid) = rt.block_on(async {
        let w = world().await;
        approved_agent(&w.svc, &w.admin, "bot", GRANT).await;
        let config = AuthConfig {
            signing_key: Some(secret.clone()),
            ..AuthConfig::default()
        };
        let tokens = Tokens::load(w.svc.store().clone(), &config).await.unwrap();
        let ws = w.admin.workspace().id.clone();
        let tx = w.svc.store().read().await.unwrap();
        let cid = tx.list_credentials(&ws, "bot").await.unwrap().remove(0).id;
        drop(tx);
        (w, tokens, ws, cid)
    });
    Verifier {
        rt,
        _w: w,
        tokens,
        secret,
        ws,
        cid,
    }
}

impl Verifier {
    /// Whether either verifier (agent or member) accepts `token`.
    fn accepts(&self, token: &str) -> bool {
        self.rt.block_on(async {
            let agent = self.tokens.agent(token, RESOURCE).await.unwrap().is_ok();
            let member = self.tokens.member(token).await.unwrap().is_ok();
            agent || member
        })
    }

    /// `header.claims` signed with HMAC-SHA256 under the right key, whatever `alg` says.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        use hmac::{KeyInit, Mac};
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(msg.as_bytes());
        format!("{msg}.{}", b64(&mac.finalize().into_bytes()))
    }
}

/// For each field, variant 0 is the valid value and the others are wrong (or absent).
fn field(name: &str, v: &Verifier, variant: usize) -> Option<Value> {
    let options = options(name, v);
    options[variant % options.len()].clone()
}

fn is_valid(name: &str, v: &Verifier, variant: usize) -> bool {
    variant.is_multiple_of(options(name, v).len())
}

fn options(name: &str, v: &Verifier) -> Vec<Option<Value>> {
    let now = now();
    match name {
        "alg" => vec![
            Some(json!("HS256")),
            Some(json!("none")),
            Some(json!("HS512")),
            Some(json!("RS256")),
            Some(json!("hs256")),
            None,
        ],
        "typ" => vec![
            Some(json!("at+jwt")),
            Some(json!("member+jwt")),
            Some(json!("JWT")),
            None,
        ],
        "kid" => vec![
            Some(json!(kid_of(&v.secret))),
            Some(json!("00")),
            Some(json!(7)),
            None,
        ],
        "iss" => vec![
            Some(json!("parallax-mcp")),
            Some(json!("evil")),
            Some(json!(["parallax-mcp"])),
            None,
        ],
        "aud" => vec![
            Some(json!(RESOURCE)),
            Some(json!("http://evil/mcp")),
            Some(json!("parallax-mcp:admin")),
            None,
        ],
        "sub" => vec![
            Some(json!("bot")),
            Some(json!("ghost")),
            Some(json!(1)),
            None,
        ],
        "ws" => vec![Some(json!(v.ws)), Some(json!("other")), None],
        "cid" => vec![Some(json!(v.cid)), Some(json!("nope")), None],
        "scope" => vec![
            Some(json!("read:tasks")),
            Some(json!("root")),
            Some(json!(5)),
            None,
        ],
        "exp" => vec![
            Some(json!(now + 300)),
            Some(json!(now - 100)),
            Some(json!((now + 300).to_string())),
            Some(json!(1e12)),
            None,
        ],
        "nbf" => vec![
            Some(json!(now - 5)),
            Some(json!(now + 300)),
            Some(json!((now - 5).to_string())),
            None,
        ],
        "iat" => vec![Some(json!(now - 5)), Some(json!("yesterday")), None],
        _ => unreachable!(),
    }
}

/// The key id the server derives from a configured secret (it is public: it is in every token).
fn kid_of(secret: &str) -> String {
    let digest = blake3::derive_key("parallax-mcp signing key id v1", secret.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

const HEADER_FIELDS: [&str; 3] = ["alg", "typ", "kid"];
const CLAIM_FIELDS: [&str; 9] = [
    "iss", "aud", "sub", "ws", "cid", "scope", "exp", "nbf", "iat",
];

fn build(v: &Verifier, variants: &[usize]) -> String {
    let mut header = serde_json::Map::new();
    let mut claims = serde_json::Map::new();
    claims.insert("jti".into(), json!("j"));
    for (i, name) in HEADER_FIELDS.iter().chain(CLAIM_FIELDS.iter()).enumerate() {
        if let Some(value) = field(name, v, variants[i]) {
            if i < HEADER_FIELDS.len() {
                header.insert((*name).into(), value);
            } else {
                claims.insert((*name).into(), value);
            }
        }
    }
    v.sign(&Value::Object(header), &Value::Object(claims))
}

#[test]
fn the_all_valid_combination_is_accepted() {
    // Keeps the property below honest: the same builder with every field right passes.
    let v = verifier();
    assert!(v.accepts(&build(&v, &[0; 12])));
}

/// Runs a property with one verifier (one database) for all its cases, dropped afterwards.
fn check_property<S: proptest::strategy::Strategy>(
    strategy: S,
    property: impl Fn(&Verifier, S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let v = verifier();
    let config = proptest::test_runner::Config {
        cases: 128,
        ..Default::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&strategy, |input| property(&v, input))
        .unwrap();
}

#[test]
fn the_verifier_accepts_no_arbitrary_string() {
    check_property(
        (
            "\\PC{0,300}",
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,60}",
        ),
        |v, (s, shaped): (String, String)| {
            proptest::prop_assert!(!v.accepts(&s));
            proptest::prop_assert!(!v.accepts(&shaped));
            Ok(())
        },
    );
}

#[test]
fn the_verifier_accepts_no_token_with_a_wrong_field() {
    check_property(
        proptest::collection::vec(0usize..6, 12),
        |v, variants: Vec<usize>| {
            let all_valid = HEADER_FIELDS
                .iter()
                .chain(CLAIM_FIELDS.iter())
                .enumerate()
                .all(|(i, name)| is_valid(name, v, variants[i]));
            proptest::prop_assume!(!all_valid);
            proptest::prop_assert!(!v.accepts(&build(v, &variants)));
            Ok(())
        },
    );
}

#[tokio::test]
async fn replicas_starting_at_once_converge_on_one_key() {
    let w = world().await;
    // Separate stores, like separate processes, all on a database without a key yet.
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(w.db.store().await);
    }
    // All start together so their transactions really overlap.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(stores.len()));
    let tasks: Vec<_> = stores
        .into_iter()
        .map(|store| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                Tokens::load(store, &AuthConfig::default()).await.unwrap()
            })
        })
        .collect();
    let mut replicas = Vec::new();
    for t in tasks {
        replicas.push(t.await.unwrap());
    }
    let tx = w.svc.store().read().await.unwrap();
    let keys = tx
        .signing_keys(chrono::Utc::now() - chrono::Duration::days(2))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Each replica's tokens pass on every other.
    for a in &replicas {
        let token = a
            .mint_member(&w.admin, Duration::from_secs(60))
            .await
            .unwrap();
        for b in &replicas {
            assert!(b.member(&token).await.unwrap().is_ok());
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_key_on_the_forwarded_client() {
    let f = fixture_with(&[
        ("PARALLAX_FAILED_AUTH_PER_MINUTE", "2"),
        ("PARALLAX_FAILED_AUTH_BURST", "3"),
        ("PARALLAX_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let bad = "mcp_agent_0000000000000000000000000000000000000000_000000";
    let via = |client: &str, bearer: &str| {
        f.http
            .post(&f.server.url)
            .header("x-forwarded-for", format!("{client}, 127.0.0.1"))
            .header("authorization", format!("Bearer {bearer}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(initialize().to_string())
            .send()
    };
    // One client behind the proxy exhausts its failures…
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(via("203.0.113.7", bad).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    // …another guess from that client is refused at once, a valid key from it still passes…
    let guess = "mcp_agent_1111111111111111111111111111111111111111_000000";
    assert_eq!(via("203.0.113.7", guess).await.unwrap().status(), 429);
    assert_eq!(via("203.0.113.7", &f.key).await.unwrap().status(), 200);
    // …and the proxy's other clients are served.
    assert_eq!(via("203.0.113.8", &f.key).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_changes_nothing() {
    let f = fixture_with(&[
        ("PARALLAX_FAILED_AUTH_PER_MINUTE", "2"),
        ("PARALLAX_FAILED_AUTH_BURST", "3"),
    ])
    .await;
    let bad = "mcp_agent_0000000000000000000000000000000000000000_000000";
    // An attacker rotating X-Forwarded-For is still one address.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let res = f
            .http
            .post(&f.server.url)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("authorization", format!("Bearer {bad}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(initialize().to_string())
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
}
