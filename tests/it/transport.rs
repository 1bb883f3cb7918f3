//! The HTTP transport in-process and over raw HTTP: sessions bound to their agent, closed on
//! demand. Raw-request helpers here are shared with the attack suite.

use crate::support::server::*;
use parallax_mcp::domain::Permission;
use parallax_mcp::http::{self, HttpContext, HttpOptions};
use parallax_mcp::store::Store;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ACCEPT: &str = "application/json, text/event-stream";

pub fn init_body(version: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": { "name": "raw", "version": "0" } } })
}

/// A raw MCP POST with the headers a well-behaved client sends.
pub fn post(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: &Value,
) -> reqwest::RequestBuilder {
    let mut req = http
        .post(url)
        .header("accept", ACCEPT)
        .header("authorization", format!("Bearer {key}"))
        .json(body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-11-25");
    }
    req
}

/// The JSON-RPC messages of a response: a plain JSON body or the `data:` lines of an SSE body.
pub async fn messages(res: reqwest::Response) -> Vec<Value> {
    let sse = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let text = res.text().await.unwrap();
    if !sse {
        return vec![serde_json::from_str(&text).unwrap_or(Value::String(text))];
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Opens a 2025-11-25 session by hand; returns its id.
pub async fn open_session(http: &reqwest::Client, url: &str, key: &str) -> String {
    let res = post(http, url, key, None, &init_body("2025-11-25"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let msgs = messages(res).await;
    assert!(
        msgs.iter()
            .any(|m| m["result"]["protocolVersion"].is_string()),
        "{msgs:?}"
    );
    let done = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let res = post(http, url, key, Some(&id), &done).send().await.unwrap();
    assert_eq!(res.status(), 202);
    id
}

/// `tools/list` on a session: the HTTP status and, on 200, the tool names.
pub async fn list_on(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    session: &str,
) -> (u16, Vec<String>) {
    let body = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" });
    let res = post(http, url, key, Some(session), &body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    let msgs = messages(res).await;
    let tools = msgs
        .iter()
        .find_map(|m| m["result"]["tools"].as_array().cloned())
        .unwrap_or_default();
    let names = tools
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    (status, names)
}

/// The server in this process, so a test can reach its context.
pub struct InProcess {
    pub ctx: HttpContext,
    pub url: String,
    stop: CancellationToken,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn in_process(db_url: &str) -> InProcess {
    let store = Store::open(db_url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = HttpOptions {
        drain_timeout: Duration::from_secs(1),
        ..HttpOptions::default()
    };
    let tokens = parallax_mcp::auth::Tokens::load(store.clone(), &opts.auth)
        .await
        .unwrap();
    let ctx = HttpContext::new(
        parallax_mcp::service::Service::new(store),
        addr,
        opts,
        tokens,
    )
    .await;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(http::run_with(ctx.clone(), listener, async move {
        stopped.cancelled().await
    }));
    InProcess {
        ctx,
        url: format!("http://{addr}/mcp"),
        stop,
    }
}

#[tokio::test]
async fn close_agent_ends_that_agents_sessions_only() {
    let w = world().await;
    let bot = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let other = approved_agent(&w.svc, &w.admin, "other", &[Permission::ReadTasks]).await;
    let server = in_process(&w.db.url).await;
    let http = reqwest::Client::new();
    let s1 = open_session(&http, &server.url, &bot).await;
    let s2 = open_session(&http, &server.url, &bot).await;
    let s3 = open_session(&http, &server.url, &other).await;
    assert_eq!(server.ctx.sessions.len(), 3);
    assert_eq!(list_on(&http, &server.url, &bot, &s1).await.0, 200);

    // An open GET stream on the session ends when the session is closed.
    let stream = http
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {bot}"))
        .header("mcp-session-id", &s1)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let ws = w.admin.workspace().id.clone();
    assert_eq!(server.ctx.sessions.close_agent(&ws, "nobody").await, 0);
    assert_eq!(server.ctx.sessions.close_agent("other-ws", "bot").await, 0);
    assert_eq!(server.ctx.sessions.close_agent(&ws, "bot").await, 2);
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.text()).await;
    assert!(ended.is_ok(), "the GET stream ends with its session");

    for s in [&s1, &s2] {
        assert_eq!(list_on(&http, &server.url, &bot, s).await.0, 404);
    }
    assert_eq!(list_on(&http, &server.url, &other, &s3).await.0, 200);
    assert_eq!(server.ctx.sessions.len(), 1);
    assert_eq!(server.ctx.sessions.close_agent(&ws, "bot").await, 0);

    // A session closed by the client (DELETE) is forgotten too.
    let res = http
        .delete(&server.url)
        .header("authorization", format!("Bearer {other}"))
        .header("mcp-session-id", &s3)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert!(server.ctx.sessions.is_empty());
}

/// Waits until `check` holds (polling), or fails naming `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_sessions_sleep_and_wake_on_their_next_request() {
    let w = world().await;
    let bot = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let other = approved_agent(&w.svc, &w.admin, "other", &[Permission::ReadTasks]).await;
    let server = in_process(&w.db.url).await;
    let sessions = server.ctx.sessions.clone();
    let http = reqwest::Client::new();
    let s1 = open_session(&http, &server.url, &bot).await;
    let s2 = open_session(&http, &server.url, &bot).await;
    let s3 = open_session(&http, &server.url, &bot).await;

    // An open GET stream does not keep an idle session awake: it stays open while it sleeps.
    let mut stream = http
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {bot}"))
        .header("mcp-session-id", &s3)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    eventually("three sessions asleep", || sessions.asleep() == 3).await;
    assert_eq!(sessions.len(), 3, "sleeping sessions are still open");
    let open = tokio::time::timeout(Duration::from_millis(300), stream.chunk()).await;
    assert!(
        !matches!(open, Ok(Ok(None))),
        "the GET stream of a sleeping session stays open: {open:?}"
    );

    // A subscription wakes its session and keeps it awake (its watcher lives in the handler).
    let subscribe = json!({ "jsonrpc": "2.0", "id": 7, "method": "resources/subscribe",
        "params": { "uri": "parallax://me/assignments" } });
    let res = post(&http, &server.url, &bot, Some(&s3), &subscribe)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msgs = messages(res).await;
    assert!(msgs.iter().any(|m| m["result"].is_object()), "{msgs:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sessions.asleep(), 2, "the subscribed session stays awake");

    // Another agent is refused a sleeping session as an unknown one, and does not wake it.
    assert_eq!(list_on(&http, &server.url, &other, &s1).await.0, 404);
    assert_eq!(sessions.asleep(), 2);

    // Its owner's plain listing is answered without waking it (`mcp::direct`).
    let (status, tools) = list_on(&http, &server.url, &bot, &s1).await;
    assert_eq!(status, 200);
    assert!(
        tools.contains(&"agent_my_assignments".to_owned()),
        "{tools:?}"
    );
    assert_eq!(sessions.asleep(), 2, "still asleep");
    // A request rmcp has to answer wakes it, on the same session id, and gets its answer.
    let resources = json!({ "jsonrpc": "2.0", "id": 8, "method": "resources/list" });
    let res = post(&http, &server.url, &bot, Some(&s1), &resources)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msgs = messages(res).await;
    assert!(
        msgs.iter().any(|m| m["result"]["resources"].is_array()),
        "{msgs:?}"
    );
    assert_eq!(sessions.asleep(), 1, "woken");
    // A call on the woken session goes through the gate as before.
    let call = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "agent_my_assignments", "arguments": {} } });
    let res = post(&http, &server.url, &bot, Some(&s1), &call)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msgs = messages(res).await;
    assert!(
        msgs.iter()
            .any(|m| m["result"]["structuredContent"].is_object()),
        "{msgs:?}"
    );
    // And it goes back to sleep once quiet again.
    eventually("the woken session asleep again", || sessions.asleep() == 2).await;
    assert_eq!(list_on(&http, &server.url, &bot, &s1).await.0, 200);

    // DELETE ends a sleeping session for good.
    eventually("s2 still asleep", || sessions.asleep() >= 1).await;
    let res = http
        .delete(&server.url)
        .header("authorization", format!("Bearer {bot}"))
        .header("mcp-session-id", &s2)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(list_on(&http, &server.url, &bot, &s2).await.0, 404);
    assert_eq!(sessions.len(), 2);

    // Revocation-style close counts sleeping sessions too and ends the stream of the awake one.
    eventually("s1 asleep", || sessions.asleep() == 1).await;
    let ws = w.admin.workspace().id.clone();
    assert_eq!(sessions.close_agent(&ws, "bot").await, 2);
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.text()).await;
    assert!(ended.is_ok(), "the GET stream ends with its session");
    assert_eq!(list_on(&http, &server.url, &bot, &s1).await.0, 404);
    assert!(sessions.is_empty());
}

/// A stateless (2026-07-28) call that sends nothing before its answer gets it as one JSON body
/// with its length (one write, no SSE framing), as the spec lets a server choose; so does a plain
/// tool call on a session (`mcp::direct`), while one that rmcp must see (a progress token)
/// streams its answer, and both answer alike.
#[tokio::test]
async fn a_stateless_answer_is_one_json_body_and_so_is_a_plain_call_on_a_session() {
    let w = world().await;
    let bot = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let server = in_process(&w.db.url).await;
    let http = reqwest::Client::new();
    let call = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "agent_my_assignments", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": { "name": "raw", "version": "0" } } } });
    let res = post(&http, &server.url, &bot, None, &call)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "agent_my_assignments")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let length: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = res.text().await.unwrap();
    assert_eq!(text.len(), length);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["id"], 7, "{answer}");
    assert!(
        answer["result"]["structuredContent"]["tasks"].is_array(),
        "{answer}"
    );
    assert_ne!(answer["result"]["isError"], true, "{answer}");

    let session = open_session(&http, &server.url, &bot).await;
    let mut call = call;
    call["params"].as_object_mut().unwrap().remove("_meta");
    let json_body = |res: reqwest::Response| async move {
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let answers = messages(res).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        answers.into_iter().next().unwrap()
    };
    let res = post(&http, &server.url, &bot, Some(&session), &call)
        .send()
        .await
        .unwrap();
    let direct = json_body(res).await;
    assert_eq!(direct["id"], 7, "{direct}");
    assert!(
        direct["result"]["structuredContent"]["tasks"].is_array(),
        "{direct}"
    );

    // A progress token asks for notifications no tool sends: still answered directly.
    let mut tracked = call.clone();
    tracked["params"]["_meta"] = json!({ "progressToken": "p1" });
    let res = post(&http, &server.url, &bot, Some(&session), &tracked)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(res).await, direct);

    // With `_meta` rmcp has to see (any other key) the call is rmcp's: it streams, and answers
    // the same.
    let mut tracked = call.clone();
    tracked["params"]["_meta"] = json!({ "example.com/hint": "p1" });
    let res = post(&http, &server.url, &bot, Some(&session), &tracked)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let streamed = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(streamed.starts_with("text/event-stream"), "{streamed}");
    let answers = messages(res).await;
    let through_rmcp = answers
        .iter()
        .find(|m| m["id"] == 7)
        .unwrap_or_else(|| panic!("{answers:?}"));
    assert_eq!(through_rmcp, &direct, "both paths answer alike");

    // A string id comes back as it was sent, and a refusal, an unknown tool and bad arguments
    // answer alike on both paths.
    let mut named = call.clone();
    named["id"] = json!("call-1");
    let res = post(&http, &server.url, &bot, Some(&session), &named)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(res).await["id"], "call-1");
    for params in [
        json!({ "name": "agent_log_activity", "arguments": { "kind": "note", "description": "x" } }),
        json!({ "name": "no_such_tool", "arguments": {} }),
        json!({ "name": "agent_my_assignments", "arguments": { "status": 5 } }),
    ] {
        let plain = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params });
        let res = post(&http, &server.url, &bot, Some(&session), &plain)
            .send()
            .await
            .unwrap();
        let direct = json_body(res).await;
        assert!(
            direct["error"].is_object() || direct["result"]["isError"] == true,
            "refused: {direct}"
        );
        let mut tracked = plain.clone();
        tracked["params"]["_meta"] = json!({ "example.com/hint": 2 });
        let res = post(&http, &server.url, &bot, Some(&session), &tracked)
            .send()
            .await
            .unwrap();
        let answers = messages(res).await;
        let through_rmcp = answers.iter().find(|m| m["id"] == 9).unwrap();
        assert_eq!(through_rmcp, &direct, "{params}");
    }

    // A listing too: one JSON body, as rmcp's streamed one.
    let list = json!({ "jsonrpc": "2.0", "id": 12, "method": "tools/list" });
    let res = post(&http, &server.url, &bot, Some(&session), &list)
        .send()
        .await
        .unwrap();
    let direct = json_body(res).await;
    let names: Vec<&str> = direct["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agent_my_assignments",
            "agent_update_status",
            "agent_log_activity"
        ],
        "the tools a ReadTasks agent may call"
    );
    let mut tracked = list.clone();
    tracked["params"] = json!({ "_meta": { "example.com/hint": 1 } });
    let res = post(&http, &server.url, &bot, Some(&session), &tracked)
        .send()
        .await
        .unwrap();
    let answers = messages(res).await;
    assert_eq!(answers.iter().find(|m| m["id"] == 12), Some(&direct));

    // A plain call on a sleeping session is answered without waking it.
    let sessions = server.ctx.sessions.clone();
    eventually("the session asleep", || sessions.asleep() == 1).await;
    let res = post(&http, &server.url, &bot, Some(&session), &call)
        .send()
        .await
        .unwrap();
    let answer = json_body(res).await;
    assert!(
        answer["result"]["structuredContent"]["tasks"].is_array(),
        "{answer}"
    );
    assert_eq!(sessions.asleep(), 1, "still asleep");
}

/// A plain 2026-07-28 call is answered by `mcp::direct`; with another key in `_meta` it is
/// rmcp's. Both must answer alike, status included: a result, a string id, a client that
/// declares tasks, a refusal, an unknown tool and bad arguments.
#[tokio::test]
async fn a_plain_stateless_call_answers_as_rmcp_would() {
    let w = world().await;
    let bot = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let server = in_process(&w.db.url).await;
    let http = reqwest::Client::new();
    let send = |body: Value| {
        let name = body["params"]["name"].as_str().unwrap().to_owned();
        let req = post(&http, &server.url, &bot, None, &body)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", name);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            assert_eq!(res.headers()["content-type"], "application/json");
            let answers = messages(res).await;
            assert_eq!(answers.len(), 1, "{answers:?}");
            (status, answers.into_iter().next().unwrap())
        }
    };
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "raw", "version": "0" } });
    let mut tasks_meta = meta.clone();
    tasks_meta["io.modelcontextprotocol/clientCapabilities"] =
        json!({ "extensions": { "io.modelcontextprotocol/tasks": {} } });
    let read = json!({ "name": "agent_my_assignments", "arguments": {} });
    for (id, params, meta) in [
        (json!(7), read.clone(), &meta),
        (json!("call-1"), read.clone(), &meta),
        (json!(8), read, &tasks_meta),
        (
            json!(9),
            json!({ "name": "agent_list_workspace", "arguments": {} }),
            &meta,
        ),
        (
            json!(10),
            json!({ "name": "no_such_tool", "arguments": {} }),
            &meta,
        ),
        (
            json!(11),
            json!({ "name": "agent_my_assignments", "arguments": { "status": 5 } }),
            &meta,
        ),
    ] {
        let mut plain =
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
        plain["params"]["_meta"] = meta.clone();
        let (status, direct) = send(plain.clone()).await;
        assert_eq!(direct["id"], id, "{direct}");
        let mut tracked = plain.clone();
        tracked["params"]["_meta"]["example.com/hint"] = json!("p1");
        let through_rmcp = send(tracked).await;
        assert_eq!(through_rmcp, (status, direct.clone()), "{plain}");
        if plain["params"]["name"] == "agent_my_assignments" && id != 11 {
            assert!(
                direct["result"]["structuredContent"]["tasks"].is_array(),
                "{direct}"
            );
            assert_eq!(direct["result"]["resultType"], "complete", "{direct}");
        } else {
            assert!(
                direct["error"].is_object() || direct["result"]["isError"] == true,
                "refused: {direct}"
            );
        }
    }
    // A listing: `Mcp-Method: tools/list`, no `Mcp-Name`, and cache hints on 2026-07-28.
    let list = |meta: Value| {
        let body = json!({ "jsonrpc": "2.0", "id": 20, "method": "tools/list",
            "params": { "_meta": meta } });
        post(&http, &server.url, &bot, None, &body)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
    };
    let res = list(meta.clone()).send().await.unwrap();
    let status = res.status();
    let direct = messages(res).await;
    let mut hinted = meta.clone();
    hinted["example.com/hint"] = json!(1);
    let res = list(hinted).send().await.unwrap();
    assert_eq!(
        (res.status(), messages(res).await),
        (status, direct.clone())
    );
    assert_eq!(
        direct[0]["result"]["tools"].as_array().unwrap().len(),
        3,
        "{direct:?}"
    );
    assert_eq!(direct[0]["result"]["resultType"], "complete", "{direct:?}");
    assert_eq!(direct[0]["result"]["cacheScope"], "private", "{direct:?}");
}

/// The console and the admin API are built at their first request (`http::OnFirstUse`), behind
/// the same edge as every other route: a wrong Host is refused whether or not they are built yet,
/// an unknown path gets a plain 404, and the console and the API then answer as themselves.
#[tokio::test]
async fn the_console_and_the_api_answer_behind_the_edge_when_first_asked() {
    let w = world().await;
    let server = spawn_http(&w.db.url).await;
    let base = server.url.trim_end_matches("/mcp");
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}"));
    let wrong_host_is_refused = async |built: bool| {
        for path in ["/login", "/api/v1/openapi.json", "/nowhere"] {
            let res = get(path)
                .header("host", "evil.example.com")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{path}, built: {built}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "host_not_allowed", "{path}");
        }
    };
    wrong_host_is_refused(false).await;
    let res = get("/nowhere").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("content-security-policy").is_none());
    assert_eq!(res.text().await.unwrap(), "");
    for _ in 0..2 {
        let res = get("/login").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(res.text().await.unwrap().contains("<form"));
    }
    let res = get("/api/v1/nowhere").send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let res = get("/api/v1/openapi.json").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    wrong_host_is_refused(true).await;
}
