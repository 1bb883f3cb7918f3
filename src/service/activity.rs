//! Reading and pruning the audit trail.

use super::*;
use crate::store::ActivityQuery;

/// The most entries one page may hold.
pub const MAX_PAGE: u64 = 500;

impl Service {
    /// The titles of the projects (their names) and tasks that `entries` refer to, by id, so a
    /// listing can show what an entry was about rather than bare ids.
    pub async fn activity_titles(
        &self,
        caller: &MemberCaller,
        entries: &[ActivityEntry],
    ) -> ServiceResult<std::collections::BTreeMap<String, String>> {
        self.require(caller, Role::Read, "reading activity").await?;
        let ids = |f: fn(&ActivityEntry) -> Option<&String>| {
            let set: std::collections::BTreeSet<String> =
                entries.iter().filter_map(f).cloned().collect();
            set.into_iter().collect::<Vec<_>>()
        };
        let ws = &caller.workspace().id;
        let tx = self.store.read().await?;
        let mut titles = std::collections::BTreeMap::new();
        for p in tx
            .projects_by_ids(ws, &ids(|e| e.project_id.as_ref()))
            .await?
        {
            titles.insert(p.id, p.name);
        }
        for t in tx.tasks_by_ids(ws, &ids(|e| e.task_id.as_ref())).await? {
            titles.insert(t.id, t.title);
        }
        Ok(titles)
    }

    /// Activity of the caller's workspace, newest first. `q.limit` is clamped to 1..=500 (0 means 50).
    pub async fn list_activity(
        &self,
        caller: &MemberCaller,
        mut q: ActivityQuery,
    ) -> ServiceResult<Vec<ActivityEntry>> {
        self.require(caller, Role::Read, "reading activity").await?;
        q.limit = match q.limit {
            0 => 50,
            n => n.min(MAX_PAGE),
        };
        if let Some(b) = &q.before {
            q.before = Some(RecordId::parse("activity", b)?.into_string());
        }
        Ok(self
            .store
            .read()
            .await?
            .query_activity(&caller.workspace().id, &q)
            .await?)
    }

    /// Prunes the caller's workspace by its retention setting; returns how many entries went.
    pub async fn prune_activity(&self, caller: &MemberCaller) -> ServiceResult<u64> {
        self.require(caller, Role::Admin, "pruning activity")
            .await?;
        let ws = self.workspace(caller).await?;
        let Some(days) = ws.settings.activity_retention_days else {
            return Err(ServiceError::Invalid(
                "activity_retention_days is not set: activity is kept forever".into(),
            ));
        };
        self.prune_workspace(&ws, days, &caller.actor()).await
    }

    /// Prunes every workspace that sets a retention; the server runs this periodically.
    pub async fn prune_all_activity(&self) -> ServiceResult<u64> {
        let mut total = 0;
        for ws in self.list_workspaces().await? {
            if let Some(days) = ws.settings.activity_retention_days {
                total += self.prune_workspace(&ws, days, &Actor::System).await?;
            }
        }
        Ok(total)
    }

    async fn prune_workspace(
        &self,
        ws: &Workspace,
        days: u32,
        actor: &Actor,
    ) -> ServiceResult<u64> {
        let cutoff = now() - chrono::Duration::days(i64::from(days));
        let tx = self.store.write().await?;
        let n = tx.prune_activity(&ws.id, cutoff).await?;
        if n > 0 {
            // The pruning itself is recorded, so a gap in the trail is explained by the trail;
            // the hash it pruned up to is what the remaining chain verifies from.
            let head = tx.chain_head(&ws.id).await?;
            let (through, anchor) = head
                .map(|h| (h.pruned_seq, h.pruned_hash))
                .unwrap_or_default();
            tx.insert_activity(
                &Activity::new(&ws.id, actor, "activity.pruned")
                    .description(&format!(
                        "{n} entries older than {days} days removed (through seq {through})"
                    ))
                    .metadata(json!({
                        "cutoff": cutoff,
                        "removed": n,
                        "pruned_through": through,
                        "pruned_hash": anchor,
                    }))
                    .build(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}
