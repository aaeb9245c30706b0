//! Round trips counted outside the client: every request-answer exchange
//! the proxy forwards, and how many of them had to happen one after
//! another.
//!
//! The proxy knows no HTTP, so an exchange is read off the bytes of one
//! connection: bytes from the client after bytes from the server (or as
//! the connection's first) start one, and the server's bytes until the
//! client speaks again end it. Its times are the client's: when the proxy
//! read the request (before the delay it adds) and when it forwarded the
//! last of the answer (after). Exchanges that overlap in time (requests in
//! flight at once, on several connections) were concurrent; the most that
//! do not overlap at all is the number of round trips on the critical
//! path: each had to wait for an answer before the next could start. This
//! module knows nothing about faults or delays.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// Every exchange forwarded since the last `take`: (first byte to the
/// server, last byte to the client).
#[derive(Debug, Default)]
pub(crate) struct Exchanges(Mutex<Vec<(Instant, Instant)>>);

impl Exchanges {
    /// The most exchanges since the last `take` of which no two overlap
    /// (the critical path's round trips), and how many there were; starts
    /// counting afresh.
    pub(crate) fn take(&self) -> (u64, u64) {
        let mut all = std::mem::take(&mut *self.0.lock().unwrap());
        all.sort_by_key(|&(_, end)| end);
        let mut chain = 0;
        let mut last_end: Option<Instant> = None;
        for &(start, end) in &all {
            if last_end.is_none_or(|e| start > e) {
                chain += 1;
                last_end = Some(end);
            }
        }
        (chain, all.len() as u64)
    }
}

/// One connection's side of the count: which way bytes last went, and the
/// exchange under way.
#[derive(Debug)]
pub(crate) struct Turns {
    all: Arc<Exchanges>,
    /// The index in `all` of the exchange under way, and whether the
    /// client is still sending it (no answer yet).
    current: Mutex<Option<(usize, bool)>>,
}

impl Turns {
    pub(crate) fn new(all: Arc<Exchanges>) -> Turns {
        Turns {
            all,
            current: Mutex::new(None),
        }
    }

    /// Bytes the client sent at `sent` (when the proxy read them, before
    /// any delay it adds) are forwarded now.
    pub(crate) fn up(&self, sent: Instant) {
        let mut current = self.current.lock().unwrap();
        if matches!(*current, Some((_, true))) {
            return;
        }
        let mut all = self.all.0.lock().unwrap();
        all.push((sent, sent));
        *current = Some((all.len() - 1, true));
    }

    /// Bytes from the server are forwarded (reach the client) now.
    pub(crate) fn down(&self) {
        let mut current = self.current.lock().unwrap();
        if let Some((i, _)) = *current {
            let mut all = self.all.0.lock().unwrap();
            // `take` may have cleared the list meanwhile.
            if let Some(e) = all.get_mut(i) {
                e.1 = Instant::now();
            }
            *current = Some((i, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sequential_exchanges_chain_and_concurrent_ones_do_not() {
        let all = Arc::new(Exchanges::default());
        let (a, b) = (Turns::new(all.clone()), Turns::new(all.clone()));
        let pause = || std::thread::sleep(Duration::from_millis(2));
        // Two requests in flight at once, answered: one round trip.
        a.up(Instant::now());
        b.up(Instant::now());
        pause();
        a.down();
        b.down();
        pause();
        // Then one after another on one connection: two more, a request
        // body sent in several writes counting once.
        a.up(Instant::now());
        a.up(Instant::now());
        pause();
        a.down();
        a.down();
        pause();
        a.up(Instant::now());
        pause();
        a.down();
        assert_eq!(all.take(), (3, 4));
        assert_eq!(all.take(), (0, 0), "take starts afresh");
    }
}
