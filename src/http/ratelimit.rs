//! Rate limits (governor, GCRA): per agent for MCP requests, with the workspace's quota; and per
//! client address for failed authentication. Checks are synchronous — no lock is held across an
//! await — and each key has its own cell, so one noisy agent or address slows nobody else.
//! Memory stays bounded: idle keys are dropped every minute, and each limiter tracks at most
//! [`MAX_TRACKED`] keys.

use crate::auth::{AgentCaller, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The most keys (agents or addresses) one limiter tracks; past it, idle ones are dropped first
/// and, failing that, new keys are refused until room frees up.
pub const MAX_TRACKED: usize = 100_000;
/// How often idle keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How long to wait before retrying, in whole seconds (at least 1), for `Retry-After`.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay consistent whatever panicked while holding them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `sweep` every minute for as long as `target` lives (needs a Tokio runtime).
fn spawn_sweeper<T: Send + Sync + 'static>(target: &Arc<T>, sweep: fn(&T)) {
    let weak: Weak<T> = Arc::downgrade(target);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(t) => sweep(&t),
                    None => return,
                }
            }
        });
    }
}

/// Checks `key` against `limiter`, keeping it within [`MAX_TRACKED`]. Err is the wait.
fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Duration>
where
    K: Clone + Eq + std::hash::Hash,
{
    if limiter.len() >= MAX_TRACKED {
        limiter.retain_recent();
        if limiter.len() >= MAX_TRACKED {
            return Err(Duration::from_secs(1));
        }
    }
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// Per-agent limits on MCP requests. Workspaces set their own quota, so there is one keyed
/// limiter per distinct quota (few), each keyed by workspace and agent.
#[derive(Clone, Default)]
pub struct AgentLimiter(Arc<AgentLimiterInner>);

/// Keyed by (workspace id, agent id).
type PerAgent = DefaultKeyedRateLimiter<(String, String)>;

#[derive(Default)]
struct AgentLimiterInner {
    by_quota: Mutex<HashMap<RateLimit, Arc<PerAgent>>>,
}

impl std::fmt::Debug for AgentLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentLimiter")
    }
}

impl AgentLimiter {
    pub fn new() -> Self {
        let limiter = Self::default();
        spawn_sweeper(&limiter.0, |inner| {
            let mut map = lock(&inner.by_quota);
            for l in map.values() {
                l.retain_recent();
                l.shrink_to_fit();
            }
            // A quota no agent uses any more (settings changed) is dropped with its state.
            map.retain(|_, l| !l.is_empty());
        });
        limiter
    }

    /// Counts one request by `caller`; Err is how long to wait.
    pub fn check(&self, caller: &AgentCaller) -> Result<(), Duration> {
        let rate = caller.rate_limit();
        let limiter = lock(&self.0.by_quota)
            .entry(rate)
            .or_insert_with(|| Arc::new(PerAgent::keyed(quota(rate.per_minute, rate.burst))))
            .clone();
        check(
            &limiter,
            &(
                caller.workspace_id().to_owned(),
                caller.agent_id().to_owned(),
            ),
        )
    }
}

/// Failed authentications, counted per client address and per presented credential. A
/// credential over its quota is refused (429) before it is checked, from any address. An address
/// over its quota gets 429 for every credential that fails there, but a valid credential still
/// passes: one agent retrying a revoked key in a loop must not lock out its neighbours behind the
/// same NAT, while guessing from that address stays throttled.
#[derive(Clone)]
pub struct FailedAuthLimiter(Arc<FailedAuthInner>);

/// What failures are counted against.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum FailKey {
    Address(IpAddr),
    /// The blake3 hash of the presented credential (never the credential itself).
    Credential([u8; 32]),
}

struct FailedAuthInner {
    failures: DefaultKeyedRateLimiter<FailKey>,
    blocked: Mutex<HashMap<FailKey, Instant>>,
}

impl std::fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailedAuthLimiter")
    }
}

fn credential_key(credential: &str) -> FailKey {
    FailKey::Credential(*blake3::hash(credential.as_bytes()).as_bytes())
}

/// IPv6 clients usually hold a whole /64: count them as one address.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl FailedAuthLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = Self(Arc::new(FailedAuthInner {
            failures: DefaultKeyedRateLimiter::keyed(quota(per_minute, burst)),
            blocked: Mutex::new(HashMap::new()),
        }));
        spawn_sweeper(&limiter.0, |inner| {
            inner.failures.retain_recent();
            inner.failures.shrink_to_fit();
            let now = Instant::now();
            let mut blocked = lock(&inner.blocked);
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
        });
        limiter
    }

    fn blocked_key(&self, key: FailKey) -> Option<Duration> {
        let blocked = lock(&self.0.blocked);
        let until = *blocked.get(&key)?;
        until.checked_duration_since(Instant::now())
    }

    /// How long requests from `ip` that fail authentication are still refused with 429.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        self.blocked_key(FailKey::Address(client_key(ip)))
    }

    /// How long `credential` is still refused, from any address, without being checked.
    pub fn credential_blocked(&self, credential: &str) -> Option<Duration> {
        // Nearly always nothing is blocked: then the credential is not hashed (an access token
        // is 500 bytes or more, and this runs on every request).
        if lock(&self.0.blocked).is_empty() {
            return None;
        }
        self.blocked_key(credential_key(credential))
    }

    /// Counts a failed authentication from `ip` with `credential` (when one was presented)
    /// against both. Returns how long to wait when the address or credential was already blocked
    /// (answer 429); the failure that first crosses the quota is still answered as a failure.
    pub fn failed(&self, ip: Option<IpAddr>, credential: Option<&str>) -> Option<Duration> {
        let keys: Vec<FailKey> = ip
            .map(|ip| FailKey::Address(client_key(ip)))
            .into_iter()
            .chain(credential.filter(|c| !c.is_empty()).map(credential_key))
            .collect();
        let mut wait_for: Option<Duration> = None;
        for &key in &keys {
            if let Some(w) = self.blocked_key(key) {
                wait_for = Some(wait_for.map_or(w, |x| x.max(w)));
            }
        }
        for key in keys {
            if let Err(wait) = check(&self.0.failures, &key) {
                let now = Instant::now();
                let mut blocked = lock(&self.0.blocked);
                if blocked.len() >= MAX_TRACKED {
                    blocked.retain(|_, until| *until > now);
                }
                if blocked.len() < MAX_TRACKED || blocked.contains_key(&key) {
                    blocked.insert(key, now + wait.max(Duration::from_secs(1)));
                }
            }
        }
        wait_for
    }
}

#[cfg(test)]
mod failed_auth_tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_credential_is_blocked_and_a_neighbour_is_not() {
        let limiter = FailedAuthLimiter::new(1, 3);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        // Nothing is blocked yet.
        assert!(limiter.credential_blocked("mcp_agent_revoked").is_none());
        let answers: Vec<bool> = (0..5)
            .map(|_| {
                limiter
                    .failed(Some(ip), Some("mcp_agent_revoked"))
                    .is_some()
            })
            .collect();
        // The burst and the failure that crosses it are failures; after that, 429.
        assert_eq!(answers, [false, false, false, false, true]);
        assert!(limiter.blocked(ip).is_some());
        assert!(limiter.credential_blocked("mcp_agent_revoked").is_some());
        // Another credential is not blocked before it is checked; failing from the blocked
        // address, it is answered 429.
        assert!(limiter.credential_blocked("mcp_agent_neighbour").is_none());
        assert!(limiter.failed(Some(ip), Some("mcp_agent_other")).is_some());
    }
}
