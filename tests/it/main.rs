//! The one integration-test binary: modules per area, shared helpers in `util`.

mod api;
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
mod lint_corpus;
mod replay;
mod serve;
mod server;
mod store_failures;
mod testing;
mod trigger_faults;
mod triggers;
mod util;
