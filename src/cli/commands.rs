//! One handler per command: resolve the caller, call the service, render the result as a table
//! (default) or JSON (`--json`). Handlers return the text to print.

use super::CliError;
use super::args::*;
use super::output::{Details, Table, list, opt_time, or_dash, time};
use crate::auth::{self, MemberCaller};
use crate::config::Config;
use crate::domain::*;
use crate::service::{
    AccessRequest, AgentDetails, AssignTarget, DelegationResolution, Service, ServiceError,
    TaskUpdate,
};
use crate::store::{ActivityQuery, Create, Store};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;

type Out = Result<String, CliError>;

/// What every handler needs: the service and how to render.
struct Ctx {
    svc: Service,
    json: bool,
    workspace: Option<String>,
    as_member: Option<String>,
}

impl Ctx {
    /// The member named by `--as` in the workspace named by `--workspace`.
    async fn caller(&self) -> Result<MemberCaller, CliError> {
        let ws = self.workspace.as_deref().ok_or_else(|| {
            CliError::Usage(
                "no workspace given: pass --workspace <slug> or set PARALLAX_WORKSPACE".into(),
            )
        })?;
        let email = self.as_member.as_deref().ok_or_else(|| {
            CliError::Usage(
                "no member given: pass --as <email> or set PARALLAX_AS to act as a member".into(),
            )
        })?;
        Ok(auth::member(self.svc.store(), ws, email).await?)
    }

    /// JSON of `value` with `--json`, otherwise the text `human` builds.
    fn render<T: Serialize + ?Sized>(&self, value: &T, human: impl FnOnce() -> String) -> Out {
        if self.json {
            let mut s =
                serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.into()))?;
            s.push('\n');
            Ok(s)
        } else {
            Ok(human())
        }
    }
}

pub(super) async fn dispatch(cli: Cli, config: &Config) -> Out {
    let Cli { global, command } = cli;
    match command {
        Command::Serve { .. } => {
            crate::http::serve(config).await?;
            return Ok(String::new());
        }
        Command::Stdio => {
            crate::mcp::serve_stdio(config).await?;
            return Ok(String::new());
        }
        Command::Migrate { status } => return migrate(config, status, global.json).await,
        Command::SigningKey(SigningKeyCmd::Rotate) => return rotate_signing_key(config).await,
        Command::Secrets(cmd) => return secrets(config, cmd).await,
        Command::Config(ConfigCmd::Check) => {
            // A secret file `serve` could not read is a configuration error here too.
            config
                .oidc
                .client_secret()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            return Ok(crate::config::reference::check_report(config));
        }
        // Also run before configuration is loaded (`cli::run_standalone`).
        Command::Completions { shell } => return Ok(super::generate::completions(shell)),
        Command::Man { out } => return super::generate::man(out.as_deref()),
        _ => {}
    }
    // Only `workspace create` may start a new database; every other command needs one to exist.
    let create = if matches!(command, Command::Workspace(WorkspaceCmd::Create { .. })) {
        config
            .prepare_default_location()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Create::IfMissing
    } else {
        Create::Never
    };
    let ctx = Ctx {
        svc: Service::new(open_store(config, create).await?),
        json: global.json,
        workspace: global.workspace,
        as_member: global.as_member,
    };
    let out = match command {
        Command::Serve { .. }
        | Command::Stdio
        | Command::Migrate { .. }
        | Command::SigningKey(_)
        | Command::Secrets(_)
        | Command::Config(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("handled above")
        }
        Command::Workspace(cmd) => workspace(&ctx, cmd).await,
        Command::Member(cmd) => member(&ctx, cmd, config).await,
        Command::Project(cmd) => project(&ctx, cmd).await,
        Command::Task(cmd) => task(&ctx, cmd).await,
        Command::Page(cmd) => page(&ctx, cmd).await,
        Command::Agent(cmd) => agent(&ctx, cmd).await,
        Command::Assign(a) => assign(&ctx, a).await,
        Command::Unassign { assignment_id } => unassign(&ctx, &assignment_id).await,
        Command::Assignments(a) => assignments(&ctx, a).await,
        Command::Delegation(cmd) => delegation(&ctx, cmd).await,
        Command::Activity(a) => activity(&ctx, a).await,
        Command::Delivery(cmd) => delivery(&ctx, cmd).await,
    };
    ctx.svc.store().clone().close().await;
    out
}

// ---- signing keys ----

async fn rotate_signing_key(config: &Config) -> Out {
    if config.auth.signing_key.is_some() {
        return Err(CliError::Invalid(
            "a signing key is configured ([auth] signing_key / PARALLAX_SIGNING_KEY): rotate it by changing the configuration".into(),
        ));
    }
    let store = open_store(config, Create::Never).await?;
    let result = auth::Tokens::rotate(&store).await;
    store.close().await;
    let kid = result?;
    Ok(format!(
        "New signing key {kid} is current; tokens signed by the previous key stay valid until they expire.\n"
    ))
}

/// Opens the database with the configured master key; a key that does not open the stored
/// secrets stops the command (see `Store::with_master_key`).
async fn open_store(config: &Config, create: Create) -> Result<Store, CliError> {
    let key = config
        .master_key()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let store = Store::open_with(&config.database_url, create).await?;
    Ok(store.with_master_key(key).await?.0)
}

// ---- secrets ----

async fn secrets(config: &Config, cmd: SecretsCmd) -> Out {
    // The new key is read before anything is opened: a bad file changes nothing.
    let new_key = match &cmd {
        SecretsCmd::Encrypt => None,
        SecretsCmd::RotateMaster { new_key_file } => {
            let path = new_key_file.to_string_lossy();
            crate::config::read_master_key(None, Some(&path))
                .map_err(|e| CliError::Usage(e.to_string()))?
        }
    };
    let store = open_store(config, Create::Never).await?;
    let result = match &new_key {
        None => store.encrypt_secrets().await,
        Some(new) => store.rotate_master_key(new).await,
    };
    store.close().await;
    let n = result?;
    // Key ids only: the keys themselves are never printed.
    Ok(match new_key {
        None => format!(
            "Encrypted {n} secrets stored in clear under master key {}.\n",
            config
                .master_key()
                .ok()
                .flatten()
                .map(|k| k.id().to_owned())
                .unwrap_or_default()
        ),
        Some(new) => format!(
            "Re-encrypted {n} secrets under master key {}. Configure it (PARALLAX_MASTER_KEY or [secrets] master_key_file) and restart every server.\n",
            new.id()
        ),
    })
}

// ---- migrate ----

async fn migrate(config: &Config, status_only: bool, json: bool) -> Out {
    // Connect without migrating: `Store::open` would apply them before we could report.
    let store = Store::connect_with(&config.database_url, Create::Never).await?;
    let result = if status_only {
        store.pending_migrations().await
    } else {
        store.migrate().await
    };
    store.close().await;
    let names = result?;
    if json {
        let key = if status_only { "pending" } else { "applied" };
        return Ok(format!(
            "{}\n",
            json!({ key: names, "upToDate": !status_only || names.is_empty() })
        ));
    }
    Ok(match (status_only, names.is_empty()) {
        (_, true) => "Database is up to date: no pending migrations.\n".to_owned(),
        (true, false) => format!(
            "{} pending migration(s); apply with `parallax-mcp migrate`:\n{}",
            names.len(),
            indented(&names)
        ),
        (false, false) => format!(
            "Applied {} migration(s):\n{}",
            names.len(),
            indented(&names)
        ),
    })
}

fn indented(names: &[String]) -> String {
    names.iter().map(|n| format!("  {n}\n")).collect()
}

// ---- workspaces and members ----

async fn workspace(ctx: &Ctx, cmd: WorkspaceCmd) -> Out {
    match cmd {
        WorkspaceCmd::Create {
            slug,
            name,
            admin_email,
            admin_name,
        } => {
            let (ws, admin) = ctx
                .svc
                .create_workspace(&slug, &name, &admin_email, &admin_name)
                .await?;
            ctx.render(&json!({ "workspace": ws, "admin": admin }), || {
                format!(
                    "Created workspace {} ({:?}) with admin {}.\nAct in it with: export PARALLAX_WORKSPACE={} PARALLAX_AS={}\n",
                    ws.slug, ws.name, admin.email, ws.slug, admin.email
                )
            })
        }
        WorkspaceCmd::List => {
            let all = ctx.svc.list_workspaces().await?;
            ctx.render(&all, || {
                let mut t = Table::new(&["SLUG", "NAME", "CREATED", "ID"]);
                for w in &all {
                    t.row(vec![
                        w.slug.clone(),
                        w.name.clone(),
                        time(&w.created_at),
                        w.id.clone(),
                    ]);
                }
                t.render("No workspaces yet: create one with `parallax-mcp workspace create`.")
            })
        }
        WorkspaceCmd::Show => {
            let ws = ctx.svc.workspace(&ctx.caller().await?).await?;
            ctx.render(&ws, || {
                let head = Details::new()
                    .field("slug", &ws.slug)
                    .field("name", &ws.name)
                    .field("id", &ws.id)
                    .field("created", time(&ws.created_at))
                    .render();
                format!("{head}\nSettings:\n{}", settings_table(&ws.settings))
            })
        }
        WorkspaceCmd::Settings { set } => {
            let caller = ctx.caller().await?;
            let ws = if set.is_empty() {
                ctx.svc.workspace(&caller).await?
            } else {
                ctx.svc.update_settings(&caller, &set).await?
            };
            ctx.render(&ws.settings, || {
                let changed = if set.is_empty() {
                    String::new()
                } else {
                    format!("Updated {}.\n", keys(&set))
                };
                format!("{changed}{}", settings_table(&ws.settings))
            })
        }
        WorkspaceCmd::WebhookSecret(WebhookSecretCmd::Rotate { grace_secs }) => {
            let caller = ctx.caller().await?;
            let secret = ctx.svc.rotate_webhook_secret(&caller, grace_secs).await?;
            let shown = secret.expose();
            ctx.render(
                &json!({ "secret": shown, "previousValidForSecs": grace_secs }),
                || {
                    format!(
                        "New webhook secret for {} (store it now, it will not be shown again):\n\n    {shown}\n\n\
                         Previous secrets stay valid for {grace_secs} s. Give the new one to the control plane.\n",
                        caller.workspace().slug
                    )
                },
            )
        }
    }
}

fn keys(set: &[(String, String)]) -> String {
    set.iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settings as `KEY VALUE` rows in their documented order; lists comma-joined, unset as `none`.
fn settings_table(s: &WorkspaceSettings) -> String {
    let Ok(Value::Object(map)) = serde_json::to_value(s) else {
        return String::new();
    };
    let mut t = Table::new(&["KEY", "VALUE"]);
    for key in SETTING_KEYS {
        let shown = match map.get(*key) {
            None | Some(Value::Null) => "none".to_owned(),
            Some(Value::Array(items)) if items.is_empty() => "(empty)".to_owned(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            Some(Value::String(v)) => v.clone(),
            Some(v) => v.to_string(),
        };
        t.row(vec![(*key).to_owned(), shown]);
    }
    t.render("")
}

/// Where the console is: the origin of `public_url`, else the listen address (a wildcard
/// address read as loopback).
fn console_origin(config: &Config) -> String {
    match &config.public_url {
        Some(url) => {
            let url = url.trim_end_matches('/');
            url.strip_suffix("/mcp").unwrap_or(url).to_owned()
        }
        None => {
            let listen = config
                .listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:");
            format!("http://{listen}")
        }
    }
}

async fn member(ctx: &Ctx, cmd: MemberCmd, config: &Config) -> Out {
    let caller = ctx.caller().await?;
    match cmd {
        MemberCmd::Token { ttl_secs } => {
            let ttl = ttl_secs.map_or(config.auth.token_ttl(), std::time::Duration::from_secs);
            let tokens = auth::Tokens::load(ctx.svc.store().clone(), &config.auth).await?;
            let token = tokens.mint_member(&caller, ttl).await?;
            // The token only, so `$(parallax-mcp member token …)` works.
            Ok(format!("{token}\n"))
        }
        MemberCmd::LoginLink { ttl_secs } => {
            let link = ctx.svc.create_login_link(&caller, ttl_secs).await?;
            // The token goes in the fragment: browsers send it to no server and in no Referer.
            let url = format!("{}/login#{}", console_origin(config), link.token);
            ctx.render(&json!({ "url": url, "expiresAt": link.expires_at }), || {
                format!("{url}\n")
            })
        }
        MemberCmd::Add { email, role, name } => {
            let m = ctx.svc.add_member(&caller, &email, &name, role).await?;
            ctx.render(&m, || {
                format!(
                    "Added {} to {} as {}.\n",
                    m.email,
                    caller.workspace().slug,
                    m.role
                )
            })
        }
        MemberCmd::List => {
            let all = ctx.svc.list_members(&caller).await?;
            ctx.render(&all, || {
                let mut t = Table::new(&["EMAIL", "NAME", "ROLE", "ADDED"]);
                for m in &all {
                    t.row(vec![
                        m.email.clone(),
                        m.name.clone(),
                        m.role.to_string(),
                        time(&m.created_at),
                    ]);
                }
                t.render("No members.")
            })
        }
        MemberCmd::Role { email, role } => {
            let m = ctx.svc.set_member_role(&caller, &email, role).await?;
            ctx.render(&m, || format!("{} is now {}.\n", m.email, m.role))
        }
        MemberCmd::Remove { email } => {
            let m = ctx.svc.remove_member(&caller, &email).await?;
            ctx.render(&m, || {
                format!("Removed {} from {}.\n", m.email, caller.workspace().slug)
            })
        }
    }
}

// ---- projects, tasks, pages ----

async fn project(ctx: &Ctx, cmd: ProjectCmd) -> Out {
    let caller = ctx.caller().await?;
    match cmd {
        ProjectCmd::Create { name, description } => {
            let p = ctx.svc.create_project(&caller, &name, &description).await?;
            ctx.render(&p, || {
                let d = Details::new()
                    .field("id", &p.id)
                    .field("name", &p.name)
                    .field("status", p.status.as_str());
                format!("Created project {:?}.\n{}", p.name, d.render())
            })
        }
        ProjectCmd::List => {
            let all = ctx.svc.list_projects(&caller).await?;
            ctx.render(&all, || {
                let mut t = Table::new(&["ID", "NAME", "STATUS", "CREATED"]);
                for p in &all {
                    t.row(vec![
                        p.id.clone(),
                        p.name.clone(),
                        p.status.to_string(),
                        time(&p.created_at),
                    ]);
                }
                t.render("No projects yet: create one with `parallax-mcp project create`.")
            })
        }
    }
}

fn task_details(t: &Task) -> String {
    Details::new()
        .field("id", &t.id)
        .field("title", &t.title)
        .field("project", &t.project_id)
        .field("status", t.status.as_str())
        .field("updated", time(&t.updated_at))
        .render()
}

async fn task(ctx: &Ctx, cmd: TaskCmd) -> Out {
    let caller = ctx.caller().await?;
    match cmd {
        TaskCmd::Create {
            project,
            titles,
            description,
        } => {
            let mut created = Vec::with_capacity(titles.len());
            for title in &titles {
                created.push(
                    ctx.svc
                        .create_task(&caller, &project, title, &description)
                        .await?,
                );
            }
            let human = || {
                created
                    .iter()
                    .map(|t| format!("Created task {:?}.\n{}", t.title, task_details(t)))
                    .collect::<String>()
            };
            match created.as_slice() {
                // One title keeps the one-object output scripts already parse.
                [one] => ctx.render(one, human),
                many => ctx.render(many, human),
            }
        }
        TaskCmd::List { project, status } => {
            let all = ctx
                .svc
                .list_tasks(&caller, project.as_deref(), status)
                .await?;
            ctx.render(&all, || {
                let mut t = Table::new(&["ID", "STATUS", "PROJECT", "TITLE"]);
                for task in &all {
                    t.row(vec![
                        task.id.clone(),
                        task.status.to_string(),
                        task.project_id.clone(),
                        task.title.clone(),
                    ]);
                }
                t.render("No tasks.")
            })
        }
        TaskCmd::Update {
            id,
            title,
            description,
            status,
        } => {
            let t = ctx
                .svc
                .update_task(
                    &caller,
                    &id,
                    TaskUpdate {
                        title,
                        description,
                        status,
                    },
                )
                .await?;
            ctx.render(&t, || {
                format!("Updated task {:?}.\n{}", t.title, task_details(&t))
            })
        }
    }
}

async fn page(ctx: &Ctx, cmd: PageCmd) -> Out {
    let caller = ctx.caller().await?;
    match cmd {
        PageCmd::Create {
            title,
            project,
            content,
        } => {
            let p = ctx
                .svc
                .create_page(&caller, project.as_deref(), &title, &content)
                .await?;
            ctx.render(&p, || {
                let d = Details::new()
                    .field("id", &p.id)
                    .field("title", &p.title)
                    .field("project", or_dash(p.project_id.as_deref()));
                format!("Created page {:?}.\n{}", p.title, d.render())
            })
        }
        PageCmd::List { project } => {
            let all = ctx.svc.list_pages(&caller, project.as_deref()).await?;
            ctx.render(&all, || {
                let mut t = Table::new(&["ID", "PROJECT", "UPDATED", "TITLE"]);
                for p in &all {
                    t.row(vec![
                        p.id.clone(),
                        or_dash(p.project_id.as_deref()),
                        time(&p.updated_at),
                        p.title.clone(),
                    ]);
                }
                t.render("No pages.")
            })
        }
    }
}

// ---- agents ----

/// The lines that show a new key, once.
fn key_block(agent_id: &str, key: &ApiKey) -> String {
    format!(
        "\nAPI key for {agent_id} (store it now, it will not be shown again):\n\n    {}\n\n\
         Give it to the agent as PARALLAX_API_KEY (stdio) or as `Authorization: Bearer <key>` (HTTP).\n",
        key.expose()
    )
}

fn perms_or_none(p: &PermissionSet) -> String {
    if p.is_empty() {
        "(none)".into()
    } else {
        p.to_string()
    }
}

/// An agent in `agent list`: the record plus how many active assignments it has.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentRow<'a> {
    #[serde(flatten)]
    agent: &'a Agent,
    active_assignments: usize,
}

async fn agent(ctx: &Ctx, cmd: AgentCmd) -> Out {
    let caller = ctx.caller().await?;
    let svc = &ctx.svc;
    match cmd {
        AgentCmd::Request(a) => {
            let metadata = a
                .metadata
                .as_deref()
                .map(|m| {
                    serde_json::from_str::<Value>(m).map_err(|e| {
                        CliError::Invalid(format!("--metadata is not valid JSON: {e}"))
                    })
                })
                .transpose()?;
            let req = AccessRequest {
                agent_id: a.agent_id,
                name: a.name,
                description: a.description,
                capabilities: a.capabilities,
                permissions: a.permissions,
                endpoint: a.endpoint,
                metadata,
                justification: a.justification,
            };
            let outcome = svc.request_access(&caller, req).await?;
            let (agent, key) = (&outcome.agent, outcome.api_key.as_ref());
            let value = json!({
                "agent": agent,
                "created": outcome.created,
                "api_key": key.map(ApiKey::expose),
            });
            ctx.render(&value, || match key {
                Some(key) => format!(
                    "{} was auto-approved with {} (workspace auto-approval settings).\n{}",
                    agent.id,
                    perms_or_none(&agent.granted_permissions),
                    key_block(&agent.id, key)
                ),
                None if !outcome.created => {
                    format!("{} already has a {} request; nothing changed.\n", agent.id, agent.status)
                }
                None => format!(
                    "Requested access for {} asking for {}; it is pending.\nAn admin approves it with: parallax-mcp agent approve {}\n",
                    agent.id, agent.requested_permissions, agent.id
                ),
            })
        }
        AgentCmd::List { status } => {
            let agents = svc.list_agents(&caller, status).await?;
            let mut active: HashMap<String, usize> = HashMap::new();
            for a in svc.list_assignments(&caller, None, None, false).await? {
                *active.entry(a.agent_id).or_default() += 1;
            }
            let rows: Vec<AgentRow> = agents
                .iter()
                .map(|a| AgentRow {
                    agent: a,
                    active_assignments: active.get(&a.id).copied().unwrap_or(0),
                })
                .collect();
            ctx.render(&rows, || {
                let mut t = Table::new(&[
                    "ID",
                    "NAME",
                    "STATUS",
                    "GRANTED",
                    "REQUESTED",
                    "ASSIGNMENTS",
                    "WORKING",
                    "LAST SEEN",
                ]);
                for r in &rows {
                    let a = r.agent;
                    t.row(vec![
                        a.id.clone(),
                        a.name.clone(),
                        a.status.to_string(),
                        perms_or_none(&a.granted_permissions),
                        a.requested_permissions.to_string(),
                        r.active_assignments.to_string(),
                        a.working_status.to_string(),
                        opt_time(&a.last_seen_at),
                    ]);
                }
                t.render("No agents yet: file a request with `parallax-mcp agent request`.")
            })
        }
        AgentCmd::Show { agent_id } => {
            let details = svc.agent_details(&caller, &agent_id).await?;
            ctx.render(&details, || agent_details(&details))
        }
        AgentCmd::Approve {
            agent_id,
            grant,
            end,
        } => {
            let grant = grant
                .as_deref()
                .map(PermissionSet::parse_list)
                .transpose()
                .map_err(ServiceError::from)?;
            let until = end.resolve().map_err(ServiceError::from)?;
            let (agent, key) = svc
                .approve_agent_until(&caller, &agent_id, grant, until)
                .await?;
            ctx.render(&json!({ "agent": agent, "apiKey": key.expose() }), || {
                format!(
                    "Approved {} with {}{}.\n{}",
                    agent.id,
                    perms_or_none(&agent.granted_permissions),
                    ends_text(agent.access_expires_at),
                    key_block(&agent.id, &key)
                )
            })
        }
        AgentCmd::Extend {
            agent_id,
            end,
            forever,
        } => {
            let until = end.resolve().map_err(ServiceError::from)?;
            if until.is_none() && !forever {
                return Err(CliError::Usage(
                    "say how long: --for DURATION, --until TIME or --forever".into(),
                ));
            }
            let agent = svc.extend_access(&caller, &agent_id, until).await?;
            ctx.render(&agent, || {
                format!(
                    "{}'s access now lasts{}.\n",
                    agent.id,
                    match agent.access_expires_at {
                        Some(_) => ends_text(agent.access_expires_at),
                        None => " until revoked".to_owned(),
                    }
                )
            })
        }
        AgentCmd::Deny { agent_id, reason } => {
            let agent = svc.deny_agent(&caller, &agent_id, &reason).await?;
            ctx.render(&agent, || format!("Denied {}: {}\n", agent.id, reason))
        }
        AgentCmd::Revoke { agent_id, reason } => {
            let agent = svc.revoke_agent(&caller, &agent_id, &reason).await?;
            ctx.render(&agent, || {
                format!(
                    "Revoked {}: its keys no longer work and its assignments have ended.\n",
                    agent.id
                )
            })
        }
        AgentCmd::Permissions {
            agent_id,
            permissions,
            end,
        } => {
            let perms = PermissionSet::parse_list(&permissions).map_err(ServiceError::from)?;
            if let Some(until) = end.resolve().map_err(ServiceError::from)? {
                let agent = svc
                    .grant_temporary(&caller, &agent_id, perms.clone(), until)
                    .await?;
                return ctx.render(&agent, || {
                    format!(
                        "{} has {} as well{}.\n",
                        agent.id,
                        perms,
                        ends_text(Some(until))
                    )
                });
            }
            let agent = svc.set_agent_permissions(&caller, &agent_id, perms).await?;
            ctx.render(&agent, || {
                format!(
                    "{} now has {}.\n",
                    agent.id,
                    perms_or_none(&agent.granted_permissions)
                )
            })
        }
        AgentCmd::RotateKey {
            agent_id,
            expires_in_days,
        } => {
            let (cred, key) = svc
                .rotate_agent_key(&caller, &agent_id, expires_in_days)
                .await?;
            ctx.render(&json!({ "credential": cred, "apiKey": key.expose() }), || {
                let expiry = cred.expires_at.as_ref().map_or_else(|| "does not expire".to_owned(), |t| format!("expires {}", time(t)));
                format!("Rotated the key of {agent_id}: old keys are revoked; the new one {expiry}.\n{}", key_block(&agent_id, &key))
            })
        }
    }
}

fn agent_details(d: &AgentDetails) -> String {
    let a = &d.agent;
    let head = Details::new()
        .field("id", &a.id)
        .field("name", &a.name)
        .field("status", a.status.as_str())
        .maybe(
            "description",
            Some(a.description.clone()).filter(|s| !s.is_empty()),
        )
        .field("capabilities", list(&a.capabilities))
        .field("requested", perms_or_none(&a.requested_permissions))
        .field("granted", perms_or_none(&a.granted_permissions))
        .maybe("endpoint", a.endpoint.clone())
        .maybe("justification", a.justification.clone())
        .field("requested at", time(&a.requested_at))
        .maybe(
            "resolved",
            a.resolved_at
                .as_ref()
                .map(|t| format!("{} by {}", time(t), or_dash(a.resolved_by.as_deref()))),
        )
        .field("auto-approved", if a.auto_approved { "yes" } else { "no" })
        .maybe("denial reason", a.denial_reason.clone())
        .maybe("revocation reason", a.revocation_reason.clone())
        .field("working", a.working_status.as_str())
        .maybe("current task", a.current_task_id.clone())
        .maybe("message", a.status_message.clone())
        .field("last seen", opt_time(&a.last_seen_at))
        .render();
    let mut keys = Table::new(&["KEY", "CREATED", "LAST USED", "EXPIRES", "REVOKED"]);
    for c in &d.credentials {
        keys.row(vec![
            c.key_prefix.clone(),
            time(&c.created_at),
            opt_time(&c.last_used_at),
            opt_time(&c.expires_at),
            opt_time(&c.revoked_at),
        ]);
    }
    format!(
        "{head}\nKeys:\n{}\nAssignments (newest first):\n{}",
        keys.render("(no keys)"),
        assignments_table(&d.assignments).render("(never assigned)")
    )
}

// ---- assignments ----

fn target(a: &Assignment) -> String {
    format!(
        "{} {}",
        a.kind,
        a.task_id.as_deref().unwrap_or(&a.project_id)
    )
}

fn assignments_table(all: &[Assignment]) -> Table {
    let mut t = Table::new(&["ID", "AGENT", "TARGET", "ROLE", "ASSIGNED", "BY", "ENDED"]);
    for a in all {
        t.row(vec![
            a.id.clone(),
            a.agent_id.clone(),
            target(a),
            a.role.to_string(),
            time(&a.assigned_at),
            a.assigned_by.clone(),
            opt_time(&a.unassigned_at),
        ]);
    }
    t
}

async fn assign(ctx: &Ctx, a: AssignArgs) -> Out {
    let caller = ctx.caller().await?;
    let to = match (a.project, a.task) {
        (_, Some(task)) => AssignTarget::Task(task),
        (Some(project), None) => AssignTarget::Project(project),
        // clap requires one of the two; keep a clear message if that ever changes.
        (None, None) => return Err(CliError::Usage("give --project <id> or --task <id>".into())),
    };
    let (assignment, created) = ctx.svc.assign(&caller, &a.agent_id, to, a.role).await?;
    ctx.render(
        &json!({ "assignment": assignment, "created": created }),
        || {
            if created {
                format!(
                    "Assigned {} to {} as {} (assignment {}).\n",
                    assignment.agent_id,
                    target(&assignment),
                    assignment.role,
                    assignment.id
                )
            } else {
                format!(
                    "{} is already assigned to {} (assignment {}).\n",
                    assignment.agent_id,
                    target(&assignment),
                    assignment.id
                )
            }
        },
    )
}

async fn unassign(ctx: &Ctx, id: &str) -> Out {
    let caller = ctx.caller().await?;
    let a = ctx.svc.unassign(&caller, id).await?;
    ctx.render(&a, || {
        format!(
            "Ended assignment {} of {} to {}.\n",
            a.id,
            a.agent_id,
            target(&a)
        )
    })
}

async fn assignments(ctx: &Ctx, a: AssignmentsArgs) -> Out {
    let caller = ctx.caller().await?;
    let all = ctx
        .svc
        .list_assignments(&caller, a.agent.as_deref(), a.project.as_deref(), a.all)
        .await?;
    ctx.render(&all, || {
        assignments_table(&all).render(if a.all {
            "No assignments."
        } else {
            "No active assignments."
        })
    })
}

// ---- delegations ----

async fn delegation(ctx: &Ctx, cmd: DelegationCmd) -> Out {
    let caller = ctx.caller().await?;
    let svc = &ctx.svc;
    match cmd {
        DelegationCmd::List { status } => {
            let all = svc.list_delegations(&caller, status).await?;
            ctx.render(&all, || {
                let mut t =
                    Table::new(&["ID", "STATUS", "TASK", "FROM", "TO", "REQUESTED", "REASON"]);
                for d in &all {
                    t.row(vec![
                        d.id.clone(),
                        d.status.to_string(),
                        d.task_id.clone(),
                        d.from_agent_id.clone(),
                        d.to_agent_id.clone(),
                        time(&d.requested_at),
                        d.reason.clone(),
                    ]);
                }
                t.render("No delegations.")
            })
        }
        DelegationCmd::Approve { id, note } => {
            let d = svc
                .resolve_delegation(&caller, &id, DelegationResolution::Approve, note.as_deref())
                .await?;
            ctx.render(&d, || {
                format!(
                    "Approved delegation {}: task {} moved from {} to {}.\n",
                    d.id, d.task_id, d.from_agent_id, d.to_agent_id
                )
            })
        }
        DelegationCmd::Deny { id, reason } => {
            let d = svc
                .resolve_delegation(&caller, &id, DelegationResolution::Deny, Some(&reason))
                .await?;
            ctx.render(&d, || {
                format!(
                    "Denied delegation {}: task {} stays with {}.\n",
                    d.id, d.task_id, d.from_agent_id
                )
            })
        }
    }
}

// ---- webhook deliveries ----

async fn delivery(ctx: &Ctx, cmd: DeliveryCmd) -> Out {
    let caller = ctx.caller().await?;
    match cmd {
        DeliveryCmd::List { status } => {
            let all = ctx.svc.list_deliveries(&caller, status).await?;
            ctx.render(&all, || {
                let mut t = Table::new(&[
                    "ID", "SEQ", "EVENT", "AGENT", "STATUS", "ATTEMPTS", "NEXT", "LAST",
                ]);
                for d in &all {
                    let last = match (d.last_status, &d.last_error) {
                        (_, Some(e)) => e.clone(),
                        (Some(code), None) => format!("HTTP {code}"),
                        (None, None) => "-".to_owned(),
                    };
                    t.row(vec![
                        d.id.clone(),
                        d.seq.to_string(),
                        d.event_type.to_string(),
                        or_dash(d.agent_id.as_deref()),
                        d.status.to_string(),
                        d.attempts.to_string(),
                        time(&d.next_attempt_at),
                        last,
                    ]);
                }
                t.render("No webhook deliveries.")
            })
        }
        DeliveryCmd::Redeliver { id } => {
            let d = ctx.svc.redeliver(&caller, &id).await?;
            ctx.render(&d, || {
                format!(
                    "Delivery {} ({} #{}) queued again with webhook-id {}.\n",
                    d.id, d.event_type, d.seq, d.webhook_id
                )
            })
        }
    }
}

// ---- activity ----

async fn activity(ctx: &Ctx, a: ActivityArgs) -> Out {
    match a.command {
        Some(ActivityCmd::Verify {
            checkpoint: Some(file),
            ..
        }) => return verify_checkpoint(ctx, &file).await,
        Some(ActivityCmd::Verify { from, .. }) => return verify_activity(ctx, from).await,
        Some(ActivityCmd::Checkpoints) => return list_checkpoints(ctx).await,
        Some(ActivityCmd::Checkpoint { out }) => return checkpoint(ctx, out.as_deref()).await,
        Some(ActivityCmd::Export { since, format }) => {
            // clap admits only the formats there are; this keeps the match honest if one is added.
            if format != "jsonl" {
                return Err(CliError::Usage(format!("unknown export format {format:?}")));
            }
            return export_activity(ctx, since).await;
        }
        _ => {}
    }
    let caller = ctx.caller().await?;
    if let Some(ActivityCmd::Prune) = a.command {
        let n = ctx.svc.prune_activity(&caller).await?;
        return ctx.render(&json!({ "removed": n }), || {
            format!("Removed {n} activity entries past the retention period.\n")
        });
    }
    let f = a.filter;
    let limit = f.limit;
    let q = ActivityQuery {
        agent_id: f.agent,
        project_id: f.project,
        task_id: f.task,
        activity_type: f.activity_type,
        before: f.before,
        limit,
        ..Default::default()
    };
    let entries = ctx.svc.list_activity(&caller, q).await?;
    let titles = if ctx.json {
        Default::default()
    } else {
        ctx.svc.activity_titles(&caller, &entries).await?
    };
    // Titles, not ids: a person reads "Write the launch post", not task_01j….
    let title = |id: Option<&String>| match id {
        Some(id) => titles.get(id).cloned().unwrap_or_else(|| id.clone()),
        None => "-".to_owned(),
    };
    ctx.render(&entries, || {
        let mut t = Table::new(&[
            "TIME",
            "ACTOR",
            "TYPE",
            "AGENT",
            "OUTCOME",
            "PROJECT",
            "TASK",
            "DESCRIPTION",
        ]);
        for e in &entries {
            let actor = match e.actor_kind {
                ActorKind::System => "system".to_owned(),
                kind => format!("{kind}:{}", e.actor_id),
            };
            t.row(vec![
                time(&e.created_at),
                actor,
                e.activity_type.clone(),
                or_dash(e.agent_id.as_deref()),
                or_dash(e.outcome.as_deref()),
                title(e.project_id.as_ref()),
                title(e.task_id.as_ref()),
                e.description.clone(),
            ]);
        }
        let mut out = t.render("No activity.");
        // A full page probably has more behind it; say how to get it.
        if let Some(last) = entries.last().filter(|_| entries.len() as u64 >= limit) {
            out.push_str(&format!("(older entries: --before {})\n", last.id));
        }
        out
    })
}

/// Verifies as the member given with `--as`, or as the operator (every workspace, or `-w`'s).
async fn verify_activity(ctx: &Ctx, from: Option<i64>) -> Out {
    let reports = if ctx.as_member.is_some() {
        vec![ctx.svc.verify_activity(&ctx.caller().await?, from).await?]
    } else {
        let all = ctx.svc.list_workspaces().await?;
        let chosen: Vec<Workspace> = match ctx.workspace.as_deref() {
            Some(slug) => {
                let ws = all
                    .into_iter()
                    .find(|w| w.slug == slug)
                    .ok_or_else(|| CliError::Service(ServiceError::not_found("workspace", slug)))?;
                vec![ws]
            }
            None => all,
        };
        let mut reports = Vec::with_capacity(chosen.len());
        for ws in &chosen {
            reports.push(ctx.svc.verify_chain(ws, from).await?);
        }
        reports
    };
    let text = ctx.render(&reports, || {
        let mut out = String::new();
        for r in &reports {
            match &r.problem {
                None => out.push_str(&format!(
                    "{}: intact, {} entries verified (seq {} to {}{}), head {}\n",
                    r.workspace,
                    r.verified,
                    r.from_seq,
                    r.head_seq,
                    if r.pruned_through > 0 {
                        format!(", pruned through {}", r.pruned_through)
                    } else {
                        String::new()
                    },
                    r.head_hash.as_deref().unwrap_or("-"),
                )),
                Some(p) => out.push_str(&format!(
                    "{}: BROKEN at seq {}: {} ({})\n",
                    r.workspace,
                    p.seq,
                    p.kind.as_str(),
                    p.detail
                )),
            }
        }
        out
    })?;
    if let Some((r, p)) = reports
        .iter()
        .find_map(|r| r.problem.as_ref().map(|p| (r, p)))
    {
        // The report still goes to stdout; the exit code and stderr line say it failed.
        print!("{text}");
        return Err(CliError::Tampered(format!(
            "activity chain of workspace {} is broken at seq {}: {} entry{} ({})",
            r.workspace,
            p.seq,
            p.kind.as_str(),
            p.entry_id
                .as_deref()
                .map(|id| format!(" {id}"))
                .unwrap_or_default(),
            p.detail
        )));
    }
    Ok(text)
}

/// The workspace named by `-w`, for an operator command (no `--as`).
async fn operator_workspace(ctx: &Ctx) -> Result<Workspace, CliError> {
    let slug = ctx.workspace.as_deref().ok_or_else(|| {
        CliError::Usage(
            "no workspace given: pass --workspace <slug> or set PARALLAX_WORKSPACE".into(),
        )
    })?;
    ctx.svc
        .list_workspaces()
        .await?
        .into_iter()
        .find(|w| w.slug == slug)
        .ok_or_else(|| CliError::Service(ServiceError::not_found("workspace", slug)))
}

async fn list_checkpoints(ctx: &Ctx) -> Out {
    let list = if ctx.as_member.is_some() {
        ctx.svc.list_checkpoints(&ctx.caller().await?).await?
    } else {
        ctx.svc
            .checkpoints_of(&operator_workspace(ctx).await?)
            .await?
    };
    ctx.render(&list, || {
        let mut t = Table::new(&["TIME", "SEQ", "HASH", "KEY", "ID"]);
        for c in &list {
            t.row(vec![
                time(&c.created_at),
                c.seq.to_string(),
                c.hash.clone(),
                c.key_id.clone(),
                c.id.clone(),
            ]);
        }
        t.render("No checkpoints yet.")
    })
}

/// Signs (or takes the latest) checkpoint and writes it where `out` says, or to stdout.
async fn checkpoint(ctx: &Ctx, out: Option<&std::path::Path>) -> Out {
    let cp = if ctx.as_member.is_some() {
        ctx.svc.create_checkpoint(&ctx.caller().await?).await?
    } else {
        ctx.svc
            .checkpoint_now(&operator_workspace(ctx).await?)
            .await?
    };
    let mut text = serde_json::to_string_pretty(&cp).map_err(|e| CliError::Output(e.into()))?;
    text.push('\n');
    match out {
        None => Ok(text),
        Some(path) => {
            std::fs::write(path, text).map_err(CliError::Output)?;
            ctx.render(&cp, || {
                format!(
                    "Checkpoint of {} at seq {} (hash {}) written to {}.\n",
                    cp.workspace,
                    cp.seq,
                    cp.hash,
                    path.display()
                )
            })
        }
    }
}

/// `activity verify --checkpoint FILE`: exit 0 only when the chain still extends the checkpoint.
async fn verify_checkpoint(ctx: &Ctx, file: &std::path::Path) -> Out {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", file.display())))?;
    let cp: SignedCheckpoint = serde_json::from_str(&text).map_err(|e| {
        CliError::Invalid(format!("{} is not a checkpoint file: {e}", file.display()))
    })?;
    let (ws, report) = if ctx.as_member.is_some() {
        let caller = ctx.caller().await?;
        let report = ctx.svc.verify_checkpoint_as(&caller, cp).await?;
        (caller.workspace().clone(), report)
    } else {
        let ws = ctx
            .svc
            .list_workspaces()
            .await?
            .into_iter()
            .find(|w| w.id == cp.workspace_id)
            .ok_or_else(|| {
                CliError::Service(ServiceError::not_found("workspace", &cp.workspace_id))
            })?;
        if let Some(slug) = ctx.workspace.as_deref().filter(|s| *s != ws.slug) {
            return Err(CliError::Invalid(format!(
                "the checkpoint is of workspace {}, not {slug}",
                ws.slug
            )));
        }
        let report = ctx.svc.verify_checkpoint(&ws, cp).await?;
        (ws, report)
    };
    let text = ctx.render(&report, || match &report.problem {
        None => format!(
            "{}: the chain extends the checkpoint at seq {} (signed {} by key {}); {} entries verified up to seq {}\n",
            ws.slug,
            report.checkpoint.seq,
            time(&report.checkpoint.created_at),
            report.checkpoint.key_id,
            report.chain.as_ref().map_or(0, |c| c.verified),
            report.chain.as_ref().map_or(0, |c| c.head_seq),
        ),
        Some(why) => format!(
            "{}: does NOT extend the checkpoint at seq {}: {why}\n",
            ws.slug, report.checkpoint.seq
        ),
    })?;
    if let Some(why) = &report.problem {
        print!("{text}");
        return Err(CliError::Tampered(format!(
            "activity chain of workspace {} does not extend the checkpoint at seq {}: {why}",
            ws.slug, report.checkpoint.seq
        )));
    }
    Ok(text)
}

/// Streams the chain as JSON lines, a page at a time, so an export of any size runs in bounded
/// memory.
async fn export_activity(ctx: &Ctx, since: Option<i64>) -> Out {
    use std::io::Write;
    let caller = ctx.caller().await?;
    let mut after = since.unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    loop {
        let page = ctx.svc.export_activity(&caller, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let mut buf = Vec::new();
        for e in &page {
            serde_json::to_writer(&mut buf, e).map_err(|e| CliError::Output(e.into()))?;
            buf.push(b'\n');
        }
        match stdout.write_all(&buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            other => other.map_err(CliError::Output)?,
        }
    }
    stdout.flush().map_err(CliError::Output)?;
    Ok(String::new())
}

/// " until <time>" or nothing.
fn ends_text(until: Option<Timestamp>) -> String {
    until
        .map(|t| format!(" until {}", time(&t)))
        .unwrap_or_default()
}
