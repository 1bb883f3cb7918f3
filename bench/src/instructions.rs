//! `--instructions`: the server's instructions per call, counted by valgrind's callgrind.
//!
//! Timings on a shared machine move by tens of per cent from one run to the next; an instruction
//! count hardly does (the same binary and load give the same count to about 0.1% on a machine
//! doing nothing else; with builds or tests beside it, calls batch into commits differently and a
//! row moves by up to a few per cent). Both servers run under `valgrind --tool=callgrind` with
//! instrumentation off; for each row, clients open their sessions and warm up, then
//! instrumentation is switched on (`callgrind_control -i on`) for a fixed number of calls, off
//! again, and the counts dumped. Only the server process is counted: not the load generator, not
//! PostgreSQL.
//!
//! The dumps are kept (the path is printed), so `callgrind_annotate --inclusive=yes FILE` shows
//! where a row's instructions went. SQLite only (`--postgres` is not counted here). Bare is
//! counted serving the read tool's answer too, and the read's ratio to that row is printed.

use super::{Call, Cli, Era, HttpClient, Opts, READ, Result, SAME_ANSWER, Server};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// Sessions per row, each calling in turn with the others (a little concurrency, as a group
/// commit sees it), and calls counted per session after the warm-up.
const CLIENTS: usize = 4;

struct Counted {
    label: &'static str,
    per_call: f64,
    dump: PathBuf,
}

/// The bench's `--instructions` run, on a database `seed` filled; prints its own table.
pub async fn run(o: &Opts, server_bin: &Path, bare_bin: &Path, cli: &Cli, key: &str) -> Result<()> {
    need_valgrind("--instructions")?;
    let (warm, counted) = if o.smoke { (5, 10) } else { (50, 250) };
    let dir = tempfile::Builder::new()
        .prefix("parallax-callgrind-")
        .tempdir()?
        .keep();

    // Checkpoints re-read and verify each entry once, in the background, whenever their timer
    // finds one due: a count that would depend on where the timer fell. Off here; the timed
    // table includes them.
    cli.run(&[
        "workspace",
        "settings",
        "--set",
        "checkpoint_every_entries=none",
        "--set",
        "checkpoint_every_minutes=none",
    ])
    .await?;
    let db = cli.db.as_str();
    let parallax = under_callgrind(
        &dir,
        "parallax",
        server_bin,
        &["--database-url", db, "serve", "--listen", "127.0.0.1:0"],
    )
    .await?;
    let token = super::access_token(&parallax.server.url, key).await?;
    let read = Call::tool("agent_my_assignments", json!({}));

    // The read tool's answer, for bare to serve from memory: the same payload with no gate.
    let answer_file = dir.join("answer.json");
    let answer = super::read_answer(&parallax.server.url, key, &read).await?;
    std::fs::write(&answer_file, answer.to_string())?;
    let write_task = super::note_on_first_task(&answer)?;
    let answer_arg = answer_file.to_str().ok_or("temporary path is not UTF-8")?;

    let bare =
        under_callgrind(&dir, "bare", bare_bin, &["http", "127.0.0.1:0", answer_arg]).await?;
    let echo = Call::tool("echo", json!({ "status": "idle" }));
    let mut rows = vec![
        count(
            &bare,
            "bare rmcp echo",
            None,
            Era::Session,
            &echo,
            warm,
            counted,
        )
        .await?,
        count(
            &bare,
            "bare rmcp echo, 2026-07-28 stateless",
            None,
            Era::Stateless,
            &echo,
            warm,
            counted,
        )
        .await?,
        count(
            &bare,
            SAME_ANSWER,
            None,
            Era::Session,
            &Call::tool("answer", json!({})),
            warm,
            counted,
        )
        .await?,
    ];
    drop(bare);

    let plan: Vec<(&'static str, Era, Call, &str)> = vec![
        (
            "ping (authenticate only)",
            Era::Session,
            Call::method("ping"),
            key,
        ),
        (
            "tools/list (authenticate only)",
            Era::Session,
            Call::list(),
            key,
        ),
        (
            "agent_my_assignments, empty result",
            Era::Session,
            Call::tool("agent_my_assignments", json!({ "status": "blocked" })),
            key,
        ),
        (READ, Era::Session, read.clone(), key),
        ("same, JWT access token", Era::Session, read.clone(), &token),
        (
            "same, 2026-07-28 stateless",
            Era::Stateless,
            read.clone(),
            key,
        ),
        (
            "agent_log_activity (write)",
            Era::Session,
            Call::tool(
                "agent_log_activity",
                json!({ "type": "note", "description": "bench" }),
            ),
            key,
        ),
        (
            "agent_log_activity naming a task (write)",
            Era::Session,
            write_task,
            key,
        ),
    ];
    for (label, era, call, bearer) in &plan {
        if !o.wants(label) {
            continue;
        }
        rows.push(count(&parallax, label, Some(bearer), *era, call, warm, counted).await?);
    }
    drop(parallax);

    println!(
        "\ninstructions per call in the server (callgrind), {CLIENTS} sessions × {counted} calls \
         after {warm} each to warm up{}\n",
        if o.smoke {
            " (smoke: numbers mean little)"
        } else {
            ""
        }
    );
    println!("| call | instructions/call | × bare |");
    println!("| --- | ---: | ---: |");
    let bare_session = rows[0].per_call;
    let bare_stateless = rows[1].per_call;
    for r in &rows {
        let bare = if r.label.contains("stateless") {
            bare_stateless
        } else {
            bare_session
        };
        println!(
            "| {} | {:.0}k | {:.2} |",
            r.label,
            r.per_call / 1000.0,
            r.per_call / bare
        );
    }
    let per_call = |label: &str| rows.iter().find(|r| r.label == label).map(|r| r.per_call);
    if let (Some(read), Some(same)) = (per_call(READ), per_call(SAME_ANSWER)) {
        println!(
            "\n{READ}: {:.2}× the instructions of a bare rmcp call returning the same answer",
            read / same
        );
    }
    if o.smoke {
        // Smoke counts mean nothing: no dumps left behind.
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    println!("\ncallgrind dumps (callgrind_annotate --inclusive=yes FILE):");
    for r in &rows {
        println!("  {}: {}", r.label, r.dump.display());
    }
    Ok(())
}

/// A server running under callgrind, and where it writes its dumps.
struct Profiled {
    server: Server,
    dir: PathBuf,
}

/// `bin args` under callgrind with instrumentation off; its log and dumps go to `dir`.
async fn under_callgrind(dir: &Path, name: &str, bin: &Path, args: &[&str]) -> Result<Profiled> {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!(
            "--log-file={}",
            dir.join(format!("{name}.log")).display()
        ))
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join(format!("{name}.out")).display()
        ))
        .arg(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("PARALLAX_MAX_SESSIONS_PER_AGENT", "100000")
        .env("PARALLAX_MAX_CONNECTIONS_PER_ADDRESS", "100000");
    // Valgrind translates the binary as it first runs it: starting takes a while.
    Ok(Profiled {
        server: Server::start_within(cmd, Duration::from_secs(180)).await?,
        dir: dir.to_owned(),
    })
}

/// One row: warm up, count `counted` calls per session, dump, and read the dump's total.
async fn count(
    profiled: &Profiled,
    label: &'static str,
    bearer: Option<&str>,
    era: Era,
    call: &Call,
    warm: usize,
    counted: usize,
) -> Result<Counted> {
    eprintln!("  counting {label}");
    let (server, dir) = (&profiled.server, profiled.dir.as_path());
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut c = HttpClient::new(&server.url, bearer)?;
        if era == Era::Session {
            c.open_session().await?;
        }
        clients.push(c);
    }
    let clients = calls(clients, call, era, warm).await?;
    let pid = server.pid().to_string();
    control(&["-i", "on", &pid]).await?;
    let clients = calls(clients, call, era, counted).await?;
    control(&["-i", "off", &pid]).await?;
    drop(clients);
    let dumps = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(".out"))
            })
            .collect())
    };
    let before = dumps(dir)?;
    control(&["-d", &pid]).await?;
    let dump = dumps(dir)?
        .into_iter()
        .find(|p| !before.contains(p))
        .ok_or("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&dump)?;
    // `totals:` counts everything since the last dump (`summary:` may say 0 for the last part).
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no totals in {}", dump.display()))?;
    Ok(Counted {
        label,
        per_call: total as f64 / (CLIENTS * counted) as f64,
        dump,
    })
}

/// Every client makes `n` calls, all clients at once; each call must succeed.
async fn calls(
    clients: Vec<HttpClient>,
    call: &Call,
    era: Era,
    n: usize,
) -> Result<Vec<HttpClient>> {
    let mut running = Vec::with_capacity(clients.len());
    for mut c in clients {
        let call = call.clone();
        running.push(tokio::spawn(async move {
            for _ in 0..n {
                c.call(&call, era).await?;
            }
            Ok::<_, super::Error>(c)
        }));
    }
    let mut back = Vec::with_capacity(running.len());
    for r in running {
        back.push(r.await??);
    }
    Ok(back)
}

/// An error naming `mode` unless valgrind and `callgrind_control` are on the PATH.
pub(super) fn need_valgrind(mode: &str) -> Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("{mode} needs {tool} on the PATH (Debian: valgrind)").into());
        }
    }
    Ok(())
}

/// `callgrind_control ARGS`, which must succeed.
pub(super) async fn control(args: &[&str]) -> Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_control {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}
