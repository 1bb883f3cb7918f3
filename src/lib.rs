//! # parallax-mcp
//!
//! An MCP server that lets AI agents work inside a team's workspace with human-approved, scoped,
//! audited access. See `README.md` for running it, `docs/design.md` for the product (domain,
//! permissions, lifecycle, events, transports, security model), `docs/performance.md` for how the
//! gated call's cost was brought down and measured, and `CHANGELOG.md` for changes.
//!
//! ## Code map
//!
//! A request reads top to bottom: transport → authenticate → gate (authorize + audit) → service →
//! store. Each layer calls only the one below it.
//!
//! - [`domain`]: the vocabulary — ids, permissions, statuses, API keys, settings, records. Pure:
//!   no IO, and no rmcp, axum or sea_orm types. Values are parsed once here and trusted after.
//! - [`store`]: persistence on SeaORM (SQLite embedded, PostgreSQL for scale-out) and the
//!   migrations runner. **The only module that imports `sea_orm`** (and `rusqlite`, which
//!   `store::direct` uses to read the generations from a SQLite file on the calling thread, and
//!   to commit the audit writer's batches of decision entries on the writer's own thread when the
//!   file's write lock is free (in one hand-off to a blocking thread when another process holds
//!   it), rows identical to the pool's, and to walk the audit chain when it is verified, the
//!   pool walking it again only to name a problem; the WAL checkpoints of both SQLite writers run on a
//!   thread of their own, never inside a commit, and once the WAL is long that thread takes the
//!   writers' turn briefly so the next commit starts it over). Every connection this process
//!   opens on a SQLite file writes a commit's WAL frames in one system call (`store::wal_vfs`, a
//!   VFS over SQLite's own that wraps only WAL files and holds nothing past the commit's last
//!   frame).
//!   Every query is scoped to one workspace; a `Tx` dropped without commit rolls back. On a
//!   SQLite file, writers take turns in order on one dedicated connection, so its page cache
//!   stays warm between the audit writer's commits. Also owns
//!   the authentication snapshot (`store::auth_cache`), each agent's current work
//!   (`store::work_cache`, with what readers derive from a snapshot kept beside it, such as a
//!   tool's rendered answer, so it lives and dies with the snapshot), pool hygiene (`store::hygiene`: a connection left inside a failed
//!   transaction is closed, never reused; idle connections pinged before use) and, on PostgreSQL,
//!   LISTEN/NOTIFY wake-ups between replicas, the audit writer's batches in one statement after
//!   the chain head its process last committed (`store::chain::KnownHeads`; a head that moved
//!   sends the batch through a transaction) and connections of their own for the hot path's
//!   statements (`store::dedicated`: a pooled one costs two pings per use). `store::sealed`
//!   encrypts secrets at rest under the master key.
//!   `store::preflight` says in one line why a database cannot be opened (path or host,
//!   cause) and keeps commands other than `serve` and `workspace create` from creating one.
//!   `store::console` keeps the console's login links and sessions (hashes of their secrets only).
//! - [`auth`]: turns credentials into callers. [`auth::MemberCaller`] and [`auth::AgentCaller`]
//!   can only be constructed here, so no service runs for an unauthenticated caller; an
//!   [`auth::Unconfirmed`] agent (from the snapshot alone) is not a caller until its
//!   decision's audit commit, or a generation read that finds the snapshot current, confirms
//!   it (else it is authenticated again). JWT
//!   cryptography is our `ring` provider for jsonwebtoken ([`auth::jwt_crypto`]); a token that
//!   passed is remembered by its hash (`auth::tokens`), its expiry and key re-checked on every
//!   use, so the signature is not checked again on every request. A console
//!   session's cookie is a credential too ([`auth::session`]): its member is re-read per request.
//!   Console sign-in with OpenID Connect ([`auth::oidc`]: code flow with PKCE and nonce, over
//!   our hyper client) turns a provider's ID token into a workspace member; pending sign-ins are
//!   kept in the store (`store::oidc_logins`), so any replica finishes what another began.
//! - [`service`]: every domain rule (lifecycle, quotas, assignments, delegation, activity), each
//!   change with its activity entry and outbox event in one transaction. Knows no transport.
//!   `service::audit` is the group committer: the gate's decision entries and the writing tools'
//!   changes (each under a savepoint, so one refusal is undone alone) share one transaction per
//!   batch, and nobody is answered before their batch has committed. Before committing, it yields
//!   so that calls already running can join the batch. Under `serve` on PostgreSQL it runs on a
//!   thread and runtime of its own, so that a commit's answer is taken up at once, not behind
//!   the workers' tasks; on SQLite (whose commit is no round trip) it is a task on the workers,
//!   and under `stdio` it shares the one thread. A change that is only entries (a note
//!   that names nothing, or one of the caller's tasks as its work snapshot shows them) is
//!   submitted as entries, not as a job, and commits as decisions do.
//! - [`mcp`]: the MCP server (rmcp) — tool catalogue, the one `call_tool` gate (which also
//!   guards the assignments resource and its subscriptions), stdio and streamable HTTP, with the
//!   JSON-RPC envelope of `/mcp` checked first (`mcp::envelope`) and sessions bound to their
//!   agent, capped, and put to sleep when idle (`mcp::sessions`). A plain `tools/call` or
//!   `tools/list` (nothing rmcp has to see) on a session, as a stateless 2026-07-28 request, or
//!   on stdio once the handshake is through goes to the same gate without rmcp's request
//!   machinery and is answered with one JSON body or line (`mcp::direct`); everything else is
//!   rmcp's.
//!   **The only module that imports `rmcp`.**
//! - [`memory`]: hands the allocator's free memory back to the system, on every runtime thread
//!   (mimalloc collects per thread); asked by `mcp::sessions` and by `http` after start-up.
//! - [`events`]: the outbox delivered — the feed of committed events (seq order per workspace),
//!   the signed webhook worker, and the server-sent event stream the API serves to members.
//!   `Feed::start` returns after its first poll has taken where each workspace's events stand,
//!   and `serve` and `stdio` start the feed before they take a request: an event committed after
//!   a client subscribed is then always carried, never taken for one that was already there.
//! - [`http`]: the HTTP server — its own accept loop (first-byte, header and idle timeouts;
//!   connection caps that shed idle connections; a draining shutdown), one
//!   router for `/mcp`, `/api/v1`, the console, `/oauth/token`, discovery and health, with the transport
//!   limits (body size, Host/Origin) applied once for every route, and the rate limiters. The
//!   API's and the console's routes are built at their first request (`http::OnFirstUse`), as
//!   the router's fallback, so a server that only serves agents never maps their code. The
//!   middleware every request passes (the edge here, `/mcp`'s pipeline in `mcp::http`) is plain
//!   async functions nested by hand (`http::Continue`), not `from_fn` layers, which clone every
//!   layer beneath them per request.
//! - [`api`]: the admin HTTP API under `/api/v1` (members with a member token; the control
//!   plane's signed access requests) and its OpenAPI document. May use `service`, `auth` and
//!   `domain`; never `sea_orm` or `rmcp`.
//! - [`console`]: the humans' web console at `/` — sign-in by one-time login link or OpenID
//!   Connect (`console::oidc`: `/login/oidc` and its callback, when `[oidc]` is set), server-side
//!   sessions in the store (cookie, CSRF token derived from the session, strict CSP), and pages
//!   for the requests inbox, agents, work, delegations, activity and settings, rendered with
//!   `maud`; the vendored htmx and our own script and styles are embedded. A client of
//!   `service` and `auth` like `api`; never `sea_orm` or `rmcp`.
//! - [`cli`]: the `parallax-mcp` command line (clap) for operators and members, and the shell
//!   completions and man pages generated from it (`cli::generate`; `docs/man/` is committed).
//! - [`telemetry`]: Prometheus metrics (`telemetry::metrics`: every metric's name and labels in
//!   one place, recorded by each layer, served by `serve` on its own `[metrics] listen`) and
//!   OpenTelemetry traces (`telemetry::traces`: OTLP export, W3C `traceparent` in and out; spans
//!   are made only while an endpoint is configured).
//! - [`config`]: layered configuration — file, then `PARALLAX_*` variables, then flags. Every
//!   key is defined once in `config::schema`; the README table, `parallax.example.toml` and
//!   `config check` are generated from it (`config::reference`).
//! - `build.rs` (not a module): a release build links the functions `src/link.order` lists (what
//!   the server runs as it starts and answers, written by `parallax-bench --link-order`) first,
//!   so an idle server maps little of its code, and has the linker strip the binary.
//!
//! ## Invariants
//!
//! - Identity comes from the credential, never from a tool argument.
//! - Default deny: a tool missing from the catalogue cannot be called; every decision is audited.
//! - Secrets are never logged or `Debug`-printed. API keys are stored only as blake3 hashes.
//!   Token signing keys, webhook secrets and the Ed25519 key that signs audit checkpoints
//!   (`signing_keys`, `webhook_secrets`, `audit_keys`) are sealed with XChaCha20-Poly1305 under
//!   the operator's master key, in the store and nowhere else (`store::sealed`: sealed on write,
//!   opened on read, the key id and the row bound to each value); without a master key they are
//!   stored as they are and `serve` says so once. A master key that does not open the stored
//!   secrets is a configuration error at start (`Store::with_master_key`), never a failed check
//!   later.
//! - A bearer credential is re-checked against the store on every request (keys and tokens alike):
//!   the store keeps credentials, their agents and workspaces, and members in memory, but serves
//!   them only after one statement shows the authorization generation unchanged, or, for a plain
//!   call of the read tool or of a note that is only entries, with an API key (over HTTP or stdio)
//!   or an access token that passed before, unconfirmed (`auth::Unconfirmed`, never an
//!   `AgentCaller` outside the gate's one read and `Service::log_agent_note_checked`) with its
//!   entries committed only by a transaction that finds both generations unchanged under its
//!   write lock (`AuditWriter::record_checked`, `append_checked`); otherwise nothing is written
//!   and the call is decided again on a confirmed caller, and any other request is confirmed before
//!   it goes on. The store's own write methods for agents, keys, workspace settings and members
//!   bump it in the change's transaction, so a revocation applies to the next call on every replica
//!   and from every process. Key expiry is checked against the clock on each request.
//! - An agent's work (assignments, their tasks and projects) is served from memory only as of
//!   the work generation the request read with its credential: the store's writes of projects,
//!   tasks and assignments bump it in their transaction, so a read never misses a committed
//!   change from any process or replica.
//! - `main.rs` is the only place that uses `anyhow`; library errors are `thiserror` enums, one per
//!   boundary, mapped to CLI/MCP/HTTP errors in one place each. It also sets the global
//!   allocator (mimalloc), whose `mi_collect` collects only the calling thread's heap: [`memory`]
//!   hands free memory back when asked (by `mcp::sessions` after sleeping sessions, by `http`
//!   once start-up is done), and `main.rs` hooks its `release_on_park` into the runtime so each
//!   thread collects its own as it goes idle. It builds the runtime: one
//!   thread for `stdio` (one client, one pipe), a thread per core otherwise; nothing in the
//!   library may block a runtime thread waiting on another task.
//! - Events are written only through `service::emit`, in the change's transaction; they get their
//!   per-workspace `seq` at commit, so seq order is commit order and readers page by seq.
//! - Activity entries are chained at commit in the store (`store::chain`): each gets a
//!   per-workspace `seq` and a blake3 hash over the previous hash and the entry, whoever writes
//!   it; `service::trail` verifies the chain. The chain head's lock is taken last, before the
//!   outbox counter's, in every transaction. `service::checkpoints` signs the head now and then
//!   (one checkpoint per head across replicas) and proves a log still extends an exported one.
//! - An MCP task is a delegation row, answered through the gate (`Gate::task`) like a tool call:
//!   no `tasks/*` request reaches the service without authentication, authorization and audit.
//! - An agent's grant may end (`access_expires_at`): `auth` compares it with the clock on every
//!   authentication, so expiry needs no one to act; recording it is a separate, once-only step.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod events;
pub mod http;
pub mod mcp;
pub mod memory;
pub mod service;
pub mod store;
pub mod telemetry;
