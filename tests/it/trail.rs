//! Issue 13: the tamper-evident audit trail (hash chain, verify, prune, export) and grants that
//! expire. Tampering is done the way an attacker with database access would: raw SQL on the
//! activity table; `activity verify` is the real binary.

use crate::support::server::{
    self, approved_agent, call, http_client, spawn_http, stdio_client, world,
};
use crate::support::{TestDb, seed_workspace};
use crate::transport::{open_session, post};
use parallax_mcp::auth;
use parallax_mcp::domain::*;
use parallax_mcp::service::Service;
use parallax_mcp::store::{ActivityQuery, Store};
use rmcp::model::ProtocolVersion;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_parallax-mcp");

/// Runs the binary; (exit code, stdout, stderr).
async fn cli(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("--database-url")
        .arg(&db.url)
        .args(args)
        .env_remove("PARALLAX_WORKSPACE")
        .env_remove("PARALLAX_AS")
        .env_remove("PARALLAX_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run parallax-mcp");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn raw(db: &TestDb) -> DatabaseConnection {
    Database::connect(&db.url).await.expect("raw connection")
}

async fn exec(conn: &DatabaseConnection, sql: &str) {
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A workspace `acme` with at least `n` chained entries (every service change writes one).
async fn trail_of(db: &TestDb, n: usize) -> (Service, crate::support::Seeded) {
    let svc = db.service().await;
    let s = seed_workspace(&svc, "acme").await;
    for i in 0..n {
        svc.create_task(&s.admin, &s.project.id, &format!("task {i}"), "")
            .await
            .unwrap();
    }
    (svc, s)
}

/// `activity verify -w acme --json`: (exit code, the workspace's report).
async fn verify(db: &TestDb, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["activity", "verify", "-w", "acme", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(db, &args).await;
    let reports: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {out} / {err}"));
    if code != 0 {
        assert!(
            err.contains("broken at seq"),
            "stderr names the break: {err}"
        );
    }
    (code, reports[0].clone())
}

/// The id of the entry at `seq`.
async fn id_at(conn: &DatabaseConnection, ws: &str, seq: i64) -> String {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT id FROM activity WHERE workspace_id = '{ws}' AND seq = {seq}"),
        ))
        .await
        .unwrap()
        .expect("entry at seq");
    row.try_get::<String>("", "id").unwrap()
}

fn assert_break(report: &Value, kind: &str, seq: i64, entry: Option<&str>) {
    assert_eq!(report["intact"], false, "{report}");
    let p = &report["problem"];
    assert_eq!(p["kind"], kind, "{report}");
    assert_eq!(p["seq"], seq, "{report}");
    if let Some(id) = entry {
        assert_eq!(p["entryId"], id, "{report}");
    }
}

#[tokio::test]
async fn an_untouched_chain_verifies_from_its_start_and_from_a_midpoint() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 5).await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["intact"], true);
    let head = report["headSeq"].as_i64().unwrap();
    assert!(head >= 8, "seeding and five tasks wrote entries: {report}");
    assert_eq!(report["verified"], head);
    let (code, from) = verify(&db, &["--from", "4"]).await;
    assert_eq!(code, 0);
    assert_eq!(from["verified"], head - 3);
    // The API answers the same.
    let api = svc.verify_activity(&s.reader, None).await.unwrap();
    assert!(api.intact);
    assert_eq!(api.head_hash.as_deref(), report["headHash"].as_str());
    // Operator mode without -w checks every workspace.
    let (code, out, _) = cli(&db, &["activity", "verify"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("acme: intact"), "{out}");
}

#[tokio::test]
async fn an_edited_entry_is_named_as_altered() {
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 4).await;
    let conn = raw(&db).await;
    let ws = s.ws();
    let victim = id_at(&conn, ws, 5).await;
    exec(
        &conn,
        &format!("UPDATE activity SET description = 'nothing happened' WHERE workspace_id = '{ws}' AND seq = 5"),
    )
    .await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_break(&report, "altered", 5, Some(&victim));
    assert_eq!(report["verified"], 4);
}

#[tokio::test]
async fn a_deleted_entry_is_named_with_or_without_renumbering() {
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 4).await;
    let conn = raw(&db).await;
    let ws = s.ws();
    exec(
        &conn,
        &format!("DELETE FROM activity WHERE workspace_id = '{ws}' AND seq = 4"),
    )
    .await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_break(&report, "deleted", 4, None);

    // Closing the gap by renumbering what follows does not hide it.
    let next = id_at(&conn, ws, 5).await;
    exec(
        &conn,
        &format!("UPDATE activity SET seq = -(seq - 1) WHERE workspace_id = '{ws}' AND seq > 4"),
    )
    .await;
    exec(
        &conn,
        &format!("UPDATE activity SET seq = -seq WHERE workspace_id = '{ws}' AND seq < 0"),
    )
    .await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_break(&report, "deleted", 4, Some(&next));

    // Cutting the tail off is seen against the chain head.
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 4).await;
    let conn = raw(&db).await;
    let ws = s.ws();
    let (_, before) = verify(&db, &[]).await;
    let head = before["headSeq"].as_i64().unwrap();
    exec(
        &conn,
        &format!("DELETE FROM activity WHERE workspace_id = '{ws}' AND seq = {head}"),
    )
    .await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_break(&report, "deleted", head, None);
}

/// Copies entry 2 as a forged entry with id `forged` at `seq` (NULL: outside the chain).
async fn forge(conn: &DatabaseConnection, ws: &str, seq: &str) {
    exec(
        conn,
        &format!(
            "INSERT INTO activity (id, workspace_id, actor_kind, actor_id, agent_id, activity_type, \
             outcome, description, metadata, project_id, task_id, page_id, created_at, seq, hash) \
             SELECT 'forged', workspace_id, actor_kind, actor_id, agent_id, activity_type, outcome, \
             'approved by nobody', metadata, project_id, task_id, page_id, created_at, {seq}, {h} \
             FROM activity WHERE workspace_id = '{ws}' AND seq = 2",
            h = if seq == "NULL" { "NULL" } else { "hash" }
        ),
    )
    .await;
}

#[tokio::test]
async fn an_inserted_entry_is_named_in_or_outside_the_chain() {
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 4).await;
    let conn = raw(&db).await;
    let ws = s.ws();
    forge(&conn, ws, "NULL").await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_eq!(report["problem"]["kind"], "inserted", "{report}");
    assert_eq!(report["problem"]["entryId"], "forged");

    // Made room for at position 3 by renumbering the rest.
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 4).await;
    let conn = raw(&db).await;
    let ws = s.ws();
    exec(
        &conn,
        &format!("UPDATE activity SET seq = -(seq + 1) WHERE workspace_id = '{ws}' AND seq >= 3"),
    )
    .await;
    exec(
        &conn,
        &format!("UPDATE activity SET seq = -seq WHERE workspace_id = '{ws}' AND seq < 0"),
    )
    .await;
    forge(&conn, ws, "3").await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_break(&report, "inserted", 3, Some("forged"));
}

/// The check for entries written around the store, which runs before every audit checkpoint,
/// reads the partial index of such entries (normally empty), not every entry of the workspace:
/// the plan of the store's query names it on both databases.
#[tokio::test]
async fn the_lookup_of_entries_outside_the_chain_reads_only_their_index() {
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 3).await;
    let conn = raw(&db).await;
    // As SeaORM writes `Tx::first_unchained_activity`'s query.
    let query = format!(
        r#"SELECT "activity"."id" FROM "activity" WHERE "activity"."workspace_id" = '{}' AND ("activity"."seq" IS NULL OR "activity"."hash" IS NULL) ORDER BY "activity"."id" ASC LIMIT 1"#,
        s.ws()
    );
    let plan = plan_of(&conn, &query).await;
    assert!(plan.contains("ix_activity_unchained"), "{plan}");
    assert!(!plan.to_lowercase().contains("seq scan"), "{plan}");
    // The index still finds what it is for.
    forge(&conn, s.ws(), "NULL").await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_eq!(report["problem"]["entryId"], "forged", "{report}");
}

/// The plan the database would run `query` with. On PostgreSQL sequential scans are off: with a
/// few rows one is cheaper anyway, and the question is whether the planner can use an index for
/// the query's conditions at all.
async fn plan_of(conn: &DatabaseConnection, query: &str) -> String {
    let backend = conn.get_database_backend();
    let tx = conn.begin().await.unwrap();
    let (explain, column) = match backend {
        DbBackend::Sqlite => (format!("EXPLAIN QUERY PLAN {query}"), "detail"),
        _ => {
            exec_in(&tx, "SET LOCAL enable_seqscan = off").await;
            (format!("EXPLAIN {query}"), "QUERY PLAN")
        }
    };
    let rows = tx
        .query_all_raw(Statement::from_string(backend, explain))
        .await
        .unwrap();
    let plan: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", column).unwrap())
        .collect();
    plan.join("\n")
}

/// Entries an agent's calls append name the agent as actor and as `agent_id`, and only the agent
/// index holds them: the actor index keeps the rest (members, the system, rows that break the
/// rule). A filter on an actor reads both and merges them, so it finds every entry of that actor,
/// page by page, whoever the actor is; each read uses its index on both databases.
#[tokio::test]
async fn a_filter_on_an_actor_finds_all_its_entries_through_two_indexes() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    approved_agent(&w.svc, &w.admin, "other", &[Permission::ReadTasks]).await;
    let s = spawn_http(&w.db.url).await;
    let c = http_client(&s.url, &key, ProtocolVersion::V_2025_11_25).await;
    reads_between_changes(&w, &c).await;
    server::ok(
        &c,
        "agent_log_activity",
        json!({"type": "note", "description": "a note"}),
    )
    .await;
    let ws = w.admin.workspace().id.clone();
    // Rows that break the rule, written around the store: an agent acting with no `agent_id`,
    // and one acting about another agent.
    let conn = raw(&w.db).await;
    let odd_none = new_id();
    for (id, agent) in [(odd_none.as_str(), "NULL"), (&new_id(), "'other'")] {
        exec(
            &conn,
            &format!(
                "INSERT INTO activity (id, workspace_id, actor_kind, actor_id, agent_id, \
                 activity_type, outcome, description, metadata, created_at) \
                 SELECT '{id}', workspace_id, actor_kind, actor_id, {agent}, activity_type, \
                 outcome, description, metadata, created_at FROM activity \
                 WHERE workspace_id = '{ws}' AND actor_id = 'bot' LIMIT 1"
            ),
        )
        .await;
    }

    let everything = crate::support::all_activity(&w.svc, &ws).await;
    let page_through = |actor: &'static str, agent: Option<&'static str>| {
        let svc = &w.svc;
        let admin = &w.admin;
        async move {
            let mut seen: Vec<String> = Vec::new();
            loop {
                let page = svc
                    .list_activity(
                        admin,
                        ActivityQuery {
                            actor_id: Some(actor.into()),
                            agent_id: agent.map(Into::into),
                            before: seen.last().cloned(),
                            limit: 2,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                if page.is_empty() {
                    return seen;
                }
                seen.extend(page.into_iter().map(|e| e.id));
            }
        }
    };
    for (actor, agent) in [
        ("bot", None),
        ("admin@acme.test", None),
        ("admin@acme.test", Some("bot")),
        ("system", None),
        ("bot", Some("other")),
        ("nobody", None),
    ] {
        let expected: Vec<String> = everything
            .iter()
            .filter(|e| {
                e.actor_id == actor && agent.is_none_or(|a| e.agent_id.as_deref() == Some(a))
            })
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(
            page_through(actor, agent).await,
            expected,
            "{actor} {agent:?}"
        );
        if actor == "bot" && agent.is_none() {
            // Three reads' decisions, the note's decision and the note, both odd rows.
            assert_eq!(expected.len(), 7, "{expected:?}");
            assert!(expected.contains(&odd_none));
        }
    }

    // As SeaORM writes `Tx::query_activity`'s two reads.
    let by_agent = format!(
        r#"SELECT "activity"."id" FROM "activity" WHERE "activity"."workspace_id" = '{ws}' AND "activity"."actor_kind" = 'agent' AND "activity"."agent_id" = 'bot' AND "activity"."actor_id" = 'bot' ORDER BY "activity"."id" DESC LIMIT 50"#
    );
    let by_others = format!(
        r#"SELECT "activity"."id" FROM "activity" WHERE "activity"."workspace_id" = '{ws}' AND "activity"."actor_id" = 'bot' AND ("actor_kind" <> 'agent' OR "agent_id" IS NULL OR "agent_id" <> "actor_id") ORDER BY "activity"."id" DESC LIMIT 50"#
    );
    if w.db.is_postgres() {
        // PostgreSQL plans from statistics: on a handful of rows, reading the workspace's key
        // backwards and filtering costs the same as any index. A trail where the actor is a few
        // entries among thousands (those of another agent, whose seqs are out of the way) asks
        // the planner what it would do on a real one.
        exec(
            &conn,
            &format!(
                "INSERT INTO activity (id, workspace_id, actor_kind, actor_id, agent_id, \
                 activity_type, outcome, description, metadata, created_at, seq, hash) \
                 SELECT 'filler-' || g, '{ws}', 'agent', 'other', 'other', 'tool.call', \
                 'allowed', '', '{{}}', now(), 1000000 + g, 'x' FROM generate_series(1, 5000) g"
            ),
        )
        .await;
        exec(&conn, "ANALYZE activity").await;
    }
    for (query, index) in [
        (by_agent, "ix_activity_agent"),
        (by_others, "ix_activity_actor"),
    ] {
        let plan = plan_of(&conn, &query).await;
        assert!(plan.contains(index), "{index}: {plan}");
        assert!(!plan.to_lowercase().contains("seq scan"), "{plan}");
    }
    // The actor index is partial: an agent's own entries go into the agent index only.
    let definition = if w.db.is_postgres() {
        "SELECT indexdef AS d FROM pg_indexes WHERE indexname = 'ix_activity_actor'"
    } else {
        "SELECT sql AS d FROM sqlite_master WHERE name = 'ix_activity_actor'"
    };
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            definition.to_owned(),
        ))
        .await
        .unwrap();
    let definition: String = rows[0].try_get("", "d").unwrap();
    assert!(definition.contains("WHERE"), "{definition}");
}

async fn exec_in(tx: &DatabaseTransaction, sql: &str) {
    tx.execute_raw(Statement::from_string(
        tx.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn swapped_entries_are_named_as_reordered() {
    let db = TestDb::new().await;
    let (_, s) = trail_of(&db, 4).await;
    let conn = raw(&db).await;
    let ws = s.ws();
    let (a, b) = (id_at(&conn, ws, 3).await, id_at(&conn, ws, 6).await);
    exec(
        &conn,
        &format!("UPDATE activity SET seq = -1 WHERE id = '{a}'"),
    )
    .await;
    exec(
        &conn,
        &format!("UPDATE activity SET seq = 3 WHERE id = '{b}'"),
    )
    .await;
    exec(
        &conn,
        &format!("UPDATE activity SET seq = 6 WHERE id = '{a}'"),
    )
    .await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 9);
    assert_break(&report, "reordered", 3, Some(&b));
    // The API reports the same break.
    let svc = db.service().await;
    let admin = auth::member(svc.store(), "acme", "admin@acme.test")
        .await
        .unwrap();
    let api = svc.verify_activity(&admin, None).await.unwrap();
    assert_eq!(api.problem.unwrap().kind, ChainBreak::Reordered);
}

#[tokio::test]
async fn replicas_writing_at_once_keep_one_unbroken_chain() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 0).await;
    // Two stores with their own pools, as two replicas would have, plus batched writes.
    let (a, b) = (
        Service::new(db.store().await),
        Service::new(db.store().await),
    );
    let mut jobs = Vec::new();
    for (n, svc) in [a, b].into_iter().enumerate() {
        let admin = s.admin.clone();
        let project = s.project.id.clone();
        jobs.push(tokio::spawn(async move {
            for i in 0..25 {
                svc.create_task(&admin, &project, &format!("r{n} {i}"), "")
                    .await
                    .unwrap();
            }
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
    let r = svc.verify_activity(&s.admin, None).await.unwrap();
    assert!(r.intact, "{r:?}");
    assert_eq!(r.verified as i64, r.head_seq);
    assert!(r.head_seq >= 50);
}

#[tokio::test]
async fn two_server_processes_append_to_one_chain() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let (s1, s2) = (spawn_http(&w.db.url).await, spawn_http(&w.db.url).await);
    let mut jobs = Vec::new();
    for url in [s1.url.clone(), s2.url.clone()] {
        let key = key.clone();
        jobs.push(tokio::spawn(async move {
            let c = http_client(&url, &key, ProtocolVersion::V_2025_11_25).await;
            for _ in 0..20 {
                server::ok(&c, "agent_my_assignments", json!({})).await;
            }
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
    let r = w.svc.verify_activity(&w.admin, None).await.unwrap();
    assert!(r.intact, "{r:?}");
    let calls = server::audit(&w.svc, &w.admin, "bot").await;
    assert!(
        calls
            .iter()
            .filter(|e| e.activity_type == "tool.call")
            .count()
            >= 40
    );
}

/// A server on a SQLite file commits the gate's decision entries around the pool
/// (`store::direct`); they must be stored as the pool stores entries: one chain with the
/// service's own changes, timestamps in the pool's text format, agents and keys marked as seen.
/// Three reads by `c`, each followed by a task the admin creates: decision entries (the server's)
/// between changes written through the pool (the service's).
async fn reads_between_changes(w: &server::World, c: &server::Client) {
    for i in 0..3 {
        server::ok(c, "agent_my_assignments", json!({})).await;
        w.svc
            .create_task(&w.admin, &w.project.id, &format!("between {i}"), "")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn decision_entries_and_service_changes_share_one_chain_and_one_format() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let s = spawn_http(&w.db.url).await;
    let c = http_client(&s.url, &key, ProtocolVersion::V_2025_11_25).await;
    reads_between_changes(&w, &c).await;
    let r = w.svc.verify_activity(&w.admin, None).await.unwrap();
    assert!(r.intact, "{r:?}");
    let calls = server::audit(&w.svc, &w.admin, "bot").await;
    let decisions: Vec<_> = calls
        .iter()
        .filter(|e| e.activity_type == "tool.call")
        .collect();
    assert_eq!(decisions.len(), 3, "{calls:?}");
    let shown = w.svc.agent_details(&w.admin, "bot").await.unwrap();
    // Entries keep microseconds; the marks keep what the clock gave.
    use chrono::SubsecRound;
    let seen = shown
        .agent
        .last_seen_at
        .expect("the calls mark the agent as seen");
    let first = decisions.iter().map(|e| e.created_at).min().unwrap();
    assert_eq!(
        seen.trunc_subsecs(6),
        first,
        "seen as of the first call (then at most every 30 s)"
    );
    let used = shown.credentials.iter().filter_map(|c| c.last_used_at);
    assert!(used.map(|t| t.trunc_subsecs(6)).any(|t| t == first));

    if w.db.url.starts_with("sqlite") {
        // As text: SQLite compares timestamps as strings, so both writers must agree.
        let conn = raw(&w.db).await;
        let rows = conn
            .query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT created_at AS t FROM activity UNION ALL \
                 SELECT last_seen_at FROM agents WHERE last_seen_at IS NOT NULL UNION ALL \
                 SELECT last_used_at FROM credentials WHERE last_used_at IS NOT NULL"
                    .to_owned(),
            ))
            .await
            .unwrap();
        let texts: Vec<String> = rows.iter().map(|r| r.try_get("", "t").unwrap()).collect();
        assert!(texts.len() >= 10, "{texts:?}");
        for t in &texts {
            let shape = t.len() >= 25 && t.as_bytes()[10] == b'T' && t.ends_with("+00:00");
            assert!(shape, "{t} is not in the pool's format ({texts:?})");
            chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
}

#[tokio::test]
async fn pruning_keeps_the_rest_verifiable_and_export_streams_hashes() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 3).await;
    let store = Store::open(&db.url).await.unwrap();
    let tx = store.write().await.unwrap();
    let removed = tx.prune_activity(s.ws(), chrono::Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    assert!(removed > 0);
    svc.create_task(&s.admin, &s.project.id, "after", "")
        .await
        .unwrap();
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["prunedThrough"], removed as i64);
    assert_eq!(report["fromSeq"], removed as i64 + 1);

    let (code, out, err) = cli(
        &db,
        &[
            "activity",
            "export",
            "-w",
            "acme",
            "--as",
            "reader@acme.test",
            "--format",
            "jsonl",
            "--since",
            &removed.to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as i64,
        report["headSeq"].as_i64().unwrap() - removed as i64
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], removed as i64 + 1 + i as i64);
        assert_eq!(l["hash"].as_str().unwrap().len(), 64);
    }
    assert_eq!(lines.last().unwrap()["hash"], report["headHash"]);
}

#[tokio::test]
async fn the_migration_chains_entries_written_before_it() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    // Up to the outbox migration: the schema of the release before the chain.
    store.migrate_steps(5).await.unwrap();
    let conn = raw(&db).await;
    exec(&conn, "INSERT INTO workspaces (id, slug, name, settings, lock_version, created_at, updated_at) \
        VALUES ('w1', 'acme', 'Acme', '{}', 0, '2026-11-01 10:00:00+00:00', '2026-11-01 10:00:00+00:00')").await;
    for i in 0..4 {
        exec(&conn, &format!(
            "INSERT INTO activity (id, workspace_id, actor_kind, actor_id, agent_id, activity_type, outcome, \
             description, metadata, project_id, task_id, page_id, created_at) VALUES \
             ('0190000{i}', 'w1', 'system', '', NULL, 'note', NULL, 'old {i}', '{{\"n\":{i}}}', NULL, NULL, NULL, \
             '2026-11-01 10:00:0{i}.123456+00:00')"
        )).await;
    }
    store.migrate().await.unwrap();
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["headSeq"], 4);
    assert_eq!(report["verified"], 4);
}

/// Every activity row, each as one line of all its columns, in (workspace, id) order.
async fn activity_rows(conn: &DatabaseConnection) -> Vec<String> {
    let sql = "SELECT id || '|' || workspace_id || '|' || actor_kind || '|' || actor_id || '|' || \
               COALESCE(agent_id, '-') || '|' || activity_type || '|' || COALESCE(outcome, '-') || \
               '|' || description || '|' || metadata || '|' || COALESCE(project_id, '-') || '|' || \
               COALESCE(task_id, '-') || '|' || COALESCE(page_id, '-') || '|' || created_at || \
               '|' || COALESCE(seq, -1) || '|' || COALESCE(hash, '-') AS r \
               FROM activity ORDER BY workspace_id, id";
    texts(conn, sql, "r").await
}

/// The activity table's indexes, name and definition, and its own definition on SQLite.
async fn activity_schema(conn: &DatabaseConnection) -> Vec<String> {
    let sql = match conn.get_database_backend() {
        DbBackend::Sqlite => {
            "SELECT type || ' ' || name || ': ' || sql AS d FROM sqlite_master \
             WHERE tbl_name = 'activity' AND sql IS NOT NULL ORDER BY type, name"
        }
        _ => {
            "SELECT 'index ' || indexname || ': ' || indexdef AS d FROM pg_indexes \
             WHERE tablename = 'activity' ORDER BY indexname"
        }
    };
    texts(conn, sql, "d").await
}

/// The text column `column` of every row `sql` returns.
async fn texts(conn: &DatabaseConnection, sql: &str, column: &str) -> Vec<String> {
    conn.query_all_raw(Statement::from_string(
        conn.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<String>("", column).unwrap())
    .collect()
}

/// The migration that keys the activity table by (workspace, id) keeps every row as it was and
/// every other index, drops the index the key makes redundant, and leaves a chain that verifies
/// and goes on growing.
#[tokio::test]
async fn keying_the_trail_by_workspace_keeps_every_entry_and_the_chain() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    const KEYED: &str = "m20261206_100000_activity_workspace_key";
    let pending = store.pending_migrations().await.unwrap();
    let at = pending.iter().position(|m| m == KEYED).unwrap();
    store.migrate_steps(at as u32).await.unwrap();
    // A trail written by the service on the schema before: tasks and an agent's approval.
    let svc = Service::new(store.clone());
    let s = seed_workspace(&svc, "acme").await;
    for i in 0..20 {
        svc.create_task(&s.admin, &s.project.id, &format!("task {i}"), "")
            .await
            .unwrap();
    }
    approved_agent(&svc, &s.admin, "bot", &[Permission::ReadTasks]).await;
    let conn = raw(&db).await;
    let before = activity_rows(&conn).await;
    let schema_before = activity_schema(&conn).await;
    assert!(before.len() > 20, "{before:?}");
    assert!(
        schema_before
            .iter()
            .any(|d| d.contains("ix_activity_workspace")),
        "{schema_before:?}"
    );

    assert_eq!(store.migrate_steps(1).await.unwrap(), [KEYED]);
    assert_eq!(activity_rows(&conn).await, before);
    let schema = activity_schema(&conn).await;
    let kept: Vec<&String> = schema_before
        .iter()
        .filter(|d| d.starts_with("index ") && !d.contains("ix_activity_workspace"))
        .filter(|d| !d.contains("activity_pkey") && !d.contains("sqlite_autoindex"))
        .collect();
    for d in &kept {
        assert!(schema.contains(d), "{d} is gone: {schema:?}");
    }
    assert!(kept.len() >= 8, "{kept:?}");
    assert!(
        !schema.iter().any(|d| d.contains("ix_activity_workspace")),
        "{schema:?}"
    );
    let key = match conn.get_database_backend() {
        DbBackend::Sqlite => r#"PRIMARY KEY ("workspace_id", "id"))"#,
        _ => "activity_pkey ON public.activity USING btree (workspace_id, id)",
    };
    assert!(schema.iter().any(|d| d.contains(key)), "{schema:?}");
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
    let head = report["headSeq"].as_i64().unwrap();
    assert_eq!(head, before.len() as i64, "{report}");

    // The chain goes on from where it was, through the pool and the audit writer alike.
    svc.create_task(&s.admin, &s.project.id, "after", "")
        .await
        .unwrap();
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["headSeq"], head + 1, "{report}");
    // An id appears once per workspace, as before.
    let first = before[0].split('|').next().unwrap().to_owned();
    let dup = conn
        .execute_raw(Statement::from_string(
            conn.get_database_backend(),
            format!(
                "INSERT INTO activity (id, workspace_id, actor_kind, actor_id, activity_type, \
                 description, metadata, created_at) SELECT id, workspace_id, actor_kind, \
                 actor_id, activity_type, description, metadata, created_at FROM activity \
                 WHERE id = '{first}'"
            ),
        ))
        .await;
    assert!(dup.is_err(), "a second row with id {first} was written");

    // Down and up again: the rows stay as they are each way, and so does the chain.
    use migrations::MigratorTrait;
    let after = activity_rows(&conn).await;
    migrations::Migrator::down(&conn, Some(1)).await.unwrap();
    assert_eq!(activity_rows(&conn).await, after);
    // Indexes by their definitions (SQLite keeps a table's own text as it was last written).
    let indexes = |schema: Vec<String>| -> Vec<String> {
        schema
            .into_iter()
            .filter(|d| d.starts_with("index "))
            .collect()
    };
    assert_eq!(
        indexes(activity_schema(&conn).await),
        indexes(schema_before.clone())
    );
    migrations::Migrator::up(&conn, Some(1)).await.unwrap();
    assert_eq!(activity_rows(&conn).await, after);
    assert_eq!(activity_schema(&conn).await, schema);
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
    store.migrate().await.unwrap();
    store.close().await;
}

// ---- grants that expire ----

#[tokio::test]
async fn an_expired_grant_is_refused_recorded_once_and_can_be_extended() {
    let db = TestDb::new().await;
    let svc = db.service().await;
    let s = seed_workspace(&svc, "acme").await;
    crate::support::request(
        &svc,
        &s.admin,
        "bot",
        &[Permission::ReadTasks, Permission::WriteTasks],
    )
    .await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(6);
    let (agent, key) = svc
        .approve_agent_until(
            &s.admin,
            "bot",
            Some(PermissionSet::new([Permission::ReadTasks])),
            Some(until),
        )
        .await
        .unwrap();
    assert_eq!(agent.access_expires_at, Some(until.trunc_subsecs_micros()));
    assert!(
        auth::agent(svc.store(), key.expose())
            .await
            .unwrap()
            .is_ok()
    );
    // A temporary extra permission lapses on its own, sooner.
    let temp_until = chrono::Utc::now() + chrono::Duration::seconds(3);
    svc.grant_temporary(
        &s.admin,
        "bot",
        PermissionSet::new([Permission::WriteTasks]),
        temp_until,
    )
    .await
    .unwrap();
    let caller = auth::agent(svc.store(), key.expose())
        .await
        .unwrap()
        .unwrap();
    assert!(caller.has(Permission::WriteTasks));
    sleep_until(temp_until).await;
    let caller = auth::agent(svc.store(), key.expose())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !caller.has(Permission::WriteTasks),
        "the temporary permission lapsed"
    );
    assert!(caller.has(Permission::ReadTasks));

    sleep_until(until).await;
    let refused = auth::agent(svc.store(), key.expose())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.error, auth::AgentAuthError::AccessExpired);
    // Two replicas racing to record it: one event, one entry.
    let (a, b) = (
        Service::new(db.store().await),
        Service::new(db.store().await),
    );
    let (ra, rb) = tokio::join!(a.record_expired_access(), b.record_expired_access());
    assert_eq!(ra.unwrap().len() + rb.unwrap().len(), 1);
    assert!(svc.record_expired_access().await.unwrap().is_empty());
    let expired = svc
        .list_activity(
            &s.admin,
            ActivityQuery {
                activity_type: Some("agent.access_expired".into()),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    let events = svc
        .store()
        .read()
        .await
        .unwrap()
        .list_events(s.ws(), None, 500)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == EventType::AccessExpired)
            .count(),
        1
    );

    // A human extends it: the same key works again.
    svc.extend_access(
        &s.admin,
        "bot",
        Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    assert!(
        auth::agent(svc.store(), key.expose())
            .await
            .unwrap()
            .is_ok()
    );
    // An end in the past is refused.
    assert!(
        svc.extend_access(
            &s.admin,
            "bot",
            Some(chrono::Utc::now() - chrono::Duration::hours(1))
        )
        .await
        .is_err()
    );
}

/// Sleeps until a little after `t`.
async fn sleep_until(t: chrono::DateTime<chrono::Utc>) {
    let left = (t - chrono::Utc::now()).num_milliseconds().max(0) as u64;
    tokio::time::sleep(Duration::from_millis(left + 300)).await;
}

trait Micros {
    fn trunc_subsecs_micros(self) -> Self;
}

impl Micros for chrono::DateTime<chrono::Utc> {
    fn trunc_subsecs_micros(self) -> Self {
        use chrono::SubsecRound;
        self.trunc_subsecs(6)
    }
}

#[tokio::test]
async fn auto_approval_can_carry_a_maximum_duration() {
    let db = TestDb::new().await;
    let svc = db.service().await;
    let s = seed_workspace(&svc, "acme").await;
    svc.update_settings(
        &s.admin,
        &[
            ("auto_approve_permissions".into(), "read:tasks".into()),
            ("auto_approve_capabilities".into(), "docs".into()),
            ("auto_approve_max_hours".into(), "2".into()),
        ],
    )
    .await
    .unwrap();
    let out = crate::support::request(&svc, &s.admin, "bot", &[Permission::ReadTasks]).await;
    let ends = out
        .agent
        .access_expires_at
        .expect("auto-approval carries an end");
    let hours = (ends - chrono::Utc::now()).num_minutes();
    assert!((110..=120).contains(&hours), "{hours} minutes");
}

/// Expiry through the real server: approve with the CLI `--for`, both transports work, then after
/// the end the next calls are refused, the HTTP session is closed (a later extension does not
/// revive it), and `agent.access_expired` is recorded once although two servers watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_through_the_real_servers_closes_sessions() {
    let w = world().await;
    w.svc
        .request_access(
            &w.admin,
            crate::support::access_request("bot", &[Permission::ReadTasks]),
        )
        .await
        .unwrap();
    let (code, out, err) = cli(
        &w.db,
        &[
            "-w",
            "acme",
            "--as",
            "admin@acme.test",
            "--json",
            "agent",
            "approve",
            "bot",
            "--grant",
            "read:tasks",
            "--for",
            "20s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let approved: Value = serde_json::from_str(&out).unwrap();
    let key = approved["apiKey"].as_str().unwrap().to_owned();
    assert!(approved["agent"]["accessExpiresAt"].is_string());

    let (s1, s2) = (spawn_http(&w.db.url).await, spawn_http(&w.db.url).await);
    let raw_http = reqwest::Client::new();
    let session = open_session(&raw_http, &s1.url, &key).await;
    let http = http_client(&s1.url, &key, ProtocolVersion::V_2025_11_25).await;
    let stateless = http_client(&s2.url, &key, ProtocolVersion::V_2026_07_28).await;
    let stdio = stdio_client(&w.db.url, &key).await;
    for c in [&http, &stateless, &stdio] {
        server::ok(c, "agent_my_assignments", json!({})).await;
    }
    let ends: chrono::DateTime<chrono::Utc> = approved["agent"]["accessExpiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    sleep_until(ends).await;
    for c in [&http, &stateless, &stdio] {
        assert!(
            call(c, "agent_my_assignments", json!({})).await.is_err(),
            "refused once expired"
        );
    }
    // Recorded once, by one of the two servers' watchers.
    let mut recorded = 0;
    for _ in 0..50 {
        recorded = server::audit(&w.svc, &w.admin, "bot")
            .await
            .iter()
            .filter(|e| e.activity_type == "agent.access_expired")
            .count();
        if recorded > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = server::audit(&w.svc, &w.admin, "bot").await;
    assert_eq!(
        again
            .iter()
            .filter(|e| e.activity_type == "agent.access_expired")
            .count(),
        1
    );
    // The session died with the grant: extending access does not bring it back.
    let (code, _, err) = cli(
        &w.db,
        &[
            "-w",
            "acme",
            "--as",
            "admin@acme.test",
            "agent",
            "extend",
            "bot",
            "--for",
            "1h",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let list = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/list" });
    let res = post(&raw_http, &s1.url, &key, Some(&session), &list)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "the session was closed when the grant expired"
    );
    let session = open_session(&raw_http, &s1.url, &key).await;
    let res = post(&raw_http, &s1.url, &key, Some(&session), &list)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a new session works after the extension");
    let fresh = http_client(&s1.url, &key, ProtocolVersion::V_2025_11_25).await;
    server::ok(&fresh, "agent_my_assignments", json!({})).await;
    let r = w.svc.verify_activity(&w.admin, None).await.unwrap();
    assert!(r.intact, "{r:?}");
}

// ---- signed checkpoints ----

/// Rewrites entry `seq`'s description and recomputes every hash after it, as someone with write
/// access to the database would to hide an edit: the plain chain walk then finds nothing.
async fn rewrite_history(db: &TestDb, ws: &str, seq: i64) {
    let conn = raw(db).await;
    exec(
        &conn,
        &format!(
            "UPDATE activity SET description = 'nothing happened here' WHERE workspace_id = '{ws}' AND seq = {seq}"
        ),
    )
    .await;
    let store = Store::open(&db.url).await.unwrap();
    let tx = store.read().await.unwrap();
    let entries = tx.chained_activity(ws, 1, i64::MAX, 100_000).await.unwrap();
    drop(tx);
    let mut prev = parallax_mcp::store::genesis_hash(ws);
    for e in &entries {
        let s = e.seq.unwrap();
        let h = e.hash_after(&prev, s);
        if s >= seq {
            exec(
                &conn,
                &format!(
                    "UPDATE activity SET hash = '{h}' WHERE workspace_id = '{ws}' AND seq = {s}"
                ),
            )
            .await;
        }
        prev = h;
    }
    exec(
        &conn,
        &format!("UPDATE activity_chains SET last_hash = '{prev}' WHERE workspace_id = '{ws}'"),
    )
    .await;
}

#[tokio::test]
async fn a_checkpoint_exported_before_a_rewrite_makes_verify_fail_after_it() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoint.json");
    let file_arg = file.to_str().unwrap();
    let (code, _, err) = cli(
        &db,
        &["activity", "checkpoint", "-w", "acme", "--out", file_arg],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let cp: SignedCheckpoint =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(cp.workspace_id, s.ws());
    assert!(cp.seq >= 7, "{cp:?}");
    parallax_mcp::service::check_signature(&cp).unwrap();

    // Intact, and still intact after the log grew past the checkpoint.
    let verify_cp = |extra: &'static [&'static str]| {
        let db = &db;
        let file_arg = file_arg.to_owned();
        async move {
            let mut args = vec!["activity", "verify", "--checkpoint", file_arg.as_str()];
            args.extend_from_slice(extra);
            cli(db, &args).await
        }
    };
    let (code, out, err) = verify_cp(&[]).await;
    assert_eq!(code, 0, "{out} / {err}");
    assert!(out.contains("extends the checkpoint"), "{out}");
    svc.create_task(&s.admin, &s.project.id, "after the checkpoint", "")
        .await
        .unwrap();
    let (code, out, err) = verify_cp(&[]).await;
    assert_eq!(code, 0, "{out} / {err}");
    // A member may check it too, and the API-side service agrees.
    let (code, _, err) = verify_cp(&["-w", "acme", "--as", "reader@acme.test"]).await;
    assert_eq!(code, 0, "{err}");

    // A checkpoint file that was edited does not verify.
    let mut forged = cp.clone();
    forged.seq -= 1;
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, serde_json::to_string(&forged).unwrap()).unwrap();
    let (code, _, err) = cli(
        &db,
        &[
            "activity",
            "verify",
            "--checkpoint",
            forged_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("signature does not verify"), "{err}");

    // History before the checkpoint rewritten consistently: the plain walk is fooled…
    rewrite_history(&db, s.ws(), 3).await;
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(
        code, 0,
        "a consistent rewrite passes the plain walk: {report}"
    );
    // …the checkpoint is not.
    let (code, out, err) = verify_cp(&[]).await;
    assert_eq!(code, 9, "{out} / {err}");
    assert!(err.contains("does not extend the checkpoint"), "{err}");
    assert!(out.contains("rewritten"), "{out}");
    let api = svc.verify_checkpoint_as(&s.reader, cp).await.unwrap();
    assert!(!api.extends);
    // Nor will the server sign a new checkpoint over the rewrite.
    let (code, _, err) = cli(&db, &["activity", "checkpoint", "-w", "acme"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("refusing to sign"), "{err}");
}

#[tokio::test]
async fn an_edit_after_a_checkpoint_breaks_verify_against_it() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 3).await;
    let cp = svc.create_checkpoint(&s.admin).await.unwrap();
    // Asking again with nothing new gives the same checkpoint.
    assert_eq!(svc.create_checkpoint(&s.admin).await.unwrap().id, cp.id);
    svc.create_task(&s.admin, &s.project.id, "later", "")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cp.json");
    std::fs::write(&file, serde_json::to_string(&cp).unwrap()).unwrap();
    let conn = raw(&db).await;
    exec(
        &conn,
        &format!(
            "UPDATE activity SET description = 'edited' WHERE workspace_id = '{}' AND seq = {}",
            s.ws(),
            cp.seq + 1
        ),
    )
    .await;
    let (code, out, err) = cli(
        &db,
        &["activity", "verify", "--checkpoint", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 9, "{out} / {err}");
    assert!(out.contains("broken at seq"), "{out}");
    // A read-only member cannot sign checkpoints.
    assert!(matches!(
        svc.create_checkpoint(&s.reader).await,
        Err(parallax_mcp::service::ServiceError::Forbidden(_))
    ));
}

#[tokio::test]
async fn the_server_signs_due_checkpoints_and_emits_them_as_events() {
    let w = world().await;
    w.svc
        .update_settings(
            &w.admin,
            &[
                ("checkpoint_every_entries".into(), "3".into()),
                ("checkpoint_every_minutes".into(), "none".into()),
            ],
        )
        .await
        .unwrap();
    // Two replicas race to sign each head; one checkpoint (and one event) per head is kept.
    let _servers = (spawn_http(&w.db.url).await, spawn_http(&w.db.url).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let list = loop {
        let list = w.svc.list_checkpoints(&w.admin).await.unwrap();
        if !list.is_empty() {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint was signed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cp = &list[0];
    parallax_mcp::service::check_signature(cp).unwrap();
    let head = w.svc.verify_activity(&w.admin, None).await.unwrap();
    assert!(cp.seq <= head.head_seq);
    // Not due again until three more entries: writing them makes the next one.
    for i in 0..3 {
        w.svc
            .create_task(&w.admin, &w.project.id, &format!("more {i}"), "")
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w.svc.list_checkpoints(&w.admin).await.unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = w.svc.events_after(&w.admin, 0, 1000).await.unwrap();
    let signed: Vec<&Event> = events
        .iter()
        .filter(|e| e.event_type == EventType::AuditCheckpoint)
        .collect();
    assert_eq!(signed.len(), 2, "one audit.checkpoint event per checkpoint");
    let from_event: SignedCheckpoint = serde_json::from_value(signed[0].data.clone()).unwrap();
    parallax_mcp::service::check_signature(&from_event).unwrap();
    // The CLI lists them.
    let (code, out, err) = cli(&w.db, &["activity", "checkpoints", "-w", "acme", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Vec<SignedCheckpoint> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].seq > listed[1].seq);
}

#[tokio::test]
async fn a_checkpoint_at_the_pruned_point_still_verifies_and_an_older_one_says_it_cannot() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 3).await;
    let ws = svc.workspace(&s.admin).await.unwrap();
    let prune = || async {
        let store = Store::open(&db.url).await.unwrap();
        let tx = store.write().await.unwrap();
        let n = tx.prune_activity(s.ws(), chrono::Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        n
    };
    let first = svc.create_checkpoint(&s.admin).await.unwrap();
    assert!(prune().await > 0);
    let r = svc.verify_checkpoint(&ws, first.clone()).await.unwrap();
    assert!(r.extends, "{r:?}");
    for i in 0..2 {
        svc.create_task(&s.admin, &s.project.id, &format!("later {i}"), "")
            .await
            .unwrap();
    }
    let second = svc.create_checkpoint(&s.admin).await.unwrap();
    assert!(second.seq > first.seq);
    assert!(prune().await > 0);
    assert!(svc.verify_checkpoint(&ws, second).await.unwrap().extends);
    let r = svc.verify_checkpoint(&ws, first).await.unwrap();
    assert!(!r.extends);
    assert!(r.problem.unwrap().contains("pruned"));
}

/// A `test.note` entry by the system in workspace `ws`.
fn test_note(ws: &str, description: &str) -> ActivityEntry {
    ActivityEntry {
        id: new_id(),
        workspace_id: ws.to_owned(),
        actor_kind: ActorKind::System,
        actor_id: "system".into(),
        agent_id: None,
        activity_type: "test.note".into(),
        outcome: None,
        description: description.into(),
        metadata: json!({}),
        project_id: None,
        task_id: None,
        page_id: None,
        created_at: parallax_mcp::service::now(),
    }
}

/// The descriptions of the workspace's `test.note` entries, newest first.
async fn test_notes(svc: &Service, admin: &auth::MemberCaller) -> Vec<String> {
    svc.list_activity(
        admin,
        ActivityQuery {
            activity_type: Some("test.note".into()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .map(|e| e.description)
    .collect()
}

/// On PostgreSQL the audit writer appends a batch in one statement after the chain head its
/// process last committed (`store::chain::KnownHeads`). When another replica moved the head
/// meanwhile, by its own batches or by a service change, that statement must write nothing and
/// the batch land after the new head: every entry chained once, in the order each writer
/// committed them. (On a SQLite file the batches take the direct writer, which must hold too.)
#[tokio::test]
async fn batches_after_another_replica_moved_the_chain_head_land_after_the_new_head() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 1).await;
    let note = |d: String| test_note(s.ws(), &d);
    let (a, b) = (
        Service::new(db.store().await),
        Service::new(db.store().await),
    );
    let mut written = Vec::new();
    for round in 0..3 {
        // `a` learns the head from its own commit; `b` then moves it, by entries and by a
        // change of its own, so `a`'s next batch starts from a head that is no longer there.
        let batch = vec![note(format!("a{round}.0")), note(format!("a{round}.1"))];
        a.writer().append(batch).await.unwrap();
        b.writer().record(note(format!("b{round}"))).await.unwrap();
        b.create_task(&s.admin, &s.project.id, &format!("b's task {round}"), "")
            .await
            .unwrap();
        written.extend([
            format!("a{round}.0"),
            format!("a{round}.1"),
            format!("b{round}"),
        ]);
    }
    a.writer().record(note("a last".into())).await.unwrap();
    written.push("a last".into());

    let r = svc.verify_activity(&s.admin, None).await.unwrap();
    assert!(r.intact, "{r:?}");
    assert_eq!(r.verified as i64, r.head_seq, "{r:?}");
    let mut notes = test_notes(&svc, &s.admin).await;
    notes.reverse();
    assert_eq!(notes, written, "each entry once, in commit order");
}

/// Group commit undoes a failed job with `Tx::rollback_to`: its statements and the activity it
/// queued go, what came before and after stays, and the chain over what stays verifies.
#[tokio::test]
async fn a_savepoint_rolled_back_drops_its_piece_alone_and_the_chain_verifies() {
    let db = TestDb::new().await;
    let (svc, s) = trail_of(&db, 1).await;
    let note = |d: &str| test_note(s.ws(), d);
    let store = Store::open(&db.url).await.unwrap();
    let tx = store.write().await.unwrap();
    tx.insert_activity(&note("before")).await.unwrap();
    let mark = tx.savepoint().await.unwrap();
    tx.insert_activity(&note("undone")).await.unwrap();
    let mut project = s.project.clone();
    project.id = new_id();
    project.name = "made by the undone job".into();
    tx.insert_project(&project).await.unwrap();
    tx.rollback_to(mark).await.unwrap();
    let mark = tx.savepoint().await.unwrap();
    tx.insert_activity(&note("after")).await.unwrap();
    tx.release(mark).await.unwrap();
    tx.commit().await.unwrap();

    let notes = test_notes(&svc, &s.admin).await;
    assert_eq!(notes, ["after", "before"]);
    let tx = store.read().await.unwrap();
    let undone = tx.project(s.ws(), &project.id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(undone.is_none(), "the undone job's project is gone");
    let (code, report) = verify(&db, &[]).await;
    assert_eq!(code, 0, "{report}");
}
