//! The first hour, as a new user meets it: where the database is, what happens when it is not
//! there or cannot be written, when PostgreSQL or the listen address is wrong, and what the
//! configuration is. Each test runs the real binary and checks the exact one-line message and
//! exit code.

use crate::support::TestDb;
use parallax_mcp::config::reference;
use parallax_mcp::store::preflight::location;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_parallax-mcp");

/// A finished run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary in `cwd` with a clean environment: no PARALLAX_* or database variables, and
/// `HOME` pointing at `home` so the per-user default location is one we control.
fn run_in(cwd: &Path, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(cwd).args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("HOME", home)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    let out = cmd.output().expect("run parallax-mcp");
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// An empty working directory and an empty home, both removed at the end.
struct Sandbox {
    cwd: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            cwd: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn cwd(&self) -> PathBuf {
        std::fs::canonicalize(self.cwd.path()).unwrap()
    }

    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        run_in(&self.cwd(), self.home.path(), env, args)
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Asserts exit `code`, nothing on stdout and exactly `error: {message}` on stderr.
fn assert_fails(r: &Run, code: i32, message: &str) {
    assert_eq!(
        (r.code, r.stderr.as_str(), r.stdout.as_str()),
        (code, format!("error: {message}\n").as_str(), ""),
        "{r:?}"
    );
}

/// For `serve` and `stdio`, which log to stderr at `info`: the last line is the one error line.
fn assert_server_fails(r: &Run, code: i32, message: &str) {
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(
        (r.code, errors, r.stderr.lines().last(), r.stdout.as_str()),
        (
            code,
            vec![format!("error: {message}").as_str()],
            Some(format!("error: {message}").as_str()),
            ""
        ),
        "{r:?}"
    );
}

fn is_root() -> bool {
    // The owner of a directory we just created is who we run as.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::metadata(dir.path()).unwrap().uid() == 0
}

const KEY: &str = "PARALLAX_API_KEY";

fn missing(path: &Path) -> String {
    format!(
        "no database at {}: create one with `parallax-mcp workspace create` (or `serve`), or point --database-url / PARALLAX_DATABASE_URL at yours",
        path.display()
    )
}

#[test]
fn stdio_in_an_empty_directory_creates_nothing_and_names_the_default_path() {
    let sb = Sandbox::new();
    let key = parallax_mcp::domain::ApiKey::generate();
    let default = sb.home.path().join(".local/share/parallax-mcp/parallax.db");
    let r = sb.run(&[(KEY, key.expose())], &["stdio"]);
    assert_fails(&r, 2, &missing(&default));
    // As mcp.json used to have it: a relative path, which would have been created here.
    let r = sb.run(
        &[
            (KEY, key.expose()),
            ("PARALLAX_DATABASE_URL", "sqlite://parallax.db?mode=rwc"),
        ],
        &["stdio"],
    );
    assert_fails(&r, 2, &missing(&sb.cwd().join("parallax.db")));
    // XDG_DATA_HOME moves the default for every command alike.
    let data = sb.home.path().join("data");
    let r = sb.run(
        &[
            (KEY, key.expose()),
            ("XDG_DATA_HOME", data.to_str().unwrap()),
        ],
        &["stdio"],
    );
    assert_fails(&r, 2, &missing(&data.join("parallax-mcp/parallax.db")));
    for cmd in [
        &["migrate"][..],
        &["workspace", "list"],
        &["signing-key", "rotate"],
    ] {
        let r = sb.run(&[], cmd);
        assert_fails(&r, 2, &missing(&default));
    }
    assert!(
        Sandbox::entries(&sb.cwd()).is_empty(),
        "nothing created in the working directory"
    );
    assert!(
        Sandbox::entries(sb.home.path()).is_empty(),
        "nothing created in the home directory"
    );
}

#[test]
fn serve_and_stdio_agree_on_the_default_database() {
    let sb = Sandbox::new();
    let created = sb.run(
        &[],
        &[
            "workspace",
            "create",
            "acme",
            "--name",
            "Acme",
            "--admin-email",
            "a@acme.test",
        ],
    );
    assert_eq!(created.code, 0, "{created:?}");
    let default = sb.home.path().join(".local/share/parallax-mcp/parallax.db");
    assert!(
        default.is_file(),
        "workspace create made the per-user database"
    );
    // From another directory, the same database.
    let elsewhere = tempfile::tempdir().unwrap();
    let r = run_in(
        elsewhere.path(),
        sb.home.path(),
        &[],
        &["workspace", "list", "--json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("\"acme\""), "{}", r.stdout);
    // A key that matches nothing: the error says which database was checked.
    let key = parallax_mcp::domain::ApiKey::generate();
    let r = run_in(
        elsewhere.path(),
        sb.home.path(),
        &[(KEY, key.expose())],
        &["stdio"],
    );
    assert_server_fails(
        &r,
        1,
        &format!(
            "PARALLAX_API_KEY refused: unknown API key (database {})",
            default.display()
        ),
    );
    assert!(Sandbox::entries(elsewhere.path()).is_empty());
}

#[tokio::test]
async fn an_unknown_key_names_the_database_it_was_checked_in() {
    let db = TestDb::new().await;
    db.store().await.close().await;
    let sb = Sandbox::new();
    let key = parallax_mcp::domain::ApiKey::generate();
    let r = sb.run(
        &[(KEY, key.expose()), ("PARALLAX_DATABASE_URL", &db.url)],
        &["stdio"],
    );
    assert_server_fails(
        &r,
        1,
        &format!(
            "PARALLAX_API_KEY refused: unknown API key (database {})",
            location(&db.url)
        ),
    );
}

#[test]
fn a_missing_parent_directory_is_named() {
    let sb = Sandbox::new();
    let dir = sb.cwd().join("nope");
    let file = dir.join("x.db");
    let want = format!(
        "cannot create database {}: no such directory {}",
        file.display(),
        dir.display()
    );
    let create = [
        "workspace",
        "create",
        "acme",
        "--name",
        "Acme",
        "--admin-email",
        "a@acme.test",
    ];
    let r = sb.run(
        &[],
        &[&["--db", file.to_str().unwrap()][..], &create].concat(),
    );
    assert_fails(&r, 2, &want);
    let r = sb.run(
        &[],
        &[
            "--db",
            file.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_fails(&r, 2, &want);
    // A relative path is reported absolute.
    let r = sb.run(&[("PARALLAX_DB", "nope/x.db")], &create);
    assert_fails(&r, 2, &want);
}

/// A directory we cannot create files in: one made read-only, or, as root (whom permissions do
/// not stop), `/sys`, where nobody may create files.
fn read_only_dir() -> Option<(PathBuf, Option<tempfile::TempDir>)> {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        return Some((std::fs::canonicalize(dir.path()).unwrap(), Some(dir)));
    }
    let sys = Path::new("/sys");
    let probe = sys.join(format!("parallax-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some((sys.into(), None)),
        _ => {
            let _ = std::fs::remove_file(&probe);
            None
        }
    }
}

#[test]
fn a_read_only_directory_is_named() {
    let Some((dir, guard)) = read_only_dir() else {
        eprintln!("skipped: running as root and /sys accepts new files, so no read-only directory");
        return;
    };
    let sb = Sandbox::new();
    let file = dir.join("parallax.db");
    let r = sb.run(
        &[],
        &[
            "--db",
            file.to_str().unwrap(),
            "workspace",
            "create",
            "acme",
            "--name",
            "A",
            "--admin-email",
            "a@a.test",
        ],
    );
    assert_fails(
        &r,
        2,
        &format!(
            "cannot create database {}: directory {} is not writable (permission denied)",
            file.display(),
            dir.display()
        ),
    );
    if let Some(guard) = guard {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(guard.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn a_read_only_database_file_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let file = if is_root() {
        // Permissions do not stop root; a sysfs attribute refuses writes even to root.
        eprintln!("running as root: using the read-only sysfs file /sys/kernel/uevent_seqnum");
        PathBuf::from("/sys/kernel/uevent_seqnum")
    } else {
        let file = sb.cwd().join("parallax.db");
        let r = sb.run(
            &[],
            &[
                "--db",
                "parallax.db",
                "workspace",
                "create",
                "acme",
                "--name",
                "A",
                "--admin-email",
                "a@a.test",
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        file
    };
    if !file.exists() {
        eprintln!("skipped: no read-only file to try");
        return;
    }
    let r = sb.run(&[], &["--db", file.to_str().unwrap(), "workspace", "list"]);
    assert_fails(
        &r,
        2,
        &format!(
            "database {} is read-only (permission denied)",
            file.display()
        ),
    );
}

#[test]
fn a_refused_postgres_port_fails_fast_and_names_the_address() {
    let sb = Sandbox::new();
    let started = Instant::now();
    let r = sb.run(
        &[(
            "PARALLAX_DATABASE_URL",
            "postgres://parallax:hunter2@127.0.0.1:1/parallax",
        )],
        &["workspace", "list"],
    );
    assert_fails(
        &r,
        8,
        "database unavailable: cannot connect to PostgreSQL at 127.0.0.1:1: connection refused",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

/// Wrong database names and users are configuration mistakes (exit 2), said without the server's
/// "at line N". Needs a PostgreSQL server (`PARALLAX_TEST_DATABASE_URL`).
#[tokio::test]
async fn postgres_configuration_mistakes_are_named() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("skipped: set PARALLAX_TEST_DATABASE_URL to run against PostgreSQL");
        return;
    }
    let admin = std::env::var(crate::support::PG_ENV).unwrap();
    let rest = admin.split_once("://").unwrap().1;
    let hostport = rest.split('/').next().unwrap().rsplit('@').next().unwrap();
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let sb = Sandbox::new();
    let missing_db = format!("{}/parallax_missing_db", db.url.rsplit_once('/').unwrap().0);
    let r = sb.run(
        &[("PARALLAX_DATABASE_URL", &missing_db)],
        &["workspace", "list"],
    );
    assert_fails(
        &r,
        2,
        &format!("PostgreSQL at {hostport}: database \"parallax_missing_db\" does not exist"),
    );
    let nobody = format!("postgres://parallax_nobody@{hostport}/postgres");
    let r = sb.run(
        &[("PARALLAX_DATABASE_URL", &nobody)],
        &["workspace", "list"],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "error: PostgreSQL at {hostport}: authentication failed for user \"parallax_nobody\""
        )) && !r.stderr.contains(" at line ")
            && r.stderr.lines().count() == 1,
        "{r:?}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_named() {
    let db = TestDb::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sb = Sandbox::new();
    let r = sb.run(
        &[("PARALLAX_DATABASE_URL", &db.url)],
        &["serve", "--listen", &addr],
    );
    assert_server_fails(
        &r,
        2,
        &format!(
            "cannot listen on {addr}: address already in use (another server on that port? pick another with --listen or PARALLAX_LISTEN)"
        ),
    );
}

#[test]
fn a_bare_port_suggests_the_loopback_address() {
    let sb = Sandbox::new();
    let r = sb.run(&[], &["serve", "--listen", "8720"]);
    assert_fails(
        &r,
        2,
        "listen address \"8720\" has no host: use 127.0.0.1:8720 (this machine only) or 0.0.0.0:8720 (every interface)",
    );
    let r = sb.run(&[("PARALLAX_LISTEN", "localhost")], &["serve"]);
    assert_fails(
        &r,
        2,
        "listen address \"localhost\" is not HOST:PORT, e.g. 127.0.0.1:8720 or [::1]:8720",
    );
    assert!(
        Sandbox::entries(sb.home.path()).is_empty(),
        "refused before touching a database"
    );
}

/// The README's configuration table and `parallax.example.toml` are generated from the key
/// definitions; `PARALLAX_UPDATE_SCHEMAS=1` rewrites them.
#[test]
fn config_reference_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var("PARALLAX_UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let hint = "run `PARALLAX_UPDATE_SCHEMAS=1 cargo test --test it config_reference` and commit";

    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let start = readme
        .find(reference::README_START)
        .expect("README has the config-reference start marker");
    let body_start = start + reference::README_START.len();
    let end = readme[body_start..]
        .find(reference::README_END)
        .map(|i| body_start + i)
        .expect("README has the config-reference end marker");
    let want = format!("\n{}", reference::readme_table());
    let example_path = root.join("parallax.example.toml");
    let example = std::fs::read_to_string(&example_path).unwrap_or_default();
    if update {
        let new = format!("{}{want}{}", &readme[..body_start], &readme[end..]);
        std::fs::write(&readme_path, new).unwrap();
        std::fs::write(&example_path, reference::example_toml()).unwrap();
        return;
    }
    assert!(
        readme[body_start..end] == want,
        "README configuration table drifted: {hint}"
    );
    assert!(
        example == reference::example_toml(),
        "parallax.example.toml drifted: {hint}"
    );
}

#[test]
fn config_check_shows_each_value_and_its_source_with_secrets_hidden() {
    let sb = Sandbox::new();
    let file = sb.cwd().join("parallax.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9999\"\n[http]\nmax_connections = 7\n",
    )
    .unwrap();
    let secret = "s3cret-signing-key-that-is-long-enough-42";
    let r = sb.run(
        &[
            ("PARALLAX_SIGNING_KEY", secret),
            ("PARALLAX_MAX_CONNECTIONS", "9"),
            ("PARALLAX_CONFIG", "parallax.toml"),
        ],
        &[
            "--database-url",
            "postgres://app:hunter2@db.internal/app",
            "config",
            "check",
        ],
    );
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    let out = &r.stdout;
    assert!(!out.contains(secret) && !out.contains("hunter2"), "{out}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.trim_start_matches("# ").split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no line for {key} in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("database_url"),
        "database_url = \"postgres://app:***@db.internal/app\" # flag --database-url"
    );
    assert_eq!(
        line("listen"),
        format!("listen = \"127.0.0.1:9999\" # file {}", file.display())
    );
    assert_eq!(
        line("max_connections"),
        "max_connections = 9 # env PARALLAX_MAX_CONNECTIONS"
    );
    assert_eq!(
        line("signing_key"),
        "signing_key = \"***\" # env PARALLAX_SIGNING_KEY"
    );
    assert_eq!(line("token_ttl_secs"), "token_ttl_secs = 900 # default");
    assert!(
        out.contains("\n[http]\n") && out.contains("\n[auth]\n"),
        "{out}"
    );
}

#[test]
fn an_unknown_variable_is_warned_about_once_with_a_suggestion() {
    let sb = Sandbox::new();
    let r = sb.run(
        &[("PARALLAX_LISTN", "127.0.0.1:1"), ("PARALLAX_COLOUR", "1")],
        &["config", "check"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        "warning: unknown variable PARALLAX_COLOUR is ignored\n\
         warning: unknown variable PARALLAX_LISTN is ignored (did you mean PARALLAX_LISTEN?)\n"
    );
    assert!(
        r.stdout.contains("listen") && r.stdout.contains("\"127.0.0.1:8720\""),
        "{}",
        r.stdout
    );
}
