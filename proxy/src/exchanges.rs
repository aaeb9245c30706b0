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
//! path: each had to wait for an answer before the next could start. Each
//! exchange, with its bytes and request line, also goes to the timeline
//! when one is kept (`timeline`). This module knows nothing about faults
//! or delays.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::timeline::{Exchange, Timeline};

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
    /// The timeline, this connection's number in it, and the exchange
    /// under way as it will be written there.
    log: Option<(Arc<Timeline>, u64)>,
    detail: Mutex<Option<Exchange>>,
}

impl Turns {
    /// A connection's count; with `log`, its exchanges also go to that
    /// timeline as connection number `log.1`.
    pub(crate) fn new(all: Arc<Exchanges>, log: Option<(Arc<Timeline>, u64)>) -> Turns {
        Turns {
            all,
            current: Mutex::new(None),
            log,
            detail: Mutex::new(None),
        }
    }

    /// `bytes` the client sent at `sent` (when the proxy read them, before
    /// any delay it adds) are forwarded now.
    pub(crate) fn up(&self, sent: Instant, bytes: &[u8]) {
        let mut current = self.current.lock().unwrap();
        if matches!(*current, Some((_, true))) {
            if let Some(e) = self.detail.lock().unwrap().as_mut() {
                e.sent = sent;
                e.up_bytes += bytes.len() as u64;
            }
            return;
        }
        let mut all = self.all.0.lock().unwrap();
        all.push((sent, sent));
        *current = Some((all.len() - 1, true));
        if let Some((timeline, connection)) = &self.log {
            let next = Exchange::new(*connection, sent, bytes);
            if let Some(done) = self.detail.lock().unwrap().replace(next) {
                timeline.write(&done);
            }
        }
    }

    /// `bytes` bytes from the server are forwarded (reach the client) now.
    pub(crate) fn down(&self, bytes: usize) {
        let mut current = self.current.lock().unwrap();
        if let Some((i, _)) = *current {
            let now = Instant::now();
            let mut all = self.all.0.lock().unwrap();
            // `take` may have cleared the list meanwhile.
            if let Some(e) = all.get_mut(i) {
                e.1 = now;
            }
            *current = Some((i, false));
            if let Some(e) = self.detail.lock().unwrap().as_mut() {
                e.first_answer.get_or_insert(now);
                e.end = Some(now);
                e.down_bytes += bytes as u64;
            }
        }
    }
}

impl Drop for Turns {
    /// The connection is closed: its last exchange is complete.
    fn drop(&mut self) {
        if let (Some((timeline, _)), Some(e)) = (&self.log, self.detail.lock().unwrap().take()) {
            timeline.write(&e);
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
        let (a, b) = (Turns::new(all.clone(), None), Turns::new(all.clone(), None));
        let pause = || std::thread::sleep(Duration::from_millis(2));
        // Two requests in flight at once, answered: one round trip.
        a.up(Instant::now(), b"x");
        b.up(Instant::now(), b"x");
        pause();
        a.down(1);
        b.down(1);
        pause();
        // Then one after another on one connection: two more, a request
        // body sent in several writes counting once.
        a.up(Instant::now(), b"x");
        a.up(Instant::now(), b"x");
        pause();
        a.down(1);
        a.down(1);
        pause();
        a.up(Instant::now(), b"x");
        pause();
        a.down(1);
        assert_eq!(all.take(), (3, 4));
        assert_eq!(all.take(), (0, 0), "take starts afresh");
    }
}
