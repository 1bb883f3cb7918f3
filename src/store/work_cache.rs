//! The work snapshot: each agent's current assignments with their tasks and projects, kept in
//! memory and served only while the work generation a request saw is the one it was read at.
//!
//! Every store method that writes projects, tasks or assignments bumps the work generation in its
//! own transaction (`Tx::bump_work_generation`), so no service can forget to. The request reads
//! the generation in the same statement that validates its credential (`Seen`), so serving from
//! here costs no extra round trip, and what it serves is exactly what a read transaction begun at
//! that statement would have returned. A snapshot is read in a transaction that reads the
//! generation first, so a tagged snapshot is never older than its tag.

use super::auth_cache::Seen;
use super::{Store, StoreResult};
use crate::domain::{Assignment, Project, Task};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// More agents than this and the map is emptied rather than grown.
const MAX_AGENTS: usize = 10_000;

/// An agent's active assignments (newest first), the tasks they name and the projects assigned
/// without a task.
#[derive(Debug, Default)]
pub struct AgentWork {
    pub assignments: Vec<Assignment>,
    pub tasks: Vec<Task>,
    pub projects: Vec<Project>,
    /// What readers made of this snapshot (a tool's rendered answer).
    pub derived: Derived,
}

/// Values derived from one immutable snapshot, each made once and shared after. They live and
/// die with the snapshot, so they need no invalidation of their own: a change makes a new
/// snapshot, which starts with none.
#[derive(Default)]
pub struct Derived(Mutex<Vec<DerivedValue>>);

/// A derived value: its type, its key, and the value.
type DerivedValue = (TypeId, u64, Arc<dyn Any + Send + Sync>);

impl Derived {
    /// The value of type `T` under `key`, made by `make` if this snapshot has none yet. `make`
    /// runs outside the lock; when two callers race, the first value stored is kept.
    pub fn get_or_make<T: Any + Send + Sync>(&self, key: u64, make: impl FnOnce() -> T) -> Arc<T> {
        let find = |all: &[DerivedValue]| {
            all.iter()
                .find(|(t, k, _)| *t == TypeId::of::<T>() && *k == key)
                .and_then(|(_, _, v)| v.clone().downcast::<T>().ok())
        };
        if let Some(v) = find(&self.lock()) {
            return v;
        }
        let made = Arc::new(make());
        let mut all = self.lock();
        if let Some(v) = find(&all) {
            return v;
        }
        all.push((TypeId::of::<T>(), key, made.clone()));
        made
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DerivedValue>> {
        // A panic while holding the lock leaves a list that is merely incomplete: still correct.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Derived({} values)", self.lock().len())
    }
}

#[derive(Default)]
pub(super) struct WorkCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The newest work generation any entry was read at; entries at other generations are stale.
    generation: i64,
    agents: HashMap<(String, String), Arc<AgentWork>>,
}

impl WorkCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a map that is merely incomplete: still correct.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, generation: i64, key: &(String, String)) -> Option<Arc<AgentWork>> {
        let state = self.lock();
        (state.generation == generation)
            .then(|| state.agents.get(key).cloned())
            .flatten()
    }

    fn remember(&self, generation: i64, key: (String, String), work: Arc<AgentWork>) {
        let mut state = self.lock();
        // Generations only grow: an older read must not replace newer entries.
        if generation < state.generation {
            return;
        }
        if generation > state.generation {
            state.generation = generation;
            state.agents.clear();
        }
        if state.agents.len() >= MAX_AGENTS {
            state.agents.clear();
        }
        state.agents.insert(key, work);
    }
}

impl Store {
    /// Agent `agent_id`'s current work in `workspace_id`, as of the generations `seen` (read when
    /// the request authenticated).
    pub async fn agent_work(
        &self,
        seen: Seen,
        workspace_id: &str,
        agent_id: &str,
    ) -> StoreResult<Arc<AgentWork>> {
        let key = (workspace_id.to_owned(), agent_id.to_owned());
        if let Some(work) = self.work.get(seen.work, &key) {
            return Ok(work);
        }
        // Boxed: the miss path's transaction is most of this future's size, and every read
        // tool's future carries it.
        let (generation, work) = Box::pin(async {
            let tx = self.read().await?;
            let generation = tx.read_generations().await?.work;
            let assignments = tx.agent_assignments(workspace_id, agent_id, false).await?;
            let task_ids: Vec<String> = assignments
                .iter()
                .filter_map(|a| a.task_id.clone())
                .collect();
            let project_ids: Vec<String> = assignments
                .iter()
                .filter(|a| a.task_id.is_none())
                .map(|a| a.project_id.clone())
                .collect();
            let tasks = tx.tasks_by_ids(workspace_id, &task_ids).await?;
            let projects = tx.projects_by_ids(workspace_id, &project_ids).await?;
            tx.commit().await?;
            Ok::<_, super::StoreError>((
                generation,
                Arc::new(AgentWork {
                    assignments,
                    tasks,
                    projects,
                    derived: Derived::default(),
                }),
            ))
        })
        .await?;
        self.work.remember(generation, key, work.clone());
        Ok(work)
    }
}
