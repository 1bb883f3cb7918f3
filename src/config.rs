//! Configuration: defaults, then a TOML file, then `PARALLAX_*` environment variables, then flags.
//! (Owned by the CLI work; see issue 2.)

/// Everything the binary needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://…?mode=rwc` (default: `parallax.db` in the working directory) or `postgres://…`.
    pub database_url: String,
    /// Address for `serve` (default `127.0.0.1:8720`; port 0 picks a free port).
    pub listen: String,
}
