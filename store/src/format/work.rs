//! Counts of the work reading packs costs, for tests: frames decompressed
//! (`pack::decode_frame`) and chunks hashed against their ids
//! (`pack::chunk_of`), in this whole process. Only with the `work-counts`
//! feature (the server's tests turn it on, to show that a request never
//! decompresses or hashes a chunk twice); without it the counting
//! compiles to nothing and `take` answers zeros. Knows nothing of who
//! reads.

/// What was counted since the last `take`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Frames decompressed (or copied out of a raw frame).
    pub frames: u64,
    /// Chunks hashed and checked against their ids.
    pub chunks: u64,
}

#[cfg(feature = "work-counts")]
mod counts {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    pub(super) static FRAMES: AtomicU64 = AtomicU64::new(0);
    pub(super) static CHUNKS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(super) fn take(counter: &AtomicU64) -> u64 {
        counter.swap(0, Relaxed)
    }
}

/// One frame decoded.
#[inline]
pub(crate) fn frame_decoded() {
    #[cfg(feature = "work-counts")]
    counts::add(&counts::FRAMES);
}

/// One chunk hashed.
#[inline]
pub(crate) fn chunk_hashed() {
    #[cfg(feature = "work-counts")]
    counts::add(&counts::CHUNKS);
}

/// What was counted since the last call, and starts counting again.
pub fn take() -> Work {
    #[cfg(feature = "work-counts")]
    return Work {
        frames: counts::take(&counts::FRAMES),
        chunks: counts::take(&counts::CHUNKS),
    };
    #[cfg(not(feature = "work-counts"))]
    Work::default()
}
