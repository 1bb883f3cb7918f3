//! The hot-path benchmark: parallax-mcp's gated calls beside a bare rmcp echo server, in one run.
//!
//!     cargo run --release -p parallax-bench              # the full table (a few minutes)
//!     cargo run -p parallax-bench -- --smoke             # seconds; what CI runs so it cannot rot
//!
//! It seeds a fresh SQLite database through the real CLI (one workspace, 1,000 agents, 10,000
//! tasks, the measured agent assigned to 10), starts `parallax-mcp serve` and `bare-echo`, and
//! drives both with a load generator that opens real MCP sessions (one connection and session per
//! client), stateless 2026-07-28 requests and stdio pipes. Repetitions are interleaved: every rep
//! measures the bare baselines and then every parallax row, so the machine's noise hits both.
//! Reported per row: calls/s, p50/p99, server CPU per call (from `/proc`), the ratios to bare, and
//! the load generator's own CPU per call (it shares the cores with the servers).
//! Bare also serves the read tool's answer from memory (its `answer` tool, over HTTP and stdio),
//! and the read is set beside those rows too: what the gate adds to the same payload.
//! Before the load, the memory an open session holds: RSS growth over 200 sessions just opened and
//! after 3 idle seconds, then over 200 more on top of them, idle 3 s (what one more session costs
//! once the process has run the code and grown the tables every session uses)
//! (`BENCH_MEM_DEBUG=1` prints each step, `=full` adds a wake-up of the first batch).
//! Timings are reported, never asserted. Then the console's pages are timed on the same data,
//! with the audit trail topped up to 100,000 entries (`console.rs`).
//!
//! Flags: `--reps N` (3), `--secs S` (10), `--agents N` (1000), `--tasks N` (10000),
//! `--postgres URL` (also measure on a fresh database of that server), `--only TEXT` (rows whose
//! label contains it, or one of its `|`-separated parts; `--only sessions` matches no row:
//! session memory alone), `--smoke`,
//! `--instructions` (instead of timing, count each row's instructions per call in the server
//! under valgrind's callgrind: repeatable on a noisy machine; `instructions.rs`),
//! `--link-order` (instead of timing, write `src/link.order`, the functions the server runs as it
//! starts and answers, which the linker puts first in the release binary; `link_order.rs`).

mod console;
mod instructions;
mod link_order;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const ACCEPT: &str = "application/json, text/event-stream";
const AGENT: &str = "bench-agent";

#[derive(Clone)]
struct Opts {
    reps: usize,
    secs: f64,
    agents: usize,
    tasks: usize,
    postgres: Option<String>,
    smoke: bool,
    /// Only rows whose label contains this, or one of its `|`-separated parts.
    only: Option<String>,
    /// Count instructions under callgrind instead of timing (`instructions.rs`).
    instructions: bool,
    /// Write the server's link order instead of timing (`link_order.rs`).
    link_order: bool,
}

impl Opts {
    /// Whether `--only` leaves the row labelled `label` in (every row without it).
    fn wants(&self, label: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split('|').any(|part| label.contains(part)))
    }

    fn parse() -> Result<Opts> {
        let mut o = Opts {
            reps: 3,
            secs: 10.0,
            agents: 1000,
            tasks: 10_000,
            postgres: None,
            smoke: false,
            only: None,
            instructions: false,
            link_order: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| Error::from(format!("{name} needs a value")))
            };
            match a.as_str() {
                "--reps" => o.reps = value("--reps")?.parse()?,
                "--secs" => o.secs = value("--secs")?.parse()?,
                "--agents" => o.agents = value("--agents")?.parse()?,
                "--tasks" => o.tasks = value("--tasks")?.parse()?,
                "--postgres" => o.postgres = Some(value("--postgres")?),
                "--smoke" => o.smoke = true,
                "--only" => o.only = Some(value("--only")?),
                "--instructions" => o.instructions = true,
                "--link-order" => o.link_order = true,
                "-h" | "--help" => {
                    println!("{}", USAGE);
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
            }
        }
        if o.smoke {
            o.reps = 1;
            o.secs = 0.5;
            o.agents = o.agents.min(20);
            o.tasks = o.tasks.min(50);
        }
        if o.reps == 0 || o.secs <= 0.0 || o.agents == 0 || o.tasks < 10 {
            return Err("--reps, --secs and --agents must be positive, --tasks at least 10".into());
        }
        Ok(o)
    }

    fn window(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }

    /// Concurrency levels, scaled down in smoke mode.
    fn c(&self, full: &[usize]) -> Vec<usize> {
        if self.smoke { vec![2] } else { full.to_vec() }
    }
}

const USAGE: &str = "usage: parallax-bench [--reps N] [--secs S] [--agents N] [--tasks N] [--postgres URL] [--only TEXT] [--instructions] [--link-order] [--smoke]";

// ---- binaries and the CLI ----

/// `parallax-mcp` and `bare-echo` beside this binary. Under `cargo run` both are built first, in
/// this binary's profile, so the numbers are never those of a stale or missing binary: `cargo run`
/// builds only the binary it runs. Each package is built on its own, so the server has the
/// features `cargo build -p parallax-mcp` gives it, as installed, not the bench's. With `symbols`
/// the server keeps its symbols (`PARALLAX_LINK_SYMBOLS`, read by its `build.rs`).
fn binaries(symbols: bool) -> Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe()?;
    let dir = me.parent().ok_or("no directory for the bench binary")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let profile = profile_of(dir).ok_or("no cargo profile for the bench binary's directory")?;
        for (package, bin) in [
            ("parallax-mcp", "parallax-mcp"),
            ("parallax-bench", "bare-echo"),
        ] {
            let mut build = std::process::Command::new(&cargo);
            if symbols {
                build.env("PARALLAX_LINK_SYMBOLS", "1");
            } else {
                build.env_remove("PARALLAX_LINK_SYMBOLS");
            }
            let built = build
                .args([
                    "build",
                    "--quiet",
                    "--profile",
                    profile,
                    "-p",
                    package,
                    "--bin",
                    bin,
                ])
                .status()?;
            if !built.success() {
                return Err(format!("building {bin} failed").into());
            }
        }
    }
    let server = dir.join("parallax-mcp");
    let bare = dir.join("bare-echo");
    for b in [&server, &bare] {
        if !b.exists() {
            return Err(format!(
                "{} not found: build `-p parallax-mcp` and `-p parallax-bench` in this binary's \
                 profile, each on its own (built together, the server's dependencies get the \
                 bench's features too, which renames them, and a release server loses its \
                 link order)",
                b.display()
            )
            .into());
        }
    }
    Ok((server, bare))
}

/// The cargo profile whose binaries are in `dir` (`target/<profile>`, `debug` being `dev`'s).
fn profile_of(dir: &std::path::Path) -> Option<&str> {
    match dir.file_name()?.to_str()? {
        "debug" => Some("dev"),
        profile => Some(profile),
    }
}

struct Cli {
    bin: PathBuf,
    db: String,
}

impl Cli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--database-url")
            .arg(&self.db)
            .args(args)
            .env("PARALLAX_WORKSPACE", "bench")
            .env("PARALLAX_AS", "admin@bench.test")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd(args).output().await?;
        if !out.status.success() {
            return Err(format!(
                "parallax-mcp {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    async fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        Ok(serde_json::from_str(&self.run(&all).await?)?)
    }
}

/// One workspace, `agents` agents (the measured one approved, the rest pending), `tasks` tasks in
/// ten projects, the measured agent assigned to ten of them. Returns the agent's API key.
async fn seed(cli: &Cli, o: &Opts) -> Result<String> {
    let started = Instant::now();
    cli.run(&[
        "workspace",
        "create",
        "bench",
        "--name",
        "Bench",
        "--admin-email",
        "admin@bench.test",
    ])
    .await?;
    // The benchmark measures the gate, not the per-agent rate limit.
    cli.run(&[
        "workspace",
        "settings",
        "--set",
        "rate_limit_per_minute=100000000",
        "--set",
        "rate_limit_burst=1000000",
        "--set",
        "max_agents=100000",
        "--set",
        "max_active_assignments_per_agent=100000",
    ])
    .await?;
    let mut task_ids = Vec::new();
    let per_project = o.tasks.div_ceil(10);
    for p in 0..10 {
        let project = cli
            .json(&["project", "create", &format!("Project {p}")])
            .await?;
        let pid = project["id"].as_str().ok_or("project id")?.to_owned();
        let mut made = 0;
        while made < per_project && task_ids.len() < o.tasks {
            let n = (per_project - made).min(500).min(o.tasks - task_ids.len());
            let titles: Vec<String> = (0..n).map(|i| format!("Task {p}.{}", made + i)).collect();
            let mut args = vec!["task", "create", "--project", pid.as_str()];
            args.extend(titles.iter().map(String::as_str));
            let created = cli.json(&args).await?;
            let list = match created {
                Value::Array(list) => list,
                one => vec![one],
            };
            task_ids.extend(
                list.iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned)),
            );
            made += n;
        }
    }
    let perms = "read:tasks,write:tasks,read:agents";
    cli.run(&[
        "agent",
        "request",
        AGENT,
        "--name",
        "Bench agent",
        "--permission",
        perms,
    ])
    .await?;
    let approved = cli
        .json(&["agent", "approve", AGENT, "--grant", perms])
        .await?;
    let key = approved["apiKey"]
        .as_str()
        .ok_or("no apiKey in `agent approve --json`")?
        .to_owned();
    for t in task_ids.iter().take(10) {
        cli.run(&["assign", AGENT, "--task", t, "--role", "lead"])
            .await?;
    }
    // The other agents, a few CLI processes at a time.
    let others: Vec<String> = (1..o.agents).map(|i| format!("agent-{i:04}")).collect();
    for chunk in others.chunks(4) {
        let mut running = Vec::new();
        for id in chunk {
            let mut cmd = cli.cmd(&[
                "agent",
                "request",
                id,
                "--name",
                id,
                "--permission",
                "read:tasks",
            ]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            running.push(cmd.status());
        }
        for r in running {
            if !r.await?.success() {
                return Err("seeding an agent failed".into());
            }
        }
    }
    eprintln!(
        "seeded {} agents and {} tasks through the CLI in {:.1} s",
        o.agents,
        task_ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(key)
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- servers ----

struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(cmd: Command) -> Result<Server> {
        Server::start_within(cmd, Duration::from_secs(30)).await
    }

    async fn start_within(mut cmd: Command, wait: Duration) -> Result<Server> {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().ok_or("stderr")?).lines();
        let url = tokio::time::timeout(wait, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on ".len()..];
                    let end = rest
                        .find(|c: char| c.is_whitespace() || c == '\u{1b}')
                        .unwrap_or(rest.len());
                    return Ok::<_, Error>(rest[..end].to_owned());
                }
            }
            Err("server exited before listening".into())
        })
        .await
        .map_err(|_| "server did not report its address in time")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// User + system CPU time of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(total * 1_000_000 / hz)
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

fn anon_kb(pid: u32) -> u64 {
    status_kb(pid, "RssAnon:")
}

/// A `kB` field of `/proc/PID/status`.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// BENCH_MEM_DEBUG: the server's memory at each step of the session measurement, on stderr.
fn dbg_mem(at: &str, pid: u32) {
    if std::env::var_os("BENCH_MEM_DEBUG").is_none() {
        return;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let pick: Vec<&str> = s
        .lines()
        .filter(|l| {
            ["VmRSS", "RssAnon", "RssFile", "Threads"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    eprintln!(
        "mem {pid} {at}: {}",
        pick.join(" | ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
}

// ---- MCP over HTTP, by hand ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Era {
    /// 2025-11-25: `initialize`, then requests on the `Mcp-Session-Id`.
    Session,
    /// 2026-07-28: every request stands alone.
    Stateless,
}

#[derive(Clone)]
struct Call {
    method: &'static str,
    tool: Option<&'static str>,
    args: Value,
}

impl Call {
    fn tool(name: &'static str, args: Value) -> Call {
        Call {
            method: "tools/call",
            tool: Some(name),
            args,
        }
    }

    fn list() -> Call {
        Call::method("tools/list")
    }

    /// A request without parameters of its own.
    fn method(method: &'static str) -> Call {
        Call {
            method,
            tool: None,
            args: Value::Null,
        }
    }

    fn body(&self, id: u64, era: Era) -> Value {
        let mut params = match self.tool {
            Some(name) => json!({ "name": name, "arguments": self.args }),
            None => json!({}),
        };
        if era == Era::Stateless {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "parallax-bench", "version": "0" },
            });
        }
        json!({ "jsonrpc": "2.0", "id": id, "method": self.method, "params": params })
    }
}

struct HttpClient {
    http: reqwest::Client,
    url: String,
    bearer: Option<String>,
    session: Option<String>,
    next_id: u64,
}

impl HttpClient {
    fn new(url: &str, bearer: Option<&str>) -> Result<HttpClient> {
        // One connection per client, like one agent.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(HttpClient {
            http,
            url: url.to_owned(),
            bearer: bearer.map(str::to_owned),
            session: None,
            next_id: 0,
        })
    }

    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", ACCEPT)
            .json(body);
        if let Some(b) = &self.bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        req
    }

    async fn open_session(&mut self) -> Result<()> {
        let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "parallax-bench", "version": "0" } } });
        let res = self.request(&init).send().await?;
        if !res.status().is_success() {
            return Err(format!("initialize: HTTP {}", res.status()).into());
        }
        let session = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .ok_or("initialize answered without Mcp-Session-Id")?
            .to_owned();
        let _ = res.bytes().await?;
        self.session = Some(session);
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let res = self.with_session(self.request(&note)).send().await?;
        if !res.status().is_success() {
            return Err(format!("notifications/initialized: HTTP {}", res.status()).into());
        }
        Ok(())
    }

    fn with_session(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.session {
            Some(s) => req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25"),
            None => req,
        }
    }

    /// Sends `call` as the next request; its id and the answer's response.
    async fn send(&mut self, call: &Call, era: Era) -> Result<(u64, reqwest::Response)> {
        self.next_id += 1;
        let id = self.next_id;
        let body = call.body(id, era);
        let mut req = self.request(&body);
        req = match era {
            Era::Session => self.with_session(req),
            Era::Stateless => {
                let mut r = req
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", call.method);
                if let Some(t) = call.tool {
                    r = r.header("mcp-name", t);
                }
                r
            }
        };
        Ok((id, req.send().await?))
    }

    /// One request; the answer must be a JSON-RPC result without `isError`, and is returned.
    async fn call(&mut self, call: &Call, era: Era) -> Result<Value> {
        let (_, res) = self.send(call, era).await?;
        let status = res.status();
        let body = res.bytes().await?;
        let msg = message_of(&body);
        let mut v: Value = serde_json::from_slice(msg).map_err(|_| {
            format!(
                "HTTP {status}: not a JSON-RPC answer: {}",
                shown(&body, 200)
            )
        })?;
        if v.get("error").is_some() || v["result"]["isError"] == true {
            return Err(format!("{} failed: {}", call.method, shown(msg, 300)).into());
        }
        Ok(v["result"].take())
    }

    /// As [`HttpClient::call`], for the load: the answer must be the success of this request,
    /// and is checked without being kept ([`Answer`]).
    async fn call_checked(&mut self, call: &Call, era: Era) -> Result<()> {
        let (id, res) = self.send(call, era).await?;
        let status = res.status();
        let body = res.bytes().await?;
        Answer::check(message_of(&body), id)
            .map_err(|e| format!("{} (HTTP {status}): {e}", call.method).into())
    }
}

/// What the load generator reads of an answer: enough to know it is the success of the request
/// it sent. The whole answer is parsed (it must be well-formed JSON), but nothing else of it is
/// kept: building a tree of every answer cost the load generator, which shares the two cores
/// with the server it measures, more for a larger answer than for the echo's, and so counted
/// against the larger answer's server.
#[derive(serde::Deserialize)]
struct Answer {
    id: Option<u64>,
    error: Option<serde::de::IgnoredAny>,
    result: Option<Outcome>,
}

#[derive(serde::Deserialize)]
struct Outcome {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

impl Answer {
    fn succeeded(&self) -> bool {
        self.error.is_none() && self.result.as_ref().is_some_and(|r| !r.is_error)
    }

    /// `Ok` when `json` answers request `id` with a result that is not an error.
    fn check(json: &[u8], id: u64) -> std::result::Result<(), String> {
        match serde_json::from_slice::<Answer>(json) {
            Ok(a) if a.id == Some(id) && a.succeeded() => Ok(()),
            Ok(_) => Err(format!("request {id} failed: {}", shown(json, 300))),
            Err(_) => Err(format!("not a JSON-RPC answer: {}", shown(json, 300))),
        }
    }
}

/// The first `n` bytes of an answer, for an error message.
fn shown(body: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&body[..body.len().min(n)]).into_owned()
}

/// The JSON-RPC answer in an HTTP answer's body: the SSE event carrying a result or an error,
/// or else the body itself (a JSON answer).
fn message_of(body: &[u8]) -> &[u8] {
    if body.first() == Some(&b'{') {
        return body;
    }
    let has = |d: &[u8], s: &[u8]| d.windows(s.len()).any(|w| w == s);
    body.split(|b| *b == b'\n')
        .filter_map(|l| l.strip_prefix(b"data:"))
        .map(|d| d.trim_ascii())
        .find(|d| has(d, br#""result""#) || has(d, br#""error""#))
        .unwrap_or(body.trim_ascii())
}

// ---- load ----

#[derive(Default, Clone)]
struct Sample {
    calls: u64,
    errors: u64,
    elapsed: Duration,
    cpu: Duration,
    /// CPU the load generator (this process) spent over the window: it shares the cores with the
    /// server, so a row whose answers cost it more to check runs slower for that too.
    load_cpu: Duration,
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

impl Sample {
    fn per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn cpu_per_call_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.calls.max(1) as f64)
    }

    fn load_cpu_per_call_us(&self) -> f64 {
        self.load_cpu.as_secs_f64() * 1e6 / (self.calls.max(1) as f64)
    }
}

/// `c` clients, each with its own connection (and session on 2025-11-25), calling as fast as the
/// server answers for `window`. Sessions are opened before the clock starts.
async fn http_load(
    url: &str,
    bearer: Option<&str>,
    era: Era,
    call: &Call,
    c: usize,
    window: Duration,
    pid: u32,
) -> Result<Sample> {
    let mut clients = Vec::with_capacity(c);
    for _ in 0..c {
        let mut cl = HttpClient::new(url, bearer)?;
        if era == Era::Session {
            cl.open_session().await?;
        }
        // One warm-up call each: connections open, caches warm.
        cl.call_checked(call, era).await?;
        clients.push(cl);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_time(pid);
    let load0 = cpu_time(std::process::id());
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for mut cl in clients {
        let (stop, call) = (stop.clone(), call.clone());
        handles.push(tokio::spawn(async move {
            let mut s = Sample::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match cl.call_checked(&call, era).await {
                    Ok(()) => {
                        s.calls += 1;
                        s.latencies_us.push(t.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            s
        }));
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Sample::default();
    for h in handles {
        let s = h.await?;
        total.calls += s.calls;
        total.errors += s.errors;
        total.latencies_us.extend(s.latencies_us);
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
    }
    total.elapsed = t0.elapsed();
    total.cpu = cpu_time(pid).saturating_sub(cpu0);
    total.load_cpu = cpu_time(std::process::id()).saturating_sub(load0);
    total.latencies_us.sort_unstable();
    Ok(total)
}

/// The answers a stdio server writes, line by line.
type StdioLines = tokio::io::Lines<BufReader<ChildStdout>>;

/// A stdio MCP server started from `cmd` (killed when dropped), its handshake done: `initialize`
/// answered with a result within `wait`, then `notifications/initialized` sent.
async fn stdio_start(mut cmd: Command, wait: Duration) -> Result<(Child, ChildStdin, StdioLines)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    let initialize = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": { "name": "parallax-bench", "version": "0" } } });
    stdin
        .write_all(format!("{initialize}\n").as_bytes())
        .await?;
    let first = tokio::time::timeout(wait, lines.next_line())
        .await
        .map_err(|_| "stdio server did not answer initialize")??
        .ok_or("stdio server closed before answering initialize")?;
    Answer::check(first.as_bytes(), 0).map_err(|e| format!("initialize: {e}"))?;
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    stdin
        .write_all(format!("{initialized}\n").as_bytes())
        .await?;
    Ok((child, stdin, lines))
}

/// A stdio server with `w` requests in flight on its one pipe. One task reads the answers and
/// sends the requests: each read's answers are checked together and their replacements leave in
/// one write, as a client with many calls in flight would send them. A task per direction, with a
/// write per request and a `String` per answer, cost this process 18–20 µs of CPU per read tool
/// call at W = 32 (11–13 µs this way), on the cores the server shares with it.
async fn stdio_load(cmd: Command, call: &Call, w: usize, window: Duration) -> Result<Sample> {
    let (mut child, mut stdin, lines) = stdio_start(cmd, Duration::from_secs(30)).await?;
    let mut output = lines.into_inner();
    let pid = child.id().unwrap_or(0);
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(w);
    let mut next = 1u64;
    let mut send = |n: usize, sent_at: &mut HashMap<u64, Instant>| -> Result<Vec<u8>> {
        let mut requests = Vec::with_capacity(n * 256);
        let now = Instant::now();
        for _ in 0..n {
            serde_json::to_writer(&mut requests, &call.body(next, Era::Session))?;
            requests.push(b'\n');
            sent_at.insert(next, now);
            next += 1;
        }
        Ok(requests)
    };

    let cpu0 = cpu_time(pid);
    let load0 = cpu_time(std::process::id());
    let t0 = Instant::now();
    let deadline = t0 + window;
    let mut s = Sample::default();
    let first = send(w, &mut sent_at)?;
    stdin.write_all(&first).await?;
    let mut answers: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        answers.reserve(256 * 1024);
        let read = tokio::time::timeout_at(deadline.into(), output.read_buf(&mut answers));
        let Ok(read) = read.await else { break };
        if read? == 0 {
            return Err("stdio server closed its output".into());
        }
        let (mut start, mut freed) = (0, 0);
        while let Some(end) = answers[start..].iter().position(|b| *b == b'\n') {
            let line = &answers[start..start + end];
            start += end + 1;
            let Ok(answer) = serde_json::from_slice::<Answer>(line) else {
                continue;
            };
            let Some(t) = answer.id.and_then(|id| sent_at.remove(&id)) else {
                continue;
            };
            if answer.succeeded() {
                s.calls += 1;
                s.latencies_us.push(t.elapsed().as_micros() as u64);
            } else {
                s.errors += 1;
                s.first_error.get_or_insert_with(|| shown(line, 300));
            }
            freed += 1;
        }
        answers.drain(..start);
        if freed > 0 {
            if Instant::now() >= deadline {
                break;
            }
            let more = send(freed, &mut sent_at)?;
            stdin.write_all(&more).await?;
        }
    }
    s.elapsed = t0.elapsed();
    s.cpu = cpu_time(pid).saturating_sub(cpu0);
    s.load_cpu = cpu_time(std::process::id()).saturating_sub(load0);
    drop(stdin);
    let _ = child.kill().await;
    s.latencies_us.sort_unstable();
    Ok(s)
}

/// Memory each open 2025-11-25 session holds: RSS growth over `n` sessions, each with its
/// client's idle keep-alive connection, 200 ms after the last was opened (`opened`), and once they
/// have been idle 3 s (`idle`: parallax puts a session with nothing under way to sleep after a
/// second). Also the anonymous part of each (`RssAnon`): file-backed pages (the mapped database,
/// code run for the first time) are the process's, not the sessions'. Then `n` more on top, idle
/// 3 s (`more_idle`): the first batch also pays what the process grows once (code paged in,
/// allocator pages, the session table), the second only what each session adds.
#[derive(Clone, Copy)]
struct SessionMemory {
    opened: f64,
    opened_anon: f64,
    idle: f64,
    idle_anon: f64,
    more_idle: f64,
    more_idle_anon: f64,
}

/// `n` clients, each with an open 2025-11-25 session on its own kept-alive connection.
async fn open_sessions(url: &str, bearer: Option<&str>, n: usize) -> Result<Vec<HttpClient>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = HttpClient::new(url, bearer)?;
        c.open_session().await?;
        clients.push(c);
    }
    Ok(clients)
}

async fn session_kb(url: &str, bearer: Option<&str>, pid: u32, n: usize) -> Result<SessionMemory> {
    let (before, before_anon) = (rss_kb(pid), anon_kb(pid));
    dbg_mem("before", pid);
    let mut held = open_sessions(url, bearer, n).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (opened, opened_anon) = (rss_kb(pid), anon_kb(pid));
    dbg_mem("opened", pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, idle_anon) = (rss_kb(pid), anon_kb(pid));
    dbg_mem("idle", pid);
    let more = open_sessions(url, bearer, n).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    dbg_mem("second batch opened", pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (more_idle, more_idle_anon) = (rss_kb(pid), anon_kb(pid));
    dbg_mem("second batch idle", pid);
    held.extend(more);
    // BENCH_MEM_DEBUG=full: the first batch woken and idle again.
    if std::env::var("BENCH_MEM_DEBUG").is_ok_and(|v| v == "full") {
        for c in &mut held[..n] {
            c.call(&Call::list(), Era::Session).await?;
        }
        dbg_mem("first batch woken", pid);
        tokio::time::sleep(Duration::from_secs(3)).await;
        dbg_mem("first batch idle again", pid);
        // Sessions without a connection: each client goes once its session is open.
        let anon0 = anon_kb(pid);
        for _ in 0..n {
            let mut c = HttpClient::new(url, bearer)?;
            c.open_session().await?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let grown = anon_kb(pid).saturating_sub(anon0) as f64 / n as f64;
        eprintln!(
            "mem {pid}: {n} more sessions, clients gone, idle 3 s: {grown:.1} kB anonymous each"
        );
    }
    // Every session still answers after its idle spell (parallax wakes each), and again at once.
    for round in ["after idling", "right after"] {
        let t0 = std::time::Instant::now();
        for c in &mut held {
            c.call(&Call::list(), Era::Session).await?;
        }
        if std::env::var_os("BENCH_MEM_DEBUG").is_some() {
            let us = t0.elapsed().as_micros() as f64 / held.len() as f64;
            eprintln!("mem {pid}: tools/list {round}: {us:.0} µs per call, one at a time");
        }
    }
    drop(held);
    let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / n as f64;
    Ok(SessionMemory {
        opened: per(opened, before),
        opened_anon: per(opened_anon, before_anon),
        idle: per(idle, before),
        idle_anon: per(idle_anon, before_anon),
        more_idle: per(more_idle, idle),
        more_idle_anon: per(more_idle_anon, idle_anon),
    })
}

/// An access token for `key` from the server's `/oauth/token`.
async fn access_token(mcp_url: &str, key: &str) -> Result<String> {
    let base = mcp_url.trim_end_matches("/mcp");
    let res = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_secret={}",
            form_encode(key)
        ))
        .send()
        .await?;
    let v: Value = res.json().await?;
    Ok(v["access_token"]
        .as_str()
        .ok_or_else(|| format!("no access token: {v}"))?
        .to_owned())
}

// ---- the run ----

/// The bare row serving the read tool's answer, and the read row compared with it.
const SAME_ANSWER: &str = "bare rmcp, the read tool's answer from memory";
const READ: &str = "agent_my_assignments, API key";
/// The same pair on stdio.
const SAME_ANSWER_STDIO: &str = "bare rmcp, the read tool's answer from memory, stdio";
const READ_STDIO: &str = "stdio, agent_my_assignments";

/// The median over repetitions of `f(ours) / f(base)`, each rep against its own baseline.
fn rep_ratio(ours: &[Sample], base: &[Sample], f: &dyn Fn(&Sample) -> f64) -> f64 {
    median(ours.iter().zip(base).map(|(o, b)| f(o) / f(b)).collect())
}

/// The structured content of `read` (the read tool's call), as `key`'s agent gets it.
async fn read_answer(url: &str, key: &str, read: &Call) -> Result<Value> {
    let mut client = HttpClient::new(url, Some(key))?;
    client.open_session().await?;
    let answer = client.call(read, Era::Session).await?["structuredContent"].take();
    if !answer.is_object() {
        return Err("agent_my_assignments returned no structured content".into());
    }
    Ok(answer)
}

/// A note naming the first task of `answer` (the read's, so one of the measured agent's): the
/// write whose tool checks the assignment.
fn note_on_first_task(answer: &Value) -> Result<Call> {
    let task_id = answer["tasks"][0]["task"]["id"]
        .as_str()
        .ok_or("the measured agent has no assigned task")?;
    Ok(Call::tool(
        "agent_log_activity",
        json!({ "type": "note", "description": "bench", "taskId": task_id }),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Baseline {
    Http(usize),
    Stateless(usize),
    Stdio(usize),
}

struct Row {
    label: String,
    c: usize,
    baseline: Baseline,
    samples: Vec<Sample>,
    bare: Vec<Sample>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Target<'a> {
    name: &'static str,
    server: &'a Server,
    db: &'a str,
    bin: &'a Path,
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = Opts::parse()?;
    let (server_bin, bare_bin) = binaries(o.link_order)?;
    let dir = tempfile::tempdir()?;
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let cli = Cli {
        bin: server_bin.clone(),
        db: sqlite.clone(),
    };
    let key = seed(&cli, &o).await?;
    if o.instructions {
        return instructions::run(&o, &server_bin, &bare_bin, &cli, &key).await;
    }
    if o.link_order {
        return link_order::run(o.smoke, &server_bin, &cli, &key).await;
    }

    let serve = |db: &str| {
        let mut cmd = Command::new(&server_bin);
        cmd.args(["--database-url", db, "serve", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            // The default log level is part of what is measured.
            .env_remove("RUST_LOG")
            // One agent opens every session from one address: lift the per-agent and per-address
            // caps (which would rightly close or refuse its 64th session) so the load is the
            // benchmark's, not the limits'.
            .env("PARALLAX_MAX_SESSIONS_PER_AGENT", "100000")
            .env("PARALLAX_MAX_CONNECTIONS_PER_ADDRESS", "100000")
            .env("PARALLAX_MAX_CONNECTIONS", "100000")
            .env("PARALLAX_MAX_SESSIONS", "100000");
        cmd
    };
    let parallax = Server::start(serve(&sqlite)).await?;
    let read = Call::tool("agent_my_assignments", json!({}));
    // Bare serves the read tool's answer too (its `answer` tool), from memory and without a gate:
    // what the same payload costs in rmcp alone. The file is written after the session memory is
    // measured (a read before it doubled the idle figure); bare reads it at the first call.
    let answer_file = dir.path().join("answer.json");
    let mut bare_cmd = Command::new(&bare_bin);
    bare_cmd.args(["http", "127.0.0.1:0"]).arg(&answer_file);
    let bare = Server::start(bare_cmd).await?;
    // Both servers idle 3 s first: read the moment a server says it listens, RSS races with the
    // background tasks it starts then (a megabyte between runs of one build). Anonymous apart:
    // most of a fresh server's RSS is its own code, file-backed pages whose count depends on what
    // the page cache holds of the binary (a freshly copied binary maps more).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = [
        rss_kb(parallax.pid()),
        anon_kb(parallax.pid()),
        rss_kb(bare.pid()),
        anon_kb(bare.pid()),
    ]
    .map(|kb| kb as f64 / 1024.0);

    // PostgreSQL: a fresh database seeded the same way, when asked for.
    let mut pg = None;
    if let Some(admin_url) = &o.postgres {
        let name = format!("parallax_bench_{}", std::process::id());
        let created = Command::new("psql")
            .args([
                admin_url.as_str(),
                "-qc",
                &format!("CREATE DATABASE {name}"),
            ])
            .status()
            .await?;
        if !created.success() {
            return Err("could not create the PostgreSQL bench database (psql)".into());
        }
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => return Err("--postgres takes postgres://USER@HOST/DB".into()),
        };
        let pg_cli = Cli {
            bin: server_bin.clone(),
            db: url.clone(),
        };
        let pg_key = seed(&pg_cli, &o).await?;
        let server = Server::start(serve(&url)).await?;
        pg = Some((server, pg_key, url));
    }

    // An access token for the JWT row.
    let token = access_token(&parallax.url, &key).await?;

    // Session memory first, before any MCP session, while the allocator holds no memory freed
    // by the load.
    let n = if o.smoke { 5 } else { 200 };
    let bare_session = session_kb(&bare.url, None, bare.pid(), n).await?;
    let our_session = session_kb(&parallax.url, Some(&key), parallax.pid(), n).await?;

    let write = Call::tool(
        "agent_log_activity",
        json!({ "type": "note", "description": "bench" }),
    );
    // The read's answer: bare serves it from memory; a note naming one of its tasks is the row
    // whose tool checks the assignment in the batch's transaction (a note naming nothing is
    // appended like a decision entry, without one).
    let assigned = read_answer(&parallax.url, &key, &read).await?;
    let write_task = note_on_first_task(&assigned)?;
    let echo = Call::tool("echo", json!({ "status": "idle" }));
    let target = Target {
        name: "sqlite",
        server: &parallax,
        db: &sqlite,
        bin: &server_bin,
    };

    // (label, c, baseline, how to measure)
    type Job<'a> = (String, usize, Baseline, Box<dyn Fn() -> Measure + 'a>);
    enum Measure {
        Http(String, Option<String>, Era, Call, u32),
        Stdio(Command, Call),
    }
    let mut jobs: Vec<Job> = Vec::new();
    let http_row =
        |label: &str, c: usize, era: Era, call: &Call, bearer: &str, server: &Server| -> Job {
            let (url, bearer, call, pid) = (
                server.url.clone(),
                bearer.to_owned(),
                call.clone(),
                server.pid(),
            );
            let baseline = match era {
                Era::Session => Baseline::Http(c),
                Era::Stateless => Baseline::Stateless(c),
            };
            (
                label.to_owned(),
                c,
                baseline,
                Box::new(move || {
                    Measure::Http(url.clone(), Some(bearer.clone()), era, call.clone(), pid)
                }),
            )
        };
    // The transport and authentication alone: rmcp answers a ping without a tool or the gate.
    jobs.push(http_row(
        "ping (authenticate only)",
        o.c(&[16])[0],
        Era::Session,
        &Call::method("ping"),
        &key,
        target.server,
    ));
    jobs.push(http_row(
        "tools/list (authenticate only)",
        o.c(&[16])[0],
        Era::Session,
        &Call::list(),
        &key,
        target.server,
    ));
    // The same gate, audit and session with an empty result: the difference to the row below
    // is what the ten tasks cost to render, send and parse.
    jobs.push(http_row(
        "agent_my_assignments, empty result",
        o.c(&[16])[0],
        Era::Session,
        &Call::tool("agent_my_assignments", json!({ "status": "blocked" })),
        &key,
        target.server,
    ));
    // From c = 1 too: a lone read's CPU beside what the same answer costs bare rmcp alone.
    for c in o.c(&[1, 16, 64]) {
        let (url, pid, call) = (
            bare.url.clone(),
            bare.pid(),
            Call::tool("answer", json!({})),
        );
        jobs.push((
            SAME_ANSWER.to_owned(),
            c,
            Baseline::Http(c),
            Box::new(move || Measure::Http(url.clone(), None, Era::Session, call.clone(), pid)),
        ));
    }
    // From one client (issue 9's p99 goal holds from c = 1: a lone call commits its own batch)
    // to 256.
    for c in o.c(&[1, 16, 64, 256]) {
        jobs.push(http_row(READ, c, Era::Session, &read, &key, target.server));
    }
    for c in o.c(&[16, 64]) {
        jobs.push(http_row(
            "same, JWT access token",
            c,
            Era::Session,
            &read,
            &token,
            target.server,
        ));
    }
    for c in o.c(&[16, 64]) {
        jobs.push(http_row(
            "same, 2026-07-28 stateless",
            c,
            Era::Stateless,
            &read,
            &key,
            target.server,
        ));
    }
    for c in o.c(&[16, 64]) {
        jobs.push(http_row(
            "agent_log_activity (write)",
            c,
            Era::Session,
            &write,
            &key,
            target.server,
        ));
    }
    for c in o.c(&[16, 64]) {
        jobs.push(http_row(
            "agent_log_activity naming a task (write)",
            c,
            Era::Session,
            &write_task,
            &key,
            target.server,
        ));
    }
    if let Some((server, pg_key, _)) = &pg {
        for c in o.c(&[16, 64]) {
            jobs.push(http_row(
                "PostgreSQL, agent_my_assignments",
                c,
                Era::Session,
                &read,
                pg_key,
                server,
            ));
        }
        for c in o.c(&[16, 64]) {
            jobs.push(http_row(
                "PostgreSQL, agent_log_activity",
                c,
                Era::Session,
                &write,
                pg_key,
                server,
            ));
        }
    }
    for w in o.c(&[1, 32]) {
        let (bin, answer, call) = (
            bare_bin.clone(),
            answer_file.clone(),
            Call::tool("answer", json!({})),
        );
        jobs.push((
            SAME_ANSWER_STDIO.to_owned(),
            w,
            Baseline::Stdio(w),
            Box::new(move || {
                let mut cmd = Command::new(&bin);
                cmd.arg("stdio").arg(&answer);
                Measure::Stdio(cmd, call.clone())
            }),
        ));
    }
    for w in o.c(&[1, 32]) {
        let (bin, db, key, read) = (
            target.bin.to_owned(),
            target.db.to_owned(),
            key.clone(),
            read.clone(),
        );
        jobs.push((
            format!("{READ_STDIO}, W={w}"),
            w,
            Baseline::Stdio(w),
            Box::new(move || {
                let mut cmd = Command::new(&bin);
                cmd.args(["--database-url", &db, "stdio"])
                    .env("PARALLAX_API_KEY", &key)
                    .env_remove("RUST_LOG");
                Measure::Stdio(cmd, read.clone())
            }),
        ));
    }

    jobs.retain(|(label, ..)| o.wants(label));
    let mut rows: Vec<Row> = jobs
        .iter()
        .map(|(label, c, baseline, _)| Row {
            label: label.clone(),
            c: *c,
            baseline: *baseline,
            samples: Vec::new(),
            bare: Vec::new(),
        })
        .collect();
    let window = o.window();
    std::fs::write(&answer_file, assigned.to_string())?;
    let mut bare_rows: HashMap<Baseline, Vec<Sample>> = HashMap::new();
    let mut failures = Vec::new();
    for rep in 0..o.reps {
        eprintln!("rep {}/{}", rep + 1, o.reps);
        // The bare baselines of this rep, then every parallax row.
        let mut this_rep: HashMap<Baseline, Sample> = HashMap::new();
        for row in &rows {
            if this_rep.contains_key(&row.baseline) {
                continue;
            }
            let s = match row.baseline {
                Baseline::Http(c) => {
                    http_load(&bare.url, None, Era::Session, &echo, c, window, bare.pid()).await?
                }
                Baseline::Stateless(c) => {
                    http_load(
                        &bare.url,
                        None,
                        Era::Stateless,
                        &echo,
                        c,
                        window,
                        bare.pid(),
                    )
                    .await?
                }
                Baseline::Stdio(w) => {
                    let mut cmd = Command::new(&bare_bin);
                    cmd.arg("stdio");
                    stdio_load(cmd, &echo, w, window).await?
                }
            };
            if s.errors > 0 {
                failures.push(format!(
                    "bare {:?}: {}",
                    row.baseline,
                    s.first_error.clone().unwrap_or_default()
                ));
            }
            this_rep.insert(row.baseline, s);
        }
        for (row, (_, _, _, job)) in rows.iter_mut().zip(&jobs) {
            eprintln!("  {} c={}", row.label, row.c);
            let s = match job() {
                Measure::Http(url, bearer, era, call, pid) => {
                    http_load(&url, bearer.as_deref(), era, &call, row.c, window, pid).await?
                }
                Measure::Stdio(cmd, call) => stdio_load(cmd, &call, row.c, window).await?,
            };
            if s.errors > 0 {
                failures.push(format!(
                    "{} c={}: {}",
                    row.label,
                    row.c,
                    s.first_error.clone().unwrap_or_default()
                ));
            }
            row.samples.push(s);
            row.bare.push(this_rep[&row.baseline].clone());
        }
        for (k, s) in this_rep {
            bare_rows.entry(k).or_default().push(s);
        }
    }

    // ---- the table ----
    println!(
        "\nparallax-mcp vs bare rmcp echo — {} rep(s) × {:.1} s, medians; {} agents, {} tasks{}\n",
        o.reps,
        o.secs,
        o.agents,
        o.tasks,
        if o.smoke {
            " (smoke: numbers mean nothing)"
        } else {
            ""
        }
    );
    println!(
        "| call | c | calls/s | × bare | p50 ms | p99 ms | p99 × bare | CPU/call µs | CPU × bare \
         | load gen µs |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut baselines: Vec<_> = bare_rows.into_iter().collect();
    baselines.sort_by_key(|(k, _)| format!("{k:?}"));
    for (k, samples) in &baselines {
        let label = match k {
            Baseline::Http(_) => "bare rmcp echo, session",
            Baseline::Stateless(_) => "bare rmcp echo, 2026-07-28 stateless",
            Baseline::Stdio(_) => "bare rmcp echo, stdio",
        };
        let c = match k {
            Baseline::Http(c) | Baseline::Stateless(c) | Baseline::Stdio(c) => c,
        };
        println!(
            "| {label} | {c} | {:.0} | 1 | {:.2} | {:.2} | 1 | {:.0} | 1 | {:.0} |",
            median(samples.iter().map(Sample::per_sec).collect()),
            median(samples.iter().map(|s| s.pct(0.5)).collect()),
            median(samples.iter().map(|s| s.pct(0.99)).collect()),
            median(samples.iter().map(Sample::cpu_per_call_us).collect()),
            median(samples.iter().map(Sample::load_cpu_per_call_us).collect()),
        );
    }
    for row in &rows {
        let ratio = |f: &dyn Fn(&Sample) -> f64| rep_ratio(&row.samples, &row.bare, f);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.1} | {:.0} |",
            row.label,
            row.c,
            median(row.samples.iter().map(Sample::per_sec).collect()),
            ratio(&Sample::per_sec),
            median(row.samples.iter().map(|s| s.pct(0.5)).collect()),
            median(row.samples.iter().map(|s| s.pct(0.99)).collect()),
            ratio(&|s: &Sample| s.pct(0.99)),
            median(row.samples.iter().map(Sample::cpu_per_call_us).collect()),
            ratio(&Sample::cpu_per_call_us),
            median(
                row.samples
                    .iter()
                    .map(Sample::load_cpu_per_call_us)
                    .collect()
            ),
        );
    }
    // The read beside bare serving the same answer, rep by rep.
    let http = o
        .c(&[1, 16, 64])
        .into_iter()
        .map(|c| (READ, READ.to_owned(), SAME_ANSWER, "c", c));
    let stdio = o.c(&[1, 32]).into_iter().map(|w| {
        let label = format!("{READ_STDIO}, W={w}");
        (READ_STDIO, label, SAME_ANSWER_STDIO, "W", w)
    });
    for (name, read_label, same_label, what, c) in http.chain(stdio) {
        let find = |label: &str| rows.iter().find(|r| r.label == label && r.c == c);
        let (Some(read), Some(same)) = (find(&read_label), find(same_label)) else {
            continue;
        };
        let ratio = |f: &dyn Fn(&Sample) -> f64| rep_ratio(&read.samples, &same.samples, f);
        println!(
            "\n{name}, {what} = {c}, against bare rmcp returning the same answer: {:.2}× its \
             calls/s, p99 {:.1}×, CPU per call {:.1}×",
            ratio(&Sample::per_sec),
            ratio(&|s: &Sample| s.pct(0.99)),
            ratio(&Sample::cpu_per_call_us),
        );
    }
    let (ours, bare) = (our_session, bare_session);
    println!(
        "\nper open 2025-11-25 session (RSS growth over {n}, anonymous in brackets): just opened \
         {:.1} kB [{:.1}] (bare rmcp: {:.1} kB [{:.1}]); idle 3 s: {:.1} kB [{:.1}] (bare rmcp: \
         {:.1} kB [{:.1}]); {n} more on top, idle 3 s: {:.1} kB [{:.1}] (bare rmcp: {:.1} kB \
         [{:.1}]); idle RSS 3 s after start: {:.1} MB [{:.1}] (bare rmcp: {:.1} MB [{:.1}])",
        ours.opened,
        ours.opened_anon,
        bare.opened,
        bare.opened_anon,
        ours.idle,
        ours.idle_anon,
        bare.idle,
        bare.idle_anon,
        ours.more_idle,
        ours.more_idle_anon,
        bare.more_idle,
        bare.more_idle_anon,
        idle_rss[0],
        idle_rss[1],
        idle_rss[2],
        idle_rss[3]
    );
    if let Some((_, _, url)) = &pg {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        drop(pg);
        if let Some(admin_url) = &o.postgres {
            let _ = Command::new("psql")
                .args([
                    admin_url.as_str(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .status()
                .await;
        }
    }
    // The console's pages, on the same server and data (timings only).
    if o.wants("console pages") {
        let (rows, reps) = if o.smoke { (200, 5) } else { (100_000, 50) };
        if let Err(e) = console::measure(&cli, &parallax.url, &key, rows, reps).await {
            failures.push(format!("console pages: {e}"));
        }
    }
    let _ = target.name;
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("error: {f}");
        }
        return Err(format!("{} measurement(s) saw failed calls", failures.len()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::profile_of;
    use std::path::Path;

    #[test]
    fn the_profile_is_named_by_the_binaries_directory() {
        assert_eq!(profile_of(Path::new("/w/target/debug")), Some("dev"));
        assert_eq!(profile_of(Path::new("/w/target/release")), Some("release"));
        assert_eq!(profile_of(Path::new("target/profiling")), Some("profiling"));
        assert_eq!(
            profile_of(Path::new("/w/target/x86_64-unknown-linux-gnu/release")),
            Some("release")
        );
    }
}
