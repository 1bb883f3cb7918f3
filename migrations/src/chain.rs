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
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(b"\0genesis\0");
    bytes(&mut h, workspace_id.as_bytes());
    h.finalize().to_hex().to_string()
}

/// The hash of `link` chained after `prev` (both hex).
pub fn hash(prev: &str, link: &Link<'_>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(b"\0entry\0");
    bytes(&mut h, prev.as_bytes());
    bytes(&mut h, link.workspace_id.as_bytes());
    h.update(&link.seq.to_le_bytes());
    bytes(&mut h, link.id.as_bytes());
    h.update(&link.created_at_micros.to_le_bytes());
    bytes(&mut h, link.actor_kind.as_bytes());
    bytes(&mut h, link.actor_id.as_bytes());
    optional(&mut h, link.agent_id);
    bytes(&mut h, link.activity_type.as_bytes());
    optional(&mut h, link.outcome);
    optional(&mut h, link.project_id);
    optional(&mut h, link.task_id);
    optional(&mut h, link.page_id);
    bytes(&mut h, link.description.as_bytes());
    bytes(&mut h, link.metadata.as_bytes());
    h.finalize().to_hex().to_string()
}

fn bytes(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

fn optional(h: &mut blake3::Hasher, v: Option<&str>) {
    match v {
        None => {
            h.update(&[0]);
        }
        Some(s) => {
            h.update(&[1]);
            bytes(h, s.as_bytes());
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
