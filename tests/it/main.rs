//! One integration-test binary (faster to link than one per file), sharing `support`.

mod api;
mod attack;
mod attack_tokens;
mod cli;
mod console;
mod control_plane;
mod events;
mod faults;
mod logs;
mod mcp;
mod oidc;
mod packaging;
mod repo;
mod secrets;
mod service;
mod setup;
mod snapshot;
mod support;
mod tasks;
mod telemetry;
mod trail;
mod transport;
