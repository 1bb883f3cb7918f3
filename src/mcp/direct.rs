//! `tools/call` on a 2025-11-25 session, answered by the gate without rmcp's session machinery.
//!
//! Through rmcp, a session's request crosses four tasks (the HTTP connection, the session's
//! worker, its service loop, the handler) and back, its answer is cloned out of the work
//! snapshot, serialised into an SSE stream whose priming event leaves in a write of its own, and
//! a sleeping session is woken first. Bare rmcp pays all of that too; for the read tool, whose
//! answer is ten tasks, serialising it took a fifth of the call's instructions. Here a plain tool
//! call (nothing rmcp has to see: no progress token, no task, no per-request protocol metadata,
//! no `Mcp-Param-*` header) goes to the same gate as rmcp's `call_tool`
//! ([`ParallaxServer::call_gate`]: authorization, audit, metrics, spans, shutdown's drain) and is
//! answered with one JSON body, as streamable HTTP lets a server answer any POST. The read
//! tool's answer is encoded once per work snapshot (`ToolOutput::wire`) and copied after.
//! Anything else, and every other method, goes on to rmcp unchanged.

use super::envelope::RpcMessage;
use super::server::{HttpAuth, ParallaxServer, call_response, gate_span, tool_label, tool_result};
use super::sessions::{Owned, SESSION_HEADER, SessionRegistry};
use crate::auth::{AgentAuthRefusal, AgentCaller};
use crate::telemetry::traces;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use rmcp::model::{
    CallToolResponse, JsonObject, ProtocolVersion, RequestId, ServerJsonRpcMessage, ServerResult,
};
use serde_json::Value;
use std::sync::Arc;

/// What [`call`] needs: a handler to reach the gate with, and the sessions it may answer for.
pub struct Direct {
    pub server: ParallaxServer,
    pub sessions: Arc<SessionRegistry>,
}

/// A tool call this path can answer, taken from the request.
struct Plain {
    auth: Arc<Result<AgentCaller, AgentAuthRefusal>>,
    id: Value,
    name: String,
    arguments: Option<JsonObject>,
    tasks: bool,
}

/// Answers a plain `tools/call` on a bound session, or hands the request back for rmcp.
/// Runs inside `sessions::bind`, which has checked that the session is the caller's.
pub async fn call(d: &Direct, mut req: Request) -> Result<Response, Request> {
    let Some(plain) = plain(d, &mut req) else {
        return Err(req);
    };
    let auth = (*plain.auth).clone();
    let tool = tool_label(&plain.name);
    let span = traces::span(|| {
        let parent = req
            .extensions()
            .get::<traces::RequestSpan>()
            .map_or_else(tracing::Span::current, |s| s.0.clone());
        gate_span(&parent, tool)
    });
    let outcome = d
        .server
        .call_gate(span, &plain.name, plain.arguments, plain.tasks, async {
            Ok(auth)
        })
        .await;
    let body = match outcome {
        Ok(super::gate::CallOutcome::Ok(output)) => {
            let result = output.wire(|output| {
                let result = legacy(CallToolResponse::from(tool_result(output.clone())));
                Bytes::from(serde_json::to_vec(&result).expect("results serialise"))
            });
            let mut body = BytesMut::with_capacity(result.len() + 64);
            body.put_slice(br#"{"jsonrpc":"2.0","id":"#);
            serde_json::to_writer((&mut body).writer(), &plain.id).expect("ids serialise");
            body.put_slice(br#","result":"#);
            body.put_slice(&result);
            body.put_u8(b'}');
            body.freeze()
        }
        outcome => {
            let id: RequestId = serde_json::from_value(plain.id).expect("checked by the envelope");
            let message = match outcome {
                Ok(outcome) => ServerJsonRpcMessage::response(legacy(call_response(outcome)), id),
                Err(e) => ServerJsonRpcMessage::error(e, Some(id)),
            };
            Bytes::from(serde_json::to_vec(&message).expect("messages serialise"))
        }
    };
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// A result in the shape rmcp gives a session's (pre-2026-07-28) client: no `resultType`, and
/// structured content only if it is an object.
fn legacy(response: CallToolResponse) -> ServerResult {
    let mut result = ServerResult::from(response);
    result.strip_result_type_for_legacy_peer();
    result.strip_non_object_output_for_legacy_peer();
    result
}

/// The call, if it is one this path answers exactly as rmcp would; its parameters are taken out
/// of the request only then, so a request handed back to rmcp is as it came.
fn plain(d: &Direct, req: &mut Request) -> Option<Plain> {
    if req.method() != Method::POST
        || req.extensions().get::<Owned>().is_none()
        || !simple_headers(req.headers())
    {
        return None;
    }
    let auth = req.extensions().get::<HttpAuth>()?.0.clone();
    let session = req.headers().get(SESSION_HEADER)?.to_str().ok()?;
    let tasks = d.sessions.client_tasks(session)?;
    let message = req.extensions().get::<RpcMessage>()?;
    if message.method.as_deref() != Some("tools/call")
        || !message.id.is_i64() && !message.id.is_string()
    {
        return None;
    }
    let params = message.params.as_ref()?.as_object()?;
    if !params
        .keys()
        .all(|k| matches!(k.as_str(), "name" | "arguments" | "_meta"))
    {
        return None;
    }
    params.get("name")?.as_str()?;
    match params.get("arguments") {
        None | Some(Value::Object(_)) => {}
        Some(_) => return None,
    }
    // Trace context only: a progress token or per-request protocol metadata is rmcp's.
    match params.get("_meta") {
        None => {}
        Some(Value::Object(meta))
            if meta.keys().all(|k| k == "traceparent" || k == "tracestate") => {}
        Some(_) => return None,
    }
    let message = req.extensions_mut().remove::<RpcMessage>()?;
    let Some(Value::Object(mut params)) = message.params else {
        return None;
    };
    let Some(Value::String(name)) = params.remove("name") else {
        return None;
    };
    let arguments = match params.remove("arguments") {
        Some(Value::Object(args)) => Some(args),
        _ => None,
    };
    Some(Plain {
        auth,
        id: message.id,
        name,
        arguments,
        tasks,
    })
}

/// Headers rmcp would accept without a second look: an `Accept` naming both JSON and SSE with
/// no parameters, a 2025 protocol version (or none), and no `Mcp-Param-*` header.
fn simple_headers(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for essence in value.split(',').map(str::trim) {
            if essence.contains(';') {
                return false;
            }
            json |= essence.eq_ignore_ascii_case("application/json");
            sse |= essence.eq_ignore_ascii_case("text/event-stream");
        }
    }
    if !(json && sse) {
        return false;
    }
    if let Some(version) = headers.get("mcp-protocol-version") {
        let Ok(version) = version.to_str() else {
            return false;
        };
        let known = ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .any(|v| v.as_str() == version);
        if !known || version >= ProtocolVersion::V_2026_07_28.as_str() {
            return false;
        }
    }
    !headers
        .keys()
        .any(|name| name.as_str().starts_with("mcp-param-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn only_plain_headers_take_this_path() {
        let accept = ("accept", "application/json, text/event-stream");
        assert!(simple_headers(&headers(&[accept])));
        assert!(simple_headers(&headers(&[
            accept,
            ("mcp-protocol-version", "2025-11-25")
        ])));
        // Split over two headers is still both.
        assert!(simple_headers(&headers(&[
            ("accept", "application/json"),
            ("accept", "text/event-stream")
        ])));
        // rmcp refuses these (406) or checks them further: they go on to it.
        assert!(!simple_headers(&headers(&[("accept", "application/json")])));
        assert!(!simple_headers(&headers(&[(
            "accept",
            "application/json, text/event-stream;q=0"
        )])));
        assert!(!simple_headers(&headers(&[
            accept,
            ("mcp-protocol-version", "2026-07-28")
        ])));
        assert!(!simple_headers(&headers(&[
            accept,
            ("mcp-protocol-version", "1999-01-01")
        ])));
        assert!(!simple_headers(&headers(&[
            accept,
            ("mcp-param-status", "todo")
        ])));
    }
}
