//! OpenTelemetry traces: `tracing` spans exported over OTLP/HTTP (protobuf) when an endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or `[otel] endpoint`); without one no exporter or
//! layer exists. A W3C `traceparent` (from the HTTP header or the MCP request's `_meta`) becomes
//! the parent of the request's span; outbound webhooks carry the `traceparent` of their delivery.
//!
//! Spans carry names and closed attributes (method, tool, workspace, agent, outcome), never
//! arguments, keys or tokens.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported: request paths skip work only tracing needs when not.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter's provider; [`Traces::shutdown`] sends what is still buffered.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Flushes and stops the exporter (at exit), waiting a few seconds at most.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("warning: traces not all exported at exit: {e}");
        }
    }
}

/// Builds the OTLP exporter for `endpoint` (the collector's base URL; `/v1/traces` is added) and
/// the tracing layer that feeds it. Spans are batched and sent by the SDK's own thread through
/// `runtime`'s HTTP client.
pub fn layer<S>(
    endpoint: &str,
    service_name: &str,
    runtime: tokio::runtime::Handle,
) -> Result<(impl tracing_subscriber::Layer<S>, Traces), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .with_http_client(OtlpClient::new(runtime)?)
        .build()
        .map_err(|e| format!("OpenTelemetry exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("parallax-mcp");
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Traces { provider },
    ))
}

/// A span only while traces are exported: with them off, requests make no spans at all.
pub fn span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// A span for work below a request (store transactions): none outside one, so background
/// workers polling the database export nothing.
pub fn child_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() && !tracing::Span::current().is_none() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The span of one MCP request over HTTP, carried in the request's extensions to the tool call
/// (rmcp may run the call on another task).
#[derive(Clone, Debug)]
pub struct RequestSpan(pub tracing::Span);

/// The remote parent a W3C `traceparent` (and `tracestate`) names, if it is valid.
pub fn remote_parent(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent?.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `parent` (a remote caller's trace) the parent of `span`, and records the trace id on it
/// for JSON logs.
pub fn adopt(span: &tracing::Span, parent: Option<opentelemetry::Context>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The W3C `traceparent` of `span`, for an outbound request; `None` when not tracing.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// The exporter's HTTP client: our hyper client (rustls for `https`), driven on the server's
/// Tokio runtime, since the SDK exports from its own thread.
#[derive(Debug, Clone)]
struct OtlpClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    runtime: tokio::runtime::Handle,
}

/// The most of a collector's answer we read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

impl OtlpClient {
    fn new(runtime: tokio::runtime::Handle) -> Result<Self, String> {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("OpenTelemetry exporter: no TLS roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let sent = self.runtime.spawn(async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        });
        sent.await?
    }
}
