//! Why a database cannot be opened, said in one line that names the path or host.
//!
//! SQLite reports every file problem as "unable to open database file (code: 14)" and a refused
//! PostgreSQL connection as a pool timeout after retrying for seconds. So before connecting we
//! look for the common mistakes ourselves — a missing file or directory, a read-only file or
//! directory, a PostgreSQL server that refuses connections — and after a failed connect we turn
//! the server's error codes into the same kind of sentence. Configuration mistakes become
//! [`StoreError::Misconfigured`] (exit 2); only an outage stays [`StoreError::Unavailable`].

use super::StoreError;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether opening may create a SQLite database that is not there yet. Only `serve` and
/// `workspace create` may: every other command, `stdio` above all, fails with the path it looked
/// at, so a client started in the wrong directory does not get a new, empty database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    IfMissing,
    Never,
}

/// How long the pre-flight TCP connect to PostgreSQL may take; a refusal is immediate.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The file a `sqlite:` URL names, as sqlx reads it (`sqlite://PATH?params`, `sqlite:PATH`);
/// `None` for other schemes and in-memory databases.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.trim_start_matches("//");
    let file = rest.split_once('?').map_or(rest, |(f, _)| f);
    if file.is_empty() || file == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(file))
}

/// `url` with a relative SQLite path made absolute against the working directory (which is what
/// SQLite would open), so messages and `config check` name the real file.
pub fn absolute_sqlite_url(url: &str) -> String {
    let Some(path) = sqlite_path(url) else {
        return url.to_owned();
    };
    if path.is_absolute() {
        return url.to_owned();
    }
    let Ok(abs) = std::path::absolute(&path) else {
        return url.to_owned();
    };
    let params = url.split_once('?').map(|(_, q)| q);
    match params {
        Some(q) => format!("sqlite://{}?{q}", abs.display()),
        None => format!("sqlite://{}", abs.display()),
    }
}

/// Where a URL points, for messages: the SQLite file, or `host:port/database` (never a password).
pub fn location(url: &str) -> String {
    if let Some(path) = sqlite_path(url) {
        return std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string();
    }
    match pg_target(url) {
        Some(t) => format!("postgres://{}:{}/{}", t.host, t.port, t.database),
        // Never echo an unparsed URL: it may hold a password.
        None => format!("{}://…", url.split("://").next().unwrap_or("database")),
    }
}

/// Checks what can be checked before connecting. Cheap: a few `stat`s, and for PostgreSQL one
/// TCP connect.
pub async fn check(url: &str, create: Create) -> Result<(), StoreError> {
    if let Some(path) = sqlite_path(url) {
        return check_sqlite(&path, create);
    }
    if let Some(target) = pg_target(url) {
        return check_postgres(&target).await;
    }
    Ok(())
}

fn check_sqlite(path: &Path, create: Create) -> Result<(), StoreError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let shown = path.display();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let bad = |msg: String| Err(StoreError::Misconfigured(msg));
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => bad(format!(
            "database {shown} is a directory, not a SQLite file"
        )),
        Ok(_) => {
            // Writes go to the file, and SQLite keeps its journal (-wal, -shm) beside it.
            if let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                return bad(format!("database {shown} is read-only ({})", cause(&e)));
            }
            if let Err(e) = probe_dir(dir) {
                return bad(format!(
                    "database directory {} is not writable ({}); SQLite keeps its journal beside {shown}",
                    dir.display(),
                    cause(&e)
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if create == Create::Never {
                return bad(format!(
                    "no database at {shown}: create one with `parallax-mcp workspace create` (or `serve`), or point --database-url / PARALLAX_DATABASE_URL at yours"
                ));
            }
            if !dir.is_dir() {
                return bad(format!(
                    "cannot create database {shown}: no such directory {}",
                    dir.display()
                ));
            }
            if let Err(e) = probe_dir(dir) {
                return bad(format!(
                    "cannot create database {shown}: directory {} is not writable ({})",
                    dir.display(),
                    cause(&e)
                ));
            }
            Ok(())
        }
        Err(e) => bad(format!("cannot open database {shown}: {}", cause(&e))),
    }
}

/// Creates and removes a file in `dir`: the only test of writability that also holds for root
/// and for read-only mounts.
fn probe_dir(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".parallax-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The cause in a few words, without the "(os error 13)" suffix.
fn cause(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::NotADirectory => "not a directory".into(),
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// The parts of a `postgres://` URL a message needs.
struct PgTarget {
    host: String,
    port: u16,
    user: String,
    database: String,
}

/// Parses `postgres://[user[:pw]@]host[:port][/db][?params]`; `None` for anything fancier (a
/// Unix socket, several hosts), which is then left to sqlx alone.
fn pg_target(url: &str) -> Option<PgTarget> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    let user = userinfo.split(':').next().unwrap_or("").to_owned();
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h.split_once(']')?;
        (h.to_owned(), after.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p),
            None => (hostport.to_owned(), ""),
        }
    };
    if host.contains(',') || host.starts_with('%') {
        return None;
    }
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    let port = if port.is_empty() {
        5432
    } else {
        port.parse().ok()?
    };
    let user = if user.is_empty() {
        "postgres".to_owned()
    } else {
        user
    };
    let database = if database.is_empty() {
        user.clone()
    } else {
        database.to_owned()
    };
    Some(PgTarget {
        host,
        port,
        user,
        database,
    })
}

/// One TCP connect with a short timeout: a refused port fails now, not after the pool's retries.
async fn check_postgres(t: &PgTarget) -> Result<(), StoreError> {
    let addr = format!("{}:{}", t.host, t.port);
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => Err(StoreError::Unavailable(
            format!("cannot connect to PostgreSQL at {addr}: connection refused"),
        )),
        // Name resolution failed: a wrong host is a configuration mistake.
        Ok(Err(e)) if e.raw_os_error().is_none() => Err(StoreError::Misconfigured(format!(
            "cannot resolve PostgreSQL host {}: {e}",
            t.host
        ))),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {addr}: {}",
            cause(&e)
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {addr}: no answer within {} s",
            PG_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Turns a failed connect into a sentence: PostgreSQL's error codes for the common mistakes,
/// otherwise the error without the server's source-line suffix.
pub fn diagnose_connect(url: &str, err: &sea_orm::DbErr) -> StoreError {
    use sea_orm::{DbErr, RuntimeErr};
    let sqlx = match err {
        DbErr::Conn(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
        _ => None,
    };
    if let (Some(sea_orm::sqlx::Error::Database(db)), Some(t)) = (sqlx, pg_target(url)) {
        let at = format!("{}:{}", t.host, t.port);
        let code = db.code().unwrap_or_default();
        let msg = db.message();
        let text = match code.as_ref() {
            // invalid_password, invalid_authorization_specification (e.g. no such role)
            "28P01" | "28000" => Some(format!(
                "PostgreSQL at {at}: authentication failed for user {:?} ({msg})",
                t.user
            )),
            "3D000" => Some(format!(
                "PostgreSQL at {at}: database {:?} does not exist",
                t.database
            )),
            _ => None,
        };
        if let Some(text) = text {
            return StoreError::Misconfigured(text);
        }
    }
    if let (Some(sea_orm::sqlx::Error::Database(_)), Some(path)) = (sqlx, sqlite_path(url)) {
        // Whatever SQLite said, the pre-flight check may now see what is wrong with the file.
        if let Err(e) = check_sqlite(&path, Create::Never) {
            return e;
        }
    }
    StoreError::Unavailable(strip_source_line(&err.to_string()))
}

/// Drops PostgreSQL's " at line N" (a line of the server's C source) from a message.
pub fn strip_source_line(text: &str) -> String {
    let mut out = text.to_owned();
    while let Some(i) = out.find(" at line ") {
        let digits = out[i + 9..].bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            break;
        }
        out.replace_range(i..i + 9 + digits, "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_like_sqlx() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db?mode=rwc"),
            Some("/tmp/x.db".into())
        );
        assert_eq!(sqlite_path("sqlite://x.db"), Some("x.db".into()));
        assert_eq!(sqlite_path("sqlite:x.db"), Some("x.db".into()));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
        let abs = absolute_sqlite_url("sqlite://x.db?mode=rwc");
        assert!(
            abs.starts_with("sqlite:///") && abs.ends_with("/x.db?mode=rwc"),
            "{abs}"
        );
    }

    #[test]
    fn postgres_targets_default_like_libpq() {
        let t = pg_target("postgres://u:pw@db.internal/app?sslmode=require").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.user.as_str(),
                t.database.as_str()
            ),
            ("db.internal", 5432, "u", "app")
        );
        let t = pg_target("postgresql://[::1]:6000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.database.as_str()),
            ("::1", 6000, "postgres")
        );
        assert_eq!(
            location("postgres://u:secret@h:1/d"),
            "postgres://h:1/d",
            "no password"
        );
    }

    #[test]
    fn source_lines_are_stripped() {
        assert_eq!(
            strip_source_line("database \"x\" does not exist at line 768"),
            "database \"x\" does not exist"
        );
        assert_eq!(strip_source_line("at line five"), "at line five");
    }
}
