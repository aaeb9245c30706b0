//! strata's end-to-end scenarios, in one test binary (`testsuite`, as
//! cargo's own suite): one module per file, each driving the built
//! `strata` binary and the servers `support` starts. One binary links once
//! and shares one build of the helpers. Run one file's scenarios with
//! `cargo test -p strata-cli --test testsuite network::`.

mod support;

mod attacker;
mod bench_cli;
mod budget;
mod ci;
mod cluster;
mod commit_pack;
mod docs;
mod e2e;
mod fairness;
mod faults;
mod lifecycle;
mod many;
mod metrics;
mod network;
mod oidc;
mod only;
mod presign;
mod reliability;
mod round_trips;
mod warm;
mod web;
mod wrappers;
