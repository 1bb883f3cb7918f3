//! The console's pages under load-sized data (issue 10): the audit trail topped up to `rows`
//! entries (the agent's own `agent_log_activity` calls, on top of everything the load already
//! wrote), 1,000 agents and 10,000 tasks from the seed; then each page is fetched `reps` times, one
//! at a time, as a signed-in admin. The time is the server's answer on loopback (request to
//! last byte). The target is p99 under 50 ms; reported, never asserted.

use super::{Call, Cli, Era, HttpClient, Result, form_encode};
use serde_json::json;
use std::time::{Duration, Instant};

/// The bar every page should pass.
const TARGET_MS: f64 = 50.0;

/// Writes about `rows` activity entries through the gate, 32 sessions at a time.
async fn fill(mcp_url: &str, key: &str, rows: usize) -> Result<()> {
    let started = Instant::now();
    let workers = 32;
    let mut running = Vec::new();
    for w in 0..workers {
        let (url, key) = (mcp_url.to_owned(), key.to_owned());
        let n = rows / workers + usize::from(w < rows % workers);
        running.push(tokio::spawn(async move {
            let mut client = HttpClient::new(&url, Some(&key))?;
            client.open_session().await?;
            let call = Call::tool(
                "agent_log_activity",
                json!({ "type": "note", "description": "console bench" }),
            );
            for _ in 0..n {
                client.call(&call, Era::Session).await?;
            }
            Ok::<_, super::Error>(())
        }));
    }
    for r in running {
        r.await??;
    }
    eprintln!(
        "wrote {rows} activity entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A console session for the workspace's admin, from a login link made with the real CLI.
async fn sign_in(cli: &Cli, mcp_url: &str, http: &reqwest::Client) -> Result<String> {
    let mut cmd = cli.cmd(&["member", "login-link"]);
    cmd.env("PARALLAX_PUBLIC_URL", mcp_url);
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(format!(
            "member login-link: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let link = String::from_utf8(out.stdout)?;
    let token = link
        .trim()
        .rsplit('#')
        .next()
        .unwrap_or_default()
        .to_owned();
    let base = mcp_url.trim_end_matches("/mcp");
    let res = http
        .post(format!("{base}/login/link"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", form_encode(&token)))
        .send()
        .await?;
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| format!("sign-in refused: HTTP {}", res.status()))?
        .to_owned();
    Ok(cookie)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Tops up the trail, signs in and prints the table of page times.
pub(crate) async fn measure(
    cli: &Cli,
    mcp_url: &str,
    key: &str,
    rows: usize,
    reps: usize,
) -> Result<()> {
    fill(mcp_url, key, rows).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(cli, mcp_url, &http).await?;
    let base = mcp_url.trim_end_matches("/mcp").to_owned();
    let get = |path: String| {
        let (http, cookie, base) = (http.clone(), cookie.clone(), base.clone());
        async move {
            let started = Instant::now();
            let res = http
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await?;
            let status = res.status();
            let body = res.text().await?;
            let took = started.elapsed();
            if !status.is_success() {
                return Err(super::Error::from(format!("GET {path}: HTTP {status}")));
            }
            Ok::<(Duration, String), super::Error>((took, body))
        }
    };
    // A cursor a page deep, for the keyset-paged view.
    let (_, first) = get("/activity".to_owned()).await?;
    let before = first
        .split("before=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let pages: Vec<(&str, String)> = vec![
        ("inbox", "/".into()),
        ("inbox badge (htmx)", "/inbox/count".into()),
        ("agents", "/agents".into()),
        ("agents, page 6", "/agents?page=5".into()),
        ("agent page", "/agents/bench-agent".into()),
        ("work (one project)", "/work".into()),
        ("delegations", "/delegations".into()),
        ("activity, newest", "/activity".into()),
        ("activity, older page", format!("/activity?before={before}")),
        ("activity, one agent", "/activity?agent=bench-agent".into()),
        (
            "activity, a member",
            "/activity?member=admin%40bench.test".into(),
        ),
        (
            "activity, a rare type",
            "/activity?type=member.signed_in".into(),
        ),
        ("activity, denied only", "/activity?outcome=denied".into()),
        (
            "activity, time range",
            "/activity?since=2000-01-01T00%3A00&until=2100-01-01T00%3A00".into(),
        ),
        ("settings", "/settings".into()),
    ];
    println!(
        "\nconsole pages — {rows} activity entries written for it (plus the load's), {reps} fetches each, one at a time\n"
    );
    println!("| page | p50 ms | p99 ms | under {TARGET_MS:.0} ms |");
    println!("| --- | ---: | ---: | :---: |");
    let mut over = Vec::new();
    for (label, path) in &pages {
        // Warm the connection and the page's statements first.
        for _ in 0..3 {
            get(path.clone()).await?;
        }
        let mut ms = Vec::with_capacity(reps);
        for _ in 0..reps {
            ms.push(get(path.clone()).await?.0.as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let (p50, p99) = (pct(&ms, 0.5), pct(&ms, 0.99));
        let ok = p99 < TARGET_MS;
        if !ok {
            over.push(*label);
        }
        println!(
            "| {label} | {p50:.2} | {p99:.2} | {} |",
            if ok { "yes" } else { "**no**" }
        );
    }
    if !over.is_empty() {
        eprintln!(
            "console pages over {TARGET_MS} ms at p99: {}",
            over.join(", ")
        );
    }
    Ok(())
}
