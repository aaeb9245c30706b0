//! Reading over a network in two stages: fetch threads keep many requests
//! in flight (each waits on a round trip, not on the CPU), and hand what
//! they fetched through a bounded queue to fewer work threads, as many as
//! the machine's cores (rayon's count, what a local read uses), which do
//! the CPU and disk work: decode, verify, write files. Eight threads each
//! creating files contend in the kernel's inode allocation where two do
//! not (docs/benchmarks.md, "Fetching apart from writing").
//!
//! Memory is bounded: a fetch thread holds at most one fetched item while
//! the queue is full, the queue holds `workers` items and each work thread
//! one, so at most `fetchers + 2 * workers` items are held at once (for
//! attach an item is one pack's wanted ranges, at most a pack: 4 MiB by
//! default).
//!
//! Knows nothing of packs, frames or files: items, a fetch and a work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;
use std::thread::Builder;

use crate::error::{Error, Result};

/// Runs `fetch` on every item of `items` on `fetchers` threads and `work`
/// on each result on `workers` threads (both at least one). The first
/// error stops the fetching (items not yet fetched are not) and is the
/// result; what was already fetched is dropped.
pub(crate) fn fetch_then_work<I: Sync, T: Send>(
    items: &[I],
    fetchers: usize,
    workers: usize,
    fetch: impl Fn(&I) -> Result<T> + Sync,
    work: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let (fetchers, workers) = (fetchers.max(1), workers.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, Relaxed);
        first_error.lock().expect("poisoned").get_or_insert(e);
    };
    let (tx, rx) = sync_channel::<T>(workers);
    let rx = Mutex::new(rx);
    let (next, failed, fail, rx) = (&next, &failed, &fail, &rx);
    let (fetch, work) = (&fetch, &work);
    std::thread::scope(|s| {
        // Moved in: the queue closes when the last fetcher ends, or on an
        // early return.
        let tx = tx;
        // Workers first: a fetcher never waits on a queue no one drains.
        for i in 0..workers {
            let worker = move || loop {
                let Ok(item) = rx.lock().expect("poisoned").recv() else {
                    break;
                };
                // After a failure, drain (so no fetcher waits on a full
                // queue) without working.
                if !failed.load(Relaxed) {
                    if let Err(e) = work(item) {
                        fail(e);
                    }
                }
            };
            let spawned = Builder::new()
                .name(format!("strata-work-{i}"))
                .spawn_scoped(s, worker);
            if let Err(e) = spawned {
                fail(thread_error(e));
                return;
            }
        }
        for i in 0..fetchers {
            let tx = tx.clone();
            let fetcher = move || {
                while !failed.load(Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Relaxed)) else {
                        break;
                    };
                    match fetch(item) {
                        Ok(fetched) => {
                            if tx.send(fetched).is_err() {
                                break;
                            }
                        }
                        Err(e) => fail(e),
                    }
                }
            };
            let spawned = Builder::new()
                .name(format!("strata-fetch-{i}"))
                .spawn_scoped(s, fetcher);
            if let Err(e) = spawned {
                fail(thread_error(e));
                return;
            }
        }
    });
    match first_error.into_inner().expect("poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn thread_error(e: std::io::Error) -> Error {
    Error::io("start a thread for", "reading packs", e)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};

    use super::*;

    /// Waits until `count` makes no progress for a while (60 s at most).
    fn settled(count: &AtomicU64) -> u64 {
        let (mut last, mut since) = (u64::MAX, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(60);
        while since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now = count.load(Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        count.load(Relaxed)
    }

    #[test]
    fn fetching_stops_at_the_bound_while_the_work_waits() {
        let (fetchers, workers) = (8, 2);
        let items: Vec<u64> = (0..100).collect();
        let fetched = AtomicU64::new(0);
        let worked = AtomicU64::new(0);
        let gate = Mutex::new(true);
        let opened = std::sync::Condvar::new();
        let (held, result) = std::thread::scope(|s| {
            let run = s.spawn(|| {
                fetch_then_work(
                    &items,
                    fetchers,
                    workers,
                    |&i| {
                        fetched.fetch_add(1, Relaxed);
                        Ok(i)
                    },
                    |i| {
                        let shut = gate.lock().unwrap();
                        drop(opened.wait_while(shut, |shut| *shut).unwrap());
                        worked.fetch_add(i, Relaxed);
                        Ok(())
                    },
                )
            });
            let held = settled(&fetched);
            *gate.lock().unwrap() = false;
            opened.notify_all();
            (held, run.join().unwrap())
        });
        result.unwrap();
        // One per fetcher waiting to queue, the queue, one per worker.
        assert_eq!(held, (fetchers + 2 * workers) as u64);
        assert_eq!(worked.load(Relaxed), (0..100).sum::<u64>());
        assert_eq!(fetched.load(Relaxed), 100);
    }

    /// Neither error leaves a thread waiting on the queue (the test would
    /// hang).
    #[test]
    fn a_fetch_error_or_a_work_error_ends_the_run_and_is_returned() {
        let items: Vec<u64> = (0..1000).collect();
        let err = fetch_then_work(
            &items,
            8,
            2,
            |&i| match i {
                10 => Err(Error::corrupt("item 10", "injected")),
                _ => Ok(i),
            },
            |_| Ok(()),
        )
        .expect_err("a fetch failed");
        assert!(err.to_string().contains("item 10"), "{err}");
        let err = fetch_then_work(
            &items,
            8,
            2,
            |&i| Ok(i),
            |i| match i {
                10 => Err(Error::corrupt("item 10", "injected")),
                _ => Ok(()),
            },
        )
        .expect_err("a work failed");
        assert!(err.to_string().contains("item 10"), "{err}");
    }
}
