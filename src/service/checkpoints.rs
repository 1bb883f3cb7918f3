//! Signed checkpoints of the audit trail: the server signs `(workspace, seq, hash, time)` with its
//! Ed25519 audit key every N entries or M minutes (workspace settings), emits `audit.checkpoint`
//! (delivered to the control plane like every event), and a checkpoint exported earlier proves
//! that today's chain still extends it, even against someone who rewrote the database.

use super::*;
use crate::store::{AuditKeyRow, CheckpointRow, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The most checkpoints one listing returns.
const MAX_LISTED: u64 = 1000;

fn corrupt(what: &str) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt(what.to_owned()))
}

fn key_pair(row: &AuditKeyRow) -> ServiceResult<Ed25519KeyPair> {
    let pkcs8 = B64
        .decode(&row.secret)
        .map_err(|_| corrupt("the audit key is not base64"))?;
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| corrupt("the audit key is not Ed25519 PKCS#8"))
}

fn signed(row: CheckpointRow, slug: &str, key: Option<&AuditKeyRow>) -> SignedCheckpoint {
    SignedCheckpoint {
        format: CHECKPOINT_FORMAT.to_owned(),
        id: row.id,
        workspace_id: row.workspace_id,
        workspace: slug.to_owned(),
        seq: row.seq,
        hash: row.hash,
        created_at: row.created_at,
        algorithm: "ed25519".to_owned(),
        key_id: row.kid,
        public_key: key.map(|k| k.public_key.clone()).unwrap_or_default(),
        signature: row.signature,
    }
}

/// Whether a checkpoint is due after `last` (the time rule counts from the workspace's creation
/// before the first), under the workspace's settings.
fn due(ws: &Workspace, head_seq: i64, last: Option<(i64, Timestamp)>, at: Timestamp) -> bool {
    let settings = &ws.settings;
    let (last_seq, since) = last.unwrap_or((0, ws.created_at));
    if head_seq <= last_seq {
        return false;
    }
    let by_count = settings
        .checkpoint_every_entries
        .is_some_and(|n| head_seq - last_seq >= i64::from(n));
    let by_time = settings
        .checkpoint_every_minutes
        .is_some_and(|m| at - since >= chrono::Duration::minutes(i64::from(m)));
    by_count || by_time
}

impl Service {
    /// The server's audit key, made on first use; replicas racing to make it keep the first.
    async fn audit_key(&self) -> ServiceResult<(AuditKeyRow, Ed25519KeyPair)> {
        for _ in 0..3 {
            if let Some(row) = self.store.read().await?.latest_audit_key().await? {
                let pair = key_pair(&row)?;
                return Ok((row, pair));
            }
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| corrupt("could not generate an audit key"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| corrupt("generated audit key does not parse"))?;
            let row = AuditKeyRow {
                kid: new_id(),
                generation: 1,
                secret: B64.encode(pkcs8.as_ref()),
                public_key: B64.encode(pair.public_key().as_ref()),
                created_at: now(),
            };
            let tx = self.store.write().await?;
            match tx.insert_audit_key(&row).await {
                Ok(()) => {
                    tx.commit().await?;
                    return Ok((row, pair));
                }
                // Another replica made it first: read theirs.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(corrupt("could not settle on an audit key"))
    }

    /// Signs a checkpoint of the workspace's chain head if one is due (or whenever the head moved
    /// since the last one, with `force`). Returns the new checkpoint, if any. Safe to run on every
    /// replica at once: one checkpoint per head is kept.
    pub async fn checkpoint_workspace(
        &self,
        ws: &Workspace,
        force: bool,
    ) -> ServiceResult<Option<SignedCheckpoint>> {
        {
            let tx = self.store.read().await?;
            let Some(head) = tx.chain_head(&ws.id).await? else {
                return Ok(None);
            };
            let last = tx.last_checkpoint(&ws.id).await?;
            let moved = head.last_seq > last.as_ref().map_or(0, |c| c.seq);
            let since = last.as_ref().map(|c| (c.seq, c.created_at));
            if !(moved && (force || due(ws, head.last_seq, since, now()))) {
                return Ok(None);
            }
            drop(tx);
            // Never sign over a rewrite: what was added since the last checkpoint must extend it.
            if let Some(why) = self.breaks_last_checkpoint(ws, last.as_ref()).await? {
                return Err(ServiceError::Conflict(format!(
                    "refusing to sign a checkpoint of workspace {}: {why}; run activity verify",
                    ws.slug
                )));
            }
        }
        let (key, pair) = self.audit_key().await?;
        let tx = self.store.write().await?;
        // Read the head again inside the writing transaction: what is signed is what is committed.
        let Some(head) = tx.chain_head(&ws.id).await? else {
            return Ok(None);
        };
        let at = now();
        let message = SignedCheckpoint::message(&ws.id, head.last_seq, &head.last_hash, &at);
        let row = CheckpointRow {
            id: new_id(),
            workspace_id: ws.id.clone(),
            seq: head.last_seq,
            hash: head.last_hash,
            created_at: at,
            kid: key.kid.clone(),
            signature: B64.encode(pair.sign(&message).as_ref()),
        };
        if !tx.insert_checkpoint(&row).await? {
            return Ok(None);
        }
        let cp = signed(row, &ws.slug, Some(&key));
        emit(
            &tx,
            &ws.id,
            EventType::AuditCheckpoint,
            None,
            serde_json::to_value(&cp).map_err(|e| corrupt(&e.to_string()))?,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(cp))
    }

    /// Why the chain does not extend `last` (walking only what came after it), if it does not.
    async fn breaks_last_checkpoint(
        &self,
        ws: &Workspace,
        last: Option<&CheckpointRow>,
    ) -> ServiceResult<Option<String>> {
        let head_seq = self
            .store
            .read()
            .await?
            .chain_head(&ws.id)
            .await?
            .map_or(0, |h| h.last_seq);
        if let Some(c) = last.filter(|c| c.seq > head_seq) {
            return Ok(Some(format!(
                "the chain ends at seq {head_seq}, before the last checkpoint at {}",
                c.seq
            )));
        }
        let chain = self.verify_chain(ws, last.map(|c| c.seq + 1)).await?;
        if let Some(p) = &chain.problem {
            return Ok(Some(broken(p)));
        }
        let Some(c) = last.filter(|c| c.seq >= chain.pruned_through) else {
            // Pruned past the last checkpoint: the walk from the pruned point is all there is.
            return Ok(None);
        };
        self.hash_at(ws, c.seq, &c.hash, &chain).await
    }

    /// Why the entry at `seq` no longer has `hash` (given the walk `chain`), if it does not.
    async fn hash_at(
        &self,
        ws: &Workspace,
        seq: i64,
        hash: &str,
        chain: &ChainVerification,
    ) -> ServiceResult<Option<String>> {
        let tx = self.store.read().await?;
        let found = if seq == chain.pruned_through {
            tx.chain_head(&ws.id).await?.and_then(|h| h.pruned_hash)
        } else if seq < chain.pruned_through {
            return Ok(Some(format!(
                "entries up to seq {} were pruned, so a checkpoint at seq {seq} can no longer be checked",
                chain.pruned_through
            )));
        } else {
            tx.chained_entry(&ws.id, seq).await?.and_then(|e| e.hash)
        };
        Ok((found.as_deref() != Some(hash)).then(|| {
            format!(
                "the entry at seq {seq} no longer has the checkpoint's hash: history up to it was rewritten"
            )
        }))
    }

    /// Checkpoints every workspace that is due; the server runs this on a timer.
    pub async fn checkpoint_due(&self) -> ServiceResult<usize> {
        let (candidates, workspaces) = {
            let tx = self.store.read().await?;
            let candidates = tx.checkpoint_candidates().await?;
            if candidates.is_empty() {
                return Ok(0);
            }
            (candidates, tx.list_workspaces().await?)
        };
        let at = now();
        let mut n = 0;
        for c in candidates {
            let Some(ws) = workspaces.iter().find(|w| w.id == c.workspace_id) else {
                continue;
            };
            if !due(ws, c.head_seq, c.last, at) {
                continue;
            }
            // One workspace refusing (a rewritten chain) must not hold up the others.
            match self.checkpoint_workspace(ws, false).await {
                Ok(Some(_)) => n += 1,
                Ok(None) => {}
                Err(ServiceError::Conflict(why)) => tracing::error!(workspace = %ws.slug, "{why}"),
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Signs due checkpoints every `every` until `stop`.
    pub fn watch_checkpoints(
        &self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        self.every(every, stop, "signing audit checkpoints", |svc| async move {
            svc.checkpoint_due().await.map(drop)
        });
    }

    /// The caller's workspace checkpoints, newest first.
    pub async fn list_checkpoints(
        &self,
        caller: &MemberCaller,
    ) -> ServiceResult<Vec<SignedCheckpoint>> {
        self.require(caller, Role::Read, "listing checkpoints")
            .await?;
        self.checkpoints_of(caller.workspace()).await
    }

    /// One workspace's checkpoints, newest first, for an operator with database access (the CLI).
    pub async fn checkpoints_of(&self, ws: &Workspace) -> ServiceResult<Vec<SignedCheckpoint>> {
        let tx = self.store.read().await?;
        let keys = tx.audit_keys().await?;
        Ok(tx
            .checkpoints(&ws.id, MAX_LISTED)
            .await?
            .into_iter()
            .map(|c| {
                let key = keys.iter().find(|k| k.kid == c.kid);
                signed(c, &ws.slug, key)
            })
            .collect())
    }

    /// Signs a checkpoint of the caller's workspace head now, or returns the latest when the head
    /// has not moved since (admins).
    pub async fn create_checkpoint(
        &self,
        caller: &MemberCaller,
    ) -> ServiceResult<SignedCheckpoint> {
        self.require(caller, Role::Admin, "signing a checkpoint")
            .await?;
        self.checkpoint_now(caller.workspace()).await
    }

    /// [`Service::create_checkpoint`] for an operator with database access (the CLI).
    pub async fn checkpoint_now(&self, ws: &Workspace) -> ServiceResult<SignedCheckpoint> {
        if let Some(cp) = self.checkpoint_workspace(ws, true).await? {
            return Ok(cp);
        }
        self.checkpoints_of(ws)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "workspace {} has no activity to checkpoint yet",
                    ws.slug
                ))
            })
    }

    /// [`Service::verify_checkpoint`] for a member of the checkpoint's workspace.
    pub async fn verify_checkpoint_as(
        &self,
        caller: &MemberCaller,
        cp: SignedCheckpoint,
    ) -> ServiceResult<CheckpointVerification> {
        self.require(caller, Role::Read, "verifying a checkpoint")
            .await?;
        self.verify_checkpoint(caller.workspace(), cp).await
    }

    /// Whether the workspace's chain still extends `cp`: the signature holds under the key the
    /// checkpoint carries, the chain is intact from its start (or the point pruning left) to the
    /// head, and the entry at `cp.seq` still has `cp.hash`. A rewrite of any entry up to `cp.seq`
    /// changes that hash, even one that recomputed every hash after it.
    pub async fn verify_checkpoint(
        &self,
        ws: &Workspace,
        cp: SignedCheckpoint,
    ) -> ServiceResult<CheckpointVerification> {
        let fail = |cp: SignedCheckpoint, chain: Option<ChainVerification>, why: String| {
            Ok(CheckpointVerification {
                extends: false,
                checkpoint: cp,
                problem: Some(why),
                chain,
            })
        };
        if cp.workspace_id != ws.id {
            return Err(ServiceError::Invalid(format!(
                "the checkpoint is of workspace {}, not of {} ({})",
                cp.workspace_id, ws.slug, ws.id
            )));
        }
        if let Err(why) = check_signature(&cp) {
            return fail(cp, None, why);
        }
        let chain = self.verify_chain(ws, None).await?;
        if let Some(p) = &chain.problem {
            let why = broken(p);
            return fail(cp, Some(chain), why);
        }
        if cp.seq > chain.head_seq {
            let why = format!(
                "the checkpoint is at seq {} but the chain now ends at {}: entries were removed",
                cp.seq, chain.head_seq
            );
            return fail(cp, Some(chain), why);
        }
        if let Some(why) = self.hash_at(ws, cp.seq, &cp.hash, &chain).await? {
            return fail(cp, Some(chain), why);
        }
        Ok(CheckpointVerification {
            extends: true,
            checkpoint: cp,
            problem: None,
            chain: Some(chain),
        })
    }
}

fn broken(p: &ChainProblem) -> String {
    format!(
        "the chain is broken at seq {}: {} ({})",
        p.seq,
        p.kind.as_str(),
        p.detail
    )
}

/// Checks a checkpoint's signature against the public key it carries.
pub fn check_signature(cp: &SignedCheckpoint) -> Result<(), String> {
    if cp.format != CHECKPOINT_FORMAT {
        return Err(format!(
            "not a checkpoint file: format is {:?}, expected {CHECKPOINT_FORMAT:?}",
            cp.format
        ));
    }
    if cp.algorithm != "ed25519" {
        return Err(format!(
            "unsupported signature algorithm {:?}",
            cp.algorithm
        ));
    }
    let key = B64
        .decode(&cp.public_key)
        .map_err(|_| "the checkpoint's public key is not base64".to_owned())?;
    let sig = B64
        .decode(&cp.signature)
        .map_err(|_| "the checkpoint's signature is not base64".to_owned())?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&cp.signed_bytes(), &sig)
        .map_err(|_| "the checkpoint's signature does not verify: the file was altered".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(entries: Option<u32>, minutes: Option<u32>, created: Timestamp) -> Workspace {
        let settings = WorkspaceSettings {
            checkpoint_every_entries: entries,
            checkpoint_every_minutes: minutes,
            ..WorkspaceSettings::default()
        };
        Workspace {
            id: "w".into(),
            slug: "acme".into(),
            name: "Acme".into(),
            settings,
            created_at: created,
        }
    }

    #[test]
    fn due_by_count_or_by_time_only_when_the_chain_grew() {
        let t0 = now();
        let min = chrono::Duration::minutes;
        let w = ws(Some(10), Some(60), t0);
        assert!(!due(&w, 5, None, t0 + min(59)), "neither rule yet");
        assert!(due(&w, 10, None, t0), "ten entries");
        assert!(due(&w, 1, None, t0 + min(60)), "an hour since creation");
        assert!(!due(&w, 15, Some((10, t0)), t0 + min(1)));
        assert!(due(&w, 20, Some((10, t0)), t0 + min(1)));
        assert!(!due(&w, 10, Some((10, t0)), t0 + min(600)), "nothing new");
        let off = ws(None, None, t0);
        assert!(!due(&off, 1_000_000, None, t0 + min(100_000)));
    }
}
