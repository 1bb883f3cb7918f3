//! Configuration, in layers: built-in defaults, then a TOML file, then `PARALLAX_*` environment
//! variables, then command-line flags. Each layer overrides only what it sets.
//!
//! Every key is defined once, in [`schema`]: its field, TOML key, variable, default and doc line.
//! The README's table and `parallax.example.toml` are generated from it ([`reference`]; a test
//! fails when they drift), and `parallax-mcp config check` prints the effective values and where
//! each came from.

pub mod reference;
pub mod schema;

pub use schema::{
    AuthConfig, Config, EventsConfig, HttpConfig, KEYS, Key, LimitsConfig, LogConfig, LogFormat,
    MetricsConfig, OidcConfig, OtelConfig, SecretsConfig, StdioConfig, WebhooksConfig,
};

use crate::store::database_url_for_path;
use crate::store::preflight::{absolute_sqlite_url, sqlite_path};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `serve` listens when nothing else is configured: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8720";
/// The SQLite file used when nothing else is configured, under the per-user data directory.
pub const DEFAULT_DB_FILE: &str = "parallax.db";
/// The per-user data directory's subdirectory for parallax-mcp.
pub const DATA_DIR_NAME: &str = "parallax-mcp";

/// The shortest signing key accepted from configuration: HS256 wants at least 256 bits.
pub const MIN_SIGNING_KEY_LEN: usize = 32;
/// The longest token lifetime accepted anywhere; bounds how long a retired key stays valid.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The source of each key that did not keep its default, by key path (`listen`, `http.max_body_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<&'static str, Source>);

impl Origins {
    fn set(&mut self, path: &'static str, source: Source) {
        self.0.insert(path, source);
    }

    /// Where the key at `path` came from.
    pub fn of(&self, path: &str) -> Source {
        self.0.get(path).cloned().unwrap_or(Source::Default)
    }
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

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The per-user default database: `$XDG_DATA_HOME/parallax-mcp/parallax.db`, else
/// `$HOME/.local/share/parallax-mcp/parallax.db` (XDG base directories; a relative
/// `XDG_DATA_HOME` is ignored, as the specification says).
pub fn default_database_path(env: impl Fn(&str) -> Option<String>) -> Result<PathBuf, ConfigError> {
    let data = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local/share")))
        .ok_or_else(|| {
            ConfigError(
                "no database configured and neither XDG_DATA_HOME nor HOME is set: pass --database-url or --db".into(),
            )
        })?;
    Ok(data.join(DATA_DIR_NAME).join(DEFAULT_DB_FILE))
}

impl Config {
    /// The master key from `[secrets] master_key` or the file `master_key_file` names; `None`
    /// when neither is set. A key that cannot be read or is not 32 bytes is an error that never
    /// shows the key.
    pub fn master_key(&self) -> Result<Option<crate::store::MasterKey>, ConfigError> {
        read_master_key(
            self.secrets.master_key.as_deref(),
            self.secrets.master_key_file.as_deref(),
        )
    }

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

        config.merge_env(&env)?;
        // The conventional DATABASE_URL and the PARALLAX_DB path stand in for our variable.
        if env("PARALLAX_DATABASE_URL").is_none() {
            if let Some(url) = env("DATABASE_URL") {
                config.database_url = url;
                config
                    .origins
                    .set("database_url", Source::Env("DATABASE_URL"));
            } else if let Some(path) = env("PARALLAX_DB") {
                config.database_url = database_url_for_path(Path::new(&path));
                config
                    .origins
                    .set("database_url", Source::Env("PARALLAX_DB"));
            }
        }

        if let Some(url) = &flags.database_url {
            config.database_url = url.clone();
            config
                .origins
                .set("database_url", Source::Flag("--database-url"));
        } else if let Some(path) = &flags.db_path {
            config.database_url = database_url_for_path(path);
            config.origins.set("database_url", Source::Flag("--db"));
        }
        if let Some(listen) = &flags.listen {
            config.listen = listen.clone();
            config.origins.set("listen", Source::Flag("--listen"));
        }

        if config.database_url.trim().is_empty() {
            config.database_url = database_url_for_path(&default_database_path(env)?);
        }
        // SQLite would open a relative path from the working directory; say which file that is.
        config.database_url = absolute_sqlite_url(config.database_url.trim());

        config.check()?;
        Ok(config)
    }

    /// Whether the database is the per-user default (whose directory `serve` and `workspace
    /// create` may create).
    pub fn database_is_default(&self) -> bool {
        self.origins.of("database_url") == Source::Default
    }

    /// Creates the default database's directory (`~/.local/share/parallax-mcp`) if the default is
    /// in use; any other location must exist already.
    pub fn prepare_default_location(&self) -> Result<(), ConfigError> {
        if !self.database_is_default() {
            return Ok(());
        }
        if let Some(dir) =
            sqlite_path(&self.database_url).and_then(|p| p.parent().map(Path::to_owned))
        {
            std::fs::create_dir_all(&dir).map_err(|e| {
                ConfigError(format!(
                    "cannot create the data directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(())
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let file: schema::FileConfig = toml::from_str(&text).map_err(|e| {
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
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        self.merge_file(file, &Source::File(shown));
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
        check_listen(&self.listen)?;
        if self.secrets.master_key.is_some() && self.secrets.master_key_file.is_some() {
            return Err(ConfigError(
                "[secrets] master_key and master_key_file are both set: keep one".into(),
            ));
        }
        if let Some(url) = &self.otel.endpoint
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError(format!(
                "[otel] endpoint must be an http(s) URL such as http://127.0.0.1:4318, got {url:?}"
            )));
        }
        if let Some(listen) = &self.metrics.listen {
            check_listen(listen).map_err(|e| ConfigError(format!("[metrics] {}", e.0)))?;
        }
        self.oidc.check()?;
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
        if self.auth.token_ttl_secs == 0 || self.auth.token_ttl() > MAX_TOKEN_TTL {
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

impl OidcConfig {
    /// Whether console sign-in with OpenID Connect is on (`issuer` set).
    pub fn enabled(&self) -> bool {
        self.issuer.is_some()
    }

    /// The client secret from `client_secret` (or `PARALLAX_OIDC_CLIENT_SECRET`) or the file
    /// `client_secret_file` names; `None` for a public client. Errors never show the secret.
    pub fn client_secret(&self) -> Result<Option<String>, ConfigError> {
        match (&self.client_secret, &self.client_secret_file) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!(
                        "[oidc] cannot read the client secret file {path}: {e}"
                    ))
                })?;
                let secret = text.trim();
                if secret.is_empty() {
                    return Err(ConfigError(format!(
                        "[oidc] the client secret file {path} is empty"
                    )));
                }
                Ok(Some(secret.to_owned()))
            }
            (None, None) => Ok(None),
        }
    }

    /// The allowed domains, lower-cased, without a leading `@`.
    pub fn domains(&self) -> Vec<String> {
        self.allowed_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
            .collect()
    }

    /// The table is all or nothing: an issuer needs a client id, and client settings without an
    /// issuer are a mistake rather than something to ignore.
    fn check(&self) -> Result<(), ConfigError> {
        let Some(issuer) = &self.issuer else {
            let stray = [
                ("client_id", self.client_id.is_some()),
                ("client_secret", self.client_secret.is_some()),
                ("client_secret_file", self.client_secret_file.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(ConfigError(format!(
                    "[oidc] {name} is set but issuer is not: set issuer (PARALLAX_OIDC_ISSUER) to the provider's URL, or remove [oidc]"
                )));
            }
            return Ok(());
        };
        check_issuer(issuer)?;
        if self
            .client_id
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
        {
            return Err(ConfigError(
                "[oidc] client_id (PARALLAX_OIDC_CLIENT_ID) is required with issuer: the client id registered with the provider".into(),
            ));
        }
        if self.client_secret.is_some() && self.client_secret_file.is_some() {
            return Err(ConfigError(
                "[oidc] client_secret and client_secret_file are both set: keep one".into(),
            ));
        }
        if self.email_claim.trim().is_empty() {
            return Err(ConfigError(
                "[oidc] email_claim must name a claim, e.g. \"email\"".into(),
            ));
        }
        for domain in self.domains() {
            if domain.is_empty() || domain.contains(['@', '/', ' ']) || !domain.contains('.') {
                return Err(ConfigError(format!(
                    "[oidc] allowed_domains: {domain:?} is not a domain such as \"example.com\""
                )));
            }
        }
        Ok(())
    }
}

/// An issuer must be https; plain http only on this machine (a provider run for testing).
fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let bad = || {
        ConfigError(format!(
            "[oidc] issuer must be an https URL such as https://accounts.example.com (http only on localhost), got {issuer:?}"
        ))
    };
    let (https, rest) = if let Some(rest) = issuer.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = issuer.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() || issuer.contains(['?', '#']) {
        return Err(bad());
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback {
        return Err(bad());
    }
    Ok(())
}

/// A master key given as text, or in a file; the messages say where it came from.
pub fn read_master_key(
    text: Option<&str>,
    file: Option<&str>,
) -> Result<Option<crate::store::MasterKey>, ConfigError> {
    use crate::store::MasterKey;
    match (text, file) {
        (Some(text), _) => MasterKey::parse(text)
            .map(Some)
            .map_err(|e| ConfigError(format!("PARALLAX_MASTER_KEY: {e}"))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read the master key file {path}: {e}")))?;
            MasterKey::parse(&text)
                .map(Some)
                .map_err(|e| ConfigError(format!("master key file {path}: {e}")))
        }
        (None, None) => Ok(None),
    }
}

/// `listen` must be `HOST:PORT`; a bare port gets the loopback address suggested, since that is
/// almost always what was meant.
fn check_listen(listen: &str) -> Result<(), ConfigError> {
    let listen = listen.trim();
    if let Ok(port) = listen.parse::<u16>() {
        return Err(ConfigError(format!(
            "listen address {listen:?} has no host: use 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"
        )));
    }
    if listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let port_ok = listen.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
    });
    if port_ok {
        return Ok(());
    }
    Err(ConfigError(format!(
        "listen address {listen:?} is not HOST:PORT, e.g. 127.0.0.1:8720 or [::1]:8720"
    )))
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

    /// Loads with `vars` as the whole environment, plus `HOME=/home/ada` unless `vars` set it.
    fn load(flags: &Overrides, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.entry("HOME".into())
            .or_insert_with(|| "/home/ada".into());
        map.retain(|_, v| !v.is_empty());
        Config::load_with(flags, |k| map.get(k).cloned())
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("parallax.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_a_per_user_sqlite_file_and_loopback() {
        let c = load(&Overrides::default(), &[]).unwrap();
        assert_eq!(
            c.database_url,
            "sqlite:///home/ada/.local/share/parallax-mcp/parallax.db?mode=rwc"
        );
        assert!(c.database_is_default());
        assert_eq!(c.listen, "127.0.0.1:8720");
        assert_eq!(c.http, HttpConfig::default());
        let c = load(&Overrides::default(), &[("XDG_DATA_HOME", "/data")]).unwrap();
        assert_eq!(
            c.database_url,
            "sqlite:///data/parallax-mcp/parallax.db?mode=rwc"
        );
        let c = load(&Overrides::default(), &[("XDG_DATA_HOME", "relative")]).unwrap();
        assert!(
            c.database_url.contains("/home/ada/.local/share/"),
            "a relative XDG_DATA_HOME is ignored"
        );
        let err = load(&Overrides::default(), &[("HOME", "")]).unwrap_err();
        assert!(err.to_string().contains("pass --database-url"), "{err}");
    }

    #[test]
    fn relative_sqlite_paths_are_made_absolute_and_sources_recorded() {
        let cwd = std::env::current_dir().unwrap();
        let c = load(&Overrides::default(), &[("PARALLAX_DB", "rel.db")]).unwrap();
        assert_eq!(
            c.database_url,
            format!("sqlite://{}?mode=rwc", cwd.join("rel.db").display())
        );
        assert_eq!(c.origins.of("database_url"), Source::Env("PARALLAX_DB"));
        assert!(!c.database_is_default());
        let flags = Overrides {
            database_url: Some("sqlite://x/y.db".into()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = load(&flags, &[("PARALLAX_MAX_CONNECTIONS", "5")]).unwrap();
        assert_eq!(
            c.database_url,
            format!("sqlite://{}", cwd.join("x/y.db").display())
        );
        assert_eq!(c.origins.of("listen"), Source::Flag("--listen"));
        assert_eq!(
            c.origins.of("http.max_connections"),
            Source::Env("PARALLAX_MAX_CONNECTIONS")
        );
        assert_eq!(c.origins.of("http.max_body_bytes"), Source::Default);
    }

    #[test]
    fn a_bare_port_suggests_an_address() {
        let flags = |l: &str| Overrides {
            listen: Some(l.into()),
            ..Default::default()
        };
        let err = load(&flags("8720"), &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "listen address \"8720\" has no host: use 127.0.0.1:8720 (this machine only) or 0.0.0.0:8720 (every interface)"
        );
        assert!(load(&flags("localhost:99999"), &[]).is_err());
        for ok in ["127.0.0.1:0", "[::1]:8720", "localhost:8720", "0.0.0.0:80"] {
            assert!(load(&flags(ok), &[]).is_ok(), "{ok}");
        }
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
        assert_eq!(c.auth.token_ttl(), Duration::from_secs(900));
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
        assert_eq!(c.auth.token_ttl(), Duration::from_secs(60));
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
            (c.auth.issuer.as_str(), c.auth.token_ttl().as_secs()),
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
    fn oidc_settings_are_checked_and_the_secret_never_shown() {
        let c = load(&Overrides::default(), &[]).unwrap();
        assert!(!c.oidc.enabled());
        assert_eq!(c.oidc.email_claim, "email");
        let ok = [
            ("PARALLAX_OIDC_ISSUER", "https://id.example.com/realms/x"),
            ("PARALLAX_OIDC_CLIENT_ID", "console"),
            ("PARALLAX_OIDC_CLIENT_SECRET", "hunter2-hunter2"),
            ("PARALLAX_OIDC_ALLOWED_DOMAINS", "Example.com, @acme.test"),
        ];
        let c = load(&Overrides::default(), &ok).unwrap();
        assert!(c.oidc.enabled());
        assert_eq!(c.oidc.domains(), ["example.com", "acme.test"]);
        assert_eq!(
            c.oidc.client_secret().unwrap().as_deref(),
            Some("hunter2-hunter2")
        );
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "Debug shows the secret"
        );
        assert!(
            !crate::config::reference::check_report(&c).contains("hunter2"),
            "config check shows the secret"
        );
        for local in [
            "http://127.0.0.1:9000",
            "http://localhost/x",
            "http://[::1]:8/",
        ] {
            let env = [
                ("PARALLAX_OIDC_ISSUER", local),
                ("PARALLAX_OIDC_CLIENT_ID", "c"),
            ];
            assert!(load(&Overrides::default(), &env).is_ok(), "{local}");
        }

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let env = [
            ("PARALLAX_OIDC_ISSUER", "https://id.example.com"),
            ("PARALLAX_OIDC_CLIENT_ID", "c"),
            ("PARALLAX_OIDC_CLIENT_SECRET_FILE", secret.to_str().unwrap()),
        ];
        let c = load(&Overrides::default(), &env).unwrap();
        assert_eq!(
            c.oidc.client_secret().unwrap().as_deref(),
            Some("from-a-file")
        );
        std::fs::remove_file(&secret).unwrap();
        let err = c.oidc.client_secret().unwrap_err().to_string();
        assert!(err.contains("cannot read the client secret file"), "{err}");

        for (env, says) in [
            (
                vec![("PARALLAX_OIDC_CLIENT_ID", "c")],
                "client_id is set but issuer is not",
            ),
            (
                vec![("PARALLAX_OIDC_ISSUER", "https://id.example.com")],
                "client_id (PARALLAX_OIDC_CLIENT_ID) is required",
            ),
            (
                vec![
                    ("PARALLAX_OIDC_ISSUER", "http://id.example.com"),
                    ("PARALLAX_OIDC_CLIENT_ID", "c"),
                ],
                "issuer must be an https URL",
            ),
            (
                vec![
                    ("PARALLAX_OIDC_ISSUER", "id.example.com"),
                    ("PARALLAX_OIDC_CLIENT_ID", "c"),
                ],
                "issuer must be an https URL",
            ),
            (
                vec![
                    ("PARALLAX_OIDC_ISSUER", "https://id.example.com"),
                    ("PARALLAX_OIDC_CLIENT_ID", "c"),
                    ("PARALLAX_OIDC_CLIENT_SECRET", "s3cret-value"),
                    ("PARALLAX_OIDC_CLIENT_SECRET_FILE", "/x"),
                ],
                "client_secret and client_secret_file are both set",
            ),
            (
                vec![
                    ("PARALLAX_OIDC_ISSUER", "https://id.example.com"),
                    ("PARALLAX_OIDC_CLIENT_ID", "c"),
                    ("PARALLAX_OIDC_ALLOWED_DOMAINS", "ada@example.com"),
                ],
                "allowed_domains: \"ada@example.com\" is not a domain",
            ),
        ] {
            let err = load(&Overrides::default(), &env).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("s3cret-value"), "{err}");
        }
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let c = load(&Overrides::default(), &[("DATABASE_URL", " ")]).unwrap();
        assert!(c.database_is_default(), "{}", c.database_url);
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
