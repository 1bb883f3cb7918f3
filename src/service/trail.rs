//! The tamper-evident audit trail: verifying a workspace's hash chain and exporting it.
//!
//! The store chains every entry at commit (see `store::chain`); here the chain is walked from its
//! start (or from the point pruning left) and the first entry that does not fit is named, with a
//! best guess of how it got there: altered in place, deleted, inserted, or moved.

use super::*;
use crate::store::{ChainHead, ChainedEntry, genesis_hash};

/// Entries read per round trip while walking.
const PAGE: u64 = 1000;
/// How far around a broken link the classifier looks for where entries came from.
const WINDOW: i64 = 64;

impl Service {
    /// Verifies the caller's workspace chain from `from` (default: its start).
    pub async fn verify_activity(
        &self,
        caller: &MemberCaller,
        from: Option<i64>,
    ) -> ServiceResult<ChainVerification> {
        self.require(caller, Role::Read, "verifying activity")
            .await?;
        let ws = self.workspace(caller).await?;
        self.verify_chain(&ws, from).await
    }

    /// Verifies one workspace's chain, for an operator with database access (the CLI).
    pub async fn verify_chain(
        &self,
        ws: &Workspace,
        from: Option<i64>,
    ) -> ServiceResult<ChainVerification> {
        if from.is_some_and(|f| f < 1) {
            return Err(ServiceError::Invalid("--from must be 1 or more".into()));
        }
        let mut report = ChainVerification {
            workspace_id: ws.id.clone(),
            workspace: ws.slug.clone(),
            intact: true,
            from_seq: 1,
            head_seq: 0,
            head_hash: None,
            verified: 0,
            pruned_through: 0,
            problem: None,
        };
        // On a SQLite file the chain is walked without the pool first; only a chain that is
        // not found intact (or one that cannot be walked so) is walked again below, which names
        // what is wrong.
        if let Some(ok) = self.store.intact_chain(&ws.id, from).await {
            if let Some(head) = &ok.head {
                report_head(&mut report, head);
            }
            report.from_seq = ok.from_seq;
            report.verified = ok.verified;
            return Ok(report);
        }
        let tx = self.store.read().await?;
        let head = tx.chain_head(&ws.id).await?;
        let problem = match &head {
            None => None,
            Some(head) => {
                report_head(&mut report, head);
                let start = from.unwrap_or(1).max(head.pruned_seq + 1);
                if start > head.last_seq + 1 {
                    return Err(ServiceError::Invalid(format!(
                        "--from {start} is past the chain's head ({})",
                        head.last_seq
                    )));
                }
                report.from_seq = start;
                walk(&tx, &ws.id, head, start, &mut report.verified).await?
            }
        };
        let problem = match problem {
            Some(p) => Some(p),
            None => stray(&tx, &ws.id, head.as_ref()).await?,
        };
        report.intact = problem.is_none();
        report.problem = problem;
        Ok(report)
    }
}

/// Puts the chain head's position, hash and pruned point in `report`.
fn report_head(report: &mut ChainVerification, head: &ChainHead) {
    report.head_seq = head.last_seq;
    report.head_hash = Some(head.last_hash.clone());
    report.pruned_through = head.pruned_seq;
}

/// Walks `start..=head.last_seq`; the first problem, if any.
async fn walk(
    tx: &Tx,
    ws: &str,
    head: &ChainHead,
    start: i64,
    verified: &mut u64,
) -> ServiceResult<Option<ChainProblem>> {
    let mut prev = if start - 1 == head.pruned_seq {
        head.pruned_hash.clone().unwrap_or_else(|| genesis_hash(ws))
    } else {
        match tx.chained_entry(ws, start - 1).await?.and_then(|e| e.hash) {
            Some(h) => h,
            None => {
                return Ok(Some(problem(
                    ChainBreak::Deleted,
                    start - 1,
                    None,
                    format!(
                        "entry {} (the one --from {start} starts after) is missing",
                        start - 1
                    ),
                )));
            }
        }
    };
    let mut expected = start;
    while expected <= head.last_seq {
        let page = tx
            .chained_activity(ws, expected, head.last_seq, PAGE)
            .await?;
        if page.is_empty() {
            return Ok(Some(problem(
                ChainBreak::Deleted,
                expected,
                None,
                format!(
                    "entries {expected} to {} are missing (the chain head is at {})",
                    head.last_seq, head.last_seq
                ),
            )));
        }
        for e in &page {
            let seq = e.seq.unwrap_or_default();
            if seq > expected {
                return Ok(Some(problem(
                    ChainBreak::Deleted,
                    expected,
                    Some(&e.entry.id),
                    format!(
                        "entries {expected} to {} are missing before entry {}",
                        seq - 1,
                        e.entry.id
                    ),
                )));
            }
            let Some(hash) = &e.hash else {
                return Ok(Some(problem(
                    ChainBreak::Inserted,
                    seq,
                    Some(&e.entry.id),
                    format!("entry {} has a position but no hash", e.entry.id),
                )));
            };
            if e.hash_after(&prev, seq) != *hash {
                return Ok(Some(classify(tx, ws, head, &prev, e).await?));
            }
            prev = hash.clone();
            expected += 1;
            *verified += 1;
        }
    }
    if prev != head.last_hash {
        return Ok(Some(problem(
            ChainBreak::Altered,
            head.last_seq,
            None,
            "the chain head's recorded hash does not match its last entry".into(),
        )));
    }
    Ok(None)
}

/// Names what happened at the first entry whose hash does not fit after `prev`.
async fn classify(
    tx: &Tx,
    ws: &str,
    head: &ChainHead,
    prev: &str,
    bad: &ChainedEntry,
) -> ServiceResult<ChainProblem> {
    let k = bad.seq.unwrap_or_default();
    let id = bad.entry.id.clone();
    let bad_hash = bad.hash.clone().unwrap_or_default();
    let window = tx
        .chained_activity(ws, k, (k + WINDOW).min(head.last_seq), WINDOW as u64 + 1)
        .await?;
    let others: Vec<&ChainedEntry> = window.iter().filter(|e| e.entry.id != id).collect();
    // The entry that really belongs at k, if it is nearby.
    let belongs_here = others
        .iter()
        .find(|e| e.hash.as_deref() == Some(e.hash_after(prev, k).as_str()));
    // Whether the bad entry is a genuine entry that belongs after some other nearby one.
    let fits_elsewhere = others.iter().any(|y| {
        y.hash
            .as_deref()
            .is_some_and(|yh| (k..=k + WINDOW).any(|s| s != k && bad.hash_after(yh, s) == bad_hash))
    });
    if let Some(real) = belongs_here {
        let real_seq = real.seq.unwrap_or_default();
        return Ok(if fits_elsewhere {
            problem(
                ChainBreak::Reordered,
                k,
                Some(&id),
                format!(
                    "entry {id} is out of order: entry {} (now at {real_seq}) belongs at {k}",
                    real.entry.id
                ),
            )
        } else {
            problem(
                ChainBreak::Inserted,
                k,
                Some(&id),
                format!(
                    "entry {id} was inserted before entry {} (which belongs at {k})",
                    real.entry.id
                ),
            )
        });
    }
    // Entries deleted and the rest renumbered: what follows still chains from the bad entry, at
    // positions shifted by the number deleted.
    let next = window.iter().find(|e| e.seq == Some(k + 1));
    let shift = match next {
        Some(n) => (1..=WINDOW)
            .find(|d| n.hash.as_deref() == Some(n.hash_after(&bad_hash, k + 1 + d).as_str())),
        None => (bad_hash == head.last_hash && k < head.last_seq).then(|| head.last_seq - k),
    };
    if let Some(d) = shift {
        return Ok(problem(
            ChainBreak::Deleted,
            k,
            Some(&id),
            format!("{d} entries before entry {id} are missing and the rest were renumbered"),
        ));
    }
    if fits_elsewhere {
        return Ok(problem(
            ChainBreak::Reordered,
            k,
            Some(&id),
            format!("entry {id} belongs at another position"),
        ));
    }
    Ok(problem(
        ChainBreak::Altered,
        k,
        Some(&id),
        format!("entry {id} does not match its hash: its content was changed"),
    ))
}

/// Entries outside the chain: written around the store, or inside the pruned prefix.
async fn stray(tx: &Tx, ws: &str, head: Option<&ChainHead>) -> ServiceResult<Option<ChainProblem>> {
    if let Some(e) = tx.first_unchained_activity(ws).await? {
        return Ok(Some(problem(
            ChainBreak::Inserted,
            0,
            Some(&e.entry.id),
            format!("entry {} is not in the chain", e.entry.id),
        )));
    }
    if let Some(head) = head.filter(|h| h.pruned_seq > 0)
        && let Some(e) = tx
            .chained_activity(ws, i64::MIN, head.pruned_seq, 1)
            .await?
            .into_iter()
            .next()
    {
        let seq = e.seq.unwrap_or_default();
        return Ok(Some(problem(
            ChainBreak::Inserted,
            seq,
            Some(&e.entry.id),
            format!("entry {} sits in the pruned part of the chain", e.entry.id),
        )));
    }
    Ok(None)
}

fn problem(kind: ChainBreak, seq: i64, entry_id: Option<&str>, detail: String) -> ChainProblem {
    ChainProblem {
        kind,
        seq,
        entry_id: entry_id.map(str::to_owned),
        detail,
    }
}

impl Service {
    /// Chained entries after `after`, oldest first, at most `limit` (1..=1000): the export.
    pub async fn export_activity(
        &self,
        caller: &MemberCaller,
        after: i64,
        limit: u64,
    ) -> ServiceResult<Vec<ChainedActivity>> {
        self.require(caller, Role::Read, "exporting activity")
            .await?;
        let tx = self.store.read().await?;
        let rows = tx
            .chained_activity(
                &caller.workspace().id,
                after.saturating_add(1),
                i64::MAX,
                limit.clamp(1, 1000),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|e| {
                Some(ChainedActivity {
                    seq: e.seq?,
                    hash: e.hash?,
                    entry: e.entry,
                })
            })
            .collect())
    }
}
