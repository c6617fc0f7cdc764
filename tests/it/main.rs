//! The one integration-test binary: modules per area, shared helpers in `util`.

mod cli;
mod compile;
mod fuzz;
mod lint_corpus;
mod util;
