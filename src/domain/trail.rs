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
