//! The MCP server: tool catalogue, the one gate, and the stdio and streamable HTTP transports.
//! Only this module imports rmcp.

pub mod catalogue;
mod direct;
pub mod envelope;
pub mod gate;
pub mod http;
pub mod resources;
pub mod server;
pub mod sessions;
pub mod stdio;
pub mod tools;

use crate::config::Config;
use crate::service::{Service, ServiceError};
use crate::store::{Create, Store};
use rmcp::ServiceExt;

/// The environment variable that carries an agent's key in stdio mode.
pub const API_KEY_ENV: &str = "PARALLAX_API_KEY";

/// Errors that stop a transport from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Startup(String),
    /// Configuration that cannot work as given (e.g. the listen address is taken): exit 2.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves MCP over stdio for the agent whose key is in `PARALLAX_API_KEY`. The key is checked at
/// start (a bad key is a clear error and a non-zero exit) and again on every request.
pub async fn serve_stdio(config: &Config) -> Result<(), ServeError> {
    let key = std::env::var(API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            ServeError::Startup(format!(
                "{API_KEY_ENV} is not set: put the agent's API key (mcp_agent_…) in it"
            ))
        })?;
    let key = key.trim().to_owned();
    // A key that cannot be one is refused before anything else runs or logs: the error is the
    // only line the user sees.
    if crate::domain::ApiKey::parse(&key).is_err() {
        return Err(ServeError::Startup(format!(
            "{API_KEY_ENV} refused: {}",
            crate::auth::AgentAuthError::Malformed
        )));
    }
    // An agent runtime starts us in its own directory: never create a database there.
    let master_key = config
        .master_key()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let (store, _) = Store::open_with(&config.database_url, Create::Never)
        .await?
        .with_master_key(master_key)
        .await?;
    let location = store.location().to_owned();
    let gate = gate::Gate::new(Service::new(store));
    match crate::auth::agent(gate.service().store(), &key).await? {
        Ok(caller) => tracing::info!(agent = caller.agent_id(), "stdio session starting"),
        Err(refusal) => {
            // Only a key with a known owner leaves an audit entry (and so a log line).
            if refusal.owner.is_some() {
                gate.audit_refusal(&refusal, "stdio start").await;
            }
            return Err(ServeError::Startup(format!(
                "{API_KEY_ENV} refused: {} (database {location})",
                refusal.error
            )));
        }
    }
    // The feed lets a stdio agent subscribe to its assignments like an HTTP one.
    let feed = crate::events::Feed::start(
        gate.service().store().clone(),
        crate::events::EventOptions::from_config(config).poll_interval,
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    if let Some(listen) = &config.metrics.listen {
        let store = gate.service().store().clone();
        let sample: crate::telemetry::metrics::Sampler = std::sync::Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { crate::telemetry::metrics::Snapshot::of_store(&store).await })
        });
        let stop = tokio_util::sync::CancellationToken::new();
        crate::telemetry::metrics::listen(listen, sample, stop).await?;
    }
    // Only the key's hash stays: the secret itself goes with this function's copy of it.
    let key = std::sync::Arc::new(crate::auth::PresentedKey::new(&key));
    let server =
        server::ParallaxServer::new(gate, server::Credential::Key(key.clone())).with_feed(feed);
    let direct = direct::Stdio::new(server.clone(), key);
    let max_line = config
        .stdio
        .max_line_bytes
        .unwrap_or(stdio::DEFAULT_MAX_LINE_BYTES);
    let _session = crate::telemetry::metrics::stdio_session_opened();
    stdio::widen_output_pipe();
    // On Linux, pipes (how agent runtimes spawn us) are read and written on the IO reactor
    // through descriptors of their own, instead of a blocking-pool hand-off per read and write;
    // anything else falls back to the blocking handles.
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let io = stdio::bounded(stdin, stdout, max_line, Some(direct));
    let running = server
        .serve((io.reader, io.writer))
        .await
        .map_err(|e| ServeError::Startup(format!("MCP handshake failed: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Startup(format!("stdio transport failed: {e}")))?;
    // Let the last answers reach stdout before the process exits.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), io.flushed).await;
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM. The handlers are installed now, not on first poll, so a signal
/// that arrives right after start-up is not lost to the default action (exit by signal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    }
}
