//! The baseline server: rmcp 3.11 with one tool, `echo`, that returns its arguments. No
//! authentication, no store: what an MCP call costs before any gate.
//!
//!     bare-echo http 127.0.0.1:0 [ANSWER]   # prints "listening on http://ADDR/mcp"
//!     bare-echo stdio [ANSWER]
//!
//! With `ANSWER` (a file holding a JSON object, read at the first call), a second tool, `answer`,
//! returns that object as its structured content, as a server keeping a tool's answer in memory
//! would: what the same payload costs with no gate (`parallax-bench` compares the read tool with
//! it).
//!
//! `BARE_JSON_RESPONSE=1` answers stateless (2026-07-28) requests with one JSON body, as
//! `parallax-mcp` does, instead of rmcp's default SSE stream: the baseline stays rmcp's default,
//! and this shows what the same setting saves a server with no gate.

use axum::serve::ListenerExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};
use std::sync::Arc;

#[derive(Clone)]
struct Echo {
    answer: Option<Arc<Answer>>,
}

/// The `answer` tool's reply: the file's object, read once.
struct Answer {
    path: std::path::PathBuf,
    value: std::sync::OnceLock<Result<Value, String>>,
}

impl Answer {
    fn at(path: &str) -> Arc<Answer> {
        Arc::new(Answer {
            path: path.into(),
            value: std::sync::OnceLock::new(),
        })
    }

    fn get(&self) -> Result<&Value, ErrorData> {
        let read = || -> Result<Value, String> {
            let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        self.value
            .get_or_init(read)
            .as_ref()
            .map_err(|e| ErrorData::internal_error(format!("answer file: {e}"), None))
    }
}

fn echo_tool() -> Tool {
    let schema: Map<String, Value> = match json!({ "type": "object", "additionalProperties": true })
    {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    Tool::new("echo", "Returns its arguments", Arc::new(schema))
}

fn answer_tool() -> Tool {
    let schema: Map<String, Value> = match json!({ "type": "object" }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    Tool::new(
        "answer",
        "Returns the answer it was started with",
        Arc::new(schema),
    )
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bare-echo", "0"))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        match name {
            "echo" => Some(echo_tool()),
            "answer" if self.answer.is_some() => Some(answer_tool()),
            _ => None,
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = vec![echo_tool()];
        if self.answer.is_some() {
            tools.push(answer_tool());
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let ("answer", Some(answer)) = (request.name.as_ref(), &self.answer) {
            return Ok(CallToolResult::structured(answer.get()?.clone()).into());
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        Ok(CallToolResult::structured(args).into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stdio") => {
            // rmcp's pipe transport, as `parallax-mcp stdio` uses: the baseline gets the same
            // reads and writes on the IO reactor, not a blocking-pool hand-off per message.
            let running = Echo {
                answer: args.get(1).map(|path| Answer::at(path)),
            }
            .serve(rmcp::transport::stdio_pipes())
            .await?;
            running.waiting().await?;
        }
        Some("http") => {
            let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:0");
            let answer = args.get(2).map(|path| Answer::at(path));
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let service = StreamableHttpService::new(
                move || {
                    Ok(Echo {
                        answer: answer.clone(),
                    })
                },
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default().with_json_response(
                    std::env::var_os("BARE_JSON_RESPONSE").is_some_and(|v| v == "1"),
                ),
            );
            let app = axum::Router::new().nest_service("/mcp", service);
            eprintln!("listening on http://{}/mcp", listener.local_addr()?);
            // No Nagle delay on small responses, as parallax-mcp's own accept loop does.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
        }
        _ => return Err("usage: bare-echo http [ADDR [ANSWER]] | bare-echo stdio [ANSWER]".into()),
    }
    Ok(())
}
