//! Request limits applied once, outermost, to every route: the `Host` allowlist (DNS rebinding),
//! the `Origin` check (browsers), and the body size and read time. Refusals are JSON.
//!
//! The body is read here, up to the limit, before any handler runs: our routes take small JSON
//! bodies, so buffering costs nothing, and a body that is too large (by `Content-Length` or as it
//! streams in, chunked) or too slow is refused in one place with one answer. A refused body is
//! drained (discarded, bounded) so the client reads the 413 rather than a reset. Responses are
//! not touched, so long-lived response streams (SSE) are unaffected. Worst-case buffering is
//! `max_connections × max_body_bytes`.

use super::HttpOptions;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

/// Paths open to any `Host`: a constant liveness answer that reveals nothing, so load balancers
/// and orchestrators can probe by IP. Everything else (including `/readyz`) checks the Host.
const ANY_HOST: &[&str] = &["/healthz"];

pub async fn enforce(opts: &HttpOptions, mut req: Request, next: impl super::Continue) -> Response {
    if !opts.trusted_proxies.is_empty() {
        forwarded_client(&mut req, &opts.trusted_proxies);
    }
    if !ANY_HOST.contains(&req.uri().path()) {
        if !host_allowed(req.headers(), req.uri(), &opts.allowed_hosts) {
            return refuse(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "this Host is not served here (DNS rebinding protection); see [http] allowed_hosts",
            );
        }
        if same_origin(req.headers(), req.uri(), &opts.allowed_hosts) {
            // A page served from this very Host (checked above) may call us; past this check the
            // Origin has nothing more to say, and rmcp's own check must not refuse it.
            req.headers_mut().remove(header::ORIGIN);
        } else if !origin_allowed(req.headers(), &opts.allowed_origins) {
            return refuse(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "requests from this Origin are not accepted; see [http] allowed_origins",
            );
        }
    }
    let limit = opts.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, mut body) = req.into_parts();
    if declared.is_some_and(|n| n > limit as u64) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES) {
            drain(body).await;
        }
        return too_large(limit);
    }
    let read = async {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
        Ok::<_, axum::Error>(Some(Bytes::from(buf)))
    };
    let bytes = match tokio::time::timeout(opts.body_read_timeout, read).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => {
            drain(body).await;
            return too_large(limit);
        }
        Ok(Err(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read",
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body was not received in time",
            );
        }
    };
    next(Request::from_parts(parts, Body::from(bytes))).await
}

/// A refused body is read and dropped, up to this much, so that a client still sending it gets
/// to read our 413 instead of a reset connection.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;

/// Discards what the client keeps sending of a refused body: at most [`DRAIN_BYTES`], for at
/// most two seconds, and only while it keeps coming. Nothing is kept in memory.
async fn drain(mut body: Body) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut seen: u64 = 0;
    while seen <= DRAIN_BYTES {
        let pause = std::time::Duration::from_millis(250);
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + pause),
            body.frame(),
        );
        match next.await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => return,
        }
    }
}

fn too_large(limit: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than {limit} bytes"),
    )
}

/// Every non-MCP HTTP error has this one shape, the admin API's: `{"error":{"code","message"}}`.
/// (`/oauth/token` keeps RFC 6749's own, which clients of that endpoint expect.)
pub fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(error_body(code, message, None))).into_response()
}

/// The body of [`refuse`], with extra fields beside `code` and `message` when given.
pub fn error_body(
    code: &str,
    message: &str,
    extra: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut error = json!({ "code": code, "message": message });
    if let (Some(serde_json::Value::Object(extra)), Some(map)) = (extra, error.as_object_mut()) {
        map.extend(extra);
    }
    json!({ "error": error })
}

/// The request's host, lowercase, without brackets or port; and its port if given.
fn authority(headers: &HeaderMap, uri: &Uri) -> Option<(String, Option<u16>)> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (Some(v), None) => v.to_str().ok()?.to_owned(),
        (None, _) => uri.authority()?.as_str().to_owned(),
        // Two Host headers: which one a proxy routed on is anyone's guess.
        (Some(_), Some(_)) => return None,
    };
    let a: axum::http::uri::Authority = raw.trim().parse().ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    Some((normalize(a.host()), a.port_u16()))
}

fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// `*` in the list accepts any Host (for a proxy that checks it); an entry with a port must
/// match the port too. An empty list accepts nothing.
pub fn host_allowed(headers: &HeaderMap, uri: &Uri, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.trim() == "*") {
        return true;
    }
    let Some((host, port)) = authority(headers, uri) else {
        return false;
    };
    allowed.iter().any(|a| {
        let a = a.trim();
        // A bare name (the usual entry) compares as is: parsing it on every request cost more
        // than the rest of the transport limits together.
        if !a.contains([':', '[', '@']) {
            return a.eq_ignore_ascii_case(&host);
        }
        match a.parse::<axum::http::uri::Authority>() {
            Ok(auth) => {
                normalize(auth.host()) == host && auth.port_u16().is_none_or(|p| Some(p) == port)
            }
            Err(_) => normalize(a) == host,
        }
    })
}

/// No `Origin` (not a browser) passes; one that is present must be in the list, compared as
/// scheme, host and port (default ports filled in).
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        return false;
    }
    let Some(origin) = origin.to_str().ok().and_then(parse_origin) else {
        return false;
    };
    allowed
        .iter()
        .filter_map(|a| parse_origin(a))
        .any(|a| a == origin)
}

/// An `Origin` naming this server as the client reached it: the same host and port as the
/// `Host` header, which must be one of `allowed_hosts` by name (not by `*`, which accepts any
/// Host and so would accept any rebinding page's origin). A rebinding page's origin names the
/// attacker's host, which `allowed_hosts` refuses.
pub fn same_origin(headers: &HeaderMap, uri: &Uri, allowed_hosts: &[String]) -> bool {
    // Most requests (agents, not browsers) carry no Origin: settled before the Host is parsed.
    let mut values = headers.get_all(header::ORIGIN).iter();
    let (Some(origin), None) = (values.next(), values.next()) else {
        return false;
    };
    if allowed_hosts.iter().any(|a| a.trim() == "*") || !host_allowed(headers, uri, allowed_hosts) {
        return false;
    }
    let Some((scheme, host, port)) = origin.to_str().ok().and_then(parse_origin) else {
        return false;
    };
    let Some((req_host, req_port)) = authority(headers, uri) else {
        return false;
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    (scheme == "http" || scheme == "https")
        && host == req_host
        && port == req_port.unwrap_or(default_port)
}

fn parse_origin(value: &str) -> Option<(String, String, u16)> {
    let uri: Uri = value.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let auth = uri.authority()?;
    let port = auth.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some((scheme, normalize(auth.host()), port))
}

/// Behind a trusted reverse proxy, the client is the right-most `X-Forwarded-For` address that is
/// not itself a trusted proxy: it replaces the peer address every per-address limit reads. From
/// any other peer the header is ignored, so a client cannot pick its own address.
fn forwarded_client(req: &mut Request, trusted: &[IpAddr]) {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return;
    };
    if !trusted.contains(&peer.ip()) {
        return;
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in forwarded.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // A hop we cannot read: stop rather than trust what the client wrote before it.
            return;
        };
        if !trusted.contains(&ip) {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip, 0)));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn hosts() {
        let allowed = vec!["localhost".to_owned(), "api.example.com:8443".to_owned()];
        let uri = Uri::from_static("/mcp");
        let ok = |h: &str| host_allowed(&with(header::HOST, h), &uri, &allowed);
        assert!(ok("localhost:8720") && ok("LOCALHOST") && ok("api.example.com:8443"));
        assert!(!ok("api.example.com") && !ok("evil.example.com") && !ok("localhost.evil.com"));
        assert!(!ok("user@localhost") && !ok(""));
        assert!(!host_allowed(&HeaderMap::new(), &uri, &allowed));
        let mut two = with(header::HOST, "localhost");
        two.append(header::HOST, HeaderValue::from_static("evil.example.com"));
        assert!(!host_allowed(&two, &uri, &allowed));
        assert!(!host_allowed(&with(header::HOST, "localhost"), &uri, &[]));
        assert!(host_allowed(
            &with(header::HOST, "x"),
            &uri,
            &["*".to_owned()]
        ));
        let v6 = vec!["::1".to_owned()];
        assert!(host_allowed(&with(header::HOST, "[::1]:80"), &uri, &v6));
        // Entries compare without regard to case, with or without a port.
        let upper = vec!["LocalHost".to_owned(), "API.example.com:8443".to_owned()];
        let ok = |h: &str| host_allowed(&with(header::HOST, h), &uri, &upper);
        assert!(ok("localhost:1") && ok("api.example.com:8443") && !ok("api.example.com:1"));
    }

    #[test]
    fn the_servers_own_origin_is_accepted() {
        let loopback = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let req = |host: &str, origin: &str| {
            let mut h = with(header::HOST, host);
            h.insert(header::ORIGIN, origin.parse().unwrap());
            h
        };
        let uri: Uri = "/mcp".parse().unwrap();
        let same = |host: &str, origin: &str, allowed: &[String]| {
            same_origin(&req(host, origin), &uri, allowed)
        };
        assert!(same("127.0.0.1:8720", "http://127.0.0.1:8720", &loopback));
        assert!(same("localhost:8720", "http://localhost:8720", &loopback));
        // Another port, another host, or a rebinding name are someone else.
        assert!(!same("127.0.0.1:8720", "http://127.0.0.1:9999", &loopback));
        assert!(!same("127.0.0.1:8720", "http://localhost:8720", &loopback));
        assert!(!same("evil.test:8720", "http://evil.test:8720", &loopback));
        assert!(!same(
            "evil.test:8720",
            "http://evil.test:8720",
            &["*".to_owned()]
        ));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_owned()];
        let ok = |o: &str| origin_allowed(&with(header::ORIGIN, o), &allowed);
        assert!(origin_allowed(&HeaderMap::new(), &[]));
        assert!(ok("https://app.example.com") && ok("https://APP.example.com:443"));
        assert!(!ok("http://app.example.com") && !ok("https://evil.example.com") && !ok("null"));
        assert!(!origin_allowed(
            &with(header::ORIGIN, "https://app.example.com"),
            &[]
        ));
    }
}
