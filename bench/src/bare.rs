//! The baseline server: rmcp 3.11 with one tool, `echo`, that returns its arguments. No
//! authentication, no store: what an MCP call costs before any gate.
//!
//!     bare-echo http 127.0.0.1:0     # prints "listening on http://ADDR/mcp"
//!     bare-echo stdio

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
struct Echo;

fn echo_tool() -> Tool {
    let schema: Map<String, Value> = match json!({ "type": "object", "additionalProperties": true })
    {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    Tool::new("echo", "Returns its arguments", Arc::new(schema))
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bare-echo", "0"))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == "echo").then(echo_tool)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![echo_tool()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        Ok(CallToolResult::structured(args).into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stdio") => {
            let running = Echo
                .serve((tokio::io::stdin(), tokio::io::stdout()))
                .await?;
            running.waiting().await?;
        }
        Some("http") => {
            let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:0");
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let service = StreamableHttpService::new(
                || Ok(Echo),
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default(),
            );
            let app = axum::Router::new().nest_service("/mcp", service);
            eprintln!("listening on http://{}/mcp", listener.local_addr()?);
            // No Nagle delay on small responses, as parallax-mcp's own accept loop does.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
        }
        _ => return Err("usage: bare-echo http [ADDR] | bare-echo stdio".into()),
    }
    Ok(())
}
