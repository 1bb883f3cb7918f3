//! The audit trail's integrity: what a chain verification found.

use serde::Serialize;

/// How an entry broke the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainBreak {
    /// The entry's content no longer matches its hash.
    Altered,
    /// One or more entries before this point are missing.
    Deleted,
    /// The entry was not written by the server (no place in the chain, or none that fits).
    Inserted,
    /// The entry belongs at another position.
    Reordered,
}

impl ChainBreak {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainBreak::Altered => "altered",
            ChainBreak::Deleted => "deleted",
            ChainBreak::Inserted => "inserted",
            ChainBreak::Reordered => "reordered",
        }
    }
}

/// The first point where the chain does not hold.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainProblem {
    #[serde(rename = "kind")]
    pub kind: ChainBreak,
    /// The chain position where it was found.
    pub seq: i64,
    /// The entry found there, when there is one.
    pub entry_id: Option<String>,
    pub detail: String,
}

/// The result of walking one workspace's chain.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainVerification {
    pub workspace_id: String,
    pub workspace: String,
    /// True only when every entry from `from_seq` to the head chains correctly.
    pub intact: bool,
    /// The first seq checked (after any pruned prefix).
    pub from_seq: i64,
    /// The head's seq: the number of entries ever written.
    pub head_seq: i64,
    pub head_hash: Option<String>,
    /// Entries whose hash was recomputed and matched.
    pub verified: u64,
    /// Entries up to this seq were pruned; the chain resumes from the hash recorded then.
    pub pruned_through: i64,
    pub problem: Option<ChainProblem>,
}

/// An activity entry with its place in the chain, as exported.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainedActivity {
    pub seq: i64,
    /// blake3 (hex) over the previous entry's hash and this entry.
    pub hash: String,
    #[serde(flatten)]
    pub entry: super::ActivityEntry,
}

/// What a checkpoint file says it is, so a file of another kind is refused by name.
pub const CHECKPOINT_FORMAT: &str = "parallax-mcp-checkpoint/v1";

/// A signed statement that a workspace's chain had `hash` at `seq` at `created_at`: the server
/// signs it with its Ed25519 audit key. Exported, it is the file `activity verify --checkpoint`
/// reads, so it carries the public key that checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// Always `parallax-mcp-checkpoint/v1`.
    pub format: String,
    pub id: String,
    pub workspace_id: String,
    /// The workspace's slug when the checkpoint was listed (not signed: slugs can change).
    pub workspace: String,
    pub seq: i64,
    /// The chain hash of entry `seq` (blake3, hex).
    pub hash: String,
    pub created_at: super::Timestamp,
    /// Always `ed25519`.
    pub algorithm: String,
    pub key_id: String,
    /// The raw 32-byte Ed25519 public key, base64.
    pub public_key: String,
    /// The signature over [`SignedCheckpoint::message`], base64.
    pub signature: String,
}

impl SignedCheckpoint {
    /// The exact bytes signed: a versioned tag, then the workspace id, seq, hash and time (RFC 3339
    /// with microseconds), one a line. None of them can contain a newline.
    pub fn message(workspace_id: &str, seq: i64, hash: &str, at: &super::Timestamp) -> Vec<u8> {
        format!(
            "{CHECKPOINT_FORMAT}\n{workspace_id}\n{seq}\n{hash}\n{}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
        .into_bytes()
    }

    /// [`SignedCheckpoint::message`] for this checkpoint.
    pub fn signed_bytes(&self) -> Vec<u8> {
        Self::message(&self.workspace_id, self.seq, &self.hash, &self.created_at)
    }
}

/// What `activity verify --checkpoint` found.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CheckpointVerification {
    /// True only when the signature holds, the entry at `seq` still has the checkpoint's hash and
    /// the chain is intact from its start to the head.
    pub extends: bool,
    pub checkpoint: SignedCheckpoint,
    /// Why it does not, when it does not.
    pub problem: Option<String>,
    /// The walk of the current chain.
    pub chain: Option<ChainVerification>,
}
