//! Shared test helpers: a fresh database per test, on SQLite by default or on PostgreSQL when
//! `PARALLAX_TEST_DATABASE_URL` points at a server (the URL of an existing database used to create
//! and drop the per-test databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(dead_code)]

use parallax_mcp::service::Service;
use parallax_mcp::store::Store;
use sea_orm::{ConnectionTrait, Database, Statement};

pub const PG_ENV: &str = "PARALLAX_TEST_DATABASE_URL";

/// A fresh, empty database that is removed when dropped.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var(PG_ENV) {
            Ok(admin) if !admin.is_empty() => {
                let name = format!("parallax_test_{}", uuid::Uuid::now_v7().simple());
                let conn = Database::connect(&admin).await.expect("connect to PARALLAX_TEST_DATABASE_URL");
                conn.execute_raw(Statement::from_string(conn.get_database_backend(), format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let url = replace_db_name(&admin, &name);
                TestDb { url, _dir: None, pg: Some((admin, name)) }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                TestDb { url, _dir: Some(dir), pg: None }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.expect("open store")
    }

    pub async fn service(&self) -> Service {
        Service::new(self.store().await)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside async; use a private runtime on another thread to clean up.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    if let Ok(conn) = Database::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = conn.execute_raw(Statement::from_string(conn.get_database_backend(), sql)).await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Swaps the database name in a postgres URL (`postgres://u@h:p/db?opts`).
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let new_base = match base[scheme_end..].rfind('/') {
        Some(i) => format!("{}/{name}", &base[..scheme_end + i]),
        None => format!("{base}/{name}"),
    };
    match query {
        Some(q) => format!("{new_base}?{q}"),
        None => new_base,
    }
}
