//! Domain types: what the product talks about, free of transports and storage.
//!
//! Everything here is pure: no IO, no rmcp, axum or sea_orm types. Values are parsed once at the edge
//! (`AgentId::parse`, `Permission::parse`, `ApiKey::parse`) and trusted afterwards.

mod grant;
mod ids;
mod key;
mod permission;
mod records;
mod settings;
mod status;
mod trail;
mod webhook;

pub use grant::{grant_end, parse_duration};
pub use ids::{AgentId, Email, RecordId, WorkspaceSlug, new_id};
pub use key::{ApiKey, KeyHash, constant_time_eq};
pub use permission::{Permission, PermissionSet};
pub use records::*;
pub use settings::{SETTING_KEYS, WorkspaceSettings};
pub use status::*;
pub use trail::{
    CHECKPOINT_FORMAT, ChainBreak, ChainProblem, ChainVerification, ChainedActivity,
    CheckpointVerification, SignedCheckpoint,
};
pub use webhook::{
    SignatureError, TOLERANCE_SECS, WebhookSecret, signature_header, verify as verify_webhook,
};

/// Why a value could not be parsed; the message is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
