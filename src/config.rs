//! Configuration, in layers: built-in defaults, then a TOML file, then `PARALLAX_*` environment
//! variables, then command-line flags. Each layer overrides only what it sets.
//!
//! Variables: `PARALLAX_CONFIG` (the file), `PARALLAX_DATABASE_URL` (else `DATABASE_URL`, else
//! `PARALLAX_DB`, a SQLite path), `PARALLAX_LISTEN`, `PARALLAX_PUBLIC_URL`, and for `[http]`: `PARALLAX_ALLOWED_HOSTS`,
//! `PARALLAX_ALLOWED_ORIGINS`, `PARALLAX_TRUSTED_PROXIES` (comma-separated), `PARALLAX_MAX_BODY_BYTES`,
//! `PARALLAX_HEADER_READ_TIMEOUT_SECS`, `PARALLAX_IDLE_TIMEOUT_SECS`,
//! `PARALLAX_BODY_READ_TIMEOUT_SECS`, `PARALLAX_MAX_CONNECTIONS`,
//! `PARALLAX_MAX_CONNECTIONS_PER_ADDRESS`, `PARALLAX_FIRST_BYTE_TIMEOUT_SECS`,
//! `PARALLAX_MAX_SESSIONS`, `PARALLAX_MAX_SESSIONS_PER_AGENT`,
//! `PARALLAX_MAX_EVENT_STREAMS_PER_MEMBER`, `PARALLAX_DRAIN_TIMEOUT_SECS`; for `[stdio]`:
//! `PARALLAX_STDIO_MAX_LINE_BYTES`; for `[auth]`:
//! `PARALLAX_AUTH_ISSUER`, `PARALLAX_SIGNING_KEY`, `PARALLAX_TOKEN_TTL_SECS`; for `[limits]`:
//! `PARALLAX_FAILED_AUTH_PER_MINUTE`, `PARALLAX_FAILED_AUTH_BURST`; for `[webhooks]`:
//! `PARALLAX_WEBHOOK_BASE_DELAY_MS`, `PARALLAX_WEBHOOK_MAX_DELAY_MS`, `PARALLAX_WEBHOOK_TIMEOUT_MS`,
//! `PARALLAX_WEBHOOK_GIVE_UP_SECS`, `PARALLAX_WEBHOOK_POLL_MS`; for `[events]`:
//! `PARALLAX_EVENTS_POLL_MS`, `PARALLAX_EVENTS_KEEPALIVE_MS`, `PARALLAX_EVENTS_ACCESS_CHECK_MS`.
//!
//! ```toml
//! # parallax.toml (pass with --config or PARALLAX_CONFIG)
//! database_url = "postgres://parallax@db.internal/parallax"
//! listen = "0.0.0.0:8720"
//! public_url = "https://mcp.example.com/mcp"   # behind a proxy: token audience, discovery
//!
//! [http]
//! allowed_hosts = ["mcp.example.com"]
//! allowed_origins = ["https://app.example.com"]
//! trusted_proxies = ["10.0.0.5"]   # their X-Forwarded-For names the client
//! max_body_bytes = 1048576
//! header_read_timeout_secs = 10
//! idle_timeout_secs = 60
//! body_read_timeout_secs = 30
//! max_connections = 1024
//! max_connections_per_address = 128
//! first_byte_timeout_secs = 3
//! max_sessions = 4096            # open MCP sessions (2025-11-25) on this replica
//! max_sessions_per_agent = 32
//! max_event_streams_per_member = 8
//! drain_timeout_secs = 30         # on SIGTERM, how long in-flight calls may run
//!
//! [stdio]
//! max_line_bytes = 1048576
//!
//! [auth]
//! issuer = "parallax-mcp"
//! # signing_key = "…at least 32 characters…"   # else one is generated and stored
//! token_ttl_secs = 900
//!
//! [limits]
//! failed_auth_per_minute = 30
//! failed_auth_burst = 10
//!
//! [webhooks]            # deliveries to each workspace's control_plane_url
//! base_delay_ms = 1000  # first retry within [0, 1 s], doubling per attempt (full jitter)
//! max_delay_ms = 3600000
//! attempt_timeout_ms = 10000
//! give_up_after_secs = 259200
//! poll_interval_ms = 1000
//!
//! [events]              # the feed and the members' event streams
//! poll_interval_ms = 1000
//! keepalive_ms = 15000
//! access_check_ms = 30000
//! ```

use crate::store::database_url_for_path;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The SQLite file used when nothing else is configured, relative to the working directory.
pub const DEFAULT_DB_FILE: &str = "parallax.db";
/// Where `serve` listens when nothing else is configured: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8720";

/// Everything the binary needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://…?mode=rwc` (default: `parallax.db` in the working directory) or `postgres://…`.
    pub database_url: String,
    /// Address for `serve` (default `127.0.0.1:8720`; port 0 picks a free port).
    pub listen: String,
    /// The public URL of `/mcp` (e.g. `https://mcp.example.com/mcp`) behind a proxy: the audience
    /// of access tokens and the resource in discovery metadata. Default: `http://{listen}/mcp`.
    pub public_url: Option<String>,
    /// Transport settings for `serve`; unset fields keep the transport's defaults.
    pub http: HttpConfig,
    /// Settings for the `stdio` transport.
    pub stdio: StdioConfig,
    /// Webhook delivery to control planes (`[webhooks]`).
    pub webhooks: WebhooksConfig,
    /// Live event streams (`[events]`).
    pub events: EventsConfig,
    /// Tokens this server issues and accepts.
    pub auth: AuthConfig,
    /// Rate limits that are not per-workspace settings.
    pub limits: LimitsConfig,
}

/// The `[webhooks]` table; unset fields keep the worker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// First retry delay (before jitter), in milliseconds; doubles per attempt.
    pub base_delay_ms: Option<u64>,
    /// Cap on the retry delay, in milliseconds.
    pub max_delay_ms: Option<u64>,
    /// Time allowed for one attempt (connect, send, read the answer), in milliseconds.
    pub attempt_timeout_ms: Option<u64>,
    /// A delivery still failing this long after its event is marked failed, in seconds.
    pub give_up_after_secs: Option<u64>,
    /// How often the worker looks for due deliveries, in milliseconds.
    pub poll_interval_ms: Option<u64>,
}

/// The `[events]` table; unset fields keep the feed's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// How often the feed polls for other replicas' events, in milliseconds.
    pub poll_interval_ms: Option<u64>,
    /// Keep-alive comment interval on event streams, in milliseconds.
    pub keepalive_ms: Option<u64>,
    /// How often a stream re-checks that its member still has access, in milliseconds.
    pub access_check_ms: Option<u64>,
}

/// The `[auth]` table: the issuer and key for the tokens this server mints.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `iss` of every token (default `parallax-mcp`).
    pub issuer: String,
    /// An HS256 secret shared by every replica; when unset the first start generates one and
    /// stores it in the database.
    pub signing_key: Option<String>,
    /// Lifetime of agent access tokens and the default for member tokens (default 15 minutes).
    pub token_ttl: Duration,
}

/// The shortest signing key accepted from configuration: HS256 wants at least 256 bits.
pub const MIN_SIGNING_KEY_LEN: usize = 32;
/// The longest token lifetime accepted anywhere; bounds how long a retired key stays valid.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "parallax-mcp".to_owned(),
            signing_key: None,
            token_ttl: Duration::from_secs(15 * 60),
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the signing key.
        f.debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "***"))
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// The `[limits]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Failed authentications allowed per client address per minute (default 30)…
    pub failed_auth_per_minute: u32,
    /// …after a burst of this many (default 10).
    pub failed_auth_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            failed_auth_per_minute: 30,
            failed_auth_burst: 10,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    issuer: Option<String>,
    signing_key: Option<String>,
    token_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    failed_auth_per_minute: Option<u32>,
    failed_auth_burst: Option<u32>,
}

/// The `[http]` table: optional overrides of the HTTP transport's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `Host` header values accepted (DNS-rebinding protection).
    pub allowed_hosts: Option<Vec<String>>,
    /// Browser `Origin`s accepted.
    pub allowed_origins: Option<Vec<String>>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the real client (for the
    /// per-address limits); from any other peer the header is ignored.
    pub trusted_proxies: Option<Vec<String>>,
    /// Largest request body accepted, on every route.
    pub max_body_bytes: Option<usize>,
    /// Seconds a client has to send a request head (slow-loris protection; default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection stays open between requests (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a client has to send the whole request body (default 30).
    pub body_read_timeout_secs: Option<u64>,
    /// Open connections at most (default 1024); at the cap the oldest idle one is closed.
    pub max_connections: Option<usize>,
    /// Open connections from one client address at most (default 128).
    pub max_connections_per_address: Option<usize>,
    /// Seconds a new connection has to send its first byte (default 3).
    pub first_byte_timeout_secs: Option<u64>,
    /// Open MCP sessions on this replica at most (default 4096).
    pub max_sessions: Option<usize>,
    /// Open MCP sessions per agent at most (default 32); past it the least recently used closes.
    pub max_sessions_per_agent: Option<usize>,
    /// Open event streams (`/api/v1/.../events/stream`) per member at most (default 8).
    pub max_event_streams_per_member: Option<usize>,
    /// Seconds in-flight calls may still run after SIGTERM (default 30).
    pub drain_timeout_secs: Option<u64>,
}

/// The `[stdio]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    /// Longest JSON-RPC line accepted on stdin (default 1 MiB); longer lines are skipped and
    /// answered with an error.
    pub max_line_bytes: Option<usize>,
}

/// The configuration file's shape. Unknown keys are refused, so a typo is an error rather than a
/// silently ignored setting.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    listen: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    webhooks: WebhooksConfig,
    #[serde(default)]
    events: EventsConfig,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    stdio: StdioConfig,
}

/// What the command line said; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--database-url URL`.
    pub database_url: Option<String>,
    /// `--db PATH`: a SQLite file.
    pub db_path: Option<PathBuf>,
    /// `serve --listen ADDR`.
    pub listen: Option<String>,
}

/// Why configuration could not be loaded; the message names the file or variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: database_url_for_path(Path::new(DEFAULT_DB_FILE)),
            listen: DEFAULT_LISTEN.to_owned(),
            public_url: None,
            http: HttpConfig::default(),
            webhooks: WebhooksConfig::default(),
            events: EventsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            stdio: StdioConfig::default(),
        }
    }
}

impl Config {
    /// Loads the layers, reading the process environment.
    pub fn load(flags: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with(flags, |name| std::env::var(name).ok())
    }

    /// Loads the layers with `env` standing in for the environment (tests pass a map). Empty
    /// variables count as unset, so `FOO= parallax-mcp …` does not blank a setting.
    pub fn load_with(
        flags: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut config = Config::default();

        let file = flags
            .config_file
            .clone()
            .or_else(|| env("PARALLAX_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            config.apply_file(&path)?;
        }

        let env_url = env("PARALLAX_DATABASE_URL")
            .or_else(|| env("DATABASE_URL"))
            .or_else(|| env("PARALLAX_DB").map(|p| database_url_for_path(Path::new(&p))));
        if let Some(url) = env_url {
            config.database_url = url;
        }
        if let Some(listen) = env("PARALLAX_LISTEN") {
            config.listen = listen;
        }
        if let Some(url) = env("PARALLAX_PUBLIC_URL") {
            config.public_url = Some(url.trim().to_owned());
        }
        if let Some(hosts) = env("PARALLAX_ALLOWED_HOSTS") {
            config.http.allowed_hosts = Some(comma_list(&hosts));
        }
        if let Some(origins) = env("PARALLAX_ALLOWED_ORIGINS") {
            config.http.allowed_origins = Some(comma_list(&origins));
        }
        if let Some(proxies) = env("PARALLAX_TRUSTED_PROXIES") {
            config.http.trusted_proxies = Some(comma_list(&proxies));
        }
        let env_number = |name: &str| -> Result<Option<u64>, ConfigError> {
            env(name).map(|v| number(name, &v)).transpose()
        };
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = env_number("PARALLAX_MAX_BODY_BYTES")? {
            config.http.max_body_bytes = Some(size(n));
        }
        if let Some(n) = env_number("PARALLAX_HEADER_READ_TIMEOUT_SECS")? {
            config.http.header_read_timeout_secs = Some(n);
        }
        if let Some(n) = env_number("PARALLAX_IDLE_TIMEOUT_SECS")? {
            config.http.idle_timeout_secs = Some(n);
        }
        if let Some(n) = env_number("PARALLAX_BODY_READ_TIMEOUT_SECS")? {
            config.http.body_read_timeout_secs = Some(n);
        }
        if let Some(n) = env_number("PARALLAX_MAX_CONNECTIONS")? {
            config.http.max_connections = Some(size(n));
        }
        if let Some(n) = env_number("PARALLAX_MAX_CONNECTIONS_PER_ADDRESS")? {
            config.http.max_connections_per_address = Some(size(n));
        }
        if let Some(n) = env_number("PARALLAX_FIRST_BYTE_TIMEOUT_SECS")? {
            config.http.first_byte_timeout_secs = Some(n);
        }
        if let Some(n) = env_number("PARALLAX_MAX_SESSIONS")? {
            config.http.max_sessions = Some(size(n));
        }
        if let Some(n) = env_number("PARALLAX_MAX_SESSIONS_PER_AGENT")? {
            config.http.max_sessions_per_agent = Some(size(n));
        }
        if let Some(n) = env_number("PARALLAX_MAX_EVENT_STREAMS_PER_MEMBER")? {
            config.http.max_event_streams_per_member = Some(size(n));
        }
        if let Some(n) = env_number("PARALLAX_DRAIN_TIMEOUT_SECS")? {
            config.http.drain_timeout_secs = Some(n);
        }
        if let Some(n) = env_number("PARALLAX_STDIO_MAX_LINE_BYTES")? {
            config.stdio.max_line_bytes = Some(size(n));
        }
        if let Some(issuer) = env("PARALLAX_AUTH_ISSUER") {
            config.auth.issuer = issuer.trim().to_owned();
        }
        if let Some(key) = env("PARALLAX_SIGNING_KEY") {
            config.auth.signing_key = Some(key.trim().to_owned());
        }
        if let Some(secs) = env("PARALLAX_TOKEN_TTL_SECS") {
            config.auth.token_ttl = Duration::from_secs(number("PARALLAX_TOKEN_TTL_SECS", &secs)?);
        }
        if let Some(n) = env("PARALLAX_FAILED_AUTH_PER_MINUTE") {
            config.limits.failed_auth_per_minute = number("PARALLAX_FAILED_AUTH_PER_MINUTE", &n)?;
        }
        if let Some(n) = env("PARALLAX_FAILED_AUTH_BURST") {
            config.limits.failed_auth_burst = number("PARALLAX_FAILED_AUTH_BURST", &n)?;
        }

        let w = &mut config.webhooks;
        let e = &mut config.events;
        for (name, slot) in [
            ("PARALLAX_WEBHOOK_BASE_DELAY_MS", &mut w.base_delay_ms),
            ("PARALLAX_WEBHOOK_MAX_DELAY_MS", &mut w.max_delay_ms),
            ("PARALLAX_WEBHOOK_TIMEOUT_MS", &mut w.attempt_timeout_ms),
            ("PARALLAX_WEBHOOK_GIVE_UP_SECS", &mut w.give_up_after_secs),
            ("PARALLAX_WEBHOOK_POLL_MS", &mut w.poll_interval_ms),
            ("PARALLAX_EVENTS_POLL_MS", &mut e.poll_interval_ms),
            ("PARALLAX_EVENTS_KEEPALIVE_MS", &mut e.keepalive_ms),
            ("PARALLAX_EVENTS_ACCESS_CHECK_MS", &mut e.access_check_ms),
        ] {
            if let Some(v) = env_number(name)? {
                *slot = Some(v);
            }
        }

        if let Some(url) = &flags.database_url {
            config.database_url = url.clone();
        } else if let Some(path) = &flags.db_path {
            config.database_url = database_url_for_path(path);
        }
        if let Some(listen) = &flags.listen {
            config.listen = listen.clone();
        }

        config.check()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| {
            // toml's messages span several lines (with a source excerpt); keep the first.
            let msg = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned();
            let at = e
                .span()
                .map(|s| line_of(&text, s.start))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            ConfigError(format!("config file {}{at}: {msg}", path.display()))
        })?;
        if let Some(url) = file.database_url {
            self.database_url = url;
        }
        if let Some(listen) = file.listen {
            self.listen = listen;
        }
        if let Some(url) = file.public_url {
            self.public_url = Some(url);
        }
        let HttpConfig {
            allowed_hosts,
            allowed_origins,
            trusted_proxies,
            max_body_bytes,
            header_read_timeout_secs,
            idle_timeout_secs,
            body_read_timeout_secs,
            max_connections,
            max_connections_per_address,
            first_byte_timeout_secs,
            max_sessions,
            max_sessions_per_agent,
            max_event_streams_per_member,
            drain_timeout_secs,
        } = file.http;
        let http = &mut self.http;
        http.allowed_hosts = allowed_hosts.or(http.allowed_hosts.take());
        http.allowed_origins = allowed_origins.or(http.allowed_origins.take());
        http.trusted_proxies = trusted_proxies.or(http.trusted_proxies.take());
        http.max_body_bytes = max_body_bytes.or(http.max_body_bytes);
        http.header_read_timeout_secs = header_read_timeout_secs.or(http.header_read_timeout_secs);
        http.idle_timeout_secs = idle_timeout_secs.or(http.idle_timeout_secs);
        http.body_read_timeout_secs = body_read_timeout_secs.or(http.body_read_timeout_secs);
        http.max_connections = max_connections.or(http.max_connections);
        http.max_connections_per_address =
            max_connections_per_address.or(http.max_connections_per_address);
        http.first_byte_timeout_secs = first_byte_timeout_secs.or(http.first_byte_timeout_secs);
        http.max_sessions = max_sessions.or(http.max_sessions);
        http.max_sessions_per_agent = max_sessions_per_agent.or(http.max_sessions_per_agent);
        http.max_event_streams_per_member =
            max_event_streams_per_member.or(http.max_event_streams_per_member);
        http.drain_timeout_secs = drain_timeout_secs.or(http.drain_timeout_secs);
        let StdioConfig { max_line_bytes } = file.stdio;
        self.stdio.max_line_bytes = max_line_bytes.or(self.stdio.max_line_bytes);
        let (w, f) = (&mut self.webhooks, file.webhooks);
        w.base_delay_ms = f.base_delay_ms.or(w.base_delay_ms);
        w.max_delay_ms = f.max_delay_ms.or(w.max_delay_ms);
        w.attempt_timeout_ms = f.attempt_timeout_ms.or(w.attempt_timeout_ms);
        w.give_up_after_secs = f.give_up_after_secs.or(w.give_up_after_secs);
        w.poll_interval_ms = f.poll_interval_ms.or(w.poll_interval_ms);
        let (e, f) = (&mut self.events, file.events);
        e.poll_interval_ms = f.poll_interval_ms.or(e.poll_interval_ms);
        e.keepalive_ms = f.keepalive_ms.or(e.keepalive_ms);
        e.access_check_ms = f.access_check_ms.or(e.access_check_ms);
        if let Some(issuer) = file.auth.issuer {
            self.auth.issuer = issuer;
        }
        if let Some(key) = file.auth.signing_key {
            self.auth.signing_key = Some(key);
        }
        if let Some(secs) = file.auth.token_ttl_secs {
            self.auth.token_ttl = Duration::from_secs(secs);
        }
        if let Some(n) = file.limits.failed_auth_per_minute {
            self.limits.failed_auth_per_minute = n;
        }
        if let Some(n) = file.limits.failed_auth_burst {
            self.limits.failed_auth_burst = n;
        }
        Ok(())
    }

    /// Refuses a database URL we cannot serve, before anything tries to connect to it, and
    /// limits that would make the server refuse everything.
    fn check(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        for (name, value) in [
            ("header_read_timeout_secs", h.header_read_timeout_secs),
            ("idle_timeout_secs", h.idle_timeout_secs),
            ("body_read_timeout_secs", h.body_read_timeout_secs),
            ("max_connections", h.max_connections.map(|n| n as u64)),
            (
                "max_connections_per_address",
                h.max_connections_per_address.map(|n| n as u64),
            ),
            ("first_byte_timeout_secs", h.first_byte_timeout_secs),
            ("max_sessions", h.max_sessions.map(|n| n as u64)),
            (
                "max_sessions_per_agent",
                h.max_sessions_per_agent.map(|n| n as u64),
            ),
            (
                "max_event_streams_per_member",
                h.max_event_streams_per_member.map(|n| n as u64),
            ),
            ("max_body_bytes", h.max_body_bytes.map(|n| n as u64)),
        ] {
            if value == Some(0) {
                return Err(ConfigError(format!("[http] {name} must be at least 1")));
            }
        }
        for proxy in h.trusted_proxies.iter().flatten() {
            if proxy.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError(format!(
                    "[http] trusted_proxies: {proxy:?} is not an IP address"
                )));
            }
        }
        if self.stdio.max_line_bytes == Some(0) {
            return Err(ConfigError(
                "[stdio] max_line_bytes must be at least 1".into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError(format!(
                "public_url must be an http(s) URL such as https://mcp.example.com/mcp, got {url:?}"
            )));
        }
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|k| self.database_url.starts_with(k)) {
            return Err(ConfigError(format!(
                "unsupported database URL {:?}: use sqlite://PATH?mode=rwc or postgres://…",
                redact(&self.database_url)
            )));
        }
        if self.auth.issuer.trim().is_empty() {
            return Err(ConfigError("auth issuer must not be empty".into()));
        }
        if let Some(key) = &self.auth.signing_key
            && key.len() < MIN_SIGNING_KEY_LEN
        {
            // Say how long it is, never what it is.
            return Err(ConfigError(format!(
                "auth signing_key must be at least {MIN_SIGNING_KEY_LEN} characters (got {})",
                key.len()
            )));
        }
        if self.auth.token_ttl.is_zero() || self.auth.token_ttl > MAX_TOKEN_TTL {
            return Err(ConfigError(format!(
                "auth token_ttl_secs must be between 1 and {}",
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        if self.limits.failed_auth_per_minute == 0 || self.limits.failed_auth_burst == 0 {
            return Err(ConfigError(
                "limits failed_auth_per_minute and failed_auth_burst must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn number<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, ConfigError> {
    raw.trim()
        .parse()
        .map_err(|_| ConfigError(format!("{name} must be a whole number, got {raw:?}")))
}

fn comma_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// Hides a password in a URL (`postgres://user:secret@host` → `postgres://user:***@host`), so an
/// error message never repeats it.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(flags: &Overrides, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load_with(flags, |k| map.get(k).cloned())
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("parallax.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_a_local_sqlite_file_and_loopback() {
        let c = load(&Overrides::default(), &[]).unwrap();
        assert_eq!(c.database_url, "sqlite://parallax.db?mode=rwc");
        assert_eq!(c.listen, "127.0.0.1:8720");
        assert_eq!(c.http, HttpConfig::default());
    }

    #[test]
    fn webhook_and_event_settings_come_from_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[webhooks]\nbase_delay_ms = 5\nattempt_timeout_ms = 700\n[events]\nkeepalive_ms = 7\n",
        );
        let flags = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let c = load(&flags, &[("PARALLAX_WEBHOOK_TIMEOUT_MS", "900")]).unwrap();
        assert_eq!(c.webhooks.base_delay_ms, Some(5));
        assert_eq!(c.webhooks.attempt_timeout_ms, Some(900));
        assert_eq!(c.events.keepalive_ms, Some(7));
        let opts = crate::events::EventOptions::from_config(&c);
        assert_eq!(
            opts.webhooks.attempt_timeout,
            std::time::Duration::from_millis(900)
        );
        assert_eq!(
            opts.keepalive,
            std::time::Duration::from_millis(10),
            "clamped to 10 ms"
        );
        let err = load(&flags, &[("PARALLAX_EVENTS_POLL_MS", "soon")]).unwrap_err();
        assert!(err.to_string().contains("PARALLAX_EVENTS_POLL_MS"), "{err}");
        let bad = write(&dir, "[webhooks]\nbase_delay = 5\n");
        let flags = Overrides {
            config_file: Some(bad),
            ..Default::default()
        };
        assert!(load(&flags, &[]).is_err(), "unknown keys are refused");
    }

    #[test]
    fn each_layer_overrides_the_one_below() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "database_url = \"postgres://file/db\"\nlisten = \"0.0.0.0:1\"\n[http]\nmax_body_bytes = 10\nallowed_hosts = [\"a\"]\n",
        );
        let flags = Overrides {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let c = load(&flags, &[]).unwrap();
        assert_eq!(
            (c.database_url.as_str(), c.listen.as_str()),
            ("postgres://file/db", "0.0.0.0:1")
        );
        assert_eq!(c.http.max_body_bytes, Some(10));

        let c = load(
            &flags,
            &[
                ("DATABASE_URL", "postgres://generic/db"),
                ("PARALLAX_ALLOWED_HOSTS", "b, c"),
            ],
        )
        .unwrap();
        assert_eq!(c.database_url, "postgres://generic/db");
        assert_eq!(
            c.http.allowed_hosts,
            Some(vec!["b".to_owned(), "c".to_owned()])
        );
        assert_eq!(
            c.http.max_body_bytes,
            Some(10),
            "the file's value survives an unrelated variable"
        );

        let env = [
            ("DATABASE_URL", "postgres://generic/db"),
            ("PARALLAX_DATABASE_URL", "postgres://ours/db"),
        ];
        assert_eq!(
            load(&flags, &env).unwrap().database_url,
            "postgres://ours/db"
        );

        let flags = Overrides {
            db_path: Some("/tmp/x.db".into()),
            listen: Some("127.0.0.1:0".into()),
            ..flags
        };
        let c = load(&flags, &env).unwrap();
        assert_eq!(
            (c.database_url.as_str(), c.listen.as_str()),
            ("sqlite:///tmp/x.db?mode=rwc", "127.0.0.1:0")
        );
    }

    #[test]
    fn the_config_file_can_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "listen = \"127.0.0.1:9\"\n");
        let c = load(
            &Overrides::default(),
            &[("PARALLAX_CONFIG", file.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9");
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "listen = \"x\"\ndatabse_url = \"y\"\n");
        let err = load(
            &Overrides {
                config_file: Some(file),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 2") && err.contains("databse_url"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");

        let missing = Overrides {
            config_file: Some(dir.path().join("nope.toml")),
            ..Default::default()
        };
        assert!(
            load(&missing, &[])
                .unwrap_err()
                .to_string()
                .contains("cannot read config file")
        );

        let err = load(
            &Overrides::default(),
            &[("DATABASE_URL", "mysql://u:hunter2@h/db")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unsupported database URL") && !err.contains("hunter2"),
            "{err}"
        );

        assert!(
            load(
                &Overrides::default(),
                &[("PARALLAX_MAX_BODY_BYTES", "lots")]
            )
            .is_err()
        );
    }

    #[test]
    fn auth_and_limits_come_from_file_then_environment() {
        let c = load(&Overrides::default(), &[]).unwrap();
        assert_eq!(c.auth, AuthConfig::default());
        assert_eq!(c.auth.token_ttl, Duration::from_secs(900));
        assert_eq!(c.limits, LimitsConfig::default());

        let dir = tempfile::tempdir().unwrap();
        let key = "f".repeat(32);
        let file = write(
            &dir,
            &format!(
                "[auth]\nissuer = \"acme\"\nsigning_key = \"{key}\"\ntoken_ttl_secs = 60\n[limits]\nfailed_auth_per_minute = 5\nfailed_auth_burst = 2\n"
            ),
        );
        let flags = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let c = load(&flags, &[]).unwrap();
        assert_eq!(c.auth.issuer, "acme");
        assert_eq!(c.auth.signing_key.as_deref(), Some(key.as_str()));
        assert_eq!(c.auth.token_ttl, Duration::from_secs(60));
        assert_eq!(
            (c.limits.failed_auth_per_minute, c.limits.failed_auth_burst),
            (5, 2)
        );
        assert!(
            !format!("{c:?}").contains(&key),
            "Debug shows the signing key"
        );

        let c = load(
            &flags,
            &[
                ("PARALLAX_TOKEN_TTL_SECS", "120"),
                ("PARALLAX_AUTH_ISSUER", "env"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.auth.issuer.as_str(), c.auth.token_ttl.as_secs()),
            ("env", 120)
        );

        for bad in [
            ("PARALLAX_SIGNING_KEY", "short"),
            ("PARALLAX_TOKEN_TTL_SECS", "0"),
            ("PARALLAX_TOKEN_TTL_SECS", "86401"),
            ("PARALLAX_TOKEN_TTL_SECS", "soon"),
            ("PARALLAX_FAILED_AUTH_BURST", "0"),
        ] {
            let err = load(&Overrides::default(), &[bad]).unwrap_err().to_string();
            assert!(!err.contains("short\""), "{err}");
        }
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let c = load(&Overrides::default(), &[("DATABASE_URL", " ")]).unwrap();
        assert_eq!(c.database_url, "sqlite://parallax.db?mode=rwc");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn transport_limits_come_from_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[http]\nheader_read_timeout_secs = 5\nidle_timeout_secs = 90\nmax_connections = 64\n[stdio]\nmax_line_bytes = 4096\n",
        );
        let flags = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let c = load(
            &flags,
            &[
                ("PARALLAX_IDLE_TIMEOUT_SECS", "120"),
                ("PARALLAX_BODY_READ_TIMEOUT_SECS", "7"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.header_read_timeout_secs, Some(5));
        assert_eq!(
            c.http.idle_timeout_secs,
            Some(120),
            "the environment wins over the file"
        );
        assert_eq!(c.http.body_read_timeout_secs, Some(7));
        assert_eq!(c.http.max_connections, Some(64));
        assert_eq!(c.stdio.max_line_bytes, Some(4096));
        let c = load(
            &Overrides::default(),
            &[
                ("PARALLAX_STDIO_MAX_LINE_BYTES", "10"),
                ("PARALLAX_MAX_CONNECTIONS", "3"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.stdio.max_line_bytes, c.http.max_connections),
            (Some(10), Some(3))
        );

        let err = load(
            &Overrides::default(),
            &[("PARALLAX_HEADER_READ_TIMEOUT_SECS", "soon")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("PARALLAX_HEADER_READ_TIMEOUT_SECS"), "{err}");
        let err = load(&Overrides::default(), &[("PARALLAX_MAX_CONNECTIONS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections must be at least 1"), "{err}");
        let typo = write(&dir, "[stdio]\nmax_line = 1\n");
        let flags = Overrides {
            config_file: Some(typo),
            ..Default::default()
        };
        assert!(
            load(&flags, &[])
                .unwrap_err()
                .to_string()
                .contains("max_line")
        );
    }
}
