//! costmeter: a sidecar that meters what an AI agent costs and holds it to budgets.
//!
//! Data flows one way: sources ([`sampler`]) → [`ledger`] → metrics and other sinks.
//! [`daemon`] wires them for `costmeter run`; `main.rs` only parses arguments and maps errors to
//! exit codes. See ARCHITECTURE.md for the map.

pub mod admission;
pub mod alerts;
pub mod api;
pub mod budget;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod enforce;
pub mod files;
pub mod fleet;
pub mod health;
pub mod identity;
pub mod ingest;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod otlp;
pub mod page;
pub mod pricing;
pub mod proxy;
pub mod reads;
pub mod report;
pub mod runs;
pub mod sampler;
pub mod server;
pub mod silence;
pub mod spend;
pub mod status_files;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wire;
