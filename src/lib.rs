//! stepwise: a durable workflow engine. Modules in data-flow order: YAML with spans →
//! validation (diagnostics) → definition model → compiled plan.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod api;
pub mod builtins;
pub mod bulk;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod definition;
pub mod diagnostics;
pub mod duration;
pub mod engine;
pub mod exec;
pub mod history;
pub mod http_client;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod replay;
pub mod store;
pub mod template;
pub mod testing;
pub mod triggers;
pub mod ui;
pub mod validate;
pub mod workspace;
pub mod yaml;
