//! Batches handed over by value, worked on in parallel and taken back in
//! their order (issue 29): storing a tree chunks its batches on rayon's
//! threads, and its manifest is written from each batch as soon as every
//! earlier one is done, so a batch's entries are freed once written and
//! no more than a window of batches is ever done but not yet taken. This
//! module knows no files, chunks or manifests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;

use crate::error::Result;

/// `v` cut into the `ranges` (contiguous, in order, covering it), each
/// moved into a vector of its own. The source is cut from its end and
/// shrunk as it goes, so the two together hold little more than `v` did.
pub(super) fn split<T>(mut v: Vec<T>, ranges: &[Range<usize>]) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges.iter().rev() {
        out.push(v.split_off(r.start));
        // Halving the slack at most once per halving of the length keeps
        // the copying linear (a shrink may move what is left).
        if v.capacity() >= 2 * v.len() {
            v.shrink_to_fit();
        }
    }
    debug_assert!(v.is_empty(), "the ranges cover the vector");
    out.reverse();
    out
}

/// Where the work is: the items not yet taken, and the results done but
/// not yet handed to `then` (the next one it takes is `next`).
struct State<I, O, F> {
    items: std::iter::Enumerate<std::vec::IntoIter<I>>,
    taken: usize,
    next: usize,
    done: BTreeMap<usize, O>,
    then: F,
    failed: bool,
}

/// Runs `work` on each of `items` on rayon's threads and hands each result
/// to `then` in the items' order, as soon as the results before it have
/// been. A thread takes no item more than `ahead` past the oldest not yet
/// handed on, so at most `ahead` results wait. The first error stops the
/// work (items taken are finished) and is returned.
pub(super) fn in_order<I, O, W, F>(items: Vec<I>, ahead: usize, work: W, then: F) -> Result<()>
where
    I: Send,
    O: Send,
    W: Fn(I) -> Result<O> + Sync,
    F: FnMut(O) -> Result<()> + Send,
{
    let state = Mutex::new(State {
        items: items.into_iter().enumerate(),
        taken: 0,
        next: 0,
        done: BTreeMap::new(),
        then,
        failed: false,
    });
    let room = Condvar::new();
    let threads = rayon::current_num_threads();
    (0..threads).into_par_iter().try_for_each(|_| loop {
        let (i, item) = {
            let mut s = state.lock().expect("poisoned");
            loop {
                if s.failed {
                    return Ok(());
                }
                if s.taken < s.next + ahead.max(1) {
                    break;
                }
                s = room.wait(s).expect("poisoned");
            }
            let Some(next) = s.items.next() else {
                return Ok(());
            };
            s.taken += 1;
            next
        };
        let out = work(item);
        let mut s = state.lock().expect("poisoned");
        let handed = out.and_then(|out| {
            s.done.insert(i, out);
            let s = &mut *s;
            while let Some(out) = s.done.remove(&s.next) {
                (s.then)(out)?;
                s.next += 1;
            }
            Ok(())
        });
        if handed.is_err() {
            s.failed = true;
        }
        room.notify_all();
        handed?;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn split_moves_each_range_out_in_order() {
        let v: Vec<u32> = (0..10).collect();
        let parts = split(v, &[0..3, 3..4, 4..10]);
        assert_eq!(parts, vec![vec![0, 1, 2], vec![3], vec![4, 5, 6, 7, 8, 9]]);
        assert!(split(Vec::<u8>::new(), &[]).is_empty());
    }

    // Items finish out of order (the first ones slowest) but are handed
    // on in order, and no more than `ahead` wait at once.
    #[test]
    fn results_are_handed_on_in_order_with_at_most_ahead_waiting() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let waiting = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let mut seen = Vec::new();
        pool.install(|| {
            in_order(
                (0..200u64).collect(),
                3,
                |i| {
                    std::thread::sleep(std::time::Duration::from_micros((7 - i % 8) * 100));
                    let now = waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    Ok(i)
                },
                |i| {
                    waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    seen.push(i);
                    Ok(())
                },
            )
        })
        .unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        let most = most.into_inner();
        assert!(most <= 3, "{most} results waited at once");
    }

    #[test]
    fn the_first_error_stops_the_work_and_is_returned() {
        let taken = std::sync::atomic::AtomicUsize::new(0);
        let err = in_order(
            (0..10_000u32).collect(),
            4,
            |i| {
                taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match i {
                    5 => Err(Error::corrupt("item", "five")),
                    i => Ok(i),
                }
            },
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("five"), "{err}");
        assert!(taken.into_inner() < 100, "the work stopped");
    }
}
