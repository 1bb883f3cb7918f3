use crate::domain::ParseError;
use crate::store::StoreError;

/// Everything a service can refuse or fail with. Transports map this to their own errors in one
/// place each (CLI exit codes, MCP tool errors, HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Also the answer for ids of another workspace: they do not exist from the caller's side.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("quota exceeded: {limit} is {max}{detail}")]
    QuotaExceeded {
        limit: &'static str,
        max: u32,
        detail: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ParseError> for ServiceError {
    fn from(e: ParseError) -> Self {
        ServiceError::Invalid(e.0)
    }
}

impl ServiceError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ServiceError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// A stable, machine-readable name for the error kind (JSON output, API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::NotFound { .. } => "not_found",
            ServiceError::Invalid(_) => "invalid",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::QuotaExceeded { .. } => "quota_exceeded",
            ServiceError::Unauthenticated(_) => "unauthenticated",
            ServiceError::Store(StoreError::Unavailable(_)) => "unavailable",
            ServiceError::Store(_) => "internal",
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
