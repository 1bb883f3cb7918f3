//! The humans' console (issue 10) in a real browser: Debian's chromium, headless, through
//! chromedriver. The server is the real binary; the CLI makes the login links; agents talk to
//! it over MCP with the rmcp client. On failure each browser's screen and HTML are saved under
//! `target/console-failures/`.

use crate::support::TestDb;
use crate::support::browser::{Browser, Driver, with_failure_capture};
use crate::support::server::{BIN, call, http_client, spawn_http_env, tool_names};
use parallax_mcp::domain::*;
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use std::time::Duration;

const WS: &str = "acme";
const ADMIN: &str = "admin@acme.test";
const READER: &str = "reader@acme.test";

/// Runs the real CLI on the test database; returns stdout, panicking on failure.
async fn cli(db_url: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .arg("--database-url")
        .arg(db_url)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PARALLAX_WORKSPACE")
        .env_remove("PARALLAX_AS")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "parallax-mcp {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A workspace made with the CLI, the server, and the browser machinery.
struct Console {
    db: TestDb,
    /// `http://127.0.0.1:PORT`
    base: String,
    _server: tokio::process::Child,
    driver: Driver,
}

impl Console {
    async fn start() -> Console {
        let db = TestDb::new().await;
        db.ensure_exists();
        let url = db.url.clone();
        cli(
            &url,
            &[],
            &[
                "workspace",
                "create",
                WS,
                "--name",
                "Acme",
                "--admin-email",
                ADMIN,
            ],
        )
        .await;
        let as_admin = ["-w", WS, "--as", ADMIN];
        cli(
            &url,
            &[],
            &[
                &["member", "add", READER, "--role", "read", "--name", "Rita"][..],
                &as_admin,
            ]
            .concat(),
        )
        .await;
        let server = spawn_http_env(&url, &[("PARALLAX_EVENTS_POLL_MS", "100")]).await;
        let base = server.url.trim_end_matches("/mcp").to_owned();
        Console {
            db,
            base,
            _server: server.child,
            driver: Driver::start().await,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `member login-link` for `email`, through the real CLI, against the server's public URL.
    async fn login_link(&self, email: &str, ttl: Option<&str>) -> String {
        let public = format!("{}/mcp", self.base);
        let mut args = vec!["member", "login-link", "-w", WS, "--as", email];
        if let Some(t) = ttl {
            args.extend(["--ttl-secs", t]);
        }
        let out = cli(&self.db.url, &[("PARALLAX_PUBLIC_URL", &public)], &args).await;
        let link = out.trim().to_owned();
        assert!(
            link.starts_with(&format!("{}/login#pxl_", self.base)),
            "{link}"
        );
        link
    }

    /// A browser signed in as `email` through a fresh login link.
    async fn signed_in(&self, email: &str) -> Browser {
        let b = self.driver.browser().await;
        let link = self.login_link(email, None).await;
        b.goto(&link).await;
        b.find("nav[aria-label=Console]").await;
        assert_eq!(
            b.path().await,
            "/",
            "signed in, the inbox is the landing page"
        );
        b
    }

    async fn admin_cli(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-w", WS, "--as", ADMIN, "--json"]);
        let out = cli(&self.db.url, &[], &all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// The activity entries of the workspace, newest first, read with the CLI.
    async fn activity(&self, activity_type: &str) -> Vec<Value> {
        let v = self
            .admin_cli(&["activity", "--type", activity_type, "--limit", "100"])
            .await;
        v.as_array()
            .cloned()
            .or_else(|| v["entries"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// The control plane's signed access request (the inbound route), as `control_plane.rs` sends it.
async fn signed_request(c: &Console, secret: &WebhookSecret, agent: &str, perms: &[&str]) {
    let body = serde_json::to_vec(&json!({
        "agentId": agent,
        "name": format!("Bot {agent}"),
        "description": "writes docs",
        "capabilities": ["docs"],
        "requestedPermissions": perms,
        "endpoint": format!("http://agent.test/{agent}"),
        "justification": "the docs are stale",
    }))
    .unwrap();
    let ts = chrono::Utc::now().timestamp();
    let id = format!("msg_{agent}");
    let res = reqwest::Client::new()
        .post(c.url(&format!("/api/v1/workspaces/{WS}/access-requests")))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            signature_header(std::slice::from_ref(secret), &id, ts, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        reqwest::StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
}

async fn webhook_secret(c: &Console) -> WebhookSecret {
    let rotated = c
        .admin_cli(&["workspace", "webhook-secret", "rotate", "--grace-secs", "0"])
        .await;
    WebhookSecret::parse(rotated["secret"].as_str().expect("secret")).unwrap()
}

/// Sets the checkbox `css` to `on`.
async fn check(b: &Browser, css: &str, on: bool) {
    let el = b.find(css).await;
    if el.is_selected().await.unwrap() != on {
        el.click().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_end_to_end() {
    let c = Console::start().await;
    let secret = webhook_secret(&c).await;
    let admin = c.signed_in(ADMIN).await;
    let watcher = c.signed_in(ADMIN).await;
    with_failure_capture("end_to_end", &[&admin, &watcher], async {
        // The inbox is empty and says so; the badge shows nothing waiting.
        assert!(admin.text("#requests").await.contains("No pending requests"));
        assert_eq!(admin.text("#inbox-count").await, "0");
        // Marks this page, so we can tell it was not reloaded.
        admin.js("window.__stillHere = true; return null;").await;
        tokio::time::sleep(Duration::from_millis(500)).await;

        // A request through the signed inbound route appears, live.
        signed_request(&c, &secret, "docs-bot", &["read:tasks", "read:agents", "write:tasks"]).await;
        let card = admin.find("#request-docs-bot").await;
        let text = card.text().await.unwrap();
        for shown in ["Bot docs-bot", "docs", "read:tasks", "write:tasks", "the docs are stale", "http://agent.test/docs-bot"] {
            assert!(text.contains(shown), "the card shows {shown}: {text}");
        }
        assert_eq!(admin.js("return window.__stillHere === true;").await, json!(true), "no reload");
        admin.wait_source("the badge counts the request", |s| s.contains(">1</span>")).await;
        // Pre-checked: what was requested among the workspace defaults.
        let checked = |p: &'static str| format!("#request-docs-bot input[value='{p}']");
        assert!(admin.find(&checked("read:tasks")).await.is_selected().await.unwrap());
        assert!(!admin.find(&checked("read:agents")).await.is_selected().await.unwrap());
        assert!(!admin.find(&checked("write:tasks")).await.is_selected().await.unwrap());

        // The watcher keeps the activity page open.
        watcher.goto(&c.url("/activity")).await;
        watcher.find("#activity-rows").await;

        // Approve a subset: read:tasks and read:agents, not write:tasks.
        check(&admin, &checked("read:agents"), true).await;
        admin.click("#request-docs-bot form.approve button[type=submit]").await;
        let key = admin.text("#secret-value").await;
        assert!(key.starts_with("mcp_agent_"), "the key is shown: {key}");
        assert!(admin.source().await.contains("shown <strong>once</strong>"));

        // The watcher sees the approval land, without reloading.
        watcher.wait_source("the approval in the live activity", |s| s.contains("agent.access_approved")).await;

        // The key works over MCP.
        let mcp = c.url("/mcp");
        let client = http_client(&mcp, &key, ProtocolVersion::V_2025_11_25).await;
        let before = tool_names(&client).await;
        assert!(before.contains(&"agent_update_status".to_owned()), "{before:?}");

        // Never shown again: not on the agent's page, not in the inbox.
        admin.goto(&c.url("/agents/docs-bot")).await;
        admin.find("form.grant").await;
        assert!(!admin.source().await.contains(&key), "the key is shown once");
        // The grant editor offers only what was requested, with the grant checked.
        let offered = admin.c.find_all(fantoccini::Locator::Css("form.grant input[name=perm]")).await.unwrap();
        assert_eq!(offered.len(), 3);
        assert!(admin.find("form.grant input[value='read:agents']").await.is_selected().await.unwrap());
        assert!(!admin.find("form.grant input[value='write:tasks']").await.is_selected().await.unwrap());

        // Narrow the grant: the agent's next tools/list shrinks.
        check(&admin, "form.grant input[value='read:agents']", false).await;
        admin.click("form.grant button[type=submit]").await;
        admin.wait_source("the grant saved", |s| s.contains("Updated the grant")).await;
        let after = tool_names(&client).await;
        assert!(after.len() < before.len(), "tools/list shrank: {before:?} -> {after:?}");
        assert!(after.iter().all(|t| before.contains(t)));
        watcher.wait_source("the grant change in the live activity", |s| s.contains("agent.permissions_changed")).await;

        // Revoke, through the confirmation step: the agent's next call is refused.
        admin.click("a.button.danger").await;
        assert_eq!(admin.path().await, "/agents/docs-bot/revoke");
        admin.fill("#revoke-reason", "leaked key").await;
        admin.click("form.revoke button[type=submit]").await;
        admin.wait_source("the revocation", |s| s.contains("Revoked docs-bot")).await;
        let refused = match call(&client, "agent_my_assignments", json!({})).await {
            Err(_) => true,
            Ok(r) => r.is_error == Some(true),
        };
        assert!(refused, "a revoked agent's next MCP call is refused");
        let res = reqwest::Client::new()
            .post(&mcp)
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED, "the revoked key is refused");
        watcher.wait_source("the revocation in the live activity", |s| s.contains(EventType::AccessRevoked.as_str())).await;

        // Deny another request with a reason, from the inbox.
        signed_request(&c, &secret, "spam-bot", &["read:tasks"]).await;
        admin.goto(&c.url("/")).await;
        admin.fill("#reason-spam-bot", "not ours").await;
        admin.click("#request-spam-bot form.deny button[type=submit]").await;
        admin.wait_source("the denial", |s| s.contains("Denied spam-bot")).await;
        assert!(!admin.exists("#request-spam-bot").await);

        // Sign-in and decisions are in the audit trail.
        assert!(!c.activity("member.signed_in").await.is_empty());

        // Sign out: back to the sign-in page, and the old cookie opens nothing.
        let cookie = admin.c.get_named_cookie("parallax_session").await.unwrap();
        let cookie = format!("parallax_session={}", cookie.value());
        admin.click("header .who button[type=submit]").await;
        admin.wait_source("the signed-out page", |s| s.contains("You are signed out")).await;
        admin.goto(&c.url("/agents")).await;
        assert_eq!(admin.path().await, "/login", "signed out, pages send you to sign in");
        let res = no_redirects().get(c.url("/")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
        assert_eq!(res.headers()["location"], "/login");
        assert!(!c.activity("member.signed_out").await.is_empty(), "sign-out is audited");
    })
    .await;
    admin.close().await;
    watcher.close().await;
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
