//! Files on disk: scanning a tree for persist (`scan`), merging layers into
//! one planned tree (`plan`), or only part of it (`subset`, `--only`),
//! writing it (`write`), and remembering what a runner last saw of a
//! tree's files (`stat_cache`). It reads chunks through `read`, and knows
//! nothing about runs, jobs or retention.

pub mod merge_stream;
pub mod plan;
pub(crate) mod reserved;
pub mod scan;
pub mod stat_cache;
pub mod subset;
pub(crate) mod target;
pub mod write;
