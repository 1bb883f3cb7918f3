//! Handing the allocator's free memory back to the system. The binary's allocator is mimalloc
//! (`main.rs`), whose `mi_collect` collects only the calling thread's heap, so a release is a
//! numbered request each thread answers once: the asking thread at once, every runtime thread as
//! it next parks (`main.rs` hooks [`release_on_park`] into the runtime). Asked by `mcp::sessions`
//! after it puts sessions to sleep and by `http` once start-up is done.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many times free memory was asked back ([`release_free_memory`]).
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last request this thread answered ([`release_on_park`]).
    static RELEASED: Cell<u64> = const { Cell::new(0) };
}

/// Returns free pages to the system. Memory freed by a task lies on whichever runtime thread ran
/// it (a sleeping MCP session's, what start-up dropped), so this thread collects now and every
/// other runtime thread when it next goes idle ([`release_on_park`]); the empty tasks spawned here
/// wake idle ones to look for work, so they park again, and collect, at once rather than at their
/// next request. Returns the request's number.
pub(crate) fn release_free_memory() -> u64 {
    let asked = RELEASES.fetch_add(1, Ordering::Relaxed) + 1;
    release_on_park();
    for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
        tokio::spawn(async {});
    }
    asked
}

/// Hands this thread's free memory back if it was asked for since the thread last did: the
/// runtime's `on_thread_park` hook (`main.rs`), so a worker collects its own heap as it goes idle.
/// Costs one atomic load and one thread-local read when nothing was asked.
pub fn release_on_park() {
    release_if_asked();
}

/// [`release_on_park`], saying whether this thread collected.
fn release_if_asked() -> bool {
    let asked = RELEASES.load(Ordering::Relaxed);
    RELEASED.with(|done| {
        if done.get() == asked {
            return false;
        }
        done.set(asked);
        // SAFETY: mi_collect only reads and updates the allocator's own state, for the calling
        // thread's heap; any thread may call it.
        unsafe {
            libmimalloc_sys::mi_collect(true);
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// Each runtime thread answers each request for memory once, at its first park after it.
    /// (Other tests may ask meanwhile: a second collection is wrong only if nobody asked.)
    #[test]
    fn every_thread_collects_once_per_release() {
        std::thread::spawn(|| {
            RELEASES.fetch_add(1, Ordering::Relaxed);
            assert!(release_if_asked(), "a thread collects when asked");
            let asked = RELEASES.load(Ordering::Relaxed);
            let again = release_if_asked();
            assert!(
                !again || RELEASES.load(Ordering::Relaxed) != asked,
                "and not again until asked again"
            );
            RELEASES.fetch_add(1, Ordering::Relaxed);
            assert!(release_if_asked());
            // Another thread has its own heap, so it answers the same request too.
            let other = std::thread::spawn(release_if_asked).join().unwrap();
            assert!(other);
        })
        .join()
        .unwrap();
    }

    /// After a release (sessions put to sleep, start-up done), every worker of a multi-threaded runtime collects its
    /// heap, not only the thread that asked.
    #[test]
    fn a_release_reaches_every_worker() {
        use std::collections::HashMap;
        use std::thread::ThreadId;
        // The last request each of this runtime's threads answered, as it parked.
        static ANSWERED: Mutex<Option<HashMap<ThreadId, u64>>> = Mutex::new(None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_park(|| {
                release_on_park();
                let done = RELEASED.with(Cell::get);
                let mut answered = ANSWERED.lock().unwrap();
                answered
                    .get_or_insert_with(HashMap::new)
                    .insert(std::thread::current().id(), done);
            })
            .build()
            .unwrap();
        let asked = rt.block_on(async {
            // Both workers start and go idle.
            tokio::time::sleep(Duration::from_millis(100)).await;
            tokio::spawn(async { release_free_memory() }).await.unwrap()
        });
        let caught_up = || {
            ANSWERED
                .lock()
                .unwrap()
                .as_ref()
                .map_or(0, |m| m.values().filter(|&&done| done >= asked).count())
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while caught_up() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(caught_up() >= 2, "both workers collected after one release");
    }
}
