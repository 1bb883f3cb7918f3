//! One integration-test binary (faster to link than one per file), sharing `support`.

mod attack;
mod cli;
mod mcp;
mod service;
mod support;
mod transport;
