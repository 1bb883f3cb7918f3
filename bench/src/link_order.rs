//! `--link-order`: writes `src/link.order`, the functions `parallax-mcp` runs as it starts and
//! as it answers, for the linker to put first in the release binary (`build.rs`).
//!
//! Most of an idle server's memory is its own code: every page of the binary it runs is mapped
//! from the page cache, and the kernel maps at least 64 kB around each page fault. Laid out as
//! the compiler leaves it, the code start-up runs is spread over the whole text (faults in about
//! 120 of its 300 windows of 64 kB, 12-13 MB resident of 19), so a server that has only started
//! holds most of its binary. Listed first, that code sits together at the start of the text.
//!
//! The server is built with its symbols (`PARALLAX_LINK_SYMBOLS=1`, which only tells `build.rs`
//! not to strip: every crate is built as for the stripped binary, so the names are the release
//! binary's), and run under callgrind with names left mangled, on the benchmark's seeded
//! database (a workspace with a history: start-up on a fresh one runs less). Its counts are
//! dumped once it has started, then again after sessions and a stateless client have made every
//! kind of call (ping, tools/list, reads with a key and a token, writes), idled until the
//! sessions sleep, and called once more; a stdio server then starts and calls too. The file
//! lists every function of the binary the dumps name: start-up's first, then what the calls
//! added, then stdio's. Functions it names that a later build no longer has are skipped by the
//! linker, so a stale file costs memory, never correctness.

use super::instructions::control;
use super::{Call, Cli, Era, HttpClient, Result, Server};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Calls of each kind the HTTP clients make: enough to run what a first call runs once and
/// what every call runs.
const CALLS: usize = 3;

/// Writes the link order into the server's package, from a server built with symbols; with
/// `smoke` (CI, on a debug build), into a temporary file, checked and deleted.
pub async fn run(smoke: bool, server_bin: &Path, cli: &Cli, key: &str) -> Result<()> {
    super::instructions::need_valgrind("--link-order")?;
    let symbols = std::process::Command::new("nm")
        .arg(server_bin)
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !symbols {
        return Err(format!(
            "{} has no symbols: build it with PARALLAX_LINK_SYMBOLS=1 (cargo run does)",
            server_bin.display()
        )
        .into());
    }
    let dir = tempfile::Builder::new()
        .prefix("parallax-link-order-")
        .tempdir()?;
    let out = |name: &str| dir.path().join(name);

    // Start-up, then calls over HTTP: the dumps numbered 1 and 2 of one process.
    let mut cmd = callgrind(&out("serve"), server_bin);
    cmd.args([
        "--database-url",
        &cli.db,
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .env("NO_COLOR", "1")
    .env_remove("RUST_LOG");
    let server = Server::start_within(cmd, Duration::from_secs(180)).await?;
    // What the server starts in the background (the event feed, checkpoints, the pool's
    // connections) has run by then.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = server.pid().to_string();
    control(&["-d", &pid]).await?;
    http_calls(&server.url, key).await?;
    control(&["-d", &pid]).await?;
    drop(server);

    // A stdio server, from start to end of input: its one dump is written as it exits.
    stdio_calls(&out("stdio"), server_bin, cli, key).await?;

    let serve = |n: u32| out(&format!("serve.{n}"));
    let mut listed = HashSet::new();
    let mut order = Vec::new();
    let mut counts = Vec::new();
    for dump in [serve(1), serve(2), out("stdio")] {
        let before = order.len();
        for name in functions(&dump, server_bin)? {
            if listed.insert(name.clone()) {
                order.push(name);
            }
        }
        counts.push(order.len() - before);
    }
    // Each part must have found its own code: the server's entry, the gate, stdio's pump.
    let part_has = |range: std::ops::Range<usize>, what: &str| {
        order[range].iter().any(|name| name.contains(what))
    };
    let (startup, calls) = (counts[0], counts[0] + counts[1]);
    if !part_has(0..startup, "parallax_mcp4main")
        || !part_has(startup..calls, "3mcp4gate")
        || !part_has(calls..order.len(), "3mcp5stdio")
    {
        return Err("the callgrind dumps do not show start-up, the calls and stdio apart".into());
    }
    let path = if smoke {
        dir.path().join("link.order")
    } else {
        order_file()
    };
    let mut text = order.join("\n");
    text.push('\n');
    std::fs::write(&path, text)?;
    println!(
        "{} {}: {} functions run at start-up, {} more by the calls, {} more by stdio",
        if smoke {
            "checked (smoke, not kept)"
        } else {
            "wrote"
        },
        path.display(),
        counts[0],
        counts[1],
        counts[2]
    );
    Ok(())
}

/// Where `build.rs` reads the order: `src/link.order` in the server's package.
fn order_file() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).join("src/link.order")
}

/// `bin` under callgrind, counting from the start, its dumps at `out` (numbered from `.1`).
fn callgrind(out: &Path, bin: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("--demangle=no")
        .arg(format!("--log-file={}.log", out.display()))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bin);
    cmd
}

/// Every kind of call a client makes over HTTP, each `CALLS` times.
async fn http_calls(url: &str, key: &str) -> Result<()> {
    let token = super::access_token(url, key).await?;
    let read = Call::tool("agent_my_assignments", json!({}));
    let answer = super::read_answer(url, key, &read).await?;
    let calls = [
        (Era::Session, Call::method("ping"), key),
        (Era::Session, Call::list(), key),
        (Era::Session, read.clone(), key),
        (Era::Session, read.clone(), &token),
        (Era::Stateless, read.clone(), key),
        (
            Era::Session,
            Call::tool(
                "agent_log_activity",
                json!({ "type": "note", "description": "link order" }),
            ),
            key,
        ),
        (Era::Session, super::note_on_first_task(&answer)?, key),
    ];
    let mut clients = Vec::with_capacity(calls.len());
    for (era, call, bearer) in &calls {
        let mut client = HttpClient::new(url, Some(bearer))?;
        if *era == Era::Session {
            client.open_session().await?;
        }
        for _ in 0..CALLS {
            client.call(call, *era).await?;
        }
        clients.push(client);
    }
    // Idle, the sessions are put to sleep (after a second) and the memory they used goes back to
    // the system; a call then wakes one. Open sessions run that code too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for ((era, call, _), client) in calls.iter().zip(&mut clients) {
        client.call(call, *era).await?;
    }
    Ok(())
}

/// A stdio server started, initialised, asked for the agent's work `CALLS` times, and ended by
/// closing its input.
async fn stdio_calls(out: &Path, server_bin: &Path, cli: &Cli, key: &str) -> Result<()> {
    let mut cmd = callgrind(out, server_bin);
    cmd.args(["--database-url", &cli.db, "stdio"])
        .env("PARALLAX_API_KEY", key)
        .env_remove("RUST_LOG");
    let wait = Duration::from_secs(120);
    let (mut child, mut input, mut lines) = super::stdio_start(cmd, wait).await?;
    let read = Call::tool("agent_my_assignments", json!({}));
    for id in 1..=CALLS as u64 {
        let request = read.body(id, Era::Session);
        input.write_all(format!("{request}\n").as_bytes()).await?;
        let line = tokio::time::timeout(wait, lines.next_line())
            .await
            .map_err(|_| "the stdio server did not answer under callgrind")??
            .ok_or("the stdio server closed its output")?;
        super::Answer::check(line.as_bytes(), id).map_err(|e| format!("stdio: {e}"))?;
    }
    drop(input);
    let ended = tokio::time::timeout(wait, child.wait())
        .await
        .map_err(|_| "the stdio server did not exit at the end of its input")??;
    if !ended.success() {
        return Err(format!("the stdio server exited with {ended}").into());
    }
    Ok(())
}

/// The functions of `bin` a callgrind dump has counts for, in the dump's order.
fn functions(dump: &Path, bin: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dump)
        .map_err(|e| format!("reading the callgrind dump {}: {e}", dump.display()))?;
    let bin = bin.canonicalize()?;
    // Names and objects are given once in full, `(id) name`, and after by `(id)` alone.
    let mut objects = std::collections::HashMap::new();
    let mut names = std::collections::HashMap::new();
    let mut in_bin = false;
    // In the dump's order, repeats included: `run` keeps each name's first place.
    let mut found = Vec::new();
    let split = |rest: &str| -> Option<(String, Option<String>)> {
        let rest = rest.strip_prefix('(')?;
        let (id, name) = rest.split_once(')')?;
        let name = name.trim();
        Some((id.to_owned(), (!name.is_empty()).then(|| name.to_owned())))
    };
    for line in text.lines() {
        // A callee's name or object may be given in full first (`cfn=`, `cob=`).
        let (field, rest) = line.split_once('=').unwrap_or_default();
        let Some((id, name)) = split(rest) else {
            continue;
        };
        match field {
            "ob" | "cob" => {
                if let Some(name) = name {
                    let ours = Path::new(&name).canonicalize().is_ok_and(|p| p == bin);
                    objects.insert(id.clone(), ours);
                }
                if field == "ob" {
                    in_bin = objects.get(&id).copied().unwrap_or(false);
                }
            }
            "fn" | "cfn" => {
                // A recursive call's context is named `name'2`, `name'3`...
                if let Some(name) = name {
                    let name = name.split('\'').next().unwrap_or_default().to_owned();
                    names.insert(id.clone(), name);
                }
                // Code with no symbol is named by its address, or `(below main)`.
                if field == "fn"
                    && in_bin
                    && let Some(name) = names.get(&id)
                    && !name.starts_with("0x")
                    && !name.starts_with('(')
                {
                    found.push(name.clone());
                }
            }
            _ => {}
        }
    }
    if found.is_empty() {
        return Err(format!("no function of the server in {}", dump.display()).into());
    }
    Ok(found)
}
