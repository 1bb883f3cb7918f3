//! The MCP server. Only this module imports rmcp. (Being built: see issue 3.)

use crate::config::Config;

/// Errors that stop a transport from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves MCP over streamable HTTP until ctrl-c or SIGTERM.
pub async fn serve_http(_config: &Config) -> Result<(), ServeError> {
    Err(ServeError::Startup("the HTTP transport is not built yet".into()))
}

/// Serves MCP over stdio for the agent whose key is in `PARALLAX_API_KEY`.
pub async fn serve_stdio(_config: &Config) -> Result<(), ServeError> {
    Err(ServeError::Startup("the stdio transport is not built yet".into()))
}
