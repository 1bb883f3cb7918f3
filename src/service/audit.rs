//! The audit writer: group commit for the gate's decision entries and for writing tools.
//!
//! Each call's entry must be durable before its response is sent. Writing one transaction per
//! call would serialise every call on SQLite's single writer, so entries submitted while a write
//! is in flight are collected and committed together in the next transaction, and each submitter
//! is released when its own batch has committed.
//!
//! A writing tool's change goes the same way ([`AuditWriter::run`]): its job runs inside the
//! batch's transaction under a savepoint, so a job that fails is undone alone, and its result is
//! handed back only once the batch (the change with its audit entry) has committed. If the
//! commit fails, every job in the batch gets the error: nothing is acknowledged that was lost.
//! A change that is only entries (a note naming nothing) needs no job: it is submitted as entries
//! ([`AuditWriter::append`]) and commits the way decision entries do.
//!
//! A decision made on an unconfirmed caller (`auth::Unconfirmed`) is submitted
//! with the generations it was made on ([`AuditWriter::record_checked`], or
//! [`AuditWriter::append_checked`] for a change that is only entries): its batch commits it
//! only if they are still current, and otherwise leaves it out and says so, so that the call is
//! decided again on a confirmed caller. A batch with a writing tool's change in it leaves such
//! decisions out unchecked (rare, and the call is only decided again).
//!
//! The batch also records when agents were last seen and keys last used, but at most once per
//! [`TOUCH_EVERY`] for each: those timestamps are bookkeeping, not audit, and rewriting the rows on
//! every batch would cost two more statements per commit.

use super::{ServiceError, ServiceResult};
use crate::domain::ActivityEntry;
use crate::store::{Seen, Store, StoreError, Tx};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// `Ok(false)`: a checked entry left out, its generations having moved (nothing else is).
type Ack = oneshot::Sender<Result<bool, String>>;

/// A writing tool's work in a batch's transaction; `true` keeps it, `false` undoes it.
type Job =
    Box<dyn for<'t> FnOnce(&'t Tx) -> Pin<Box<dyn Future<Output = bool> + Send + 't>> + Send>;

/// What a submitter asks of the writer.
// Entries are nearly every submission: boxing them would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Work {
    /// An audit entry to commit.
    Entry(ActivityEntry),
    /// An audit entry to commit only if the generations are still these when it commits.
    Checked(ActivityEntry, Seen),
    /// Entries (a change that is nothing but entries) to commit together only if the
    /// generations are still these when they commit; left out as [`Work::Entries`] is.
    CheckedEntries(Vec<ActivityEntry>, Seen),
    /// A checked submission its batch left out (the generations moved); it acknowledges
    /// `false`.
    Stale,
    /// A change that is nothing but entries (a writing tool's decision and what it appends),
    /// committed together, in this order, or not at all. Left out if its caller stopped waiting
    /// before its batch was put together: it was not told of the change, as a job's caller is
    /// not.
    Entries(Vec<ActivityEntry>),
    /// A change to run in the batch's transaction.
    Job(Job),
    /// Acknowledged once everything submitted before it is.
    Flush,
}

type Submission = (Work, Ack);

/// The most submissions one batch commits.
const MAX_BATCH: usize = 512;

/// The most one batch commits on a runtime with one thread (`stdio`), where the calls, the
/// commit and the answers take turns: a batch's answers leave only once it has committed, so a
/// client with 32 calls in flight got all 32 answers at once and sent its next 32 only then, the
/// server idle while the client read them and the client idle while the server worked. Two
/// batches of 16 let each side work on one half while the other works on the other: at W = 32,
/// 0.44–0.53× bare's calls/s became 0.62–0.69× (docs/performance.md), at the same CPU per call.
const ONE_THREAD_BATCH: usize = 16;

/// An agent's `last_seen_at` and a key's `last_used_at` are rewritten at most this often.
pub const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// What this writer last stored for each agent (`workspace/agent`) and key: the timestamps.
type Touched = HashMap<String, DateTime<Utc>>;

/// A handle to the background writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Submission>,
}

impl AuditWriter {
    /// Starts the writer. It stops when every handle is dropped.
    ///
    /// On PostgreSQL under a runtime with worker threads (`serve`), it runs on a thread and
    /// runtime of its own. On the workers, a commit's answer waited behind every task ready to run
    /// (and its turns behind them again) before the next batch went out, and the database sat
    /// idle meanwhile: at c = 16, 0.30 ms between one commit's answer and the next batch, as long
    /// as half the commit itself; on a thread of its own the kernel runs it as soon as the answer
    /// arrives (docs/performance.md). On SQLite a commit is no round trip, and there the thread
    /// cost more than it saved: each batch then crossed threads twice, and reads at c = 16 took
    /// a fifth more CPU. A single-threaded runtime (`stdio`) keeps it, since stdio runs on one
    /// thread so that a call does not cross threads.
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel::<Submission>(4096);
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        let own_thread =
            store.is_postgres() && flavor == tokio::runtime::RuntimeFlavor::MultiThread;
        // Smaller batches only where the calls run on the writer's one thread.
        let cap = match flavor {
            tokio::runtime::RuntimeFlavor::CurrentThread => ONE_THREAD_BATCH,
            _ => MAX_BATCH,
        };
        let run = run(store, rx, cap);
        let runtime = own_thread
            .then(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "the audit writer runs on the workers");
                    })
                    .ok()
            })
            .flatten();
        match runtime {
            // Without its thread the writer is gone, and every call is refused, not answered
            // unaudited.
            Some(runtime) => {
                if let Err(e) = std::thread::Builder::new()
                    .name("parallax-audit".into())
                    .spawn(move || runtime.block_on(run))
                {
                    tracing::error!(error = %e, "cannot start the audit writer's thread");
                }
            }
            None => {
                tokio::spawn(run);
            }
        }
        Self { tx }
    }

    /// `Ok(false)` only for a checked entry left out.
    async fn submit(&self, work: Work) -> Result<bool, ServiceError> {
        let (ack, done) = oneshot::channel();
        let closed = || ServiceError::Store(StoreError::Unavailable("audit writer stopped".into()));
        self.tx.send((work, ack)).await.map_err(|_| closed())?;
        match done.await {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(e)) => Err(ServiceError::Store(StoreError::Unavailable(format!(
                "audit log not written: {e}"
            )))),
            Err(_) => Err(closed()),
        }
    }

    /// Waits until every entry submitted before it was committed (or failed): at shutdown, so no
    /// entry still queued is lost with the process.
    pub async fn flush(&self) {
        let _ = self.submit(Work::Flush).await;
    }

    /// Submits an entry and waits until it is committed.
    pub async fn record(&self, entry: ActivityEntry) -> ServiceResult<()> {
        self.submit(Work::Entry(entry)).await.map(drop)
    }

    /// Submits the entry of a decision made on generations `seen` that were not read for it
    /// (an unconfirmed caller) and waits for its batch: `Ok(true)` once it is committed, which
    /// its batch does only if the store's generations are still `seen` at that commit;
    /// `Ok(false)` if they were not, and then nothing of it was written and the decision must
    /// be made again on a confirmed caller.
    pub async fn record_checked(&self, entry: ActivityEntry, seen: Seen) -> ServiceResult<bool> {
        self.submit(Work::Checked(entry, seen)).await
    }

    /// Commits `entries` together, in this order, in the next batch, and waits until they are
    /// committed: a writing tool's change that only appends to the trail needs no transaction
    /// of its own, so on a SQLite file it commits the way decision entries do. A caller that
    /// stops waiting before its batch is put together leaves nothing (see [`Work::Entries`]).
    pub async fn append(&self, entries: Vec<ActivityEntry>) -> ServiceResult<()> {
        self.submit(Work::Entries(entries)).await.map(drop)
    }

    /// [`AuditWriter::append`] for a change decided on generations `seen` that were not read for
    /// it (an unconfirmed caller), checked as [`AuditWriter::record_checked`] checks a decision:
    /// `Ok(true)` once all of `entries` committed, `Ok(false)` if none did because the
    /// generations had moved.
    pub async fn append_checked(
        &self,
        entries: Vec<ActivityEntry>,
        seen: Seen,
    ) -> ServiceResult<bool> {
        self.submit(Work::CheckedEntries(entries, seen)).await
    }

    /// Runs `job` in the next batch's transaction and returns its result once that batch has
    /// committed. A job that fails is rolled back alone; a batch that fails to commit fails every
    /// job in it. The job must queue its own audit entry (it commits with the change).
    pub async fn run<T, F>(&self, job: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Tx) -> Pin<Box<dyn Future<Output = ServiceResult<T>> + Send + 't>>
            + Send
            + 'static,
    {
        let (give, take) = oneshot::channel();
        let wrapped: Job = Box::new(move |tx| {
            Box::pin(async move {
                // A caller that stopped waiting (its call cut at shutdown, its client gone) was
                // not told of a change, so none is made.
                if give.is_closed() {
                    return false;
                }
                let result = job(tx).await;
                let keep = result.is_ok();
                let _ = give.send(result);
                keep
            })
        });
        let committed = self.submit(Work::Job(wrapped)).await;
        match take.await {
            // The job's own refusal stands whatever the batch did; its success only if committed.
            Ok(result) => {
                let value = result?;
                committed.map(|_| value)
            }
            // The job never ran: the batch failed before it, and says why.
            Err(_) => Err(committed.err().unwrap_or_else(|| {
                ServiceError::Store(StoreError::Unavailable("the write was not run".into()))
            })),
        }
    }
}

/// The writer's loop: batches what is submitted (at most `cap` at once), commits it, and
/// acknowledges each submitter.
async fn run(store: Store, mut rx: mpsc::Receiver<Submission>, cap: usize) {
    let mut batch = Vec::with_capacity(cap);
    let mut touched = Touched::new();
    while rx.recv_many(&mut batch, cap).await > 0 {
        join_running(&mut rx, &mut batch, cap).await;
        let writes = batch
            .iter()
            .filter(|(w, _)| !matches!(w, Work::Flush))
            .count();
        let result = if writes == 0 {
            Ok(())
        } else {
            let started = std::time::Instant::now();
            let written = write(&store, &mut batch, &mut touched)
                .await
                .map_err(|e| e.to_string());
            crate::telemetry::metrics::audit_batch(writes, started.elapsed(), written.is_ok());
            written
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, entries = writes, "audit batch failed");
        }
        for (work, ack) in batch.drain(..) {
            let stale = matches!(work, Work::Stale);
            let _ = ack.send(result.clone().map(|()| !stale));
        }
    }
}

/// How many turns the writer gives running calls to join a batch before committing it.
const JOIN_TURNS: usize = 4;

/// Much of a commit's cost does not grow with its size (BEGIN and COMMIT, the chain head, the WAL
/// pages an index's last leaf costs whether one entry or ten land in it), so before committing,
/// the writer steps aside for the calls that are already running and takes what they submitted
/// meanwhile; it commits once a turn brings nothing, or after [`JOIN_TURNS`]. Alone, a call waits
/// for one yield, not a timer. On the workers' runtime a yield puts the writer behind every task
/// ready to run; on its own thread it is a look at its runtime's I/O (microseconds), while the
/// calls run on the workers beside it.
async fn join_running(
    rx: &mut mpsc::Receiver<Submission>,
    batch: &mut Vec<Submission>,
    cap: usize,
) {
    for _ in 0..JOIN_TURNS {
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < cap {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            break;
        }
    }
}

/// Commits a batch in submission order (entries queued, jobs run under savepoints), and marks
/// the agents and keys it shows in use as seen, unless this writer did so less than
/// [`TOUCH_EVERY`] ago. A checked entry that is left out becomes [`Work::Stale`].
async fn write(
    store: &Store,
    batch: &mut [Submission],
    touched: &mut Touched,
) -> Result<(), StoreError> {
    if !batch.iter().any(|(w, _)| matches!(w, Work::Job(_))) {
        // Decision entries alone: the store commits them in one go.
        let mut entries: Vec<ActivityEntry> = Vec::with_capacity(batch.len());
        // The generations the checked entries were decided on; each checked submission's place
        // in the batch and its entries' places in `entries`.
        let mut expect: Option<Seen> = None;
        let mut checked: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (i, (work, ack)) in batch.iter_mut().enumerate() {
            match std::mem::replace(work, Work::Flush) {
                Work::Entry(e) => entries.push(e),
                Work::Entries(es) if !ack.is_closed() => entries.extend(es),
                Work::Checked(e, seen) if expect.is_none_or(|x| x == seen) => {
                    expect = Some(seen);
                    checked.push((i, entries.len()..entries.len() + 1));
                    entries.push(e);
                }
                Work::CheckedEntries(es, seen)
                    if !ack.is_closed() && expect.is_none_or(|x| x == seen) =>
                {
                    expect = Some(seen);
                    checked.push((i, entries.len()..entries.len() + es.len()));
                    entries.extend(es);
                }
                // Decided on other generations than the batch's other checked entries: one
                // of the two is out of date, so this one is decided again.
                Work::Checked(..) | Work::CheckedEntries(..) => *work = Work::Stale,
                _ => {}
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        let (agents, keys) = due_touches(&entries, touched);
        let Some(back) = store
            .append_activity(entries, (&agents, &keys), expect)
            .await?
        else {
            remember(touched, agents, keys);
            return Ok(());
        };
        // The generations moved: nothing was written, and the entries came back as they went.
        // The checked entries are left out, the rest committed without them.
        for (i, _) in &checked {
            batch[*i].0 = Work::Stale;
        }
        let rest: Vec<ActivityEntry> = back
            .into_iter()
            .enumerate()
            .filter(|(at, _)| !checked.iter().any(|(_, c)| c.contains(at)))
            .map(|(_, e)| e)
            .collect();
        if rest.is_empty() {
            return Ok(());
        }
        let (agents, keys) = due_touches(&rest, touched);
        if store
            .append_activity(rest, (&agents, &keys), None)
            .await?
            .is_some()
        {
            return Err(StoreError::Unavailable(
                "audit entries came back unwritten".into(),
            ));
        }
        remember(touched, agents, keys);
        return Ok(());
    }
    let tx = store.write().await?;
    let mut entries: Vec<ActivityEntry> = Vec::new();
    for (work, ack) in batch.iter_mut() {
        // Taken out: only the acknowledgements are needed after this.
        match std::mem::replace(work, Work::Flush) {
            Work::Entry(e) => entries.push(e),
            Work::Entries(es) if !ack.is_closed() => entries.extend(es),
            Work::Entries(_) => {}
            // Not checked in a batch with jobs: decided again instead.
            Work::Checked(..) | Work::CheckedEntries(..) | Work::Stale => *work = Work::Stale,
            Work::Job(job) => {
                // Entries submitted before the job are chained before its own.
                tx.insert_activities(std::mem::take(&mut entries)).await?;
                let mark = tx.savepoint().await?;
                if job(&tx).await {
                    tx.release(mark).await?;
                } else {
                    tx.rollback_to(mark).await?;
                }
            }
            Work::Flush => {}
        }
    }
    tx.insert_activities(entries).await?;
    let (agents, keys) = tx.queued_activity(|queued| due_touches(queued, touched));
    tx.mark_seen((&agents, &keys)).await?;
    tx.commit().await?;
    remember(touched, agents, keys);
    Ok(())
}

/// Notes the agents and keys a committed batch marked as seen.
fn remember(
    touched: &mut Touched,
    agents: Vec<(String, String, DateTime<Utc>)>,
    keys: Vec<(String, DateTime<Utc>)>,
) {
    if touched.len() > 100_000 {
        touched.clear();
    }
    for (ws, agent, at) in agents {
        touched.insert(format!("{ws}/{agent}"), at);
    }
    for (key, at) in keys {
        touched.insert(key, at);
    }
}

/// The agents (workspace, agent, when) and keys (id, when) the gate's entries show in use and
/// this writer has not marked for [`TOUCH_EVERY`].
#[allow(clippy::type_complexity)]
fn due_touches(
    entries: &[ActivityEntry],
    touched: &Touched,
) -> (
    Vec<(String, String, DateTime<Utc>)>,
    Vec<(String, DateTime<Utc>)>,
) {
    let mut agents: Vec<(String, String, DateTime<Utc>)> = Vec::new();
    let mut keys: Vec<(String, DateTime<Utc>)> = Vec::new();
    let due =
        |k: &str, at: DateTime<Utc>| touched.get(k).is_none_or(|last| at - *last >= TOUCH_EVERY);
    for e in entries.iter().filter(|e| e.activity_type == "tool.call") {
        if let Some(agent) = e.agent_id.as_deref()
            && !agents
                .iter()
                .any(|(w, a, _)| *w == e.workspace_id && a == agent)
            && due(&format!("{}/{agent}", e.workspace_id), e.created_at)
        {
            agents.push((e.workspace_id.clone(), agent.to_owned(), e.created_at));
        }
        if let Some(key) = e.metadata.get("credential").and_then(|v| v.as_str())
            && !keys.iter().any(|(k, _)| k == key)
            && due(key, e.created_at)
        {
            keys.push((key.to_owned(), e.created_at));
        }
    }
    (agents, keys)
}
