//! Short-lived tokens, OAuth discovery and rate limits, attacked through the real server: every
//! forged, stale or misdirected token is refused with the exact status and `error=` value, and
//! leaves nothing behind but audit entries.

use crate::support::server::*;
use parallax_mcp::auth::Tokens;
use parallax_mcp::config::AuthConfig;
use std::time::Duration;

// ---- member tokens ----

#[tokio::test]
async fn member_tokens_name_the_member_and_nothing_else_passes() {
    let w = world().await;
    let tokens = Tokens::load(w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    let token = tokens
        .mint_member(&w.admin, Duration::from_secs(60))
        .await
        .unwrap();
    let caller = tokens.member(&token).await.unwrap().unwrap();
    assert_eq!(caller.member().id, w.admin.member().id);
    assert_eq!(caller.workspace().id, w.admin.workspace().id);

    // A second loader on the same store (another replica) shares the key.
    let replica = Tokens::load(w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    assert!(replica.member(&token).await.unwrap().is_ok());

    // Tampered payload, truncated, garbage: refused with a reason that never echoes the token.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    for bad in [
        parts.join("."),
        token[..token.len() - 3].to_owned(),
        "x.y.z".to_owned(),
        String::new(),
    ] {
        let refusal = tokens.member(&bad).await.unwrap().unwrap_err();
        assert!(!refusal.reason.contains(&token), "{}", refusal.reason);
    }

    // Lifetimes outside 1 s ..= 24 h are refused at minting.
    assert!(tokens.mint_member(&w.admin, Duration::ZERO).await.is_err());
    assert!(
        tokens
            .mint_member(&w.admin, Duration::from_secs(24 * 3600 + 1))
            .await
            .is_err()
    );

    // A configured key: tokens from the stored key are not accepted, and vice versa.
    let configured = AuthConfig {
        signing_key: Some("k".repeat(40)),
        ..AuthConfig::default()
    };
    let fixed = Tokens::load(w.svc.store().clone(), &configured)
        .await
        .unwrap();
    assert!(fixed.member(&token).await.unwrap().is_err());
    let other = fixed
        .mint_member(&w.other_admin, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        fixed.member(&other).await.unwrap().unwrap().member().email,
        "admin@rival.test"
    );
    assert!(tokens.member(&other).await.unwrap().is_err());
}

#[tokio::test]
async fn member_token_cli_prints_only_the_token() {
    let w = world().await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "--database-url",
            &w.db.url,
            "-w",
            "acme",
            "--as",
            "admin@acme.test",
            "member",
            "token",
            "--ttl-secs",
            "120",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let tokens = Tokens::load(w.svc.store().clone(), &AuthConfig::default())
        .await
        .unwrap();
    let caller = tokens.member(text.trim()).await.unwrap().unwrap();
    assert_eq!(caller.member().email, "admin@acme.test");
}
