//! The real server, spawned as the user runs it, and rmcp clients to talk to it; plus a two-workspace
//! world to act in. Shared by the MCP, attack and API suites.

use super::TestDb;
use parallax_mcp::auth::{self, MemberCaller};
use parallax_mcp::domain::*;
use parallax_mcp::service::{AccessRequest, Service};
use parallax_mcp::store::ActivityQuery;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const BIN: &str = env!("CARGO_BIN_EXE_parallax-mcp");

pub type Client = RunningService<RoleClient, ClientConfig>;

/// A workspace with an admin, a project and a task, plus a second workspace to try to reach.
pub struct World {
    pub db: TestDb,
    pub svc: Service,
    pub admin: MemberCaller,
    pub project: Project,
    pub task: Task,
    pub other_admin: MemberCaller,
    pub other_task: Task,
}

pub async fn world() -> World {
    let db = TestDb::new().await;
    let svc = db.service().await;
    svc.create_workspace("acme", "Acme", "admin@acme.test", "Ada")
        .await
        .unwrap();
    svc.create_workspace("rival", "Rival", "admin@rival.test", "Rex")
        .await
        .unwrap();
    let admin = auth::member(svc.store(), "acme", "admin@acme.test")
        .await
        .unwrap();
    let other_admin = auth::member(svc.store(), "rival", "admin@rival.test")
        .await
        .unwrap();
    let project = svc
        .create_project(&admin, "Launch", "ship it")
        .await
        .unwrap();
    let task = svc
        .create_task(&admin, &project.id, "Write the docs", "all of them")
        .await
        .unwrap();
    let other_project = svc
        .create_project(&other_admin, "Secret", "")
        .await
        .unwrap();
    let other_task = svc
        .create_task(&other_admin, &other_project.id, "Their task", "")
        .await
        .unwrap();
    World {
        db,
        svc,
        admin,
        project,
        task,
        other_admin,
        other_task,
    }
}

impl World {
    /// Assigns agent `agent` to the world's task as a member; the assignment's id.
    pub async fn assign_to_task(&self, agent: &str) -> String {
        self.svc
            .assign(
                &self.admin,
                agent,
                parallax_mcp::service::AssignTarget::Task(self.task.id.clone()),
                AssignmentRole::Member,
            )
            .await
            .unwrap()
            .0
            .id
    }
}

/// Requests access for `id` asking for every permission, approves `grant`, returns the key.
pub async fn approved_agent(
    svc: &Service,
    admin: &MemberCaller,
    id: &str,
    grant: &[Permission],
) -> String {
    let all: Vec<String> = Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    svc.request_access(
        admin,
        AccessRequest {
            agent_id: id.into(),
            name: format!("Agent {id}"),
            capabilities: vec!["docs".into()],
            permissions: all,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_, key) = svc
        .approve_agent(admin, id, Some(PermissionSet::new(grant.iter().copied())))
        .await
        .unwrap();
    key.expose().to_owned()
}

// ---- servers and clients ----

pub struct HttpServer {
    pub child: tokio::process::Child,
    pub url: String,
    /// `http://ADDR/metrics` when the server was started with `PARALLAX_METRICS_LISTEN`.
    pub metrics_url: Option<String>,
}

pub async fn spawn_http(db_url: &str) -> HttpServer {
    spawn_http_env(db_url, &[]).await
}

/// `spawn_http` with extra environment (short timeouts, limits, a fixed signing key…).
pub async fn spawn_http_env(db_url: &str, env: &[(&str, &str)]) -> HttpServer {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--database-url", db_url, "serve", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn parallax-mcp serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut metrics_url = None;
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(i) = line.find("metrics on http://") {
                let rest = &line[i + "metrics on ".len()..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '\u{1b}')
                    .unwrap_or(rest.len());
                metrics_url = Some(rest[..end].to_owned());
            }
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on ".len()..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '\u{1b}')
                    .unwrap_or(rest.len());
                return rest[..end].to_owned();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server did not report its address in time");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    HttpServer {
        child,
        url,
        metrics_url,
    }
}

pub async fn http_client(url: &str, key: &str, version: ProtocolVersion) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned()),
    );
    ClientConfig::default()
        .with_protocol_version(version)
        .serve(transport)
        .await
        .expect("connect over HTTP")
}

/// An access token for `key` from the token endpoint of the server whose `/mcp` is at `url`, its
/// scope the whole grant.
pub async fn access_token(url: &str, key: &str) -> String {
    let origin = url.trim_end_matches("/mcp");
    let res = reqwest::Client::new()
        .post(format!("{origin}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("grant_type", "client_credentials"),
                ("client_secret", key),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

pub fn stdio_command(db_url: &str, key: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["--database-url", db_url, "stdio"])
        .env_remove("PARALLAX_API_KEY");
    if let Some(k) = key {
        cmd.env("PARALLAX_API_KEY", k);
    }
    cmd
}

/// A raw stdio session: lines in, lines out.
pub struct RawStdio {
    pub child: tokio::process::Child,
    pub stdin: Option<tokio::process::ChildStdin>,
    pub out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl RawStdio {
    pub async fn start(db_url: &str, key: &str) -> RawStdio {
        Self::spawn(stdio_command(db_url, Some(key)))
    }

    /// `cmd` (a `stdio_command`, maybe with more settings) with its stdin and stdout piped.
    pub fn spawn(mut cmd: tokio::process::Command) -> RawStdio {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        RawStdio {
            child,
            stdin,
            out: tokio::io::AsyncBufReadExt::lines(out),
        }
    }

    pub async fn send(&mut self, message: &Value) {
        self.write(&format!("{message}\n")).await;
    }

    /// Writes `text` to stdin in one write.
    pub async fn write(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.out.next_line())
            .await
            .expect("an answer")
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends `messages` in one write and returns their answers in the order sent.
    pub async fn ask_together(&mut self, messages: &[Value]) -> Vec<Value> {
        let lines: String = messages.iter().map(|m| format!("{m}\n")).collect();
        self.write(&lines).await;
        let mut answers = Vec::new();
        while answers.len() < messages.len() {
            let m = self.next().await;
            if m.get("method").is_none() {
                answers.push(m);
            }
        }
        answers.sort_by_key(|m| messages.iter().position(|s| s["id"] == m["id"]));
        answers
    }

    /// Sends `initialize` (2025-11-25, no capabilities) and checks it was answered.
    pub async fn initialize(&mut self) {
        let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "raw", "version": "0" } } });
        assert!(self.ask(&init).await["result"]["protocolVersion"].is_string());
    }

    /// Sends `message` and returns the answer to it (notifications are skipped).
    pub async fn ask(&mut self, message: &Value) -> Value {
        self.send(message).await;
        loop {
            let m = self.next().await;
            if m.get("method").is_none() {
                assert_eq!(m["id"], message["id"], "{m}");
                return m;
            }
        }
    }
}

pub async fn stdio_client(db_url: &str, key: &str) -> Client {
    let transport = TokioChildProcess::builder(stdio_command(db_url, Some(key)))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stdio")
        .0;
    ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .expect("connect over stdio")
}

pub async fn call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(map))
        .await
}

/// Calls a tool that must succeed; returns its structured result (checked against the text copy).
pub async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    let res = call(client, tool, args)
        .await
        .unwrap_or_else(|e| panic!("{tool} failed: {e}"));
    assert_ne!(
        res.is_error,
        Some(true),
        "{tool} returned an error: {res:?}"
    );
    let structured = res.structured_content.clone().expect("structured content");
    let text = res
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .expect("text content");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        structured,
        "text and structured results differ"
    );
    structured
}

/// Calls a tool that must be refused as a tool error; returns the message.
pub async fn refused(client: &Client, tool: &str, args: Value) -> String {
    let res = call(client, tool, args)
        .await
        .unwrap_or_else(|e| panic!("{tool}: expected a tool error, got {e}"));
    assert_eq!(
        res.is_error,
        Some(true),
        "{tool} should have been refused: {res:?}"
    );
    res.content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

pub async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

pub async fn audit(svc: &Service, admin: &MemberCaller, agent: &str) -> Vec<ActivityEntry> {
    svc.list_activity(
        admin,
        ActivityQuery {
            agent_id: Some(agent.into()),
            limit: 500,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}
