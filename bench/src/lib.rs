//! strata's benchmarks as a library: strata against one tarball per job
//! (`tar | gzip`, `tar | zstd`), restic, borg and casync, on the same trees
//! in the same run (docs/benchmarks.md explains every scenario and
//! number). The `strata-bench` harness and the `strata bench` command
//! both run it; the store library knows nothing of it (nor of plotting).
//!
//! `compare` runs scenarios 1 to 5 on a pair of trees, `series` the store
//! over several runs; `report` summarises and draws; `tools` are what is
//! compared, `measure` how a step is timed, `corpus` where the trees come
//! from, `wire` the tarball baseline's network path. `busy`, `cold`,
//! `scale`, `direct` and `many` are scenarios 7, 8, 6, 9 and 10 (`replay`
//! scenario 10's light load generator); `scale`
//! and `direct` (presigned URLs) are the harness's, with the `harness`
//! feature, since they start Garage.

pub mod busy;
pub mod cold;
pub mod compare;
pub mod corpus;
#[cfg(feature = "harness")]
pub mod direct;
pub mod disk;
pub mod many;
pub mod measure;
pub mod replay;
pub mod report;
#[cfg(feature = "harness")]
pub mod scale;
pub mod series;
pub mod tools;
pub mod wire;
