//! Log formats, through the real binary: `text` by default, and with `PARALLAX_LOG_FORMAT=json`
//! or `[log] format = "json"` one JSON object per line on stderr, warnings included.

use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_parallax-mcp");

/// The binary with a clean environment and `HOME` in `home`.
fn command(home: &Path, env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .envs(env.iter().copied())
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// Starts `serve` on a free port, reads stderr up to the line that names the address, then stops
/// it with SIGTERM and returns every line it wrote and whether it exited cleanly.
async fn serve_and_stop(env: &[(&str, &str)]) -> (Vec<String>, bool) {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("parallax.db");
    let args = [
        "--db",
        db.to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ];
    let mut child = command(home.path(), env, &args).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let listening = line.contains("listening on http://127.0.0.1:");
            seen.push(line);
            if listening {
                return;
            }
        }
        panic!("server exited before listening: {seen:#?}");
    })
    .await
    .expect("listening in time");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("drained and exited in time");
    (seen, status.success())
}

/// The line as a JSON log event: an object with a level, a target, a timestamp and a message.
fn event(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let level = v["level"].as_str().unwrap_or_default();
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
        "level in {line}"
    );
    assert!(v["fields"]["message"].is_string(), "message in {line}");
    assert!(v["target"].is_string(), "target in {line}");
    assert!(v["timestamp"].is_string(), "timestamp in {line}");
    v
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_from_start_to_shutdown() {
    let (lines, clean) = serve_and_stop(&[("PARALLAX_LOG_FORMAT", "json")]).await;
    assert!(clean, "exit after SIGTERM: {lines:#?}");
    assert!(lines.len() >= 3, "{lines:#?}");
    let events: Vec<Value> = lines.iter().map(|l| event(l)).collect();
    let listening = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .unwrap()
                .starts_with("parallax-mcp listening on http://127.0.0.1:")
        })
        .expect("the listening line");
    assert_eq!(listening["level"], "INFO");
    // Structured fields stay fields, not text in the message.
    let addr = listening["fields"]["addr"].as_str().unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{listening}");
    assert!(
        events.iter().any(|e| e["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("shutting down")),
        "shutdown is logged as JSON too: {lines:#?}"
    );
    assert!(
        listening["target"]
            .as_str()
            .unwrap()
            .starts_with("parallax_mcp"),
        "{listening}"
    );
}

#[tokio::test]
async fn text_stays_the_default() {
    let (lines, clean) = serve_and_stop(&[("NO_COLOR", "1")]).await;
    assert!(clean, "{lines:#?}");
    let listening = lines
        .iter()
        .find(|l| l.contains("listening on http://"))
        .unwrap();
    assert!(
        serde_json::from_str::<Value>(listening).is_err() && listening.contains(" INFO "),
        "{listening}"
    );
}

/// `[log] format` in the file works for one-shot commands too, and the warning about a misspelt
/// variable is then a JSON event as well; a format that does not exist is a usage error.
#[tokio::test]
async fn the_config_file_chooses_json_and_a_bad_format_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("parallax.toml");
    std::fs::write(&file, "[log]\nformat = \"json\"\n").unwrap();
    let file = file.to_str().unwrap();
    let out = command(
        home.path(),
        &[("PARALLAX_LISTN", "127.0.0.1:1")],
        &["--config", file, "config", "check"],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let warning = event(lines[0]);
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        warning["fields"]["message"],
        "unknown variable PARALLAX_LISTN is ignored (did you mean PARALLAX_LISTEN?)"
    );

    let bad = command(
        home.path(),
        &[("PARALLAX_LOG_FORMAT", "xml")],
        &["config", "check"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(bad.stderr).unwrap(),
        "error: PARALLAX_LOG_FORMAT must be text or json, got \"xml\"\n"
    );
    std::fs::write(home.path().join("bad.toml"), "[log]\nformat = \"xml\"\n").unwrap();
    let bad_file = command(
        home.path(),
        &[],
        &["--config", "bad.toml", "config", "check"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(bad_file.status.code(), Some(2));
    let stderr = String::from_utf8(bad_file.stderr).unwrap();
    assert!(
        stderr.starts_with("error: config file ")
            && stderr.contains("(line 2): unknown variant `xml`, expected `text` or `json`"),
        "{stderr}"
    );
}
