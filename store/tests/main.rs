//! The store library's integration tests, in one test binary
//! (`testsuite`): one module per file, sharing `common`. Run one file's
//! tests with `cargo test -p strata-store --test testsuite corruption::`.

mod common;

mod attach_races;
mod budget;
mod ci_configs;
mod compat;
mod corruption;
mod crash;
mod gc_concurrent;
mod integrity;
mod known_answers;
mod roundtrip;
