//! The JSON-RPC envelope of a `POST /mcp`, checked before rmcp reads it, so a malformed message
//! gets HTTP 400 with a JSON-RPC error object rather than rmcp's plain-text 415:
//!
//! - not UTF-8, not JSON, or a number JSON cannot hold: `-32700` (parse error);
//! - a batch array, a non-object, nesting deeper than [`MAX_DEPTH`], a key given twice in one
//!   object, a missing or wrong `jsonrpc`, a non-string `method`, or an `id` that is neither a
//!   string nor an integer: `-32600` (invalid request);
//! - an `Mcp-Method` / `Mcp-Name` header that disagrees with the body: `-32020`, on every
//!   protocol version (2026-07-28 requires the headers; 2025-11-25 clients may send them, and a
//!   proxy routing on them must see the call that runs).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use std::fmt;

/// Deepest nesting of arrays and objects accepted in a message.
pub const MAX_DEPTH: usize = 64;

/// JSON-RPC: the header/body mismatch code rmcp uses for 2026-07-28.
const HEADER_MISMATCH: i64 = -32020;
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// What [`check`] needs.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub max_body_bytes: usize,
    /// A call counts as in flight until its whole answer is sent (shutdown waits for it).
    pub inflight: crate::http::InFlight,
}

/// Checks the body of every `POST /mcp` whose content type is JSON (others are rmcp's to refuse).
pub async fn check(env: &Envelope, req: Request, next: impl crate::http::Continue) -> Response {
    let max_body = env.max_body_bytes;
    if req.method() != Method::POST || !is_json(&req) {
        return next(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
        return crate::http::limits::refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the request body is larger than {max_body} bytes"),
        );
    };
    let message = match parse(&bytes) {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = headers_match(&parts.headers, &message) {
        return refusal.into_response();
    }
    let mut parts = parts;
    let mut message = message;
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // A subscription stream lives until the client or the server ends it: not "in flight".
    let long_lived = method.as_deref() == Some("subscriptions/listen");
    let guard = (!long_lived).then(|| env.inflight.enter());
    // The parameters of a tool call or listing, already parsed, for `mcp::direct` (rmcp reads
    // the body anew).
    let params = match method.as_deref() {
        Some("tools/call" | "tools/list") => message.remove("params"),
        _ => None,
    };
    parts.extensions.insert(RpcMessage {
        method,
        id: message.get("id").cloned().unwrap_or(Value::Null),
        params,
    });
    let res = next(Request::from_parts(parts, Body::from(bytes))).await;
    match guard {
        Some(guard) => res.map(|body| {
            Body::new(Guarded {
                body,
                _guard: guard,
            })
        }),
        None => res,
    }
}

/// A response body that holds an in-flight guard until it is fully sent or dropped.
struct Guarded {
    body: Body,
    _guard: crate::http::InFlightGuard,
}

impl axum::body::HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim();
            ct.eq_ignore_ascii_case("application/json")
        })
}

/// What the envelope check read, for the layers after it (the session caps).
#[derive(Debug, Clone)]
pub struct RpcMessage {
    pub method: Option<String>,
    pub id: Value,
    /// The `params` of a `tools/call` or `tools/list` (none for other methods).
    pub params: Option<Value>,
}

/// A refused message: HTTP 400 with a JSON-RPC error object.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
    pub id: Value,
}

impl Refusal {
    fn new(code: i64, message: impl Into<String>, id: Value) -> Self {
        Self {
            code,
            message: message.into(),
            id,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": { "code": self.code, "message": self.message },
        });
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

/// Parses one JSON-RPC message and checks its envelope.
pub fn parse(bytes: &[u8]) -> Result<Map<String, Value>, Refusal> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Refusal::new(
            PARSE_ERROR,
            format!(
                "Parse error: the body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
            Value::Null,
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict { depth: 0 }.deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    let value = value.map_err(|e| {
        let (code, what) = match e.classify() {
            // Our own checks (duplicate keys, depth) are data errors: a well-formed but invalid
            // request. Everything else is JSON that does not parse.
            serde_json::error::Category::Data => (INVALID_REQUEST, "Invalid Request"),
            _ => (PARSE_ERROR, "Parse error"),
        };
        Refusal::new(code, format!("{what}: {e}"), Value::Null)
    })?;
    let mut object = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: batch requests are not supported; send one message per request",
                Value::Null,
            ));
        }
        _ => {
            return Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: a JSON-RPC message must be an object",
                Value::Null,
            ));
        }
    };
    let id = match object.get("id") {
        None | Some(Value::Null) | Some(Value::String(_)) => {
            object.get("id").cloned().unwrap_or(Value::Null)
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
        Some(_) => {
            return Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: `id` must be a string or an integer",
                Value::Null,
            ));
        }
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Refusal::new(
            INVALID_REQUEST,
            "Invalid Request: `jsonrpc` must be \"2.0\"",
            id,
        ));
    }
    match object.get("method") {
        Some(Value::String(_)) => {}
        Some(_) => {
            return Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: `method` must be a string",
                id,
            ));
        }
        // A response to a server request carries `result` or `error` instead.
        None if object.contains_key("result") || object.contains_key("error") => {}
        None => {
            return Err(Refusal::new(
                INVALID_REQUEST,
                "Invalid Request: `method` is missing",
                id,
            ));
        }
    }
    if let Some(p) = object.get("params")
        && !p.is_object()
    {
        return Err(Refusal::new(
            INVALID_REQUEST,
            "Invalid Request: `params` must be an object",
            id,
        ));
    }
    object.insert("id".into(), id);
    Ok(object)
}

/// `Mcp-Method` and `Mcp-Name`, when sent, must name what the body does.
fn headers_match(
    headers: &axum::http::HeaderMap,
    message: &Map<String, Value>,
) -> Result<(), Refusal> {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return Ok(());
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let one = |name: &str| -> Result<Option<String>, Refusal> {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Refusal::new(
                HEADER_MISMATCH,
                format!("duplicate {name} header"),
                id.clone(),
            ));
        }
        let v = v.to_str().map_err(|_| {
            Refusal::new(
                HEADER_MISMATCH,
                format!("{name} header contains invalid characters"),
                id.clone(),
            )
        })?;
        Ok(Some(decode_header(v)))
    };
    if let Some(value) = one("mcp-method")?
        && value != method
    {
        return Err(Refusal::new(
            HEADER_MISMATCH,
            format!("Mcp-Method header `{value}` does not match body method `{method}`"),
            id,
        ));
    }
    let params = message.get("params");
    let expected = match method {
        "tools/call" | "prompts/get" => params.and_then(|p| p.get("name")),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            params.and_then(|p| p.get("uri"))
        }
        _ => None,
    }
    .and_then(Value::as_str);
    if let (Some(expected), Some(value)) = (expected, one("mcp-name")?)
        && value != expected
    {
        return Err(Refusal::new(
            HEADER_MISMATCH,
            format!("Mcp-Name header `{value}` does not match body value `{expected}`"),
            id,
        ));
    }
    Ok(())
}

/// Header values that are not plain ASCII travel as `=?base64?…?=` (SEP-2243).
fn decode_header(v: &str) -> String {
    use base64::Engine;
    v.strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| v.to_owned())
}

/// A `serde_json::Value` that refuses duplicate keys and nesting deeper than [`MAX_DEPTH`].
struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Strict {
    fn deeper<E: de::Error>(&self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict { depth: inner.depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(Strict { depth: inner.depth })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &[u8]) -> i64 {
        parse(body).map(|_| 0).unwrap_or_else(|r| r.code)
    }

    #[test]
    fn envelopes_are_classified() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        assert_eq!(code(ok), 0);
        assert_eq!(code(b"hello"), PARSE_ERROR);
        assert_eq!(code(b""), PARSE_ERROR);
        assert_eq!(code(b"{\"a\":\"\xff\"}"), PARSE_ERROR);
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1e400}"#),
            PARSE_ERROR
        );
        assert_eq!(code(&"[".repeat(10_000).into_bytes()), INVALID_REQUEST);
        assert_eq!(
            code(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            INVALID_REQUEST
        );
        assert_eq!(code(b"42"), INVALID_REQUEST);
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            INVALID_REQUEST
        );
        let dup =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#;
        let refusal = parse(dup).unwrap_err();
        assert_eq!(refusal.code, INVALID_REQUEST);
        assert!(
            refusal.message.contains("duplicate key `name`"),
            "{}",
            refusal.message
        );
        let response = br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#;
        assert_eq!(code(response), 0);
    }
}
