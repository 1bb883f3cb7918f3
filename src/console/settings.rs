//! Settings (admins): the workspace's settings with errors next to their field, webhook secret
//! rotation (shown once), webhook deliveries with redelivery, and members. Other roles see the
//! settings and members read-only.

use super::form::Posted;
use super::inbox::{Done, done_notice};
use super::session::{ConsoleError, Signed, message_of, status_of};
use super::views::{self, Nav, Notice};
use crate::domain::*;
use crate::http::HttpContext;
use crate::service::ServiceError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// What the form shows for each setting, and the errors beside them.
#[derive(Default)]
struct Form {
    values: BTreeMap<String, String>,
    errors: BTreeMap<String, String>,
}

fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Each setting as the text a person types to set it (lists comma-joined, unset empty).
fn current_values(s: &WorkspaceSettings) -> BTreeMap<String, String> {
    let map = match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => Default::default(),
    };
    SETTING_KEYS
        .iter()
        .map(|k| {
            let v = match map.get(&camel(k)) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                Some(serde_json::Value::String(v)) => v.clone(),
                Some(v) => v.to_string(),
            };
            ((*k).to_owned(), v)
        })
        .collect()
}

fn label(key: &str) -> String {
    let mut s = key.replace('_', " ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

fn hint(key: &str) -> &'static str {
    match key {
        "auto_approve_permissions" | "default_permissions" => {
            "Comma-separated permissions, e.g. read:tasks,read:projects"
        }
        "auto_approve_capabilities" => {
            "Comma-separated capabilities; empty turns auto-approval off"
        }
        "control_plane_url" => "https://… where webhooks go; empty for none",
        k if k.ends_with("_days") || k.ends_with("_hours") || k.ends_with("_minutes") => {
            "A number; empty for none"
        }
        _ => "",
    }
}

pub async fn page(
    State(ctx): State<HttpContext>,
    who: Signed,
    Query(done): Query<Done>,
) -> Result<Markup, ConsoleError> {
    let ws = ctx.service.workspace(&who.caller).await?;
    let form = Form {
        values: current_values(&ws.settings),
        ..Default::default()
    };
    settings_page(&ctx, &who, form, done_notice(&done), None).await
}

async fn settings_page(
    ctx: &HttpContext,
    who: &Signed,
    form: Form,
    notice: Option<Notice>,
    once: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let admin = views::can(who, Role::Admin);
    let members = ctx.service.list_members(&who.caller).await?;
    let deliveries = if admin {
        let mut d = ctx.service.list_deliveries(&who.caller, None).await?;
        d.reverse();
        d.truncate(50);
        d
    } else {
        Vec::new()
    };
    let body = html! {
        @if let Some(once) = once { (once) }
        section {
            h2 { "Workspace settings" }
            @if !admin { p.muted { "Only admins change settings." } }
            form.settings method="post" action="/settings" novalidate {
                (views::csrf(who))
                @for key in SETTING_KEYS {
                    @let id = format!("set-{key}");
                    @let value = form.values.get(*key).cloned().unwrap_or_default();
                    @let error = form.errors.get(*key);
                    div.field.(if error.is_some() { "invalid" } else { "" }) {
                        label for=(id) { (label(key)) }
                        @if matches!(*key, "enabled" | "delegation_requires_approval") {
                            select id=(id) name=(key) disabled[!admin] {
                                option value="true" selected[value == "true"] { "yes" }
                                option value="false" selected[value == "false"] { "no" }
                            }
                        } @else {
                            input id=(id) name=(key) value=(value) disabled[!admin]
                                aria-invalid=[error.map(|_| "true")]
                                aria-describedby=(format!("{id}-help"));
                        }
                        @if let Some(e) = error {
                            span.field-error id=(format!("{id}-help")) role="alert" { (e) }
                        } @else {
                            span.hint id=(format!("{id}-help")) { (hint(key)) }
                        }
                    }
                }
                @if admin { button.primary type="submit" { "Save settings" } }
            }
        }
        @if admin {
            section {
                h2 { "Webhook secret" }
                p { "Signs webhooks to the control plane and its signed requests to us. A new secret is shown once; the previous ones keep working for the grace period." }
                form method="post" action="/settings/webhook-secret" {
                    (views::csrf(who))
                    div.field {
                        label for="grace" { "Grace period (seconds)" }
                        input #grace name="grace_secs" type="number" min="0" value=(crate::service::DEFAULT_SECRET_GRACE_SECS);
                    }
                    button type="submit" { "Rotate webhook secret" }
                }
            }
            section {
                h2 { "Webhook deliveries" }
                @if deliveries.is_empty() {
                    p.muted { "No deliveries. Set a control plane URL to send events." }
                } @else {
                    table {
                        thead { tr { th { "Event" } th { "Status" } th { "Attempts" } th { "Last answer" } th { "Created" } th {} } }
                        tbody {
                            @for d in &deliveries {
                                tr {
                                    td { code { (d.event_type) } @if let Some(a) = &d.agent_id { " " span.tag { (a) } } }
                                    td { (views::status(d.status)) }
                                    td { (d.attempts) }
                                    td { @if let Some(s) = d.last_status { (s) " " } @if let Some(e) = &d.last_error { span.muted { (e) } } }
                                    td { (views::time(&d.created_at)) }
                                    td {
                                        form.inline method="post" action=(format!("/settings/deliveries/{}/redeliver", d.id)) {
                                            (views::csrf(who))
                                            button type="submit" { "Redeliver" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Members" }
            table.members {
                thead { tr { th { "Email" } th { "Name" } th { "Role" } th { "Added" } @if admin { th { "Change" } } } }
                tbody {
                    @for m in &members {
                        tr {
                            td { (m.email) }
                            td { (m.name) }
                            td { (m.role) }
                            td { (views::time(&m.created_at)) }
                            @if admin {
                                td {
                                    form.inline method="post" action="/settings/members" {
                                        (views::csrf(who))
                                        input type="hidden" name="action" value="role";
                                        input type="hidden" name="email" value=(m.email);
                                        label.sr for=(format!("role-{}", m.id)) { "Role of " (m.email) }
                                        select id=(format!("role-{}", m.id)) name="role" {
                                            @for r in Role::ALL { option value=(r) selected[*r == m.role] { (r) } }
                                        }
                                        button type="submit" { "Set role" }
                                    }
                                    form.inline method="post" action="/settings/members" {
                                        (views::csrf(who))
                                        input type="hidden" name="action" value="remove";
                                        input type="hidden" name="email" value=(m.email);
                                        button.danger type="submit" aria-label=(format!("Remove {}", m.email)) { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if admin {
                form.add-member method="post" action="/settings/members" {
                    (views::csrf(who))
                    input type="hidden" name="action" value="add";
                    div.field { label for="m-email" { "Email" } input #m-email name="email" type="email" required; }
                    div.field { label for="m-name" { "Name" } input #m-name name="name"; }
                    div.field {
                        label for="m-role" { "Role" }
                        select #m-role name="role" { @for r in Role::ALL { option value=(r) selected[*r == Role::Read] { (r) } } }
                    }
                    div.field { button.primary type="submit" { "Add member" } }
                }
            }
        }
    };
    Ok(views::page(ctx, who, Nav::Settings, "Settings", notice, body).await)
}

/// `POST /settings`: each changed field is checked on its own, so every error shows beside its
/// field; nothing is saved unless all are valid.
pub async fn save(State(ctx): State<HttpContext>, p: Posted) -> Result<Response, ConsoleError> {
    let ws = ctx.service.workspace(&p.who.caller).await?;
    let current = current_values(&ws.settings);
    let mut form = Form {
        values: current.clone(),
        ..Default::default()
    };
    let mut changes = Vec::new();
    for key in SETTING_KEYS {
        let sent = p.fields.get(key);
        if p.fields.pairs().iter().all(|(k, _)| k != key) {
            continue;
        }
        form.values.insert((*key).to_owned(), sent.to_owned());
        if current.get(*key).map(String::as_str) == Some(sent) {
            continue;
        }
        let mut probe = ws.settings.clone();
        let value = if sent.is_empty() { "none" } else { sent };
        match probe.apply(key, value) {
            Ok(()) => changes.push(((*key).to_owned(), value.to_owned())),
            Err(e) => {
                form.errors.insert((*key).to_owned(), e.0);
            }
        }
    }
    if !form.errors.is_empty() {
        let notice = Notice::Error("Some settings are not valid; nothing was saved.".into());
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            settings_page(&ctx, &p.who, form, Some(notice), None).await?,
        )
            .into_response());
    }
    if changes.is_empty() {
        return Ok(Redirect::to("/settings").into_response());
    }
    match ctx.service.update_settings(&p.who.caller, &changes).await {
        Ok(_) => Ok(Redirect::to("/settings?ok=settings").into_response()),
        Err(e) => refused(&ctx, &p.who, form, &e).await,
    }
}

/// The settings page again with the service's refusal above `form`, under the refusal's status.
async fn refused(
    ctx: &HttpContext,
    who: &Signed,
    form: Form,
    e: &ServiceError,
) -> Result<Response, ConsoleError> {
    let notice = Some(Notice::Error(message_of(e)));
    let page = settings_page(ctx, who, form, notice, None).await?;
    Ok((status_of(e), page).into_response())
}

async fn fresh_form(ctx: &HttpContext, who: &Signed) -> Result<Form, ConsoleError> {
    let ws = ctx.service.workspace(&who.caller).await?;
    Ok(Form {
        values: current_values(&ws.settings),
        ..Default::default()
    })
}

pub async fn rotate_secret(
    State(ctx): State<HttpContext>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    let grace = p
        .fields
        .get("grace_secs")
        .parse::<u64>()
        .unwrap_or(crate::service::DEFAULT_SECRET_GRACE_SECS);
    match ctx
        .service
        .rotate_webhook_secret(&p.who.caller, grace)
        .await
    {
        Ok(secret) => {
            let once = views::shown_once("New webhook secret", &secret.expose());
            let form = fresh_form(&ctx, &p.who).await?;
            Ok(settings_page(&ctx, &p.who, form, None, Some(once))
                .await?
                .into_response())
        }
        Err(e) => refused(&ctx, &p.who, fresh_form(&ctx, &p.who).await?, &e).await,
    }
}

pub async fn redeliver(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    p: Posted,
) -> Result<Response, ConsoleError> {
    match ctx.service.redeliver(&p.who.caller, &id).await {
        Ok(_) => Ok(Redirect::to("/settings?ok=redelivered").into_response()),
        Err(e) => refused(&ctx, &p.who, fresh_form(&ctx, &p.who).await?, &e).await,
    }
}

/// `POST /settings/members`: `action` is `add`, `role` or `remove`.
pub async fn member(State(ctx): State<HttpContext>, p: Posted) -> Result<Response, ConsoleError> {
    let f = &p.fields;
    let role =
        || Role::parse(f.get("role")).map_err(|e| crate::service::ServiceError::Invalid(e.0));
    let caller = &p.who.caller;
    let result = match f.get("action") {
        "add" => match role() {
            Ok(r) => ctx
                .service
                .add_member(caller, f.get("email"), f.get("name"), r)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        },
        "role" => match role() {
            Ok(r) => ctx
                .service
                .set_member_role(caller, f.get("email"), r)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        },
        "remove" => ctx
            .service
            .remove_member(caller, f.get("email"))
            .await
            .map(|_| ()),
        _ => return Err(ConsoleError::Invalid("unknown member action".into())),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/settings?ok=member").into_response()),
        Err(e) => refused(&ctx, &p.who, fresh_form(&ctx, &p.who).await?, &e).await,
    }
}
