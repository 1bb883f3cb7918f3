//! Console sign-in with OpenID Connect, against a real provider: panva's `oidc-provider` under
//! Node 22, installed by `.ci/oidc/setup.sh` (which `.ci/test` runs). The browser is a reqwest
//! client with a cookie jar that fills in the provider's login form.

use crate::support::browser::{Browser, Driver, with_failure_capture};
use crate::support::server::{HttpServer, spawn_http_env};
use crate::support::{TestDb, activity_of, seed_workspace};
use parallax_mcp::service::Service;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CLIENT_ID: &str = "parallax-console";
const CLIENT_SECRET: &str = "test-client-secret-0123456789";

/// Where `.ci/oidc/setup.sh` installed node and oidc-provider: `$PARALLAX_OIDC_TOOLS`, else
/// `.ci/tools/oidc` in the repository. Missing tools fail the test: it is never skipped.
fn tools() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("PARALLAX_OIDC_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/tools/oidc"));
    let node = dir.join("node_modules/.bin/node");
    let provider = dir.join("node_modules/oidc-provider/package.json");
    assert!(
        node.exists() && provider.exists(),
        "the OIDC tests need Node 22 and oidc-provider in {}: run .ci/test (or .ci/oidc/setup.sh .ci/tools) first",
        dir.display()
    );
    (node, dir)
}

/// A running provider: its issuer URL, and its stdin (closing it stops the provider).
struct Provider {
    _child: tokio::process::Child,
    issuer: String,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Provider {
    async fn start() -> Provider {
        let (node, dir) = tools();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/oidc/provider.mjs");
        let mut child = tokio::process::Command::new(node)
            .arg(script)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the OpenID provider");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = next_line(&mut lines).await;
        let issuer = issuer
            .strip_prefix("issuer ")
            .unwrap_or_else(|| panic!("provider said {issuer:?}"))
            .to_owned();
        Provider {
            _child: child,
            issuer,
            stdin,
            lines,
        }
    }

    /// Registers the client (redirect URI of `server`) and the accounts, and waits until ready.
    async fn configure(&mut self, redirect_uri: &str, accounts: serde_json::Value, conform: bool) {
        let setup = json!({
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "redirectUri": redirect_uri,
            "accounts": accounts,
            "conformIdTokenClaims": conform,
        });
        self.stdin
            .write_all(format!("{setup}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        assert_eq!(next_line(&mut self.lines).await, "ready");
    }
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the OpenID provider did not answer in time")
        .unwrap()
        .expect("the OpenID provider exited")
}

/// The people the provider knows: one member of `acme`, and several who must be refused.
fn accounts() -> serde_json::Value {
    json!({
        "writer": { "email": "Writer@acme.test", "email_verified": true },
        "stranger": { "email": "stranger@acme.test", "email_verified": true },
        "outsider": { "email": "admin@elsewhere.test", "email_verified": true },
        "unverified": { "email": "reader@acme.test", "email_verified": false },
        "nomail": {},
    })
}

/// A workspace `acme` (admin, writer, reader), a provider, and the server configured for it.
struct Setup {
    db: TestDb,
    svc: Service,
    ws: String,
    provider: Provider,
    server: HttpServer,
    origin: String,
    _secret: tempfile::TempDir,
}

async fn setup(conform_id_token_claims: bool) -> Setup {
    let db = TestDb::new().await;
    let svc = db.service().await;
    let ws = seed_workspace(&svc, "acme").await.workspace.id;
    let mut provider = Provider::start().await;
    // The secret comes from a file, as the README recommends.
    let secret = tempfile::tempdir().unwrap();
    let secret_file = secret.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let server = spawn_http_env(
        &db.url,
        &[
            ("PARALLAX_OIDC_ISSUER", provider.issuer.as_str()),
            ("PARALLAX_OIDC_CLIENT_ID", CLIENT_ID),
            (
                "PARALLAX_OIDC_CLIENT_SECRET_FILE",
                secret_file.to_str().unwrap(),
            ),
            ("PARALLAX_OIDC_ALLOWED_DOMAINS", "acme.test"),
            ("PARALLAX_OIDC_DISPLAY_NAME", "Acme ID"),
        ],
    )
    .await;
    let origin = server.url.trim_end_matches("/mcp").to_owned();
    provider
        .configure(
            &format!("{origin}/login/oidc/callback"),
            accounts(),
            conform_id_token_claims,
        )
        .await;
    Setup {
        db,
        svc,
        ws,
        provider,
        server,
        origin,
        _secret: secret,
    }
}

/// A fresh browser: its own cookie jar, redirects followed by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts a sign-in to `workspace` and signs in at the provider as `login`; returns the URL the
/// provider sends the browser back to (the callback with `code` and `state`), not yet opened.
async fn through_provider(http: &reqwest::Client, origin: &str, login: &str) -> String {
    let mut res = http
        .get(format!("{origin}/login/oidc?workspace=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "sign-in start: {:?}", res.text().await);
    for _ in 0..10 {
        if res.status().is_redirection() {
            let location = res.headers()["location"].to_str().unwrap();
            let next = res.url().join(location).unwrap().to_string();
            if next.starts_with(&format!("{origin}/login/oidc/callback")) {
                return next;
            }
            res = http.get(&next).send().await.unwrap();
            continue;
        }
        // A page of the provider's: its login form (or a consent form), filled in and sent.
        let url = res.url().clone();
        let html = res.text().await.unwrap();
        let action = attribute(&html, "action=\"").unwrap_or_else(|| panic!("no form in {html}"));
        let prompt = attribute(&html, "name=\"prompt\" value=\"").expect("no prompt field");
        let form = [
            ("prompt", prompt.as_str()),
            ("login", login),
            ("password", "any"),
        ];
        res = http
            .post(url.join(&action).unwrap())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
    }
    panic!("the provider never sent the browser back");
}

fn attribute(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(prefix)? + prefix.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].replace("&amp;", "&"))
}

/// Opens the callback: the status and the page.
async fn open(http: &reqwest::Client, url: &str) -> (u16, String) {
    let res = http.get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Opens the callback of a member's sign-in: the console session's cookie and a redirect to the
/// inbox, which then opens with that session. Returns the inbox page.
async fn lands_in_the_console(http: &reqwest::Client, origin: &str, callback: &str) -> String {
    let res = http.get(callback).send().await.unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(res.headers()["location"], "/");
    let cookies: Vec<&str> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("parallax_session=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Lax")),
        "{cookies:?}"
    );
    let inbox = http.get(format!("{origin}/")).send().await.unwrap();
    assert_eq!(inbox.status(), 200);
    let page = inbox.text().await.unwrap();
    assert!(
        page.contains("aria-label=\"Console\""),
        "not signed in: {page}"
    );
    page
}

#[tokio::test]
async fn a_member_signs_in_with_the_provider_and_a_used_state_is_refused() {
    let s = setup(false).await;
    let http = browser();
    let callback = through_provider(&http, &s.origin, "writer").await;
    assert!(
        callback.contains("code=") && callback.contains("state="),
        "{callback}"
    );
    let page = lands_in_the_console(&http, &s.origin, &callback).await;
    assert!(page.contains("title=\"writer@acme.test\""), "{page}");
    let signed_in = activity_of(&s.svc, &s.ws, "member.signed_in").await;
    assert_eq!(signed_in.len(), 1, "{signed_in:?}");
    assert_eq!(signed_in[0].actor_id, "writer@acme.test");
    assert_eq!(signed_in[0].metadata["method"], "oidc");

    // The same callback again (a replay from history or a leaked URL): the state is used up.
    let (status, page) = open(&http, &callback).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("not valid or was already used"), "{page}");
    // Two callbacks racing with one state (a double click, or a replay timed with the real
    // one): exactly one signs in.
    let callback = through_provider(&http, &s.origin, "writer").await;
    let (a, b) = tokio::join!(open(&http, &callback), open(&http, &callback));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [303, 403], "{a:?} {b:?}");
    assert_eq!(
        activity_of(&s.svc, &s.ws, "member.signed_in").await.len(),
        2
    );

    // A state that was never issued, and none at all.
    for url in [
        format!(
            "{}/login/oidc/callback?code=abc&state=forged-state",
            s.origin
        ),
        format!("{}/login/oidc/callback?code=abc", s.origin),
    ] {
        let (status, page) = open(&browser(), &url).await;
        assert_eq!(status, 403, "{url}: {page}");
        assert!(page.contains("not valid or was already used"), "{page}");
    }
    assert_eq!(
        activity_of(&s.svc, &s.ws, "member.signed_in").await.len(),
        2,
        "a refused callback signed someone in"
    );

    // A genuine callback opened in another browser (a link sent to someone): refused, so nobody
    // is signed in as the person who started it.
    let callback = through_provider(&browser(), &s.origin, "writer").await;
    let (status, page) = open(&browser(), &callback).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("started in another browser"), "{page}");
    let failed = activity_of(&s.svc, &s.ws, "member.sign_in_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].metadata["method"], "oidc");
    let reason = failed[0].metadata["reason"].as_str().unwrap();
    assert!(reason.contains("started in another browser"), "{reason}");

    // A genuine state with a code the provider never issued: the provider refuses the exchange,
    // and the refusal is audited in the workspace the state was for.
    let http = browser();
    let callback = through_provider(&http, &s.origin, "writer").await;
    let forged = callback
        .split('&')
        .map(|p| {
            if p.contains("code=") {
                let (k, _) = p.split_once("code=").unwrap();
                format!("{k}code=not-a-real-code")
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let (status, page) = open(&http, &forged).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("invalid_grant"), "{page}");
    let failed = activity_of(&s.svc, &s.ws, "member.sign_in_failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let reason = failed[0].metadata["reason"].as_str().unwrap();
    assert!(reason.contains("invalid_grant"), "newest first: {reason}");
    drop(s.server);
    drop(s.db);
}

#[tokio::test]
async fn people_who_are_not_members_or_not_vouched_for_are_refused_and_audited() {
    let s = setup(false).await;
    for (login, says) in [
        (
            "stranger",
            "stranger@acme.test is not a member of workspace acme",
        ),
        (
            "outsider",
            "admin@elsewhere.test is not in a domain allowed to sign in here",
        ),
        ("unverified", "says reader@acme.test is not verified"),
        ("nomail", "did not give an email address"),
    ] {
        let http = browser();
        let callback = through_provider(&http, &s.origin, login).await;
        let (status, page) = open(&http, &callback).await;
        assert_eq!(status, 403, "{login}: {page}");
        assert!(page.contains(says), "{login}: {page}");
        let failed = activity_of(&s.svc, &s.ws, "member.sign_in_failed").await;
        let entry = failed
            .iter()
            .find(|e| {
                e.metadata["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(says))
            })
            .unwrap_or_else(|| panic!("{login}: no audit entry saying {says:?}: {failed:?}"));
        assert_eq!(entry.outcome.as_deref(), Some("denied"));
        assert_eq!(entry.metadata["method"], "oidc");
    }
    assert!(
        activity_of(&s.svc, &s.ws, "member.signed_in")
            .await
            .is_empty()
    );
    // An unknown workspace never reaches the provider.
    let res = browser()
        .get(format!("{}/login/oidc?workspace=nope", s.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("there is no workspace &quot;nope&quot;"),
        "{page}"
    );
    drop(s.provider);
}

#[tokio::test]
async fn the_email_is_read_from_userinfo_when_the_id_token_lacks_it() {
    // A provider that follows the spec's default for the code flow: profile claims only from
    // userinfo.
    let s = setup(true).await;
    let http = browser();
    let callback = through_provider(&http, &s.origin, "writer").await;
    let page = lands_in_the_console(&http, &s.origin, &callback).await;
    assert!(page.contains("title=\"writer@acme.test\""), "{page}");
    let http = browser();
    let callback = through_provider(&http, &s.origin, "stranger").await;
    let (status, page) = open(&http, &callback).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("not a member"), "{page}");
}

#[tokio::test]
async fn a_provider_that_is_down_gets_a_clear_page_and_the_server_still_serves() {
    let db = TestDb::new().await;
    let svc = db.service().await;
    seed_workspace(&svc, "acme").await;
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = spawn_http_env(
        &db.url,
        &[
            ("PARALLAX_OIDC_ISSUER", issuer.as_str()),
            ("PARALLAX_OIDC_CLIENT_ID", CLIENT_ID),
        ],
    )
    .await;
    let origin = server.url.trim_end_matches("/mcp");
    let res = browser()
        .get(format!("{origin}/login/oidc?workspace=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("the identity provider could not be used: discovery at"),
        "{page}"
    );
    let health = browser()
        .get(format!("{origin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn an_address_with_too_many_refused_sign_ins_is_slowed_down() {
    let db = TestDb::new().await;
    let svc = db.service().await;
    seed_workspace(&svc, "acme").await;
    // No provider is needed: a state that was never issued is refused before any is asked.
    let server = spawn_http_env(
        &db.url,
        &[
            ("PARALLAX_OIDC_ISSUER", "http://127.0.0.1:9"),
            ("PARALLAX_OIDC_CLIENT_ID", CLIENT_ID),
            ("PARALLAX_FAILED_AUTH_PER_MINUTE", "1"),
            ("PARALLAX_FAILED_AUTH_BURST", "2"),
        ],
    )
    .await;
    let origin = server.url.trim_end_matches("/mcp");
    let http = browser();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let url = format!("{origin}/login/oidc/callback?code=c&state=guess-{i}");
        statuses.push(open(&http, &url).await.0);
    }
    // The burst and the refusal that crosses it are refusals; then 429, also to start one.
    assert_eq!(statuses, [403, 403, 403, 429]);
    let res = http
        .get(format!("{origin}/login/oidc?workspace=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

#[test]
fn config_check_names_oidc_mistakes_and_hides_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/x.db?mode=rwc", dir.path().display());
    let check = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(crate::support::server::BIN)
            .args(["--database-url", &db, "config", "check"])
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(&[
        ("PARALLAX_OIDC_ISSUER", "https://id.example.com"),
        ("PARALLAX_OIDC_CLIENT_ID", CLIENT_ID),
        ("PARALLAX_OIDC_CLIENT_SECRET", CLIENT_SECRET),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("[oidc]") && out.contains("client_secret"),
        "{out}"
    );
    assert!(!out.contains(CLIENT_SECRET) && !err.contains(CLIENT_SECRET));

    let missing = dir.path().join("no-such-secret");
    let (code, _, err) = check(&[
        ("PARALLAX_OIDC_ISSUER", "https://id.example.com"),
        ("PARALLAX_OIDC_CLIENT_ID", CLIENT_ID),
        (
            "PARALLAX_OIDC_CLIENT_SECRET_FILE",
            missing.to_str().unwrap(),
        ),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read the client secret file"), "{err}");

    let (code, _, err) = check(&[("PARALLAX_OIDC_ISSUER", "https://id.example.com")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("[oidc] client_id (PARALLAX_OIDC_CLIENT_ID) is required"),
        "{err}"
    );
}

/// Signs in at the provider's login form in a real browser, from the console's button.
async fn browser_sign_in(b: &Browser, origin: &str, login: &str) {
    b.goto(&format!("{origin}/login")).await;
    assert_eq!(b.text("#oidc button").await, "Sign in with Acme ID");
    b.fill("#oidc-workspace", "acme").await;
    b.click("#oidc button").await;
    // The provider's development login form: any password.
    b.fill("input[name=login]", login).await;
    b.fill("input[name=password]", "any").await;
    b.click("button[type=submit]").await;
}

#[tokio::test]
async fn a_member_signs_in_from_the_console_button_in_a_real_browser() {
    let s = setup(false).await;
    let driver = Driver::start().await;
    let member = driver.browser().await;
    let stranger = driver.browser().await;
    with_failure_capture("oidc", &[&member, &stranger], async {
        browser_sign_in(&member, &s.origin, "writer").await;
        member.find("nav[aria-label=Console]").await;
        assert_eq!(member.path().await, "/", "the inbox is the landing page");
        assert!(member.source().await.contains("writer@acme.test"));
        // The session works for the next page too.
        member.goto(&format!("{}/agents", s.origin)).await;
        member.find("nav[aria-label=Console]").await;

        browser_sign_in(&stranger, &s.origin, "stranger").await;
        stranger
            .wait_source("the refusal", |html| {
                html.contains("stranger@acme.test is not a member of workspace acme")
            })
            .await;
        assert!(!stranger.exists("nav[aria-label=Console]").await);
    })
    .await;
    let failed = activity_of(&s.svc, &s.ws, "member.sign_in_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    member.close().await;
    stranger.close().await;
}
