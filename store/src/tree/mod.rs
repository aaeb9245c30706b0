//! Files on disk: scanning a tree for persist (`scan`), merging layers into
//! one planned tree (`plan`) and writing it (`write`). It reads chunks
//! through `read`, and knows nothing about runs, jobs or retention.

pub mod plan;
pub mod scan;
pub mod write;
