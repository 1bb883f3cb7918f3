//! The activity hash chain's one definition, shared by the migration that chains existing entries
//! and by the store that extends the chain on every insert (the application crate depends on this
//! one, never the other way round, so the function lives here).
//!
//! Each entry's hash is blake3 over the previous entry's hash and a canonical encoding of the
//! entry. Every field is length-prefixed (and optional ones carry a presence byte), so no two
//! different entries encode to the same bytes. The first entry of a workspace chains from a
//! genesis hash derived from the workspace id, so a chain cannot be moved to another workspace.

/// Version tag: a future change of encoding gets a new tag rather than silently new hashes.
const DOMAIN: &[u8] = b"parallax-mcp activity chain v1";

/// The fields an entry's hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub workspace_id: &'a str,
    pub seq: i64,
    pub id: &'a str,
    /// Microseconds since the epoch: the precision both databases keep.
    pub created_at_micros: i64,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub agent_id: Option<&'a str>,
    pub activity_type: &'a str,
    pub outcome: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub task_id: Option<&'a str>,
    pub page_id: Option<&'a str>,
    pub description: &'a str,
    /// The metadata JSON exactly as stored, so no re-serialisation can change the hash.
    pub metadata: &'a str,
}

/// The hash the first entry of a workspace chains from (hex).
pub fn genesis(workspace_id: &str) -> String {
    let mut e = Vec::with_capacity(64 + workspace_id.len());
    e.extend_from_slice(DOMAIN);
    e.extend_from_slice(b"\0genesis\0");
    bytes(&mut e, workspace_id.as_bytes());
    blake3::hash(&e).to_hex().to_string()
}

/// The hash of `link` chained after `prev` (both hex).
///
/// The encoding is written out whole and hashed in one call: fed to the hasher field by field
/// (some thirty updates), an entry's hash took 7.6k instructions instead of 4.8k.
pub fn hash(prev: &str, link: &Link<'_>) -> String {
    // Room for the ids, names and prefixes, and the two free-text fields.
    let mut e = Vec::with_capacity(512 + link.description.len() + link.metadata.len());
    e.extend_from_slice(DOMAIN);
    e.extend_from_slice(b"\0entry\0");
    bytes(&mut e, prev.as_bytes());
    bytes(&mut e, link.workspace_id.as_bytes());
    e.extend_from_slice(&link.seq.to_le_bytes());
    bytes(&mut e, link.id.as_bytes());
    e.extend_from_slice(&link.created_at_micros.to_le_bytes());
    bytes(&mut e, link.actor_kind.as_bytes());
    bytes(&mut e, link.actor_id.as_bytes());
    optional(&mut e, link.agent_id);
    bytes(&mut e, link.activity_type.as_bytes());
    optional(&mut e, link.outcome);
    optional(&mut e, link.project_id);
    optional(&mut e, link.task_id);
    optional(&mut e, link.page_id);
    bytes(&mut e, link.description.as_bytes());
    bytes(&mut e, link.metadata.as_bytes());
    blake3::hash(&e).to_hex().to_string()
}

/// A field: its length (8 bytes, little-endian), then its bytes.
fn bytes(e: &mut Vec<u8>, b: &[u8]) {
    e.extend_from_slice(&(b.len() as u64).to_le_bytes());
    e.extend_from_slice(b);
}

/// An optional field: a presence byte, then the field if present.
fn optional(e: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => e.push(0),
        Some(s) => {
            e.push(1);
            bytes(e, s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link<'a>(description: &'a str, agent: Option<&'a str>) -> Link<'a> {
        Link {
            workspace_id: "w",
            seq: 1,
            id: "a",
            created_at_micros: 5,
            actor_kind: "member",
            actor_id: "m",
            agent_id: agent,
            activity_type: "t",
            outcome: None,
            project_id: None,
            task_id: None,
            page_id: None,
            description,
            metadata: "{}",
        }
    }

    /// Stored chains are verified against this encoding: it must never change under the same
    /// `DOMAIN` tag (values recorded from the first version).
    #[test]
    fn the_encoding_is_stable() {
        let g = genesis("ws-1");
        assert_eq!(
            g,
            "fde1244356cabf682710994edb1001482346a2cec9eedebb98585b37531e38d0"
        );
        let full = Link {
            workspace_id: "ws-1",
            seq: 42,
            id: "01a244ee-e6b1-769a-9de8-f3518bdc8084",
            created_at_micros: 1_764_900_000_123_456,
            actor_kind: "agent",
            actor_id: "bot",
            agent_id: Some("bot"),
            activity_type: "tool.call",
            outcome: Some("allowed"),
            project_id: Some("p"),
            task_id: Some("t"),
            page_id: None,
            description: "agent_my_assignments ✓",
            metadata: r#"{"tool":"agent_my_assignments"}"#,
        };
        assert_eq!(
            hash(&g, &full),
            "f5bf85949d8e55d27b2e87d7be1af23926f08f2bcc8f4db682cb6053cb7dc463"
        );
        assert_eq!(
            hash(&g, &link("", None)),
            "96d58c4922df530789b022e6d9de42d8c45ef4d85f864a99d4f9abb839217661"
        );
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let g = genesis("w");
        let base = hash(&g, &link("d", None));
        assert_eq!(base, hash(&g, &link("d", None)));
        assert_ne!(base, hash(&g, &link("e", None)));
        assert_ne!(base, hash(&g, &link("d", Some(""))));
        assert_ne!(base, hash(&genesis("v"), &link("d", None)));
        assert_ne!(
            base,
            hash(
                &g,
                &Link {
                    seq: 2,
                    ..link("d", None)
                }
            )
        );
    }
}
