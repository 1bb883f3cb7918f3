//! The page frame and small pieces every page shares: navigation with the inbox badge, the CSRF
//! field, times, notices and empty states.

use super::assets;
use super::session::Signed;
use crate::domain::{EventType, Role};
use crate::http::HttpContext;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Inbox,
    Agents,
    Work,
    Delegations,
    Activity,
    Settings,
}

/// A message shown at the top of a page after an action.
pub enum Notice {
    Ok(String),
    Error(String),
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject its indicator styles (CSP) nor evaluate anything.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · parallax-mcp" }
            link rel="stylesheet" href=(assets::url("console.css"));
            script src=(assets::url("htmx.min.js")) defer {}
            script src=(assets::url("console.js")) defer {}
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                header.top { span.brand { "parallax-mcp" } }
                (body)
            }
        }
    }
}

/// An error or refusal page.
pub fn bare_page(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            main.narrow {
                h1 { (title) }
                p.flash.error role="alert" { (message) }
                p { a href="/" { "Back to the console" } }
            }
        },
    )
}

/// The number of pending access requests, for the badge.
pub async fn pending_count(ctx: &HttpContext, who: &Signed) -> u64 {
    ctx.service
        .count_pending_requests(&who.caller)
        .await
        .unwrap_or(0)
}

pub fn badge(count: u64) -> Markup {
    html! {
        span #inbox-count .badge .(if count == 0 { "zero" } else { "" })
            hx-get="/inbox/count" hx-trigger="console:event from:body" hx-swap="outerHTML"
            aria-label=(format!("{count} pending")) { (count) }
    }
}

/// A full console page: navigation, the member, sign-out, then `body`.
pub async fn page(
    ctx: &HttpContext,
    who: &Signed,
    nav: Nav,
    title: &str,
    notice: Option<Notice>,
    body: Markup,
) -> Markup {
    let count = pending_count(ctx, who).await;
    let m = who.member();
    let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(n == nav).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-live="1" data-event-types=(types.join(",")) {
                meta name="csrf-token" content=(who.csrf);
                header.top {
                    span.brand { "parallax-mcp" }
                    span.workspace { (who.workspace().name) }
                    nav aria-label="Console" {
                        ul {
                            li { a href="/" aria-current=[(nav == Nav::Inbox).then_some("page")] { "Inbox " (badge(count)) } }
                            (item(Nav::Agents, "/agents", "Agents"))
                            (item(Nav::Work, "/work", "Work"))
                            (item(Nav::Delegations, "/delegations", "Delegations"))
                            (item(Nav::Activity, "/activity", "Activity"))
                            (item(Nav::Settings, "/settings", "Settings"))
                        }
                    }
                    div.who {
                        span title=(m.email) { (m.name) } " "
                        span.role { (m.role) }
                        form method="post" action="/logout" {
                            (csrf(who))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @match notice {
                        Some(Notice::Ok(t)) => p.flash.ok role="status" { (t) },
                        Some(Notice::Error(t)) => p.flash.error role="alert" { (t) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(who: &Signed) -> Markup {
    html! { input type="hidden" name="_csrf" value=(who.csrf); }
}

pub fn can(who: &Signed, role: Role) -> bool {
    who.member().role.allows(role)
}

/// `2026-12-03 06:45 UTC`, with the exact time on hover.
pub fn time(t: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) }
    }
}

pub fn opt_time(t: &Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// How long ago, in one unit: `3 min ago`.
pub fn age(t: &DateTime<Utc>) -> Markup {
    let secs = (Utc::now() - *t).num_seconds().max(0);
    let text = match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    };
    html! { time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (text) } }
}

pub fn status(s: impl std::fmt::Display) -> Markup {
    let s = s.to_string();
    html! { span class=(format!("status s-{s}")) { (s) } }
}

pub fn empty(text: &str, next: Markup) -> Markup {
    html! { div.empty { p { (text) } (next) } }
}

/// A secret shown once, with a copy button.
pub fn shown_once(label: &str, value: &str) -> Markup {
    html! {
        section.once aria-labelledby="once-title" {
            h2 #once-title { (label) }
            p { "Copy it now: it is shown " strong { "once" } " and never again." }
            div.secret {
                code #secret-value { (value) }
                button type="button" data-copy="secret-value" { "Copy" }
            }
        }
    }
}

/// Raw, already-escaped text (JSON inside `pre`).
pub fn pre_json(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (text) } }
}
