//! What the test suites and the benchmark share, behind the `testing`
//! feature: the one tree comparison every test uses (`tree`) and the
//! backend contract as a test suite (`conformance`). No command uses it.

pub mod conformance;
mod tree;

pub use tree::{assert_same_tree, describe_tree, Node};
