//! Configuration, in layers: built-in defaults, then a TOML file, then `PARALLAX_*` environment
//! variables, then command-line flags. Each layer overrides only what it sets.
//!
//! Variables: `PARALLAX_CONFIG` (the file), `PARALLAX_DATABASE_URL` (else `DATABASE_URL`, else
//! `PARALLAX_DB`, a SQLite path), `PARALLAX_LISTEN`, and for `[http]`: `PARALLAX_ALLOWED_HOSTS`,
//! `PARALLAX_ALLOWED_ORIGINS` (comma-separated), `PARALLAX_MAX_BODY_BYTES`,
//! `PARALLAX_HEADER_READ_TIMEOUT_SECS`, `PARALLAX_IDLE_TIMEOUT_SECS`,
//! `PARALLAX_BODY_READ_TIMEOUT_SECS`, `PARALLAX_MAX_CONNECTIONS`; for `[stdio]`:
//! `PARALLAX_STDIO_MAX_LINE_BYTES`.
//!
//! ```toml
//! # parallax.toml (pass with --config or PARALLAX_CONFIG)
//! database_url = "postgres://parallax@db.internal/parallax"
//! listen = "0.0.0.0:8720"
//!
//! [http]
//! allowed_hosts = ["mcp.example.com"]
//! allowed_origins = ["https://app.example.com"]
//! max_body_bytes = 1048576
//! header_read_timeout_secs = 10
//! idle_timeout_secs = 60
//! body_read_timeout_secs = 30
//! max_connections = 1024
//!
//! [stdio]
//! max_line_bytes = 1048576
//! ```

use crate::store::database_url_for_path;
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// Transport settings for `serve`; unset fields keep the transport's defaults.
    pub http: HttpConfig,
    /// Settings for the `stdio` transport.
    pub stdio: StdioConfig,
}

/// The `[http]` table: optional overrides of the HTTP transport's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `Host` header values accepted (DNS-rebinding protection).
    pub allowed_hosts: Option<Vec<String>>,
    /// Browser `Origin`s accepted.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest request body accepted, on every route.
    pub max_body_bytes: Option<usize>,
    /// Seconds a client has to send a request head (slow-loris protection; default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection stays open between requests (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a client has to send the whole request body (default 30).
    pub body_read_timeout_secs: Option<u64>,
    /// Open connections at most (default 1024); further ones wait until one closes.
    pub max_connections: Option<usize>,
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    http: HttpConfig,
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
            http: HttpConfig::default(),
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
        if let Some(hosts) = env("PARALLAX_ALLOWED_HOSTS") {
            config.http.allowed_hosts = Some(comma_list(&hosts));
        }
        if let Some(origins) = env("PARALLAX_ALLOWED_ORIGINS") {
            config.http.allowed_origins = Some(comma_list(&origins));
        }
        let number = |name: &str| -> Result<Option<u64>, ConfigError> {
            env(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        ConfigError(format!("{name} must be a whole number, got {v:?}"))
                    })
                })
                .transpose()
        };
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = number("PARALLAX_MAX_BODY_BYTES")? {
            config.http.max_body_bytes = Some(size(n));
        }
        if let Some(n) = number("PARALLAX_HEADER_READ_TIMEOUT_SECS")? {
            config.http.header_read_timeout_secs = Some(n);
        }
        if let Some(n) = number("PARALLAX_IDLE_TIMEOUT_SECS")? {
            config.http.idle_timeout_secs = Some(n);
        }
        if let Some(n) = number("PARALLAX_BODY_READ_TIMEOUT_SECS")? {
            config.http.body_read_timeout_secs = Some(n);
        }
        if let Some(n) = number("PARALLAX_MAX_CONNECTIONS")? {
            config.http.max_connections = Some(size(n));
        }
        if let Some(n) = number("PARALLAX_STDIO_MAX_LINE_BYTES")? {
            config.stdio.max_line_bytes = Some(size(n));
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
        let HttpConfig {
            allowed_hosts,
            allowed_origins,
            max_body_bytes,
            header_read_timeout_secs,
            idle_timeout_secs,
            body_read_timeout_secs,
            max_connections,
        } = file.http;
        let http = &mut self.http;
        http.allowed_hosts = allowed_hosts.or(http.allowed_hosts.take());
        http.allowed_origins = allowed_origins.or(http.allowed_origins.take());
        http.max_body_bytes = max_body_bytes.or(http.max_body_bytes);
        http.header_read_timeout_secs = header_read_timeout_secs.or(http.header_read_timeout_secs);
        http.idle_timeout_secs = idle_timeout_secs.or(http.idle_timeout_secs);
        http.body_read_timeout_secs = body_read_timeout_secs.or(http.body_read_timeout_secs);
        http.max_connections = max_connections.or(http.max_connections);
        let StdioConfig { max_line_bytes } = file.stdio;
        self.stdio.max_line_bytes = max_line_bytes.or(self.stdio.max_line_bytes);
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
            ("max_body_bytes", h.max_body_bytes.map(|n| n as u64)),
        ] {
            if value == Some(0) {
                return Err(ConfigError(format!("[http] {name} must be at least 1")));
            }
        }
        if self.stdio.max_line_bytes == Some(0) {
            return Err(ConfigError(
                "[stdio] max_line_bytes must be at least 1".into(),
            ));
        }
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|k| self.database_url.starts_with(k)) {
            return Err(ConfigError(format!(
                "unsupported database URL {:?}: use sqlite://PATH?mode=rwc or postgres://…",
                redact(&self.database_url)
            )));
        }
        Ok(())
    }
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
}
