//! One engine test suite for both stores: `both!` turns a test into `NAME::sqlite` and
//! `NAME::postgres`. The Postgres half runs when `STEPWISE_TEST_POSTGRES` is set (CI sets
//! it), each test in a fresh schema dropped after; without it, the test passes at once and
//! the binary says once, on stderr, that the Postgres half was skipped and why.
//! Stores open through `stepwise::store::test_backends::open`, which reads the backend the
//! test set on its thread.

macro_rules! both {
    ($(#[$m:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$m])*
            async fn sqlite() {
                stepwise::store::test_backends::set(stepwise::store::test_backends::Backend::Sqlite);
                $body
            }

            $(#[$m])*
            async fn postgres() {
                if !stepwise::store::test_backends::postgres_enabled() {
                    return;
                }
                let _schemas = stepwise::store::test_backends::Schemas;
                stepwise::store::test_backends::set(stepwise::store::test_backends::Backend::Postgres);
                $body
            }
        }
    };
}
