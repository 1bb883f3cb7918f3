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
        screenshot(&admin, "console-inbox.png").await;

        // The watcher keeps the activity page open.
        watcher.goto(&c.url("/activity")).await;
        watcher.find("#activity-rows").await;

        // Approve a subset: read:tasks and read:agents, not write:tasks.
        check(&admin, &checked("read:agents"), true).await;
        admin.submit("#request-docs-bot form.approve button[type=submit]").await;
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
        admin.submit("form.grant button[type=submit]").await;
        admin.wait_source("the grant saved", |s| s.contains("Updated the grant")).await;
        let after = tool_names(&client).await;
        assert!(after.len() < before.len(), "tools/list shrank: {before:?} -> {after:?}");
        assert!(after.iter().all(|t| before.contains(t)));
        watcher.wait_source("the grant change in the live activity", |s| s.contains("agent.permissions_changed")).await;
        screenshot(&admin, "console-agent.png").await;

        // Revoke, through the confirmation step: the agent's next call is refused.
        admin.submit("a.button.danger").await;
        assert_eq!(admin.path().await, "/agents/docs-bot/revoke");
        admin.fill("#revoke-reason", "leaked key").await;
        admin.submit("form.revoke button[type=submit]").await;
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
        // While a card is being edited, a new request does not replace the list under the
        // person (the badge still counts it).
        let edited = "#request-spam-bot input[value='read:tasks']";
        check(&admin, edited, false).await;
        signed_request(&c, &secret, "late-bot", &["read:tasks"]).await;
        admin
            .wait_source("the badge counts both", |s| s.contains("aria-label=\"2 pending\""))
            .await;
        assert!(!admin.exists("#request-late-bot").await, "the edited list stays");
        assert!(!admin.find(edited).await.is_selected().await.unwrap(), "the edit stays");
        admin.fill("#reason-spam-bot", "not ours").await;
        admin.submit("#request-spam-bot form.deny button[type=submit]").await;
        admin.wait_source("the denial", |s| s.contains("Denied spam-bot")).await;
        assert!(!admin.exists("#request-spam-bot").await);

        // Sign-in and decisions are in the audit trail.
        assert!(!c.activity("member.signed_in").await.is_empty());

        // Sign out: back to the sign-in page, and the old cookie opens nothing.
        let cookie = admin.c.get_named_cookie("parallax_session").await.unwrap();
        let cookie = format!("parallax_session={}", cookie.value());
        admin.submit("header .who button[type=submit]").await;
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

/// With `PARALLAX_CONSOLE_SCREENSHOTS=DIR` (e.g. `docs/img`), saves the page as `DIR/NAME`: how
/// the README's screenshots are made.
async fn screenshot(b: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("PARALLAX_CONSOLE_SCREENSHOTS") {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        b.screenshot_to(&dir.join(name)).await;
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An agent requested and approved with the CLI; returns its key.
async fn approved_agent(c: &Console, id: &str, perms: &str) -> String {
    c.admin_cli(&[
        "agent",
        "request",
        id,
        "--name",
        &format!("Bot {id}"),
        "--capability",
        "docs",
        "--permission",
        perms,
    ])
    .await;
    let approved = c
        .admin_cli(&["agent", "approve", id, "--grant", perms])
        .await;
    approved["apiKey"].as_str().expect("key").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_work_delegations_settings_and_activity() {
    let c = Console::start().await;
    let project = c.admin_cli(&["project", "create", "Launch"]).await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let task = c
        .admin_cli(&["task", "create", "--project", &project_id, "Write the docs"])
        .await;
    let task = if task.is_array() {
        task[0].clone()
    } else {
        task
    };
    let task_id = task["id"].as_str().unwrap().to_owned();
    let key_a = approved_agent(&c, "writer-a", "read:tasks,delegate:agents,read:agents").await;
    approved_agent(&c, "writer-b", "read:tasks").await;
    c.admin_cli(&["agent", "request", "pending-c", "--name", "Pending C"])
        .await;
    let admin = c.signed_in(ADMIN).await;
    with_failure_capture("work_settings_activity", &[&admin], async {
        // Agents: filters by status and capability.
        admin.goto(&c.url("/agents?status=pending")).await;
        let list = admin.text("main").await;
        assert!(
            list.contains("pending-c") && !list.contains("writer-a"),
            "{list}"
        );
        admin.goto(&c.url("/agents")).await;
        admin
            .find("#f-status")
            .await
            .select_by_value("approved")
            .await
            .unwrap();
        admin.fill("#f-cap", "docs").await;
        admin.submit("form.filters button[type=submit]").await;
        let list = admin.text("main table").await;
        assert!(
            list.contains("writer-a") && list.contains("writer-b") && !list.contains("pending-c"),
            "{list}"
        );
        admin.fill("#f-cap", "painting").await;
        admin.submit("form.filters button[type=submit]").await;
        assert!(admin.text("main").await.contains("No agents match"));

        // Key rotation: the new key is shown once, with a copy button, and works; the old one not.
        admin.goto(&c.url("/agents/writer-b")).await;
        admin.submit("form[action$='/rotate-key'] button").await;
        let new_key = admin.text("#secret-value").await;
        assert!(new_key.starts_with("mcp_agent_"), "{new_key}");
        assert!(admin.exists("button[data-copy=secret-value]").await);
        let fresh = http_client(&c.url("/mcp"), &new_key, ProtocolVersion::V_2025_11_25).await;
        assert!(!tool_names(&fresh).await.is_empty());
        admin.goto(&c.url("/agents/writer-b")).await;
        assert!(!admin.source().await.contains(&new_key), "shown once");

        // Work: the picker offers approved agents only.
        admin.goto(&c.url("/work")).await;
        let offered = admin.find("#w-agent").await.html(true).await.unwrap();
        assert!(
            offered.contains("writer-a") && offered.contains("writer-b"),
            "{offered}"
        );
        assert!(
            !offered.contains("pending-c"),
            "only approved agents are offered"
        );
        admin
            .find("#w-agent")
            .await
            .select_by_value("writer-a")
            .await
            .unwrap();
        admin
            .find("#w-target")
            .await
            .select_by_value(&format!("task:{task_id}"))
            .await
            .unwrap();
        admin.submit("section.assign button[type=submit]").await;
        admin
            .wait_source("the assignment", |s| s.contains("Assigned."))
            .await;
        assert!(admin.source().await.contains("End assignment of writer-a"));

        // Settings: an invalid value is refused next to its field, nothing saved.
        admin.goto(&c.url("/settings")).await;
        admin.fill("#set-max_agents_per_project", "lots").await;
        admin.fill("#set-delegation_ttl_hours", "48").await;
        admin.submit("form.settings button[type=submit]").await;
        let error = admin.text("#set-max_agents_per_project-help").await;
        assert!(
            !error.is_empty() && admin.exists(".field.invalid").await,
            "{error}"
        );
        assert_eq!(
            admin
                .find("#set-max_agents_per_project")
                .await
                .attr("aria-invalid")
                .await
                .unwrap()
                .as_deref(),
            Some("true")
        );
        let ws = c.admin_cli(&["workspace", "settings"]).await;
        assert_ne!(
            ws["delegationTtlHours"], 48,
            "nothing saved while a field is invalid: {ws}"
        );
        // A valid quota of one agent per project, saved.
        admin.fill("#set-max_agents_per_project", "1").await;
        admin.submit("form.settings button[type=submit]").await;
        admin
            .wait_source("the settings saved", |s| s.contains("Settings saved."))
            .await;
        let ws = c.admin_cli(&["workspace", "settings"]).await;
        assert_eq!(ws["maxAgentsPerProject"], 1, "{ws}");
        assert_eq!(ws["delegationTtlHours"], 48, "{ws}");

        // The quota error shows next to the picker.
        admin.goto(&c.url("/work")).await;
        admin
            .find("#w-agent")
            .await
            .select_by_value("writer-b")
            .await
            .unwrap();
        admin
            .find("#w-target")
            .await
            .select_by_value(&format!("project:{project_id}"))
            .await
            .unwrap();
        admin.submit("section.assign button[type=submit]").await;
        let err = admin.text("#assign-error").await;
        assert!(
            err.contains("quota") || err.contains("max_agents_per_project"),
            "{err}"
        );

        // Delegations: writer-a asks to hand its task to writer-b over MCP; pending first here.
        let client = http_client(&c.url("/mcp"), &key_a, ProtocolVersion::V_2025_11_25).await;
        let asked = call(
            &client,
            "agent_delegate_task",
            json!({ "taskId": task_id, "toAgentId": "writer-b", "reason": "b knows the docs" }),
        )
        .await
        .unwrap();
        assert_ne!(asked.is_error, Some(true), "{asked:?}");
        admin.goto(&c.url("/delegations")).await;
        assert!(
            admin
                .text("table.delegations")
                .await
                .contains("b knows the docs")
        );
        admin
            .fill(
                "table.delegations input[name=note][placeholder^='Note']",
                "fine by me",
            )
            .await;
        admin.submit("table.delegations button.primary").await;
        admin
            .wait_source("the delegation approved", |s| {
                s.contains("Delegation approved.")
            })
            .await;
        assert!(admin.text("table.delegations").await.contains("fine by me"));

        // The task moved to writer-b; end that assignment from the work page.
        admin.goto(&c.url("/work")).await;
        let end = "button[aria-label='End assignment of writer-b']";
        assert!(
            !admin
                .exists("button[aria-label='End assignment of writer-a']")
                .await
        );
        admin.submit(end).await;
        admin
            .wait_source("the assignment ended", |s| s.contains("Assignment ended."))
            .await;
        assert!(!admin.exists(end).await, "ended assignments leave the page");

        // Members: add, change role, remove.
        admin.goto(&c.url("/settings")).await;
        admin.fill("#m-email", "new@acme.test").await;
        admin.fill("#m-name", "Newt").await;
        admin.submit("form.add-member button[type=submit]").await;
        admin
            .wait_source("the member added", |s| s.contains("new@acme.test"))
            .await;
        let members = c.admin_cli(&["member", "list"]).await;
        assert!(members.to_string().contains("new@acme.test"), "{members}");
        let row = "//tr[td[text()='new@acme.test']]";
        let select = admin
            .c
            .find(fantoccini::Locator::XPath(&format!("{row}//select")))
            .await
            .unwrap();
        select.select_by_value("write").await.unwrap();
        let button = admin
            .c
            .find(fantoccini::Locator::XPath(&format!(
                "{row}//button[text()='Set role']"
            )))
            .await
            .unwrap();
        admin.submit_el(button).await;
        admin
            .wait_source("the role changed", |s| s.contains("Members updated."))
            .await;
        assert!(
            c.admin_cli(&["member", "list"])
                .await
                .to_string()
                .contains("\"write\"")
        );
        let button = admin
            .c
            .find(fantoccini::Locator::XPath(&format!(
                "{row}//button[text()='Remove']"
            )))
            .await
            .unwrap();
        admin.submit_el(button).await;
        admin
            .wait_source("the member removed", |s| {
                s.contains("Members updated.") && !s.contains("new@acme.test")
            })
            .await;

        // The webhook secret: rotated and shown once.
        admin
            .submit("form[action='/settings/webhook-secret'] button")
            .await;
        let secret = admin.text("#secret-value").await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        admin.goto(&c.url("/settings")).await;
        assert!(!admin.source().await.contains(&secret), "shown once");

        // Deliveries: with a control plane that is not there, deliveries wait; redeliver one.
        admin
            .fill("#set-control_plane_url", "http://127.0.0.1:9/hooks")
            .await;
        admin.submit("form.settings button[type=submit]").await;
        admin
            .wait_source("the settings saved", |s| s.contains("Settings saved."))
            .await;
        c.admin_cli(&["agent", "deny", "pending-c", "--reason", "no"])
            .await;
        admin.goto(&c.url("/settings")).await;
        admin
            .wait_source("a delivery listed", |s| s.contains("Redeliver"))
            .await;
        admin.submit("form[action*='/redeliver'] button").await;
        admin
            .wait_source("the redelivery", |s| s.contains("Delivery queued again."))
            .await;

        // Activity: filters, metadata, paging link, exports of the filtered view.
        admin
            .goto(&c.url("/activity?type=agent.permissions_changed"))
            .await;
        assert!(
            admin
                .text("#activity-rows")
                .await
                .contains("No activity matches")
        );
        admin.goto(&c.url("/activity")).await;
        admin.fill("#a-type", "member.signed_in").await;
        admin.submit("form.filters button[type=submit]").await;
        let rows = admin
            .c
            .find_all(fantoccini::Locator::Css("#activity-rows tbody tr"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "one sign-in");
        admin.click("#activity-rows details summary").await;
        assert!(
            admin
                .text("#activity-rows pre.json")
                .await
                .contains("\"method\": \"link\"")
        );
        admin.goto(&c.url("/activity?outcome=denied")).await;
        admin
            .goto(&c.url(&format!("/activity?member={ADMIN}&until=2000-01-01T00:00")))
            .await;
        assert!(
            admin
                .text("#activity-rows")
                .await
                .contains("No activity matches"),
            "time range"
        );

        let cookie = admin.c.get_named_cookie("parallax_session").await.unwrap();
        let cookie = format!("parallax_session={}", cookie.value());
        let http = reqwest::Client::new();
        let csv = http
            .get(c.url("/activity/export.csv?type=member.signed_in"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(csv.status(), 200);
        assert!(
            csv.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let csv = csv.text().await.unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("id,created_at,actor_kind"), "{csv}");
        assert_eq!(lines.len(), 2, "{csv}");
        let jsonl = http
            .get(c.url("/activity/export.jsonl"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let entries: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(entries.len() > 10, "{}", entries.len());
        assert!(
            entries
                .iter()
                .any(|e| e["activityType"] == "agent.task_assigned"
                    || e["activityType"] == "assignment.created"
                    || e["activityType"].as_str().unwrap_or("").contains("assign"))
        );
        // Newest first, like the page.
        assert!(
            entries
                .windows(2)
                .all(|w| w[0]["id"].as_str() > w[1]["id"].as_str())
        );

        // Auto-approved requests are shown as such.
        c.admin_cli(&[
            "workspace",
            "settings",
            "--set",
            "auto_approve_capabilities=summaries",
            "--set",
            "auto_approve_permissions=read:tasks",
            "--set",
            "max_agents_per_project=10",
        ])
        .await;
        let auto = c
            .admin_cli(&[
                "agent",
                "request",
                "auto-bot",
                "--name",
                "Auto",
                "--capability",
                "summaries",
                "--permission",
                "read:tasks",
            ])
            .await;
        assert_eq!(auto["agent"]["status"], "approved", "{auto}");
        admin.goto(&c.url("/")).await;
        let recent = admin.text("main").await;
        assert!(
            recent.contains("Recently auto-approved") && recent.contains("auto-bot"),
            "{recent}"
        );
        admin.goto(&c.url("/agents/auto-bot")).await;
        assert!(
            admin
                .text("section.summary")
                .await
                .contains("auto-approved")
        );
    })
    .await;
    admin.close().await;
}

/// A page on another origin (another port of this host: same site, other origin) whose form
/// posts to the console on load, as a malicious page would.
async fn evil_site(target: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let page = format!(
        "<!doctype html><html><body><form id=f method=post action='{target}'>\
         <input name=reason value=pwned></form><script>document.getElementById('f').submit()</script></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_forgeries_and_stale_links() {
    let c = Console::start().await;
    let secret = webhook_secret(&c).await;
    signed_request(&c, &secret, "docs-bot", &["read:tasks"]).await;
    let reader = c.signed_in(READER).await;
    let admin = c.signed_in(ADMIN).await;
    let other = c.driver.browser().await;
    with_failure_capture("forgeries", &[&reader, &admin, &other], async {
        // A read-role member sees the request but no way to decide it.
        reader.find("#request-docs-bot").await;
        assert!(!reader.exists("form.approve").await, "no approve button for read");
        assert!(!reader.exists("form.deny").await);
        reader.goto(&c.url("/settings")).await;
        assert!(!reader.exists("form.settings button").await, "settings are read-only for read");

        // A forged approve (valid session and CSRF token, wrong role): 403 and audited.
        let status = reader
            .js("const t = document.querySelector('meta[name=csrf-token]').content;
                 const x = new XMLHttpRequest();
                 x.open('POST', '/agents/docs-bot/approve', false);
                 x.setRequestHeader('content-type', 'application/x-www-form-urlencoded');
                 x.send('_csrf=' + t + '&perm=read:tasks');
                 return x.status;")
            .await;
        assert_eq!(status, json!(403));
        let denied = c.activity("member.denied").await;
        assert!(
            denied.iter().any(|e| e["actorId"] == READER && e["metadata"]["action"] == "approving agents"),
            "{denied:?}"
        );
        // Without the CSRF token, even the admin is refused, and it is audited.
        let status = admin
            .js("const x = new XMLHttpRequest();
                 x.open('POST', '/agents/docs-bot/approve', false);
                 x.setRequestHeader('content-type', 'application/x-www-form-urlencoded');
                 x.send('perm=read:tasks');
                 return x.status;")
            .await;
        assert_eq!(status, json!(403));
        let denied = c.activity("member.denied").await;
        assert!(denied.iter().any(|e| e["actorId"] == ADMIN && e["description"].as_str().unwrap().contains("CSRF")), "{denied:?}");

        // A cross-site form post (another origin of this host, so the cookie goes along) is refused.
        let evil = evil_site(&c.url("/agents/docs-bot/deny")).await;
        admin.goto(&evil).await;
        admin.wait_source("the refusal", |s| s.contains("not accepted") || s.contains("Refused")).await;
        let agent = c.admin_cli(&["agent", "show", "docs-bot"]).await;
        assert_eq!(agent["agent"]["status"], "pending", "{agent}");

        // An agent key is not a console session, as a bearer or as the cookie.
        let key = approved_agent(&c, "key-bot", "read:tasks").await;
        let http = no_redirects();
        let res = http.get(c.url("/")).bearer_auth(&key).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/login");
        let res = http.get(c.url("/")).header("cookie", format!("parallax_session={key}")).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/login");
        // A member session does not reach /mcp.
        admin.goto(&c.url("/")).await;
        let cookie = admin.c.get_named_cookie("parallax_session").await.unwrap();
        let res = http
            .post(c.url("/mcp"))
            .header("cookie", format!("parallax_session={}", cookie.value()))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);

        // A login link works once.
        let link = c.login_link(ADMIN, None).await;
        other.goto(&link).await;
        other.find("nav[aria-label=Console]").await;
        other.c.delete_all_cookies().await.unwrap();
        other.goto(&link).await;
        other.wait_source("the reused link refused", |s| s.contains("already used")).await;
        assert!(!other.exists("nav[aria-label=Console]").await);
        // An expired one does not work at all.
        let link = c.login_link(ADMIN, Some("1")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        other.goto(&link).await;
        other.wait_source("the expired link refused", |s| s.contains("expired")).await;
        assert_eq!(other.path().await, "/login/link");
        let failed = c.activity("member.sign_in_failed").await;
        assert!(failed.len() >= 2, "refused sign-ins are audited: {failed:?}");
        // The token never appears in the address bar once the page took it.
        assert!(!other.c.current_url().await.unwrap().as_str().contains("pxl_"));

        // Removing a member ends their console access at their next request.
        c.admin_cli(&["member", "remove", READER]).await;
        reader.goto(&c.url("/agents")).await;
        assert_eq!(reader.path().await, "/login");
    })
    .await;
    reader.close().await;
    admin.close().await;
    other.close().await;
}

/// Moves a column of every console session (SQL, as time passing would).
async fn set_sessions(db: &TestDb, column: &str, at: chrono::DateTime<chrono::Utc>) {
    use sea_orm::sea_query::{Alias, Query};
    use sea_orm::{ConnectionTrait, Database};
    let conn = Database::connect(&db.url).await.unwrap();
    let q = Query::update()
        .table(Alias::new("console_sessions"))
        .value(Alias::new(column), at)
        .to_owned();
    conn.execute_raw(conn.get_database_backend().build(&q))
        .await
        .unwrap();
    let _ = conn.close().await;
}

#[tokio::test]
async fn console_sessions_end_when_idle_or_too_old_and_follow_the_member() {
    use parallax_mcp::auth::session::console_session;
    use parallax_mcp::service::console::{SESSION_ABSOLUTE, SESSION_IDLE};
    let db = TestDb::new().await;
    let svc = db.service().await;
    let s = crate::support::seed_workspace(&svc, "acme").await;
    let open = |secret: String| {
        let store = svc.store().clone();
        async move { console_session(&store, &secret).await.unwrap() }
    };
    let secret = svc
        .start_console_session(&s.workspace, s.writer.member(), "link")
        .await
        .unwrap()
        .0;
    let seen = open(secret.clone()).await.expect("a fresh session is open");
    assert_eq!(seen.caller.member().role, Role::Write);
    // A role change applies to the very next request.
    svc.set_member_role(&s.admin, "writer@acme.test", Role::Read)
        .await
        .unwrap();
    assert_eq!(
        open(secret.clone()).await.unwrap().caller.member().role,
        Role::Read
    );
    // Idle for longer than the idle limit: over.
    let now = chrono::Utc::now();
    set_sessions(
        &db,
        "last_seen_at",
        now - SESSION_IDLE - chrono::Duration::seconds(5),
    )
    .await;
    assert!(open(secret.clone()).await.is_none(), "idle sessions end");
    // Busy, but past the absolute end: over.
    set_sessions(&db, "last_seen_at", now).await;
    assert!(open(secret.clone()).await.is_some());
    set_sessions(&db, "expires_at", now - chrono::Duration::seconds(1)).await;
    assert!(
        open(secret.clone()).await.is_none(),
        "sessions end {SESSION_ABSOLUTE} after sign-in"
    );
    // Unknown secrets and agent keys are not sessions.
    assert!(open("nope".into()).await.is_none());
    let key =
        crate::support::server::approved_agent(&svc, &s.admin, "k-bot", &[Permission::ReadTasks])
            .await;
    assert!(open(key).await.is_none());
    // A removed member's session ends with their membership.
    let secret = svc
        .start_console_session(&s.workspace, s.reader.member(), "link")
        .await
        .unwrap()
        .0;
    assert!(open(secret.clone()).await.is_some());
    svc.remove_member(&s.admin, "reader@acme.test")
        .await
        .unwrap();
    assert!(open(secret).await.is_none());
    // Login links: once, and never after expiry.
    let link = svc.create_login_link(&s.admin, 60).await.unwrap();
    assert!(svc.redeem_login_link(&link.token).await.unwrap().is_ok());
    let again = svc
        .redeem_login_link(&link.token)
        .await
        .unwrap()
        .unwrap_err();
    assert!(again.reason.contains("already used") && again.workspace.is_some());
    assert!(svc.create_login_link(&s.admin, 0).await.is_err());
    assert!(
        svc.create_login_link(&s.admin, 24 * 3600 + 1)
            .await
            .is_err()
    );
}
