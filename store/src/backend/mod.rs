//! Where a store's durable objects live: a small key/value contract that a
//! local directory, an HTTP server and an S3 bucket can all meet.
//!
//! Keys are `/`-separated ASCII paths (`packs/3f/3fa1…`, `runs/R/graph`). The
//! contract deliberately has no compare-and-swap: object stores do not agree
//! on conditional writes, so callers name objects by content, or so that only
//! one writer ever uses a key, and a repeated `put` is always harmless.
//! This module knows nothing about packs, manifests or runs.

// What a request reaches must not panic: every unwrap or expect here is
// refused unless its line says why it cannot fail.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod http;
mod local;
mod memory;
mod prefetch;
pub mod s3;

pub use local::LocalDir;
pub use memory::Memory;
pub use prefetch::Prefetched;

use std::fmt::Debug;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use crate::error::{Error, Result};

pub use crate::protocol::{validate_key, validate_prefix, MAX_KEY_LEN};

/// A store's object storage.
pub trait Backend: Send + Sync + Debug {
    /// Stores `data` under `key`. Atomic: a reader sees the whole object or
    /// none. Durable when it returns. Overwrites an existing object, which is
    /// harmless because keys are content-addressed or single-writer.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Stores the objects of `first` (in any order, at once), then `last`
    /// once all of them are stored and `ready` agrees (it runs just
    /// before `last` is sent: a persist's commit guard): how a ref is
    /// written only after what it names. Each object is stored as `put` stores it; on an error,
    /// some may be stored and `last` is not, and the whole call is safe
    /// to repeat. By default the puts of `first` run at once, then
    /// `last`'s; a backend that can store them in order in one request
    /// (`strata serve`'s `objects`) saves a round trip.
    fn put_then(
        &self,
        first: &[(&str, &[u8])],
        last: (&str, &[u8]),
        ready: Ready<'_>,
    ) -> Result<()> {
        put_at_once_then(self, first, last, ready)
    }

    /// Whether `put_then` stores `first` in the order given, each before
    /// the next, in one round trip (`strata serve`'s `objects`): a persist
    /// then sends its last pack in its commit, ahead of the index object
    /// that names it, rather than in a round trip of its own. By default
    /// `first` is stored at once, in no order, so no.
    fn stores_in_order(&self) -> bool {
        false
    }

    /// The whole object. A missing key is `Error::NotFound`.
    fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// Bytes `range` of the object, in order. A missing key is
    /// `Error::NotFound`; a range past the end is `Error::Corrupt` (the caller
    /// believed the object longer than it is).
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>>;

    /// The object's size in bytes. A missing key is `Error::NotFound`.
    fn size(&self, key: &str) -> Result<u64>;

    /// Whether `key` exists (by default: whether `size` finds it).
    fn exists(&self, key: &str) -> Result<bool> {
        match self.size(key) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All keys that start with `prefix`, sorted. Safe to call while others
    /// write: it may or may not include objects put during the call.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// The keys of `list(prefix)` that sort after `after`. By default the
    /// whole prefix is listed and filtered; a backend that can start a
    /// listing part-way (S3's `start-after`) lists only what follows, so
    /// reading the tail of a long time-ordered prefix costs one request.
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<String>> {
        let mut keys = self.list(prefix)?;
        keys.retain(|k| k.as_str() > after);
        Ok(keys)
    }

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Where the objects are, for messages (`/srv/strata`, `s3://b/p`).
    fn location(&self) -> String;

    /// Two ranges of one object closer than this are read as one request.
    /// Zero where a request costs little (a local disk); more where each
    /// request pays a round trip (HTTP, S3), so fewer, larger reads win.
    fn coalesce_gap(&self) -> u64 {
        0
    }

    /// How many requests to keep in flight when reading many packs: the
    /// machine's threads for a local disk, more where each request waits on
    /// the network.
    fn parallelism(&self) -> usize {
        rayon::current_num_threads()
    }

    /// Bytes sent and received so far (zero for a local disk).
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }

    /// A URL anyone holding it may `GET` `key` with for `ttl`, without
    /// credentials (an S3 presigned URL); `None` where the backend has
    /// none (a directory, a `strata serve` namespace). There is
    /// deliberately no such method to write: a write signed for a client
    /// could overwrite what the store verified.
    fn signed_get_url(&self, key: &str, ttl: std::time::Duration) -> Result<Option<String>> {
        let _ = (key, ttl);
        Ok(None)
    }

    /// Layer refs `keys` and the encodings of the manifests they name, in
    /// one request, where the store answers it (`strata serve`'s
    /// `layers`: docs/protocol.md); `None` where it does not, and the
    /// caller reads them object by object. The manifests are not checked
    /// here: the caller checks each against the id its ref names.
    fn layers(&self, keys: &[String]) -> Result<Option<Vec<crate::protocol::layers::LayerAnswer>>> {
        let _ = keys;
        Ok(None)
    }

    /// Says which objects ranges are about to be read from (all the packs
    /// of an attach, before the reads), so a backend that must ask for
    /// something per object first (`strata serve`'s URLs) asks once for
    /// all. By default nothing.
    fn will_read(&self, keys: &[String]) -> Result<()> {
        let _ = keys;
        Ok(())
    }
}

/// `Backend::put_then`'s default: the puts of `first` at once, then
/// `last`'s.
pub(crate) fn put_at_once_then<B: Backend + ?Sized>(
    backend: &B,
    first: &[(&str, &[u8])],
    last: (&str, &[u8]),
    ready: Ready<'_>,
) -> Result<()> {
    let stored: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = first
            .iter()
            .map(|&(k, b)| s.spawn(move || backend.put(k, b)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    stored.into_iter().collect::<Result<Vec<()>>>()?;
    ready()?;
    backend.put(last.0, last.1)
}

/// What `Backend::put_then` asks just before it sends the last object.
pub type Ready<'a> = &'a (dyn Fn() -> Result<()> + Sync);

/// Bytes a networked backend moved: request and response bodies, and the
/// number of requests (each also costs a few hundred bytes of headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Requests started while no other was in flight: each made the
    /// command wait a whole round trip, so this is how many round trips
    /// were on the critical path (requests that overlap others add none).
    pub round_trips: u64,
    /// Bytes of request bodies sent.
    pub sent: u64,
    /// Bytes of response bodies received.
    pub received: u64,
    /// Requests made (retries included).
    pub requests: u64,
}

impl Traffic {
    /// What moved since `earlier`.
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            sent: self.sent - earlier.sent,
            received: self.received - earlier.received,
            requests: self.requests - earlier.requests,
            round_trips: self.round_trips - earlier.round_trips,
        }
    }
}

/// The counters behind `Traffic`, shared by a networked backend's threads.
#[derive(Debug, Default)]
pub struct TrafficCounter {
    sent: AtomicU64,
    received: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    round_trips: AtomicU64,
}

impl TrafficCounter {
    /// Counts a request starting; it is in flight until the guard drops.
    pub fn request(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, SeqCst);
        if self.in_flight.fetch_add(1, SeqCst) == 0 {
            self.round_trips.fetch_add(1, SeqCst);
        }
        InFlight(self)
    }

    /// Counts `n` bytes of request body sent.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, SeqCst);
    }

    /// Counts the further pages of a listing of `keys` keys (S3 answers
    /// 1,000 a page, each page asked for after the last arrived): one
    /// request and one round trip each, beyond the one `request` counted.
    pub fn pages(&self, keys: usize) {
        let more = keys.div_ceil(1000).saturating_sub(1) as u64;
        self.requests.fetch_add(more, SeqCst);
        self.round_trips.fetch_add(more, SeqCst);
    }

    /// Counts `n` bytes of response body received.
    pub fn received(&self, n: u64) {
        self.received.fetch_add(n, SeqCst);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Traffic {
        Traffic {
            round_trips: self.round_trips.load(SeqCst),
            sent: self.sent.load(SeqCst),
            received: self.received.load(SeqCst),
            requests: self.requests.load(SeqCst),
        }
    }
}

/// A request in flight (see `TrafficCounter::request`).
#[derive(Debug)]
pub struct InFlight<'a>(&'a TrafficCounter);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_started_with_none_in_flight_are_round_trips() {
        let c = TrafficCounter::default();
        {
            let _a = c.request();
            let _b = c.request(); // overlaps a: no extra wait
        }
        drop(c.request()); // after both ended: a second wait
        let t = c.snapshot();
        assert_eq!((t.requests, t.round_trips), (3, 2));
    }
}
