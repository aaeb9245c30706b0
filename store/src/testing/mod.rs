//! What the test suites and the benchmark share, behind the `testing`
//! feature: the one tree comparison every test uses (`tree`), the backend
//! contract as a test suite (`conformance`), and the Garage servers they
//! run against (`garage`); in unit tests, the counting allocator (`heap`).
//! No command uses it.

pub mod conformance;
pub mod garage;
#[cfg(test)]
pub(crate) mod heap;
mod tree;

pub use tree::{assert_same_tree, describe_tree, Node};
