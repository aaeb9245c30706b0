//! The process's local metadata: the only user of `sled`. Everything here
//! is a rebuildable cache of the objects (`format`), read and written
//! through `backend`; it knows nothing about commands.

pub mod catalog;
pub mod chunks;
