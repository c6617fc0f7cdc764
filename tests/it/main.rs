//! The one integration-test binary: modules per area, shared helpers in `util`.

#[macro_use]
mod backend;
mod agent_crash;
mod agent_example;
mod agent_files;
mod agent_tools;
mod agents;
mod api;
mod api_conformance;
mod api_guard;
mod cli;
mod cli_client;
mod compile;
mod crash;
mod engine;
mod exec;
mod faults;
mod fuzz;
mod hardening;
mod limits;
mod lint_corpus;
mod mcp;
mod migrate_store;
mod ops;
mod replay;
mod scripted_model;
mod scripts;
mod serve;
mod server;
mod signals;
mod store_failures;
mod testing;
mod trigger_faults;
mod triggers;
mod ui;
mod util;
