//! The library's unit tests' global allocator: it counts the bytes each
//! thread holds and the most it held since a mark, so a test can assert
//! how much a function holds at once (issue 29: what a manifest costs to
//! read). Only the allocating thread's own allocations and frees count;
//! the functions measured this way run on the calling thread. Not compiled
//! outside `cargo test`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

thread_local! {
    static HELD: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    /// Whether this thread's allocations count towards the group's.
    static IN_GROUP: Cell<bool> = const { Cell::new(false) };
}

/// What the threads of the group hold together, and the most since a mark
/// (`measure_group`): for work spread over several threads (a persist's
/// chunking threads and pipeline), where one thread's count means little.
static GROUP_HELD: AtomicI64 = AtomicI64::new(0);
static GROUP_PEAK: AtomicI64 = AtomicI64::new(0);

/// `System`, counting.
struct Counting;

#[global_allocator]
static COUNTING: Counting = Counting;

fn count(delta: i64) {
    // `try_with`: a thread being torn down has no counters left.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    if IN_GROUP.try_with(Cell::get).unwrap_or(false) {
        let now = GROUP_HELD.fetch_add(delta, Relaxed) + delta;
        GROUP_PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; counting allocates
// nothing (const-initialized thread locals without destructors). A global
// allocator cannot be written without `unsafe`; this one is test-only.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` on this thread; returns its result, the most bytes this
/// thread held during it beyond what it held before, and the bytes it
/// still holds after it (its result's).
pub(crate) fn measure<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let before = HELD.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    let (after, peak) = (HELD.with(Cell::get), PEAK.with(Cell::get));
    (out, (peak - before) as u64, (after - before).max(0) as u64)
}

/// Whether this thread counts towards the group (for a thread it spawns
/// to join it too: `join_group`).
pub(crate) fn in_group() -> bool {
    IN_GROUP.with(Cell::get)
}

/// Makes this thread's allocations count towards the group's, or not.
pub(crate) fn join_group(join: bool) {
    IN_GROUP.with(|g| g.set(join));
}

/// Runs `f` on this thread, which joins the group for it; returns its
/// result and the most bytes the group's threads held together during it
/// beyond what they held before. One measurement at a time (the caller
/// holds a lock): the group's counters are the process's.
pub(crate) fn measure_group<T>(f: impl FnOnce() -> T) -> (T, u64) {
    join_group(true);
    let before = GROUP_HELD.load(Relaxed);
    GROUP_PEAK.store(before, Relaxed);
    let out = f();
    join_group(false);
    let peak = GROUP_PEAK.load(Relaxed);
    (out, (peak - before).max(0) as u64)
}
