//! The one integration-test binary: modules per area, shared helpers in `util`.

mod api;
mod cli;
mod compile;
mod crash;
mod engine;
mod faults;
mod fuzz;
mod lint_corpus;
mod serve;
mod server;
mod triggers;
mod util;
