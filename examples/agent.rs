//! A small agent written with rmcp's client: it connects to parallax-mcp over stdio (spawning the
//! server) or over streamable HTTP, lists its tools, fetches its assignments and logs progress.
//!
//! ```text
//! # stdio: spawns `parallax-mcp stdio` with the key in PARALLAX_API_KEY (build it first)
//! cargo build
//! PARALLAX_API_KEY=mcp_agent_… cargo run --example agent -- stdio
//! # HTTP: against a running `parallax-mcp serve`
//! PARALLAX_API_KEY=mcp_agent_… cargo run --example agent -- http http://127.0.0.1:8720/mcp
//! ```

use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ClientConfig>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key =
        std::env::var("PARALLAX_API_KEY").map_err(|_| "set PARALLAX_API_KEY to the agent's key")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client: Client = match args.first().map(String::as_str) {
        Some("http") => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:8720/mcp".into());
            let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(key);
            ClientConfig::default()
                .serve(StreamableHttpClientTransport::from_config(config))
                .await?
        }
        Some("stdio") | None => {
            // The server reads the key from its environment; it inherits ours. Extra arguments
            // (e.g. `--database-url …`) are passed to it.
            let server = server_binary();
            eprintln!("starting {}", server.display());
            let mut cmd = tokio::process::Command::new(&server);
            cmd.args(args.iter().skip(1)).arg("stdio");
            let child = TokioChildProcess::new(cmd).map_err(|e| {
                format!(
                    "cannot start {}: {e} (build it with `cargo build`, or set PARALLAX_MCP_BIN to the server binary)",
                    server.display()
                )
            })?;
            ClientConfig::default().serve(child).await?
        }
        Some(other) => return Err(format!("unknown transport {other:?}: use stdio or http").into()),
    };

    let tools = client.list_all_tools().await?;
    println!("tools I may call:");
    for t in &tools {
        println!("  {:<22} {}", t.name, t.title.as_deref().unwrap_or(""));
    }

    let mine = call(&client, "agent_my_assignments", json!({})).await?;
    let tasks = mine["tasks"].as_array().cloned().unwrap_or_default();
    println!("{} assigned task(s)", tasks.len());
    let Some(first) = tasks.first() else {
        call(
            &client,
            "agent_update_status",
            json!({ "status": "idle", "message": "nothing assigned" }),
        )
        .await?;
        client.cancel().await?;
        return Ok(());
    };
    let task_id = first["task"]["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "working on {:?}",
        first["task"]["title"].as_str().unwrap_or_default()
    );
    call(&client, "agent_update_status", json!({ "status": "working", "currentTask": task_id, "message": "started by the example agent" })).await?;
    let logged = call(
        &client,
        "agent_log_activity",
        json!({ "type": "task_started", "description": "picked up the task", "taskId": task_id }),
    )
    .await?;
    let id = logged["activityId"].as_str().unwrap_or("?");
    // The task's status is reported only when logging moved it.
    match logged["taskStatus"].as_str() {
        Some(status) => println!("logged activity {id} (task status now {status})"),
        None => println!("logged activity {id}"),
    }
    call(&client, "agent_update_status", json!({ "status": "idle" })).await?;
    client.cancel().await?;
    Ok(())
}

/// The server to spawn: `PARALLAX_MCP_BIN` if set, else the `parallax-mcp` that cargo built next
/// to this example (`target/<profile>/examples/agent` → `target/<profile>/parallax-mcp`), else the
/// one on `PATH`.
fn server_binary() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("PARALLAX_MCP_BIN") {
        return bin.into();
    }
    let sibling = std::env::current_exe().ok().and_then(|exe| {
        let profile_dir = exe.parent()?.parent()?;
        Some(profile_dir.join(format!("parallax-mcp{}", std::env::consts::EXE_SUFFIX)))
    });
    match sibling {
        Some(path) if path.is_file() => path,
        Some(path) => {
            eprintln!(
                "no server at {} (run `cargo build`); trying parallax-mcp on PATH",
                path.display()
            );
            "parallax-mcp".into()
        }
        None => "parallax-mcp".into(),
    }
}

/// Calls a tool and returns its structured result, or the tool's error message as an error.
async fn call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<Value, Box<dyn std::error::Error>> {
    let Value::Object(map) = args else {
        unreachable!("arguments are objects")
    };
    let res = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(map))
        .await?;
    if res.is_error == Some(true) {
        let text = res
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone())
            .unwrap_or_default();
        return Err(format!("{tool}: {text}").into());
    }
    Ok(res.structured_content.unwrap_or(Value::Null))
}
