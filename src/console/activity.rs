//! The audit trail: filters (agent, member, type, outcome, project, task, time range), keyset
//! paging by entry id (newest first), a live tail of the first page, rows that open to their
//! metadata, and streamed CSV / JSON Lines export of the filtered view (read page by page, so a
//! million rows never sit in memory).

use super::inbox::urlencode;
use super::session::{ConsoleError, Signed};
use super::views::{self, Nav};
use crate::domain::ActivityEntry;
use crate::http::HttpContext;
use crate::store::ActivityQuery;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};

const PAGE: u64 = 50;

/// The filters as the form sends them (all optional, empty means "any").
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    member: String,
    #[serde(default, rename = "type")]
    activity_type: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    task: String,
    /// `YYYY-MM-DDTHH:MM` (a `datetime-local` field), read as UTC, or RFC 3339.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn parse_time(field: &str, s: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(ConsoleError::Invalid(format!(
        "{field}: expected a date and time such as 2026-12-03T06:45"
    )))
}

impl Filter {
    fn query(&self, limit: u64) -> Result<ActivityQuery, ConsoleError> {
        Ok(ActivityQuery {
            agent_id: opt(&self.agent),
            actor_id: opt(&self.member),
            activity_type: opt(&self.activity_type),
            outcome: opt(&self.outcome),
            project_id: opt(&self.project),
            task_id: opt(&self.task),
            since: parse_time("since", &self.since)?,
            until: parse_time("until", &self.until)?,
            before: opt(&self.before),
            limit,
        })
    }

    /// The filters (without the page cursor) as a query string.
    fn query_string(&self) -> String {
        let pairs = [
            ("agent", &self.agent),
            ("member", &self.member),
            ("type", &self.activity_type),
            ("outcome", &self.outcome),
            ("project", &self.project),
            ("task", &self.task),
            ("since", &self.since),
            ("until", &self.until),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v.trim())))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Entries as a table whose rows open to their metadata.
pub fn table(entries: &[ActivityEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            (views::empty("No activity matches.", html! {}))
        } @else {
            table.activity {
                thead { tr { th { "When" } th { "Actor" } th { "Type" } th { "Outcome" } th { "What" } } }
                tbody {
                    @for e in entries { (row(e)) }
                }
            }
        }
    }
}

fn row(e: &ActivityEntry) -> Markup {
    html! {
        tr data-type=(e.activity_type) {
            td { (views::time(&e.created_at)) }
            td { span.muted { (e.actor_kind) ":" } (e.actor_id) }
            td { code { (e.activity_type) } }
            td { @match e.outcome.as_deref() { Some(o) => (views::status(o)), None => span.muted { "—" } } }
            td {
                details {
                    summary { (e.description) @if let Some(a) = &e.agent_id { " " span.tag { (a) } } }
                    dl.meta {
                        dt { "Entry" } dd { code { (e.id) } }
                        @if let Some(p) = &e.project_id { dt { "Project" } dd { code { (p) } } }
                        @if let Some(t) = &e.task_id { dt { "Task" } dd { code { (t) } } }
                    }
                    (views::pre_json(&e.metadata))
                }
            }
        }
    }
}

pub async fn page(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(f): Query<Filter>,
) -> Result<Markup, ConsoleError> {
    let entries = ctx
        .service
        .list_activity(&who.caller, f.query(PAGE)?)
        .await?;
    let qs = f.query_string();
    let live = f.before.trim().is_empty();
    let next = (entries.len() as u64 == PAGE)
        .then(|| entries.last().map(|e| e.id.clone()))
        .flatten();
    let field = |id: &str, label: &str, name: &str, value: &str, kind: &str| {
        html! {
            div.field {
                label for=(id) { (label) }
                input id=(id) name=(name) type=(kind) value=(value);
            }
        }
    };
    let body = html! {
        form.filters method="get" action="/activity" {
            (field("a-agent", "Agent", "agent", &f.agent, "text"))
            (field("a-member", "Actor (member email)", "member", &f.member, "text"))
            (field("a-type", "Type", "type", &f.activity_type, "text"))
            div.field {
                label for="a-outcome" { "Outcome" }
                select #a-outcome name="outcome" {
                    option value="" { "any" }
                    option value="allowed" selected[f.outcome == "allowed"] { "allowed" }
                    option value="denied" selected[f.outcome == "denied"] { "denied" }
                }
            }
            (field("a-project", "Project id", "project", &f.project, "text"))
            (field("a-task", "Task id", "task", &f.task, "text"))
            (field("a-since", "Since (UTC)", "since", &f.since, "datetime-local"))
            (field("a-until", "Until (UTC)", "until", &f.until, "datetime-local"))
            div.field { button type="submit" { "Filter" } }
        }
        p.exports {
            "Export this view: "
            a href=(format!("/activity/export.csv?{qs}")) download { "CSV" } " · "
            a href=(format!("/activity/export.jsonl?{qs}")) download { "JSON Lines" }
            @if live { " · " span.live { "live" } }
        }
        @if live {
            div #activity-rows hx-get=(format!("/activity/rows?{qs}")) hx-trigger="console:event from:body, every 5s" hx-swap="innerHTML" {
                (table(&entries))
            }
        } @else {
            div #activity-rows { (table(&entries)) }
        }
        nav.pager aria-label="Pages" {
            @if !live { a href=(format!("/activity?{qs}")) { "Newest" } }
            @if let Some(n) = next { a href=(format!("/activity?{qs}&before={}", urlencode(&n))) { "Older →" } }
        }
    };
    Ok(views::page(&ctx, &who, Nav::Activity, "Activity", None, body).await)
}

/// `GET /activity/rows`: the newest page alone, for the live tail.
pub async fn rows(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(mut f): Query<Filter>,
) -> Result<Markup, ConsoleError> {
    f.before.clear();
    let entries = ctx
        .service
        .list_activity(&who.caller, f.query(PAGE)?)
        .await?;
    Ok(table(&entries))
}

pub async fn export_csv(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(f): Query<Filter>,
) -> Result<Response, ConsoleError> {
    export(ctx, who, f, Format::Csv).await
}

pub async fn export_jsonl(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(f): Query<Filter>,
) -> Result<Response, ConsoleError> {
    export(ctx, who, f, Format::Jsonl).await
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
}

const CSV_HEADER: &str = "id,created_at,actor_kind,actor_id,agent_id,type,outcome,project_id,task_id,description,metadata\n";

fn csv_field(s: &str) -> String {
    // Cells starting with a formula character are prefixed so spreadsheets show them as text.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn render(e: &ActivityEntry, format: Format) -> String {
    match format {
        Format::Jsonl => {
            let mut line = serde_json::to_string(e).unwrap_or_default();
            line.push('\n');
            line
        }
        Format::Csv => {
            let o = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
            format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&e.id),
                e.created_at.to_rfc3339(),
                e.actor_kind,
                csv_field(&e.actor_id),
                o(&e.agent_id),
                csv_field(&e.activity_type),
                o(&e.outcome),
                o(&e.project_id),
                o(&e.task_id),
                csv_field(&e.description),
                csv_field(&e.metadata.to_string()),
            )
        }
    }
}

/// Streams the filtered entries, newest first, one store page at a time.
async fn export(
    ctx: HttpContext,
    who: Signed,
    f: Filter,
    format: Format,
) -> Result<Response, ConsoleError> {
    const BATCH: u64 = 500;
    let mut q = f.query(BATCH)?;
    q.before = None;
    // The first page is read now, so a refusal is an error page rather than a cut-off file.
    let first = ctx.service.list_activity(&who.caller, q.clone()).await?;
    let head = match format {
        Format::Csv => CSV_HEADER.to_owned(),
        Format::Jsonl => String::new(),
    };
    struct Export {
        ctx: HttpContext,
        who: Signed,
        q: ActivityQuery,
        first: Option<Vec<ActivityEntry>>,
        head: Option<String>,
        done: bool,
    }
    let state = Export {
        ctx,
        who,
        q,
        first: Some(first),
        head: Some(head),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut s| async move {
        if let Some(h) = s.head.take() {
            return Some((Ok::<_, std::io::Error>(h), s));
        }
        if s.done {
            return None;
        }
        let page = match s.first.take() {
            Some(p) => p,
            None => match s
                .ctx
                .service
                .list_activity(&s.who.caller, s.q.clone())
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "console: activity export cut short");
                    s.done = true;
                    return Some((Err(std::io::Error::other("export failed")), s));
                }
            },
        };
        if page.is_empty() {
            return None;
        }
        // A short page is the last one.
        s.done = (page.len() as u64) < BATCH;
        s.q.before = page.last().map(|e| e.id.clone());
        let chunk: String = page.iter().map(|e| render(e, format)).collect();
        Some((Ok(chunk), s))
    });
    let (kind, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "activity.csv"),
        Format::Jsonl => ("application/jsonl; charset=utf-8", "activity.jsonl"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
