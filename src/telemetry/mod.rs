//! What the server tells the people who run it, beside its logs: Prometheus metrics
//! ([`metrics`]) and OpenTelemetry traces ([`traces`], exported only when an endpoint is set). Recording is a no-op until `serve` installs a recorder (`[metrics] listen`), so
//! the layers that record pay nothing when metrics are off.

pub mod metrics;
pub mod traces;
