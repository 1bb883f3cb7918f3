//! Secrets at rest, through the real binary: under a master key the stored bytes of signing keys
//! and webhook secrets are not the secrets; a wrong key (or none) refuses to start with a clear
//! error; `secrets encrypt` seals rows written in clear; `secrets rotate-master` moves every secret
//! to a new key while tokens stay valid and webhook secrets stay the same.

use crate::support::TestDb;
use crate::support::server::*;
use parallax_mcp::auth;
use parallax_mcp::domain::Permission;
use parallax_mcp::service::Service;
use parallax_mcp::store::{MasterKey, Store};
use rmcp::model::ProtocolVersion;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const PUBLIC_URL: &str = "http://mcp.test/mcp";

/// `SELECT {column} FROM {table}`, read straight from the database.
async fn stored(db: &TestDb, table: &str, column: &str) -> Vec<String> {
    let conn = Database::connect(&db.url).await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT {column} FROM {table}"),
        ))
        .await
        .unwrap();
    let values = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    let _ = conn.close().await;
    values
}

/// A service on `db` whose store seals with `key`.
async fn service_with(db: &TestDb, key: Option<&MasterKey>) -> Service {
    let (store, _) = Store::open(&db.url)
        .await
        .unwrap()
        .with_master_key(key.cloned())
        .await
        .unwrap();
    Service::new(store)
}

fn key_file(dir: &Path, name: &str, key: &MasterKey) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", key.to_hex())).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs the binary with `args` and `env`; returns the exit code and stderr.
async fn run(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["--database-url", &db.url])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PARALLAX_MASTER_KEY")
        .env_remove("PARALLAX_MASTER_KEY_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_refuse_a_wrong_key_and_survive_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
    let (k1_file, k2_file) = (
        key_file(dir.path(), "k1", &k1),
        key_file(dir.path(), "k2", &k2),
    );
    let db = TestDb::new().await;
    let svc = service_with(&db, Some(&k1)).await;
    svc.create_workspace("acme", "Acme", "admin@acme.test", "Ada")
        .await
        .unwrap();
    let admin = auth::member(svc.store(), "acme", "admin@acme.test")
        .await
        .unwrap();
    let webhook_secret = svc.rotate_webhook_secret(&admin, 0).await.unwrap();
    let agent_key = approved_agent(&svc, &admin, "bot", &[Permission::ReadTasks]).await;
    // An audit checkpoint makes the Ed25519 key that signs them.
    let first_cp = svc.create_checkpoint(&admin).await.unwrap();
    let audit_plain = {
        let tx = svc.store().read().await.unwrap();
        tx.latest_audit_key().await.unwrap().unwrap().secret
    };

    // The server makes its signing key under the master key and mints a token with it.
    let env = [
        ("PARALLAX_MASTER_KEY_FILE", k1_file.as_str()),
        ("PARALLAX_PUBLIC_URL", PUBLIC_URL),
    ];
    let mut server = spawn_http_env(&db.url, &env).await;
    let token = access_token(&server.url, &agent_key).await;
    let client = http_client(&server.url, &token, ProtocolVersion::V_2026_07_28).await;
    ok(&client, "agent_my_assignments", json!({})).await;
    let _ = client.cancel().await;
    server.child.kill().await.unwrap();

    // At rest: sealed under k1, never the secret itself.
    let signing_plain: Vec<String> = {
        let tx = svc.store().read().await.unwrap();
        let keys = tx.signing_keys(chrono::Utc::now()).await.unwrap();
        keys.into_iter().map(|k| k.secret).collect()
    };
    assert_eq!(signing_plain.len(), 1);
    let signing_stored = stored(&db, "signing_keys", "secret").await;
    let webhook_stored = stored(&db, "webhook_secrets", "secret").await;
    let prefix = format!("pxenc:v1:{}:", k1.id());
    let audit_stored = stored(&db, "audit_keys", "secret").await;
    for (stored, plain) in [
        (&signing_stored[0], signing_plain[0].clone()),
        (&webhook_stored[0], webhook_secret.expose()),
        (&audit_stored[0], audit_plain.clone()),
    ] {
        assert!(stored.starts_with(&prefix), "{stored}");
        assert!(!stored.contains(&plain), "the secret is stored in clear");
        let b64 = plain.trim_start_matches("whsec_");
        assert!(!stored.contains(b64));
    }

    // A wrong key, or none, stops the start with one clear line and the configuration exit code.
    let (code, _, err) = run(
        &db,
        &[("PARALLAX_MASTER_KEY", &k2.to_hex())],
        &["serve", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("wrong master key") && err.contains(k1.id()),
        "{err}"
    );
    assert!(!err.contains(&k2.to_hex()), "the key is never printed");
    let (code, _, err) = run(&db, &[], &["serve", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("encrypted under master key") && err.contains("PARALLAX_MASTER_KEY"),
        "{err}"
    );
    let (code, _, err) = run(&db, &[], &["workspace", "list"]).await;
    assert_eq!(code, 2, "admin commands refuse too: {err}");
    // A malformed key is a configuration error that does not echo it.
    let (code, _, err) = run(
        &db,
        &[("PARALLAX_MASTER_KEY", "hunter2")],
        &["workspace", "list"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("32 bytes") && !err.contains("hunter2"),
        "{err}"
    );

    // Rotation: the current key from the configuration, the new one from a file.
    let (code, out, err) = run(
        &db,
        &[("PARALLAX_MASTER_KEY_FILE", &k1_file)],
        &["secrets", "rotate-master", "--new-key-file", &k2_file],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(k2.id()), "{out}");
    let prefix2 = format!("pxenc:v1:{}:", k2.id());
    for stored in [
        stored(&db, "signing_keys", "secret").await,
        stored(&db, "webhook_secrets", "secret").await,
        stored(&db, "audit_keys", "secret").await,
    ]
    .concat()
    {
        assert!(stored.starts_with(&prefix2), "{stored}");
    }
    // The old key no longer opens them.
    let (code, _, err) = run(
        &db,
        &[("PARALLAX_MASTER_KEY_FILE", &k1_file)],
        &["workspace", "list"],
    )
    .await;
    assert_eq!(code, 2, "{err}");

    // Under the new key: the token minted before still works, the webhook secret is the same.
    let env = [
        ("PARALLAX_MASTER_KEY_FILE", k2_file.as_str()),
        ("PARALLAX_PUBLIC_URL", PUBLIC_URL),
    ];
    let server = spawn_http_env(&db.url, &env).await;
    let client = http_client(&server.url, &token, ProtocolVersion::V_2026_07_28).await;
    ok(&client, "agent_my_assignments", json!({})).await;
    let _ = client.cancel().await;
    let svc2 = service_with(&db, Some(&k2)).await;
    let tx = svc2.store().read().await.unwrap();
    let secrets = tx
        .active_webhook_secrets(&admin.workspace().id, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].expose(), webhook_secret.expose());
    // A webhook the server signs now verifies with the secret the control plane holds.
    let body = br#"{"type":"x"}"#;
    let ts = chrono::Utc::now().timestamp();
    let header = parallax_mcp::domain::signature_header(&secrets, "msg_1", ts, body);
    assert!(
        parallax_mcp::domain::verify_webhook(
            std::slice::from_ref(&webhook_secret),
            Some("msg_1"),
            Some(&ts.to_string()),
            Some(&header),
            body,
            ts,
        )
        .is_ok()
    );
    let signing_after = tx.signing_keys(chrono::Utc::now()).await.unwrap();
    assert_eq!(signing_after[0].secret, signing_plain[0]);
    drop(tx);
    // The audit key still signs: new activity, a new checkpoint under the same key.
    let admin2 = auth::member(svc2.store(), "acme", "admin@acme.test")
        .await
        .unwrap();
    svc2.create_project(&admin2, "After rotation", "")
        .await
        .unwrap();
    let cp = svc2.create_checkpoint(&admin2).await.unwrap();
    assert!(cp.seq > first_cp.seq);
    assert_eq!(cp.key_id, first_cp.key_id);
    parallax_mcp::service::check_signature(&cp).unwrap();
}

#[tokio::test]
async fn without_a_master_key_the_server_says_so_once_and_secrets_encrypt_seals_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let key_path = key_file(dir.path(), "master.key", &key);
    let db = TestDb::new().await;
    let svc = service_with(&db, None).await;
    svc.create_workspace("acme", "Acme", "admin@acme.test", "Ada")
        .await
        .unwrap();
    let admin = auth::member(svc.store(), "acme", "admin@acme.test")
        .await
        .unwrap();
    let secret = svc.rotate_webhook_secret(&admin, 0).await.unwrap();
    assert_eq!(
        stored(&db, "webhook_secrets", "secret").await,
        [secret.expose()]
    );

    // The server starts and says once that secrets are stored unencrypted.
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--database-url",
            &db.url,
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .env_remove("PARALLAX_MASTER_KEY")
        .env_remove("PARALLAX_MASTER_KEY_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("listening on");
            seen.push(line);
            if done {
                return;
            }
        }
        panic!("exited early: {seen:#?}");
    })
    .await
    .expect("listening in time");
    child.kill().await.unwrap();
    let warnings = seen
        .iter()
        .filter(|l| l.contains("stored unencrypted"))
        .count();
    assert_eq!(warnings, 1, "{seen:#?}");
    // The signing key the server made is in clear too, until encrypted.
    assert!(!stored(&db, "signing_keys", "secret").await[0].starts_with("pxenc:"));

    // `secrets encrypt` without a key says what to set.
    let (code, _, err) = run(&db, &[], &["secrets", "encrypt"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PARALLAX_MASTER_KEY"), "{err}");
    // With one, every row is sealed (the signing key and the webhook secret), and the secrets
    // read back the same.
    let env = [("PARALLAX_MASTER_KEY_FILE", key_path.as_str())];
    // The server may have made an audit checkpoint key too: it is sealed with the rest.
    let audit_keys = stored(&db, "audit_keys", "secret").await.len();
    let (code, out, err) = run(&db, &env, &["secrets", "encrypt"]).await;
    assert_eq!(code, 0, "{err}");
    let expected = format!("Encrypted {} secrets", 2 + audit_keys);
    assert!(out.contains(&expected) && out.contains(key.id()), "{out}");
    for stored in stored(&db, "audit_keys", "secret").await {
        assert!(stored.starts_with(&format!("pxenc:v1:{}:", key.id())));
    }
    let prefix = format!("pxenc:v1:{}:", key.id());
    let webhook_stored = stored(&db, "webhook_secrets", "secret").await;
    assert!(webhook_stored[0].starts_with(&prefix));
    assert!(stored(&db, "signing_keys", "secret").await[0].starts_with(&prefix));
    let svc = service_with(&db, Some(&key)).await;
    let tx = svc.store().read().await.unwrap();
    let secrets = tx
        .active_webhook_secrets(&admin.workspace().id, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(secrets[0].expose(), secret.expose());
    // Running it again changes nothing.
    let (code, out, _) = run(&db, &env, &["secrets", "encrypt"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Encrypted 0 secrets"), "{out}");
    assert_eq!(
        stored(&db, "webhook_secrets", "secret").await,
        webhook_stored
    );
}
