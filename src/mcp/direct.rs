//! `tools/call` and `tools/list` answered by the gate without rmcp's request machinery: on a
//! 2025-11-25 session, as a 2026-07-28 stateless request, and on stdio ([`Stdio`]).
//!
//! Through rmcp, a session's request crosses four tasks (the HTTP connection, the session's
//! worker, its service loop, the handler) and back, its answer is cloned out of the work
//! snapshot, serialised into an SSE stream whose priming event leaves in a write of its own, and
//! a sleeping session is woken first; a stateless request is parsed a second time, checked, and
//! served by a one-shot service with a task and a channel of its own. Bare rmcp pays all of that
//! too; for the read tool, whose answer is ten tasks, serialising it took a fifth of the call's
//! instructions. Here a plain tool call (nothing rmcp has to see: no task, no `_meta` but trace
//! context and a progress token, no `Mcp-Param-*` header; on 2026-07-28 exactly the per-request
//! metadata and headers that version requires, well formed) goes to the same gate as rmcp's `call_tool`
//! ([`ParallaxServer::call_gate`]: authorization, audit, metrics, spans, shutdown's drain) and is
//! answered with one JSON body, as streamable HTTP lets a server answer any POST (and as rmcp
//! answers a stateless request with `json_response`). The read tool's answer is encoded once per
//! work snapshot and shape (`ToolOutput::wire`) and copied after, and a listing once per set of
//! visible tools and shape ([`Listings`]). Anything else, and every other method, goes on to
//! rmcp unchanged.

use super::catalogue::CATALOGUE;
use super::envelope::RpcMessage;
use super::server::{
    HttpAuth, ParallaxServer, Pending, PendingAuth, call_response, gate_span, stdio_request_span,
    tool_label, tool_listing, tool_result,
};
use super::sessions::{Owned, SESSION_HEADER};
use super::tools::Shape;
use crate::auth::{AgentAuthRefusal, AgentCaller};
use crate::telemetry::traces;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use rmcp::ErrorData;
use rmcp::model::{
    CallToolResponse, ClientCapabilities, ErrorCode, JsonObject, ProtocolVersion, RequestId,
    ServerJsonRpcMessage, ServerResult,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// What [`call`] needs: a handler to reach the gate with, and its kept `tools/list` answers. A
/// session's call is answered here when [`super::sessions::bind`] found it the caller's.
pub struct Direct {
    pub server: ParallaxServer,
    pub listings: Listings,
}

/// A request this path can answer, taken from the HTTP request.
struct Plain {
    auth: PlainAuth,
    work: Work,
}

/// How the transport left the caller's credential.
enum PlainAuth {
    Checked(Arc<Result<AgentCaller, AgentAuthRefusal>>),
    /// Unconfirmed (see `PendingAuth`): only a call of a tool `catalogue::decided_unconfirmed`
    /// names may be decided on it.
    Pending(Arc<Pending>),
}

/// Whether `req` may be a plain call of a tool decided unconfirmed
/// (`catalogue::decided_unconfirmed`) that the unconfirmed `caller` may make, which [`call`]
/// decides on it (`PendingAuth`) if it can: any other request has it confirmed first
/// (`mcp::http::confirm`, which also checks a token's scope when the confirmed caller's grant
/// turns out wider than the token).
pub fn may_decide_unconfirmed(req: &Request, caller: &AgentCaller) -> bool {
    req.extensions().get::<RpcMessage>().is_some_and(|m| {
        m.method.as_deref() == Some("tools/call")
            && m.params
                .as_ref()
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .filter(|name| super::catalogue::decided_unconfirmed(name))
                .and_then(super::catalogue::find)
                .is_some_and(|spec| spec.requirement.is_met_by(caller))
    })
}

/// What this path answers.
enum Work {
    Call(ToolCall),
    /// `tools/list`: the caller's tools.
    List {
        id: Value,
        shape: Shape,
    },
}

/// Answers a plain `tools/call` or `tools/list` (on a bound session, or stateless), or hands
/// the request back for rmcp. Runs inside `sessions::bind`, which has checked that a session is
/// the caller's. A call on an unconfirmed key (`PendingAuth`) is decided on it if the gate can
/// (`Gate::call_unconfirmed`); otherwise `confirm` confirms the key first, and its
/// refusal is the answer.
pub async fn call<C, F>(d: &Direct, mut req: Request, confirm: C) -> Result<Response, Request>
where
    C: FnOnce(Arc<Pending>) -> F,
    F: Future<Output = Result<AgentCaller, Response>>,
{
    let Some(plain) = plain(&mut req) else {
        return Err(req);
    };
    // Present only while traces are exported.
    let request_span = req
        .extensions()
        .get::<traces::RequestSpan>()
        .map(|s| s.0.clone());
    let parent = || request_span.clone().unwrap_or_else(tracing::Span::current);
    let auth = match plain.auth {
        PlainAuth::Checked(auth) => (*auth).clone(),
        PlainAuth::Pending(pending) => {
            if let Work::Call(call) = &plain.work {
                let span = traces::span(|| gate_span(&parent(), tool_label(&call.name)));
                let decided = d
                    .server
                    .call_gate_unconfirmed(
                        span,
                        &call.name,
                        call.arguments.as_ref(),
                        &pending.unconfirmed,
                    )
                    .await;
                if let Some(outcome) = decided {
                    let (status, body) = answered(call.id.clone(), call.shape, outcome);
                    return Ok(json_response(status, body));
                }
            }
            match confirm(pending).await {
                Ok(caller) => Ok(caller),
                Err(refused) => return Ok(refused),
            }
        }
    };
    let (status, body) = respond(&d.server, &d.listings, plain.work, parent, async {
        Ok(auth)
    })
    .await;
    Ok(json_response(status, body))
}

fn json_response(status: StatusCode, body: BytesMut) -> Response {
    let mut res = Response::new(Body::from(body.freeze()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Answers `work` (`auth` is awaited inside the gate's span): the JSON-RPC answer, and the HTTP
/// status rmcp would give it. `parent` makes the parent of a call's span, only while traces
/// are exported.
async fn respond(
    server: &ParallaxServer,
    listings: &Listings,
    work: Work,
    parent: impl FnOnce() -> tracing::Span,
    auth: impl Future<Output = Auth>,
) -> (StatusCode, BytesMut) {
    match work {
        Work::Call(call) => {
            let span = traces::span(|| gate_span(&parent(), tool_label(&call.name)));
            answer(server, span, call, auth).await
        }
        Work::List { id, shape } => list(server, listings, id, shape, auth).await,
    }
}

/// A request's `_meta`, if it has one.
type Meta<'a> = Option<&'a Map<String, Value>>;

/// The tool's name (none for a listing) and `_meta` of a `tools/call` or `tools/list` whose id
/// and parameters this path handles as rmcp would; `None` for anything else.
fn plain_request<'a>(
    method: &str,
    id: &Value,
    params: Option<&'a Value>,
) -> Option<(Option<&'a str>, Meta<'a>)> {
    match method {
        "tools/call" => {
            let (name, meta) = plain_params(id, params?)?;
            Some((Some(name), meta))
        }
        "tools/list" => Some((None, list_params(id, params)?)),
        _ => None,
    }
}

/// The work out of a request [`plain_request`] accepted: a listing, or a call.
fn into_work(
    id: Value,
    params: Option<Value>,
    listing: bool,
    tasks: bool,
    shape: Shape,
) -> Option<Work> {
    if listing {
        return Some(Work::List { id, shape });
    }
    let Value::Object(mut params) = params? else {
        return None;
    };
    let Some(Value::String(name)) = params.remove("name") else {
        return None;
    };
    let arguments = match params.remove("arguments") {
        Some(Value::Object(args)) => Some(args),
        _ => None,
    };
    Some(Work::Call(ToolCall {
        id,
        name,
        arguments,
        tasks,
        shape,
    }))
}

/// A tool call as this path runs it, taken out of its message.
struct ToolCall {
    id: Value,
    name: String,
    arguments: Option<JsonObject>,
    tasks: bool,
    shape: Shape,
}

/// The caller's credential as the transport checked it (HTTP) or checks it now (stdio).
type Auth = Result<Result<AgentCaller, AgentAuthRefusal>, ErrorData>;

/// Runs `call` through the gate (`auth` is awaited inside its span): the JSON-RPC answer, and
/// the HTTP status rmcp would give it.
async fn answer(
    server: &ParallaxServer,
    span: tracing::Span,
    call: ToolCall,
    auth: impl Future<Output = Auth>,
) -> (StatusCode, BytesMut) {
    let outcome = server
        .call_gate(span, &call.name, call.arguments, call.tasks, auth)
        .await;
    answered(call.id, call.shape, outcome)
}

/// The JSON-RPC answer to the call with `id`, and its HTTP status.
fn answered(
    id: Value,
    shape: Shape,
    outcome: Result<super::gate::CallOutcome, ErrorData>,
) -> (StatusCode, BytesMut) {
    match outcome {
        Ok(super::gate::CallOutcome::Ok(output)) => {
            let result = output.wire(shape, |output| {
                let result = shaped(
                    CallToolResponse::from(tool_result(output.clone())).into(),
                    shape,
                );
                Bytes::from(serde_json::to_vec(&result).expect("results serialise"))
            });
            (StatusCode::OK, spliced(&id, &result))
        }
        Ok(outcome) => {
            let result = shaped(call_response(outcome).into(), shape);
            let message = ServerJsonRpcMessage::response(result, request_id(id));
            (StatusCode::OK, encoded(&message))
        }
        Err(e) => error(id, e, shape),
    }
}

/// `tools/list` answers, encoded once for each set of visible tools and each [`Shape`]: the
/// tools' schemas are most of what a listing costs.
pub struct Listings(Vec<[OnceLock<Bytes>; 2]>);

impl Default for Listings {
    fn default() -> Self {
        Self(
            (0..1usize << CATALOGUE.len())
                .map(|_| Default::default())
                .collect(),
        )
    }
}

/// Answers `tools/list` as rmcp's `list_tools` does (a refused credential is audited), with
/// the listing kept in `listings`.
async fn list(
    server: &ParallaxServer,
    listings: &Listings,
    id: Value,
    shape: Shape,
    auth: impl Future<Output = Auth>,
) -> (StatusCode, BytesMut) {
    let caller = match auth.await {
        Ok(auth) => server.lister(auth).await,
        Err(e) => Err(e),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(e) => return error(id, e, shape),
    };
    let visible: Vec<_> = server.gate().visible_tools(&caller).collect();
    let set = CATALOGUE
        .iter()
        .enumerate()
        .filter(|(_, spec)| visible.iter().any(|v| v.name == spec.name))
        .fold(0, |set, (i, _)| set | 1 << i);
    let result = listings.0[set][shape as usize].get_or_init(|| {
        let result = shaped(
            ServerResult::ListToolsResult(tool_listing(visible.into_iter())),
            shape,
        );
        Bytes::from(serde_json::to_vec(&result).expect("results serialise"))
    });
    (StatusCode::OK, spliced(&id, result))
}

/// `{"jsonrpc":"2.0","id":<id>,"result":<result>}`, with `result` already encoded.
fn spliced(id: &Value, result: &[u8]) -> BytesMut {
    let mut body = BytesMut::with_capacity(result.len() + 64);
    body.put_slice(br#"{"jsonrpc":"2.0","id":"#);
    serde_json::to_writer((&mut body).writer(), id).expect("ids serialise");
    body.put_slice(br#","result":"#);
    body.put_slice(result);
    body.put_u8(b'}');
    body
}

/// An error answer, with the HTTP status rmcp gives it.
fn error(id: Value, e: ErrorData, shape: Shape) -> (StatusCode, BytesMut) {
    let status = match shape {
        Shape::Current => stateless_status(e.code),
        Shape::Legacy => StatusCode::OK,
    };
    let message = ServerJsonRpcMessage::error(e, Some(request_id(id)));
    (status, encoded(&message))
}

fn request_id(id: Value) -> RequestId {
    serde_json::from_value(id).expect("an integer or a string, checked by `plain_id`")
}

fn encoded(message: &ServerJsonRpcMessage) -> BytesMut {
    let mut body = BytesMut::new().writer();
    serde_json::to_writer(&mut body, message).expect("messages serialise");
    body.into_inner()
}

/// stdio's plain tool calls, answered by the gate once the handshake is through. Through rmcp,
/// a line crosses the framing pump's pipe, is parsed again into rmcp's types, runs in a handler
/// task of its own, and its answer is cloned, serialised and piped back through the pump; here
/// the pump hands the line over and writes the answer. The key is checked on every call, as
/// rmcp's handler checks it ([`ParallaxServer::authenticate_key`]); a call of the read tool or a
/// note is decided on the key as the store's snapshot holds it and stands only if its audit
/// commit finds the snapshot current (`Gate::call_unconfirmed`), as over HTTP. A line that is
/// anything else (a call with a task, other `_meta` than trace context and a progress token,
/// another method) goes on to rmcp.
pub struct Stdio {
    server: ParallaxServer,
    key: Arc<crate::auth::PresentedKey>,
    handshake: Handshake,
    listings: Arc<Listings>,
}

/// What a stdio session's handshake said, as far as this path needs it.
#[derive(Default)]
struct Handshake {
    /// Whether the client declared the tasks extension in `initialize`; `None` before it.
    tasks: Option<bool>,
    /// Once the client's `notifications/initialized` has gone to rmcp, a plain request is
    /// answered here. Before, everything is rmcp's (a session may also start without
    /// `initialize`, on 2026-07-28's per-request metadata, which rmcp handles).
    ready: bool,
}

/// A stdio call's trace context from its `_meta`: `traceparent`, `tracestate`.
type Trace = (Option<String>, Option<String>);

impl Stdio {
    pub fn new(server: ParallaxServer, key: Arc<crate::auth::PresentedKey>) -> Self {
        Self {
            server,
            key,
            handshake: Handshake::default(),
            listings: Arc::default(),
        }
    }

    /// The framed answer to `line`, if it is a plain tool call or listing; otherwise `None` and
    /// the line is rmcp's (the handshake's lines are noted on their way).
    pub fn take(&mut self, line: &[u8]) -> Option<impl Future<Output = Bytes> + Send + 'static> {
        let (work, trace) = self.handshake.plain(line)?;
        let (server, key) = (self.server.clone(), self.key.clone());
        let listings = self.listings.clone();
        // Boxed where it is made: the call's state is kilobytes, and unboxed it was copied as it
        // went into its task and again as the task finished (a few per cent of CPU at W = 32).
        Some(Box::pin(async move {
            let parent = || stdio_request_span(trace.0.as_deref(), trace.1.as_deref());
            // A call of the read tool, or a note, is decided on the key as the snapshot holds
            // it, as over HTTP, when the snapshot can say; the rate is counted then, and not
            // again if the call is decided again on the key checked now.
            let mut count = true;
            let mut checked = None;
            if let Work::Call(call) = &work
                && super::catalogue::decided_unconfirmed(&call.name)
                && let Some(unconfirmed) = server.key_unconfirmed(&key)
            {
                count = false;
                let decided = match unconfirmed {
                    Ok(unconfirmed) => {
                        let span = traces::span(|| gate_span(&parent(), tool_label(&call.name)));
                        server
                            .call_gate_unconfirmed(
                                span,
                                &call.name,
                                call.arguments.as_ref(),
                                &unconfirmed,
                            )
                            .await
                    }
                    // Over its rate: the key is checked now first, so that a key refused
                    // since is answered (and audited) as refused, not as over its rate.
                    Err(over_rate) => match server.check_key(&key, false).await {
                        Ok(Ok(_)) => Some(Err(over_rate)),
                        auth => {
                            checked = Some(auth);
                            None
                        }
                    },
                };
                if let Some(outcome) = decided {
                    let (_, mut body) = answered(call.id.clone(), call.shape, outcome);
                    body.put_u8(b'\n');
                    return body.freeze();
                }
            }
            let auth = async {
                match checked {
                    Some(auth) => auth,
                    None => server.check_key(&key, count).await,
                }
            };
            let (_, mut body) = respond(&server, &listings, work, parent, auth).await;
            body.put_u8(b'\n');
            body.freeze()
        }))
    }
}

impl Handshake {
    /// The plain tool call or listing `line` carries, once the handshake is through; notes the
    /// handshake's own lines.
    fn plain(&mut self, line: &[u8]) -> Option<(Work, Trace)> {
        // Only a line that may matter is parsed here; rmcp parses every line anyway.
        let sign: &[u8] = if self.ready { b"tools/" } else { b"initialize" };
        memchr::memmem::find(line, sign)?;
        let mut message = super::envelope::parse(line).ok()?;
        let method = message.get("method")?.as_str()?;
        if !self.ready {
            match method {
                "initialize" if self.tasks.is_none() => {
                    let capabilities = message.get("params")?.get("capabilities")?;
                    self.tasks = ClientCapabilities::deserialize(capabilities)
                        .ok()
                        .map(|c| c.supports_tasks());
                }
                "notifications/initialized" => self.ready = self.tasks.is_some(),
                _ => {}
            }
            return None;
        }
        let envelope_only = message
            .keys()
            .all(|k| matches!(k.as_str(), "jsonrpc" | "id" | "method" | "params"));
        if !envelope_only {
            return None;
        }
        let (name, meta) = plain_request(method, message.get("id")?, message.get("params"))?;
        if meta.is_some_and(|m| !plain_meta(m)) {
            return None;
        }
        let trace = meta
            .map(|m| {
                let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
                (field("traceparent"), field("tracestate"))
            })
            .unwrap_or_default();
        let listing = name.is_none();
        let work = into_work(
            message.remove("id")?,
            message.remove("params"),
            listing,
            self.tasks?,
            Shape::Legacy,
        )?;
        Some((work, trace))
    }
}

/// A result in the shape rmcp gives the client: for a session's (pre-2026-07-28) client no
/// `resultType`, and structured content only if it is an object; for 2026-07-28 with cache
/// hints on a listing (`ttlMs: 0`, `cacheScope: private` unless set).
fn shaped(mut result: ServerResult, shape: Shape) -> ServerResult {
    match shape {
        Shape::Legacy => {
            result.strip_result_type_for_legacy_peer();
            result.strip_non_object_output_for_legacy_peer();
        }
        Shape::Current => result.fill_missing_cache_hints(),
    }
    result
}

/// The HTTP status rmcp gives a 2026-07-28 error answered as JSON (`jsonrpc_http_status`; the
/// request's metadata is well formed here, so invalid parameters stay 200).
fn stateless_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// The call, if it is one this path answers exactly as rmcp would; its parameters are taken out
/// of the request only then, so a request handed back to rmcp is as it came.
fn plain(req: &mut Request) -> Option<Plain> {
    if req.method() != Method::POST || !simple_headers(req.headers()) {
        return None;
    }
    let auth = match req.extensions().get::<PendingAuth>() {
        Some(pending) => PlainAuth::Pending(pending.0.clone()),
        None => PlainAuth::Checked(req.extensions().get::<HttpAuth>()?.0.clone()),
    };
    let message = req.extensions().get::<RpcMessage>()?;
    let method = message.method.as_deref()?;
    let (name, meta) = plain_request(method, &message.id, message.params.as_ref())?;
    let (shape, tasks) = if let Some(owned) = req.extensions().get::<Owned>() {
        // A session's call: the client's capabilities are those it gave `initialize`.
        if !legacy_version(req.headers()) || meta.is_some_and(|m| !plain_meta(m)) {
            return None;
        }
        (Shape::Legacy, owned.tasks?)
    } else if !req.headers().contains_key(SESSION_HEADER) {
        (
            Shape::Current,
            stateless(req.headers(), method, name, meta?)?,
        )
    } else {
        return None;
    };
    let listing = name.is_none();
    let message = req.extensions_mut().remove::<RpcMessage>()?;
    let work = into_work(message.id, message.params, listing, tasks, shape)?;
    Some(Plain { auth, work })
}

/// An id this path answers as rmcp would: an integer or a string.
fn plain_id(id: &Value) -> bool {
    id.is_i64() || id.is_string()
}

/// The `_meta` of a `tools/list` this path answers: no parameters, or only `_meta` (a cursor
/// asks for a later page, and every tool fits on the first).
fn list_params<'a>(id: &Value, params: Option<&'a Value>) -> Option<Meta<'a>> {
    if !plain_id(id) {
        return None;
    }
    let Some(params) = params else {
        return Some(None);
    };
    let params = params.as_object()?;
    match params.get("_meta") {
        _ if params.keys().any(|k| k != "_meta") => None,
        None => Some(None),
        Some(Value::Object(meta)) => Some(Some(meta)),
        Some(_) => None,
    }
}

/// The tool's name and `_meta` of a `tools/call` whose id and parameters this path handles as
/// rmcp would: an integer or string id; only `name` (a string), `arguments` (an object, or
/// none) and `_meta` (an object, or none).
fn plain_params<'a>(id: &Value, params: &'a Value) -> Option<(&'a str, Meta<'a>)> {
    if !plain_id(id) {
        return None;
    }
    let params = params.as_object()?;
    if !params
        .keys()
        .all(|k| matches!(k.as_str(), "name" | "arguments" | "_meta"))
    {
        return None;
    }
    let name = params.get("name")?.as_str()?;
    match params.get("arguments") {
        None | Some(Value::Object(_)) => {}
        Some(_) => return None,
    }
    let meta = match params.get("_meta") {
        None => None,
        Some(Value::Object(meta)) => Some(meta),
        Some(_) => return None,
    };
    Some((name, meta))
}

/// A session's `_meta` may carry trace context and a progress token (which asks for progress
/// notifications; no tool sends any, so rmcp would answer the same); per-request protocol
/// metadata, or anything else, is rmcp's.
fn plain_meta(meta: &Map<String, Value>) -> bool {
    meta.iter().all(|(k, v)| plain_meta_entry(k, v))
}

/// A `_meta` entry any plain request may carry: trace context, or a progress token as rmcp
/// reads one (a string or an integer).
fn plain_meta_entry(key: &str, v: &Value) -> bool {
    match key {
        "traceparent" | "tracestate" => true,
        "progressToken" => v.is_string() || v.is_i64(),
        _ => false,
    }
}

/// A protocol version header naming a 2025 version, or none (a session's).
fn legacy_version(headers: &HeaderMap) -> bool {
    let Some(version) = headers.get("mcp-protocol-version") else {
        return true;
    };
    let Ok(version) = version.to_str() else {
        return false;
    };
    let known = ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .any(|v| v.as_str() == version);
    known && version < ProtocolVersion::V_2026_07_28.as_str()
}

/// Whether the client declared the tasks extension, for a stateless (2026-07-28) request that
/// carries everything that version asks of it, each once and consistent: the version in its
/// header and in `_meta`, the client's capabilities in `_meta`, the `Mcp-Method` header naming
/// `method`, and for a call the `Mcp-Name` header naming its catalogue tool (which has no
/// `Mcp-Param-*` headers). Anything else in `_meta` but the client's name, trace context and a progress token
/// ([`plain_meta`]), or anything unsure, is left to rmcp's checks.
fn stateless(
    headers: &HeaderMap,
    method: &str,
    name: Option<&str>,
    meta: &Map<String, Value>,
) -> Option<bool> {
    let version = ProtocolVersion::V_2026_07_28.as_str();
    let only = |header: &str| {
        let mut values = headers.get_all(header).iter();
        let value = values.next()?.to_str().ok()?;
        values.next().is_none().then_some(value)
    };
    if only("mcp-protocol-version")? != version || only("mcp-method")? != method {
        return None;
    }
    // A call names a catalogue tool; a listing names nothing.
    let named = match name {
        Some(name) => only("mcp-name")? == name && super::catalogue::find(name).is_some(),
        None => !headers.contains_key("mcp-name"),
    };
    if !named {
        return None;
    }
    const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    const CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    let known = meta.iter().all(|(k, v)| {
        matches!(
            k.as_str(),
            PROTOCOL_VERSION | CAPABILITIES | "io.modelcontextprotocol/clientInfo"
        ) || plain_meta_entry(k, v)
    });
    if !known || meta.get(PROTOCOL_VERSION)?.as_str()? != version {
        return None;
    }
    let capabilities = ClientCapabilities::deserialize(meta.get(CAPABILITIES)?).ok()?;
    Some(capabilities.supports_tasks())
}

/// Headers rmcp would accept without a second look: an `Accept` naming both JSON and SSE with
/// no parameters, and no `Mcp-Param-*` header.
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
    json && sse
        && !headers
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
            ("mcp-param-status", "todo")
        ])));
        // A session's version header: a 2025 one, or none.
        assert!(legacy_version(&headers(&[])));
        assert!(legacy_version(&headers(&[(
            "mcp-protocol-version",
            "2025-11-25"
        )])));
        assert!(!legacy_version(&headers(&[(
            "mcp-protocol-version",
            "2026-07-28"
        )])));
        assert!(!legacy_version(&headers(&[(
            "mcp-protocol-version",
            "1999-01-01"
        )])));
    }

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_stateless_call_takes_this_path_only_with_everything_its_version_asks() {
        let tool = "agent_my_assignments";
        let standard = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "agent_my_assignments"),
        ];
        let good = meta(serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": { "name": "c", "version": "1" },
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }));
        assert_eq!(
            stateless(&headers(&standard), "tools/call", Some(tool), &good),
            Some(false)
        );
        let mut tracked = good.clone();
        tracked.insert("progressToken".into(), 7.into());
        assert_eq!(
            stateless(&headers(&standard), "tools/call", Some(tool), &tracked),
            Some(false)
        );
        let mut tasks = good.clone();
        tasks.insert(
            "io.modelcontextprotocol/clientCapabilities".into(),
            serde_json::json!({ "extensions": { "io.modelcontextprotocol/tasks": {} } }),
        );
        assert_eq!(
            stateless(&headers(&standard), "tools/call", Some(tool), &tasks),
            Some(true)
        );

        // Each header missing, given twice, or naming something else.
        for (i, (name, _)) in standard.iter().enumerate() {
            let mut fewer = standard.to_vec();
            fewer.remove(i);
            assert_eq!(
                stateless(&headers(&fewer), "tools/call", Some(tool), &good),
                None,
                "{name}"
            );
            let mut twice = standard.to_vec();
            twice.push(standard[i]);
            assert_eq!(
                stateless(&headers(&twice), "tools/call", Some(tool), &good),
                None,
                "{name} twice"
            );
            let mut other = standard.to_vec();
            other[i].1 = "agent_log_activity";
            assert_eq!(
                stateless(&headers(&other), "tools/call", Some(tool), &good),
                None,
                "{name} other"
            );
        }
        // A listing names no tool: the same, with `Mcp-Method: tools/list` and no `Mcp-Name`.
        let listing = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ];
        assert_eq!(
            stateless(&headers(&listing), "tools/list", None, &good),
            Some(false)
        );
        assert_eq!(
            stateless(&headers(&standard[..2]), "tools/list", None, &good),
            None,
            "Mcp-Method names a call"
        );
        assert_eq!(
            stateless(
                &headers(&[listing[0], listing[1], standard[2]]),
                "tools/list",
                None,
                &good
            ),
            None,
            "a listing with Mcp-Name"
        );
        // A listing's parameters: none, or `_meta` alone (a cursor asks for another page).
        let id = Value::from(1);
        assert_eq!(list_params(&id, None), Some(None));
        let only_meta = serde_json::json!({ "_meta": { "progressToken": 1 } });
        assert!(list_params(&id, Some(&only_meta)).unwrap().is_some());
        assert_eq!(
            list_params(&id, Some(&serde_json::json!({ "cursor": "x" }))),
            None
        );
        assert_eq!(
            list_params(&id, Some(&serde_json::json!({ "_meta": 1 }))),
            None
        );
        assert_eq!(list_params(&Value::Null, None), None);

        // A tool outside the catalogue is rmcp's to answer.
        let mut unknown = standard.to_vec();
        unknown[2].1 = "no_such_tool";
        assert_eq!(
            stateless(
                &headers(&unknown),
                "tools/call",
                Some("no_such_tool"),
                &good
            ),
            None
        );

        // `_meta` without a required key, with one malformed, with a version that is not the
        // header's, or with a key rmcp acts on.
        for (key, value) in [
            ("io.modelcontextprotocol/protocolVersion", Value::Null),
            (
                "io.modelcontextprotocol/protocolVersion",
                "2025-11-25".into(),
            ),
            ("io.modelcontextprotocol/clientCapabilities", Value::Null),
            ("io.modelcontextprotocol/clientCapabilities", "all".into()),
            ("progressToken", serde_json::json!({ "n": 1 })),
            ("io.modelcontextprotocol/logLevel", "debug".into()),
            ("example.com/x", 1.into()),
        ] {
            let mut m = good.clone();
            if value.is_null() {
                m.remove(key);
            } else {
                m.insert(key.into(), value);
            }
            assert_eq!(
                stateless(&headers(&standard), "tools/call", Some(tool), &m),
                None,
                "{key}"
            );
        }
    }

    #[test]
    fn a_stdio_line_takes_this_path_only_after_the_handshake_and_when_plain() {
        let mut h = Handshake::default();
        let plain = |h: &mut Handshake, line: Value| match h.plain(line.to_string().as_bytes()) {
            Some((Work::Call(call), trace)) => Some((call.id, call.name, call.tasks, trace)),
            _ => None,
        };
        let call = serde_json::json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": { "name": "agent_my_assignments", "arguments": {} } });
        // Before `initialize` and `notifications/initialized`, everything is rmcp's.
        assert!(plain(&mut h, call.clone()).is_none());
        let init = serde_json::json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "clientInfo": { "name": "c", "version": "1" },
                "capabilities": { "extensions": { "io.modelcontextprotocol/tasks": {} } } } });
        assert!(plain(&mut h, init).is_none());
        assert!(plain(&mut h, call.clone()).is_none());
        let initialized =
            serde_json::json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        assert!(plain(&mut h, initialized).is_none());

        let taken = plain(&mut h, call.clone()).expect("a plain call");
        assert_eq!(taken.0, 3);
        assert_eq!(taken.1, "agent_my_assignments");
        assert!(taken.2, "tasks, as `initialize` declared");
        assert_eq!(taken.3, (None, None));
        let mut traced = call.clone();
        traced["params"]["_meta"] = serde_json::json!({ "traceparent": "00-ab-cd-01" });
        assert_eq!(
            plain(&mut h, traced).unwrap().3,
            (Some("00-ab-cd-01".to_owned()), None)
        );
        // A listing, but not of a later page.
        let list = serde_json::json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/list" });
        let listed = h.plain(list.to_string().as_bytes());
        assert!(matches!(listed, Some((Work::List { .. }, _))));
        let mut paged = list.clone();
        paged["params"] = serde_json::json!({ "cursor": "2" });
        assert!(h.plain(paged.to_string().as_bytes()).is_none());
        // A progress token asks for notifications no tool sends: still plain.
        let mut tracked = call.clone();
        tracked["params"]["_meta"] = serde_json::json!({ "progressToken": "p" });
        assert!(plain(&mut h, tracked).is_some());
        let mut named = call.clone();
        named["id"] = "c-1".into();
        assert_eq!(plain(&mut h, named).unwrap().0, "c-1");

        // rmcp's: other `_meta` (or a progress token rmcp cannot read), a key outside the envelope, a
        // notification, an id that is not an integer or string, other methods, bad JSON.
        for (path, value) in [
            ("/params/_meta", serde_json::json!({ "example.com/x": 1 })),
            ("/params/_meta", serde_json::json!({ "progressToken": [1] })),
            ("/params/task", serde_json::json!({})),
            ("/params/arguments", serde_json::json!([])),
            ("/extra", serde_json::json!(1)),
            ("/id", Value::Null),
            ("/id", serde_json::json!(1.5)),
            ("/method", serde_json::json!("tools/list")),
        ] {
            let mut other = call.clone();
            let (parent, key) = path.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut other
            } else {
                other.pointer_mut(parent).unwrap()
            };
            target[key] = value;
            assert!(plain(&mut h, other).is_none(), "{path}");
        }
        assert!(h.plain(b"{\"method\":\"tools/call\"").is_none());
    }

    /// [`stateless`] skips rmcp's `Mcp-Param-*` check, which only annotated input schemas need.
    #[test]
    fn no_catalogue_tool_asks_for_parameter_headers() {
        for spec in &super::super::catalogue::CATALOGUE {
            let schema = Value::Object((spec.input_schema)().as_ref().clone()).to_string();
            assert!(!schema.contains("x-mcp-header"), "{}", spec.name);
        }
    }
}
