//! `Prefetched`: a backend that answers a few reads from answers fetched
//! ahead of time, each once, and passes everything else (and any read
//! asked again) to the backend it wraps.
//!
//! Opening a networked store costs a round trip (the handshake and the
//! config); a persist or an attach then reads its run's record and lists
//! its keys, another round trip. Asked for at the opening, alongside the
//! handshake, those answers are here when the command asks, and the second
//! round trip is gone. An answer is handed out once, so a later read of
//! the same key or prefix (which may have changed) goes to the store.
//! Only answers that were `Ok` are held: an error is asked again, so it
//! reads as the store says it at the time. This module knows nothing of
//! runs, which keys are worth fetching, or HTTP.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::{Backend, Ready, Traffic};
use crate::error::Result;
use crate::protocol::layers::LayerAnswer;

/// A backend with some `get` and `list` answers fetched ahead.
#[derive(Debug)]
pub struct Prefetched {
    inner: Arc<dyn Backend>,
    gets: Mutex<HashMap<String, Vec<u8>>>,
    lists: Mutex<HashMap<String, Vec<String>>>,
}

impl Prefetched {
    /// Reads `gets` and lists `lists` through `inner`, all at once (one
    /// round trip), while `meanwhile` runs on this thread; keeps the
    /// answers that succeeded.
    pub fn fetch<T>(
        inner: Arc<dyn Backend>,
        gets: &[String],
        lists: &[String],
        meanwhile: impl FnOnce() -> T,
    ) -> (Self, T) {
        let (got, listed, done) = std::thread::scope(|s| {
            let got: Vec<_> = gets
                .iter()
                .map(|k| {
                    let inner = &inner;
                    s.spawn(move || (k.clone(), inner.get(k)))
                })
                .collect();
            let listed: Vec<_> = lists
                .iter()
                .map(|p| {
                    let inner = &inner;
                    s.spawn(move || (p.clone(), inner.list(p)))
                })
                .collect();
            let done = meanwhile();
            // A read that panicked is only not held: the command asks again.
            (
                got.into_iter()
                    .filter_map(|h| h.join().ok())
                    .collect::<Vec<_>>(),
                listed
                    .into_iter()
                    .filter_map(|h| h.join().ok())
                    .collect::<Vec<_>>(),
                done,
            )
        });
        let prefetched = Self {
            inner,
            gets: Mutex::new(
                got.into_iter()
                    .filter_map(|(k, r)| Some((k, r.ok()?)))
                    .collect(),
            ),
            lists: Mutex::new(
                listed
                    .into_iter()
                    .filter_map(|(k, r)| Some((k, r.ok()?)))
                    .collect(),
            ),
        };
        (prefetched, done)
    }

    /// Answers `gets` (key to bytes) once each, as if fetched ahead
    /// through `inner`: answers another request carried.
    pub fn holding(inner: Arc<dyn Backend>, gets: HashMap<String, Vec<u8>>) -> Self {
        Self {
            inner,
            gets: Mutex::new(gets),
            lists: Mutex::new(HashMap::new()),
        }
    }

    fn take<V>(held: &Mutex<HashMap<String, V>>, key: &str) -> Option<V> {
        held.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
}

impl Backend for Prefetched {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        // A write makes a held answer stale.
        Self::take(&self.gets, key);
        self.inner.put(key, data)
    }

    fn put_then(
        &self,
        first: &[(&str, &[u8])],
        last: (&str, &[u8]),
        ready: Ready<'_>,
    ) -> Result<()> {
        for (k, _) in first.iter().chain(std::iter::once(&last)) {
            Self::take(&self.gets, k);
        }
        self.inner.put_then(first, last, ready)
    }

    fn stores_in_order(&self) -> bool {
        self.inner.stores_in_order()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        match Self::take(&self.gets, key) {
            Some(bytes) => Ok(bytes),
            None => self.inner.get(key),
        }
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.inner.get_ranges(key, ranges)
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match Self::take(&self.lists, prefix) {
            Some(keys) => Ok(keys),
            None => self.inner.list(prefix),
        }
    }

    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<String>> {
        self.inner.list_after(prefix, after)
    }

    fn delete(&self, key: &str) -> Result<()> {
        Self::take(&self.gets, key);
        self.inner.delete(key)
    }

    fn layers(&self, keys: &[String]) -> Result<Option<Vec<LayerAnswer>>> {
        self.inner.layers(keys)
    }

    fn will_read(&self, keys: &[String]) -> Result<()> {
        self.inner.will_read(keys)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn coalesce_gap(&self) -> u64 {
        self.inner.coalesce_gap()
    }

    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }

    fn traffic(&self) -> Traffic {
        self.inner.traffic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Memory;

    // A held answer is handed out once; the next read goes to the store
    // and sees what changed there since.
    #[test]
    fn each_prefetched_answer_is_used_once() {
        let mem: Arc<dyn Backend> = Arc::new(Memory::new());
        mem.put("runs/r/run", b"one").unwrap();
        mem.put("runs/r/layers/a", b"x").unwrap();
        let keys = ["runs/r/run".to_string()];
        let prefixes = ["runs/r/".to_string()];
        let (p, answer) = Prefetched::fetch(mem.clone(), &keys, &prefixes, || 7);
        assert_eq!(answer, 7);
        mem.put("runs/r/run", b"two").unwrap();
        mem.put("runs/r/layers/b", b"y").unwrap();
        assert_eq!(p.get("runs/r/run").unwrap(), b"one");
        assert_eq!(p.get("runs/r/run").unwrap(), b"two");
        assert_eq!(p.list("runs/r/").unwrap().len(), 3 - 1);
        assert_eq!(p.list("runs/r/").unwrap().len(), 3);
    }

    // A read that failed ahead is asked again, not held.
    #[test]
    fn a_failed_prefetch_is_asked_again() {
        let mem: Arc<dyn Backend> = Arc::new(Memory::new());
        let (p, ()) = Prefetched::fetch(mem.clone(), &["runs/r/run".to_string()], &[], || ());
        mem.put("runs/r/run", b"now").unwrap();
        assert_eq!(p.get("runs/r/run").unwrap(), b"now");
    }
}
