//! One gc at a time on a store that several processes share.
//!
//! A directory store's processes are on one machine: its gc takes the
//! file lock `.local/gc-lock` (`guard`), and one that finds it held ends
//! with `GcBusy`, naming the holder written in the file.
//!
//! Processes on many machines (`strata serve` replicas over one bucket,
//! S3-direct runners) share no lock, and conditional writes are not
//! honoured by every S3-compatible store (Garage ignores them), so a lease
//! decides:
//! A gc that wants to run writes a lease under a key only it uses,
//! `gc/lease/<time>-<nonce>`, waits a settle delay so that leases written
//! about the same time are visible to each other, and lists the leases:
//! - if a live lease is marked running (`gc/running/<same name>`), another
//!   gc runs: this one withdraws;
//! - else the live lease whose key sorts first (the earliest, by the
//!   writers' clocks) wins: the winner marks its lease running, the others
//!   withdraw.
//!
//! Two candidates whose writes are closer than the settle delay both see
//! both leases and agree on the winner. One that writes later than that
//! lists after the winner marked itself running, and withdraws. A lease is
//! live for `LEASE_SECS` after its key's time; a gc that dies without
//! removing its lease holds the store's gc for that long. A gc that outruns
//! its lease may overlap the next one: each is safe on its own while others
//! persist (docs/lifecycle.md), so the overlap only costs work.
//!
//! This module knows nothing about what gc does.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::keys::{key_time, timed_key, LEASE_PREFIX, RUNNING_PREFIX};
use crate::format::records::{Lease, Record};
use crate::repo::{log_lock, FileLock, Store, StoreLocation};

/// How long a lease lasts, in seconds.
pub const LEASE_SECS: i64 = 3600;

/// How long a candidate waits between writing its lease and reading the
/// others', by default: far longer than a PUT takes to show in a listing.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// The lease of the gc that runs; removed when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    store: &'a Store,
    keys: [String; 2],
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Logged before the running mark goes, so a gc that takes the lease
        // next logs its take after this release (`log_lock`).
        log_lock("release", &lease_lock_name(self.store));
        // Best effort: a lease left behind lapses after `LEASE_SECS`.
        for key in self.keys.iter().rev() {
            let _ = self.store.backend().delete(key);
        }
    }
}

/// What keeps other gcs out while this one runs: the lease, or a
/// directory store's file lock (released when dropped).
#[derive(Debug)]
pub struct Guard<'a> {
    _lease: Option<Held<'a>>,
    _file: Option<FileLock>,
}

/// Keeps other gcs of `store` out while the result lives, or says who
/// runs one (`Error::GcBusy`). A server's store (one process) needs
/// nothing: `None`.
pub fn guard(store: &Store, settle: Duration) -> Result<Option<Guard<'_>>> {
    match store.location() {
        StoreLocation::S3(_) => Ok(Some(Guard {
            _lease: Some(take(store, settle)?),
            _file: None,
        })),
        StoreLocation::Dir(root) => local(store, &root.join(".local").join("gc-lock")).map(Some),
        StoreLocation::Http(_) => Ok(None),
    }
}

/// Takes a directory store's gc lock at `path`, writing who holds it.
fn local<'a>(store: &Store, path: &std::path::Path) -> Result<Guard<'a>> {
    use std::io::Write;
    match FileLock::try_take(path)? {
        Some(lock) => {
            let lease = Lease {
                holder: holder(),
                expires: store.now() + LEASE_SECS,
            };
            let mut file = lock.file();
            file.set_len(0)
                .and_then(|()| file.write_all(&lease.encode()))
                .map_err(|e| Error::io("write", path, e))?;
            Ok(Guard {
                _lease: None,
                _file: Some(lock),
            })
        }
        None => {
            let busy = std::fs::read(path)
                .ok()
                .and_then(|bytes| Lease::decode(&path.display().to_string(), &bytes).ok())
                .unwrap_or_default();
            Err(Error::GcBusy {
                holder: busy.holder,
                until: busy.expires,
            })
        }
    }
}

/// Takes the store's gc lease, or says who holds it (`Error::GcBusy`).
pub fn take(store: &Store, settle: Duration) -> Result<Held<'_>> {
    let b = store.backend();
    let now = store.now();
    let key = timed_key(LEASE_PREFIX, now);
    let name = key[LEASE_PREFIX.len()..].to_string();
    let lease = Lease {
        holder: holder(),
        expires: now + LEASE_SECS,
    };
    b.put(&key, &lease.encode())?;
    std::thread::sleep(settle);
    let now = store.now();
    let live = |k: &String| key_time(k).is_some_and(|t| t + LEASE_SECS > now);
    let running: Vec<String> = b.list(RUNNING_PREFIX)?.into_iter().filter(live).collect();
    let leases: Vec<String> = b.list(LEASE_PREFIX)?.into_iter().filter(live).collect();
    let winner = running.first().or(leases.first());
    match winner {
        Some(w) if *w == key => {
            let marked = format!("{RUNNING_PREFIX}{name}");
            b.put(&marked, &lease.encode())?;
            log_lock("take", &lease_lock_name(store));
            Ok(Held {
                store,
                keys: [key, marked],
            })
        }
        other => {
            let busy = match other.map(|w| b.get(w)) {
                Some(Ok(bytes)) => Lease::decode(other.expect("some"), &bytes).ok(),
                _ => None,
            }
            .unwrap_or_default();
            b.delete(&key)?;
            Err(Error::GcBusy {
                holder: busy.holder,
                until: busy.expires,
            })
        }
    }
}

/// The lease as a lock name in `$STRATA_LOCK_LOG` (tests check from it
/// that no two gcs of one store ever ran at once).
fn lease_lock_name(store: &Store) -> std::path::PathBuf {
    format!("{}/{RUNNING_PREFIX}", store.location()).into()
}

/// This process, for messages: host and pid.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into());
    format!("{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::backend::{Backend, Memory};
    use crate::format::config::StoreConfig;
    use crate::format::keys::CONFIG_KEY;
    use crate::ops::gc::{gc, GcOptions};
    use crate::util::Clock;

    const NOW: i64 = 1_800_000_000;

    fn bucket() -> Arc<dyn Backend> {
        let b: Arc<dyn Backend> = Arc::new(Memory::default());
        b.put(CONFIG_KEY, &StoreConfig::new("lease".into()).encode())
            .unwrap();
        b
    }

    fn replica(b: &Arc<dyn Backend>, dir: &std::path::Path, name: &str, now: i64) -> Store {
        Store::shared_for_tests(b.clone(), &dir.join(name)).with_clock(Clock::Fixed(now))
    }

    #[test]
    fn of_three_gcs_started_at_once_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket();
        let stores: Vec<Store> = (0..3)
            .map(|i| replica(&b, dir.path(), &format!("r{i}"), NOW))
            .collect();
        let barrier = Barrier::new(3);
        // Each winner holds the lease a while, as a gc would.
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .map(|store| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let held = take(store, Duration::from_millis(300))?;
                        std::thread::sleep(Duration::from_millis(700));
                        drop(held);
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ran = results.iter().filter(|r| r.is_ok()).count();
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(Error::GcBusy { .. })))
            .count();
        assert_eq!((ran, busy), (1, 2), "{results:?}");
        // Winner and losers alike leave no lease behind.
        assert!(b.list("gc/lease/").unwrap().is_empty());
        assert!(b.list("gc/running/").unwrap().is_empty());
        // gc takes the lease on a shared store: busy while another holds it.
        let held = take(&stores[0], Duration::ZERO).unwrap();
        let options = GcOptions {
            lease_settle: Some(Duration::ZERO),
            ..GcOptions::default()
        };
        assert!(matches!(
            gc(&stores[1], &options),
            Err(Error::GcBusy { .. })
        ));
        drop(held);
        gc(&stores[1], &options).unwrap();
    }

    #[test]
    fn a_later_candidate_yields_to_the_running_gc_whatever_its_clock() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket();
        let first = replica(&b, dir.path(), "first", NOW);
        let held = take(&first, Duration::ZERO).unwrap();
        // A replica whose clock is 100 s behind writes a lease that sorts
        // before the running one's, later: the running mark decides.
        let behind = replica(&b, dir.path(), "behind", NOW - 100);
        match take(&behind, Duration::ZERO) {
            Err(Error::GcBusy { holder, until }) => {
                assert!(holder.contains(&std::process::id().to_string()));
                assert_eq!(until, NOW + LEASE_SECS);
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        // Once it ends, the next gc runs.
        assert!(take(&behind, Duration::ZERO).is_ok());
        // A lease that has lapsed (its gc died) holds nobody back.
        let dead = take(&first, Duration::ZERO).unwrap();
        std::mem::forget(dead);
        let later = replica(&b, dir.path(), "later", NOW + LEASE_SECS + 1);
        assert!(take(&later, Duration::ZERO).is_ok());
    }

    #[test]
    fn a_directory_stores_second_gc_is_busy_and_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(&dir.path().join("store"), &crate::repo::Quiet).unwrap();
        let (a, b) = (open(), open());
        let held = guard(&a, Duration::ZERO)
            .unwrap()
            .expect("a directory gc locks");
        match gc(&b, &GcOptions::default()) {
            Err(Error::GcBusy { holder, until }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
                assert!(until > a.now(), "{until}");
            }
            other => panic!("{other:?}"),
        }
        // A dry run changes nothing and needs no turn.
        let dry = GcOptions {
            dry_run: true,
            ..GcOptions::default()
        };
        gc(&b, &dry).unwrap();
        drop(held);
        gc(&b, &GcOptions::default()).unwrap();
    }
}
