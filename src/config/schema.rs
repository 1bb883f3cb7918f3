//! Every configuration key, defined once. [`config_schema!`] turns the definitions below into the
//! structs the server reads ([`Config`] and its tables), the file's shape (unknown keys refused),
//! the `PARALLAX_*` variables, and [`KEYS`], from which the README table, `parallax.example.toml`
//! and `parallax-mcp config check` are generated (see [`super::reference`]).
//!
//! A key reads: doc line, `name: Type = default => "PARALLAX_VARIABLE", shown`, and for keys whose
//! default is decided elsewhere (`None` here) `unset "what that means", eg "an example value"`.
//! `shown` is how `config check` prints the value: `plain`, `secret` (never shown) or `url`
//! (password hidden).

use super::{ConfigError, Origins, Source};

/// One configuration key, as the reference and `config check` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The TOML table, `""` for the top level.
    pub table: &'static str,
    /// The key in its table.
    pub name: &'static str,
    /// `table.name`, or `name` at the top level: how origins are tracked.
    pub path: &'static str,
    /// The environment variable that sets it.
    pub env: &'static str,
    /// What it does, in a sentence or two.
    pub doc: &'static str,
    /// For keys without a value by default: what unset means.
    pub unset: Option<&'static str>,
    /// An example value (TOML) for keys without a default value.
    pub example: Option<&'static str>,
}

/// A value a key can hold: how a variable spells it, and how TOML shows it.
pub trait Value: Sized {
    /// Parses the value of environment variable `name`.
    fn from_env(name: &str, raw: &str) -> Result<Self, ConfigError>;
    /// The value as TOML; `None` when unset.
    fn to_toml(&self) -> Option<String>;
}

impl Value for String {
    fn from_env(_: &str, raw: &str) -> Result<Self, ConfigError> {
        Ok(raw.trim().to_owned())
    }
    fn to_toml(&self) -> Option<String> {
        // A JSON string is a valid TOML basic string.
        (!self.is_empty()).then(|| serde_json::Value::from(self.as_str()).to_string())
    }
}

macro_rules! number_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn from_env(name: &str, raw: &str) -> Result<Self, ConfigError> {
                raw.trim().parse().map_err(|_| {
                    ConfigError(format!("{name} must be a whole number, got {raw:?}"))
                })
            }
            fn to_toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
number_value!(u32, u64, usize);

impl Value for Vec<String> {
    /// Comma-separated.
    fn from_env(_: &str, raw: &str) -> Result<Self, ConfigError> {
        Ok(raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
    fn to_toml(&self) -> Option<String> {
        let items: Vec<String> = self
            .iter()
            .map(|s| serde_json::Value::from(s.as_str()).to_string())
            .collect();
        Some(format!("[{}]", items.join(", ")))
    }
}

impl<T: Value> Value for Option<T> {
    fn from_env(name: &str, raw: &str) -> Result<Self, ConfigError> {
        T::from_env(name, raw).map(Some)
    }
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(T::to_toml)
    }
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for people, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Value for LogFormat {
    fn from_env(name: &str, raw: &str) -> Result<Self, ConfigError> {
        match raw.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError(format!(
                "{name} must be text or json, got {raw:?}"
            ))),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(format!("\"{}\"", self.as_str()))
    }
}

/// How `config check` and `Debug` show a value.
pub mod shown {
    use super::Value;

    pub fn plain<T: Value>(v: &T) -> Option<String> {
        v.to_toml()
    }

    /// Set or not, never what.
    pub fn secret<T: Value>(v: &T) -> Option<String> {
        v.to_toml().map(|_| "\"***\"".to_owned())
    }

    /// A URL with its password hidden.
    pub fn url<T: Value>(v: &T) -> Option<String> {
        v.to_toml().map(|s| crate::config::redact(&s))
    }
}

/// Prints what `shown` gives, for `Debug`.
struct Shown(Option<String>);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(s) => f.write_str(s),
            None => f.write_str("None"),
        }
    }
}

macro_rules! opt_literal {
    () => {
        None
    };
    ($l:literal) => {
        Some($l)
    };
}

macro_rules! config_schema {
    (
        $(#[doc = $rdoc:literal])*
        root $Root:ident / $RootFile:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr => $env:literal, $shown:ident
                    $(, unset $unset:literal, eg $eg:literal)? ;
            )*
        }
        $(
            $(#[doc = $tdoc:literal])*
            [$table:ident] $S:ident / $SF:ident {
                $(
                    $(#[doc = $sdoc:literal])*
                    $sfield:ident : $sty:ty = $sdefault:expr => $senv:literal, $sshown:ident
                        $(, unset $sunset:literal, eg $seg:literal)? ;
                )*
            }
        )*
    ) => {
        $(#[doc = $rdoc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $Root {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $( $(#[doc = $tdoc])* pub $table: $S, )*
            /// Where each value came from (default, file, variable, flag).
            pub origins: Origins,
        }

        impl Default for $Root {
            fn default() -> Self {
                Self {
                    $( $field: $default, )*
                    $( $table: $S::default(), )*
                    origins: Origins::default(),
                }
            }
        }

        impl std::fmt::Debug for $Root {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($Root))
                    $( .field(stringify!($field), &Shown(shown::$shown(&self.$field))) )*
                    $( .field(stringify!($table), &self.$table) )*
                    .finish()
            }
        }

        $(
            $(#[doc = $tdoc])*
            #[derive(Clone, PartialEq, Eq)]
            pub struct $S {
                $( $(#[doc = $sdoc])* pub $sfield: $sty, )*
            }

            impl Default for $S {
                fn default() -> Self {
                    Self { $( $sfield: $sdefault, )* }
                }
            }

            impl std::fmt::Debug for $S {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct(stringify!($S))
                        $( .field(stringify!($sfield), &Shown(shown::$sshown(&self.$sfield))) )*
                        .finish()
                }
            }

            /// The table as the file spells it; unknown keys are refused.
            #[derive(Default, serde::Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub(super) struct $SF {
                $( $sfield: Option<$sty>, )*
            }
        )*

        /// The file's shape. Unknown keys are refused, so a typo is an error rather than a
        /// silently ignored setting.
        #[derive(Default, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub(super) struct $RootFile {
            $( $field: Option<$ty>, )*
            $( $table: $SF, )*
        }

        /// Every key, in file order.
        pub const KEYS: &[Key] = &[
            $( Key {
                table: "",
                name: stringify!($field),
                path: stringify!($field),
                env: $env,
                doc: concat!($($doc),*),
                unset: opt_literal!($($unset)?),
                example: opt_literal!($($eg)?),
            }, )*
            $( $( Key {
                table: stringify!($table),
                name: stringify!($sfield),
                path: concat!(stringify!($table), ".", stringify!($sfield)),
                env: $senv,
                doc: concat!($($sdoc),*),
                unset: opt_literal!($($sunset)?),
                example: opt_literal!($($seg)?),
            }, )* )*
        ];

        impl $Root {
            /// Takes every key the file sets.
            pub(super) fn merge_file(&mut self, file: $RootFile, source: &Source) {
                $( if let Some(v) = file.$field {
                    self.$field = v;
                    self.origins.set(stringify!($field), source.clone());
                } )*
                $( $( if let Some(v) = file.$table.$sfield {
                    self.$table.$sfield = v;
                    self.origins.set(
                        concat!(stringify!($table), ".", stringify!($sfield)),
                        source.clone(),
                    );
                } )* )*
            }

            /// Takes every key whose variable is set (and not empty).
            pub(super) fn merge_env(
                &mut self,
                env: &dyn Fn(&str) -> Option<String>,
            ) -> Result<(), ConfigError> {
                $( if let Some(raw) = env($env) {
                    self.$field = Value::from_env($env, &raw)?;
                    self.origins.set(stringify!($field), Source::Env($env));
                } )*
                $( $( if let Some(raw) = env($senv) {
                    self.$table.$sfield = Value::from_env($senv, &raw)?;
                    self.origins.set(
                        concat!(stringify!($table), ".", stringify!($sfield)),
                        Source::Env($senv),
                    );
                } )* )*
                Ok(())
            }

            /// Each key's value as TOML, secrets hidden, `None` when unset; in [`KEYS`] order.
            pub fn shown_values(&self) -> Vec<Option<String>> {
                vec![
                    $( shown::$shown(&self.$field), )*
                    $( $( shown::$sshown(&self.$table.$sfield), )* )*
                ]
            }
        }
    };
}

config_schema! {
    /// Everything the binary needs to run.
    root Config / FileConfig {
        /// The database: `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB`. A relative SQLite
        /// path is taken from the working directory.
        database_url: String = String::new() => "PARALLAX_DATABASE_URL", url,
            unset "`$XDG_DATA_HOME/parallax-mcp/parallax.db`, else `~/.local/share/parallax-mcp/parallax.db`",
            eg "\"postgres://parallax@db.internal/parallax\"";
        /// Address `serve` listens on (port 0 picks a free port).
        listen: String = super::DEFAULT_LISTEN.to_owned() => "PARALLAX_LISTEN", plain;
        /// The public URL of `/mcp` behind a proxy: the audience of access tokens and the
        /// resource in discovery metadata.
        public_url: Option<String> = None => "PARALLAX_PUBLIC_URL", plain,
            unset "`http://{listen}/mcp`", eg "\"https://mcp.example.com/mcp\"";
    }

    /// The `[http]` table: the HTTP transport of `serve`; unset keys keep its defaults.
    [http] HttpConfig / FileHttp {
        /// `Host` header values accepted (DNS-rebinding protection); `"*"` accepts any (only behind
        /// a proxy that checks Host).
        allowed_hosts: Option<Vec<String>> = None => "PARALLAX_ALLOWED_HOSTS", plain,
            unset "loopback names: `localhost`, `127.0.0.1`, `::1`, `[::1]`",
            eg "[\"mcp.example.com\"]";
        /// Browser `Origin`s accepted; a request with any other Origin is refused.
        allowed_origins: Option<Vec<String>> = None => "PARALLAX_ALLOWED_ORIGINS", plain,
            unset "none", eg "[\"https://app.example.com\"]";
        /// Reverse proxies whose `X-Forwarded-For` names the client (for per-address limits).
        trusted_proxies: Option<Vec<String>> = None => "PARALLAX_TRUSTED_PROXIES", plain,
            unset "none", eg "[\"10.0.0.5\"]";
        /// Largest request body accepted, on every route, in bytes (`413` beyond).
        max_body_bytes: Option<usize> = None => "PARALLAX_MAX_BODY_BYTES", plain,
            unset "1048576 (1 MiB)", eg "1048576";
        /// Seconds a client has to send a request head (slow-loris protection).
        header_read_timeout_secs: Option<u64> = None => "PARALLAX_HEADER_READ_TIMEOUT_SECS", plain,
            unset "10", eg "10";
        /// Seconds an idle keep-alive connection stays open between requests.
        idle_timeout_secs: Option<u64> = None => "PARALLAX_IDLE_TIMEOUT_SECS", plain,
            unset "60", eg "60";
        /// Seconds a client has to send the whole request body (else `408`).
        body_read_timeout_secs: Option<u64> = None => "PARALLAX_BODY_READ_TIMEOUT_SECS", plain,
            unset "30", eg "30";
        /// Open connections at most; at the cap the oldest idle connection is closed.
        max_connections: Option<usize> = None => "PARALLAX_MAX_CONNECTIONS", plain,
            unset "1024", eg "1024";
        /// Open connections from one client address (the TCP peer) at most; more are refused.
        max_connections_per_address: Option<usize> = None => "PARALLAX_MAX_CONNECTIONS_PER_ADDRESS", plain,
            unset "128", eg "128";
        /// Seconds a new connection has to send its first byte before it is closed.
        first_byte_timeout_secs: Option<u64> = None => "PARALLAX_FIRST_BYTE_TIMEOUT_SECS", plain,
            unset "3", eg "3";
        /// Open MCP sessions (2025-11-25) on this replica at most; past it `initialize` gets `503`.
        max_sessions: Option<usize> = None => "PARALLAX_MAX_SESSIONS", plain,
            unset "4096", eg "4096";
        /// Open MCP sessions per agent at most; past it the least recently used one is closed.
        max_sessions_per_agent: Option<usize> = None => "PARALLAX_MAX_SESSIONS_PER_AGENT", plain,
            unset "32", eg "32";
        /// Open event streams per member at most; past it a new stream gets `429`.
        max_event_streams_per_member: Option<usize> = None => "PARALLAX_MAX_EVENT_STREAMS_PER_MEMBER", plain,
            unset "8", eg "8";
        /// Seconds in-flight calls may still run after SIGTERM; then they get a JSON-RPC error.
        drain_timeout_secs: Option<u64> = None => "PARALLAX_DRAIN_TIMEOUT_SECS", plain,
            unset "30", eg "30";
    }

    /// The `[stdio]` table.
    [stdio] StdioConfig / FileStdio {
        /// Longest JSON-RPC line accepted on stdin, in bytes; longer lines are answered with an error.
        max_line_bytes: Option<usize> = None => "PARALLAX_STDIO_MAX_LINE_BYTES", plain,
            unset "1048576 (1 MiB)", eg "1048576";
    }

    /// The `[auth]` table: the issuer and key of the tokens this server mints.
    [auth] AuthConfig / FileAuth {
        /// `iss` of every token.
        issuer: String = "parallax-mcp".to_owned() => "PARALLAX_AUTH_ISSUER", plain;
        /// HS256 secret shared by every replica, at least 32 characters.
        signing_key: Option<String> = None => "PARALLAX_SIGNING_KEY", secret,
            unset "generated on first start and kept in the database",
            eg "\"…at least 32 characters…\"";
        /// Lifetime of agent access tokens and the default for member tokens, in seconds (at most
        /// 86400).
        token_ttl_secs: u64 = 900 => "PARALLAX_TOKEN_TTL_SECS", plain;
    }

    /// The `[limits]` table: limits that are not per-workspace settings.
    [limits] LimitsConfig / FileLimits {
        /// Failed authentications allowed per client address per minute…
        failed_auth_per_minute: u32 = 30 => "PARALLAX_FAILED_AUTH_PER_MINUTE", plain;
        /// …after a burst of this many.
        failed_auth_burst: u32 = 10 => "PARALLAX_FAILED_AUTH_BURST", plain;
    }

    /// The `[webhooks]` table: deliveries to each workspace's `control_plane_url`.
    [webhooks] WebhooksConfig / FileWebhooks {
        /// First retry delay before jitter, in milliseconds; doubles per attempt (full jitter).
        base_delay_ms: Option<u64> = None => "PARALLAX_WEBHOOK_BASE_DELAY_MS", plain,
            unset "1000", eg "1000";
        /// Cap on the retry delay, in milliseconds.
        max_delay_ms: Option<u64> = None => "PARALLAX_WEBHOOK_MAX_DELAY_MS", plain,
            unset "3600000 (1 h)", eg "3600000";
        /// Time allowed for one attempt (connect, send, read the answer), in milliseconds.
        attempt_timeout_ms: Option<u64> = None => "PARALLAX_WEBHOOK_TIMEOUT_MS", plain,
            unset "10000", eg "10000";
        /// A delivery still failing this long after its event is marked failed, in seconds.
        give_up_after_secs: Option<u64> = None => "PARALLAX_WEBHOOK_GIVE_UP_SECS", plain,
            unset "259200 (3 days)", eg "259200";
        /// How often the worker looks for due deliveries, in milliseconds.
        poll_interval_ms: Option<u64> = None => "PARALLAX_WEBHOOK_POLL_MS", plain,
            unset "1000", eg "1000";
    }

    /// The `[events]` table: the event feed and the members' event streams.
    [events] EventsConfig / FileEvents {
        /// How often the feed polls for other replicas' events, in milliseconds.
        poll_interval_ms: Option<u64> = None => "PARALLAX_EVENTS_POLL_MS", plain,
            unset "1000", eg "1000";
        /// Keep-alive comment interval on event streams, in milliseconds.
        keepalive_ms: Option<u64> = None => "PARALLAX_EVENTS_KEEPALIVE_MS", plain,
            unset "15000", eg "15000";
        /// How often a stream re-checks that its member still has access, in milliseconds.
        access_check_ms: Option<u64> = None => "PARALLAX_EVENTS_ACCESS_CHECK_MS", plain,
            unset "30000", eg "30000";
    }

    /// The `[log]` table: how logs are written (what is logged is `PARALLAX_LOG`).
    [log] LogConfig / FileLog {
        /// Log line format on stderr: `text` for people, or `json` for one JSON object per line
        /// (`level`, `fields.message`, `target`, `timestamp`) for a log collector.
        format: LogFormat = LogFormat::Text => "PARALLAX_LOG_FORMAT", plain;
    }

    /// The `[secrets]` table: the master key that encrypts secrets at rest.
    [secrets] SecretsConfig / FileSecrets {
        /// Master key (32 bytes: 64 hex digits or base64) that encrypts token signing keys,
        /// webhook secrets and audit keys in the database. Prefer `master_key_file`.
        master_key: Option<String> = None => "PARALLAX_MASTER_KEY", secret,
            unset "secrets are stored unencrypted (the server says so once at start)",
            eg "\"…64 hex digits…\"";
        /// A file holding the master key (e.g. a systemd credential or a mounted secret), instead
        /// of `master_key`.
        master_key_file: Option<String> = None => "PARALLAX_MASTER_KEY_FILE", plain,
            unset "no file", eg "\"/etc/parallax-mcp/master.key\"";
    }

    /// The `[otel]` table: OpenTelemetry traces (OTLP over HTTP, protobuf), off when no endpoint
    /// is set. The standard variables set them.
    [otel] OtelConfig / FileOtel {
        /// The collector's base URL; spans go to `{endpoint}/v1/traces`.
        endpoint: Option<String> = None => "OTEL_EXPORTER_OTLP_ENDPOINT", plain,
            unset "off: no spans are exported", eg "\"http://127.0.0.1:4318\"";
        /// `service.name` of the exported spans.
        service_name: String = "parallax-mcp".to_owned() => "OTEL_SERVICE_NAME", plain;
    }

    /// The `[oidc]` table: console sign-in with an OpenID Connect provider (authorization code
    /// flow with PKCE and nonce). Off unless `issuer` is set.
    [oidc] OidcConfig / FileOidc {
        /// The provider's issuer URL; its `/.well-known/openid-configuration` is read on first use.
        issuer: Option<String> = None => "PARALLAX_OIDC_ISSUER", plain,
            unset "off: the console offers no single sign-on", eg "\"https://accounts.example.com\"";
        /// The client id registered with the provider; its redirect URI is
        /// `{public origin}/login/oidc/callback`.
        client_id: Option<String> = None => "PARALLAX_OIDC_CLIENT_ID", plain,
            unset "required with `issuer`", eg "\"parallax-console\"";
        /// The client secret. Prefer `client_secret_file`.
        client_secret: Option<String> = None => "PARALLAX_OIDC_CLIENT_SECRET", secret,
            unset "a public client (PKCE only)", eg "\"…\"";
        /// A file holding the client secret, instead of `client_secret`.
        client_secret_file: Option<String> = None => "PARALLAX_OIDC_CLIENT_SECRET_FILE", plain,
            unset "no file", eg "\"/etc/parallax-mcp/oidc-client-secret\"";
        /// The ID token claim that carries the member's email (read from userinfo when the ID
        /// token lacks it).
        email_claim: String = "email".to_owned() => "PARALLAX_OIDC_EMAIL_CLAIM", plain;
        /// Email domains allowed to sign in, e.g. `["example.com"]`; empty allows any.
        allowed_domains: Vec<String> = Vec::new() => "PARALLAX_OIDC_ALLOWED_DOMAINS", plain;
        /// Scopes asked for besides `openid`.
        scopes: Vec<String> = vec!["email".to_owned()] => "PARALLAX_OIDC_SCOPES", plain;
        /// The provider's name on the sign-in button ("Sign in with …").
        display_name: String = "single sign-on".to_owned() => "PARALLAX_OIDC_DISPLAY_NAME", plain;
    }

    /// The `[metrics]` table: Prometheus metrics of `serve`.
    [metrics] MetricsConfig / FileMetrics {
        /// Address of the Prometheus endpoint (`GET /metrics`, text format): a listener of its own,
        /// never the agents' port. Keep it on a private address.
        listen: Option<String> = None => "PARALLAX_METRICS_LISTEN", plain,
            unset "off: no metrics are recorded or served", eg "\"127.0.0.1:9464\"";
    }
}

impl AuthConfig {
    /// `token_ttl_secs` as a duration.
    pub fn token_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.token_ttl_secs)
    }
}

/// Variables that are not configuration keys but that the binary (or its tests) reads; listed in
/// the reference and never warned about.
pub const OTHER_VARIABLES: &[(&str, &str)] = &[
    (
        "PARALLAX_CONFIG",
        "the TOML configuration file (same as `--config`)",
    ),
    (
        "DATABASE_URL",
        "the database, when `PARALLAX_DATABASE_URL` is not set",
    ),
    (
        "PARALLAX_DB",
        "a SQLite file path, when neither of those is set (same as `--db`)",
    ),
    (
        "PARALLAX_WORKSPACE",
        "the workspace member commands act in (same as `--workspace`)",
    ),
    (
        "PARALLAX_AS",
        "the member's email member commands act as (same as `--as`)",
    ),
    ("PARALLAX_API_KEY", "the agent's API key, for `stdio`"),
    (
        "PARALLAX_LOG",
        "log filter, e.g. `debug` (else `RUST_LOG`; default `info` for servers, `warn` otherwise)",
    ),
    (
        "PARALLAX_TEST_DATABASE_URL",
        "tests only: run the test suite on this PostgreSQL server",
    ),
    (
        "PARALLAX_UPDATE_SCHEMAS",
        "tests only: `1` rewrites the generated schemas and references",
    ),
    (
        "PARALLAX_MCP_BIN",
        "`examples/agent.rs` only: the server binary to spawn for stdio",
    ),
];
