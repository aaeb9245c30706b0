//! Who runs the server's store work, and in what order: a fixed set of
//! threads (`--workers`, default one per core) runs every store call of a
//! request, so the server never runs more store work at once than it has
//! cores for, and a queue per client decides whose call runs next: the
//! waiting client with the fewest calls running, the one waiting longest
//! among equals. A client that floods the server with requests (a big
//! persist's sixteen pack uploads, or an attacker's thousand) so holds at
//! most its share of the threads while another waits, and that other's
//! next call runs as soon as any thread is free.
//!
//! A client is whatever key the request's gate names (`as_client`): its
//! token's name and address. Knows nothing of HTTP, routes or stores: a
//! call is a closure.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A call: its work, run on a store-work thread, gives back how to hand
/// its answer over, which runs once the call no longer counts as running
/// (so a client that has its answer never sees its call in the queue's
/// depth).
type Job = Box<dyn FnOnce() -> Deliver + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

/// The store-work threads and their queues. Dropping it stops the threads
/// once each has finished its call; calls still queued are dropped, and
/// their callers told so.
#[derive(Debug)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Queues {
    /// Clients with calls waiting, in the order they started to wait.
    waiting: VecDeque<String>,
    /// Each waiting client's calls, oldest first.
    jobs: HashMap<String, VecDeque<Job>>,
    /// Calls running now, per client (absent: none).
    running: HashMap<String, usize>,
    /// The most calls that ever ran at once.
    peak: usize,
    closed: bool,
}

struct Inner {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sched::Inner")
    }
}

/// A look at the queues (`/metrics` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depth {
    /// Calls queued, not yet running, all clients together.
    pub(crate) waiting: usize,
    /// Calls running on the threads.
    pub(crate) running: usize,
    /// Clients with at least one call queued.
    pub(crate) clients_waiting: usize,
}

/// The name of a thread that runs store work (`strata-store-3`).
pub const THREAD_PREFIX: &str = "strata-store-";

impl Pool {
    /// Starts `workers` threads (at least one).
    pub(crate) fn new(workers: usize) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
        });
        for i in 0..workers.max(1) {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}{i}"))
                .spawn(move || inner.work())?;
        }
        Ok(Self { inner })
    }

    /// Queues `job` as a call of `client`'s.
    fn submit(&self, client: &str, job: Job) {
        let mut q = self.inner.lock();
        match q.jobs.get_mut(client) {
            Some(calls) => calls.push_back(job),
            None => {
                q.jobs.insert(client.to_string(), VecDeque::from([job]));
                q.waiting.push_back(client.to_string());
            }
        }
        drop(q);
        self.inner.ready.notify_one();
    }

    /// Runs `f` on a store-work thread in `client`'s turn, and waits for
    /// it without holding an async thread; `None` if it panicked or the
    /// pool stopped before it ran.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        client: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            client,
            Box::new(move || {
                let answer = f();
                Box::new(move || {
                    let _ = tx.send(answer);
                })
            }),
        );
        rx.await.ok()
    }

    /// Queues `f`, which answers nobody, as a call of `client`'s.
    #[cfg(test)]
    fn submit_plain(&self, client: &str, f: impl FnOnce() + Send + 'static) {
        self.submit(
            client,
            Box::new(move || {
                f();
                Box::new(|| {}) as Deliver
            }),
        );
    }

    /// How deep the queues are now.
    pub(crate) fn depth(&self) -> Depth {
        let q = self.inner.lock();
        Depth {
            waiting: q.jobs.values().map(VecDeque::len).sum(),
            running: q.running.values().sum(),
            clients_waiting: q.waiting.len(),
        }
    }

    /// The most calls that ran at once since the pool started.
    #[cfg(test)]
    fn peak(&self) -> usize {
        self.inner.lock().peak
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut q = self.inner.lock();
        q.closed = true;
        q.jobs.clear();
        q.waiting.clear();
        drop(q);
        self.inner.ready.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A call runs outside the lock and panics are caught, so a
        // poisoned lock only means a panic in the few lines below.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker thread: takes the next call, runs it, until closed.
    fn work(&self) {
        let mut q = self.lock();
        loop {
            if q.closed {
                return;
            }
            let Some((client, job)) = q.next() else {
                q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            drop(q);
            // A panicking call drops its answer's sender: its caller gets
            // `None`, and this thread serves on.
            let deliver = std::panic::catch_unwind(AssertUnwindSafe(job));
            q = self.lock();
            match q.running.get_mut(&client) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    q.running.remove(&client);
                }
            }
            if let Ok(deliver) = deliver {
                drop(q);
                deliver();
                q = self.lock();
            }
        }
    }
}

impl Queues {
    /// The next call to run, and whose: of the waiting clients, the one
    /// with the fewest calls running, the longest waiting among equals.
    fn next(&mut self) -> Option<(String, Job)> {
        let running = |c: &String| self.running.get(c).copied().unwrap_or(0);
        let (at, _) = self
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|&(i, c)| (running(c), i))?;
        let client = self.waiting.remove(at)?;
        let calls = self.jobs.get_mut(&client)?;
        let job = calls.pop_front()?;
        if calls.is_empty() {
            self.jobs.remove(&client);
        } else {
            // Its next call waits behind every client waiting now.
            self.waiting.push_back(client.clone());
        }
        *self.running.entry(client.clone()).or_insert(0) += 1;
        let now: usize = self.running.values().sum();
        self.peak = self.peak.max(now);
        Some((client, job))
    }
}

tokio::task_local! {
    static CLIENT: String;
}

/// Runs `fut` (a request's handler) as `client`'s: the store calls it
/// makes wait in that client's queue.
pub(crate) async fn as_client<F: std::future::Future>(client: String, fut: F) -> F::Output {
    CLIENT.scope(client, fut).await
}

/// The client of the request being handled (`""` outside one: the
/// server's own work, such as scheduled gc).
pub(crate) fn client() -> String {
    CLIENT.try_with(|c| c.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A call that says it started, then waits to be let go.
    fn held(
        started: &mpsc::Sender<String>,
        name: &str,
    ) -> (impl FnOnce() + Send + 'static, mpsc::Sender<()>) {
        let (go, wait) = mpsc::channel::<()>();
        let started = started.clone();
        let name = name.to_string();
        (
            move || {
                started.send(name).unwrap();
                let _ = wait.recv();
            },
            go,
        )
    }

    #[test]
    fn never_runs_more_calls_than_threads() {
        let pool = Pool::new(2).unwrap();
        let (started, starts) = mpsc::channel();
        let mut gos = Vec::new();
        for i in 0..10 {
            let (job, go) = held(&started, &format!("c{i}"));
            pool.submit_plain(&format!("c{}", i % 3), job);
            gos.push(go);
        }
        // Two start; the third only once one of them is let go.
        starts.recv().unwrap();
        starts.recv().unwrap();
        assert!(starts
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        for go in &gos {
            let _ = go.send(());
        }
        for _ in 2..10 {
            starts.recv().unwrap();
        }
        assert_eq!(pool.peak(), 2);
    }

    // A client with fifty calls queued first, another with one: the other's
    // runs in the next turn or the one after, not after the fifty.
    #[test]
    fn a_flooding_client_does_not_hold_back_another() {
        let pool = Pool::new(1).unwrap();
        let (started, starts) = mpsc::channel();
        let (first, go_first) = held(&started, "flood0");
        pool.submit_plain("flood", first);
        assert_eq!(starts.recv().unwrap(), "flood0");
        let call = |name: String| {
            let started = started.clone();
            move || started.send(name).unwrap()
        };
        for i in 1..50 {
            pool.submit_plain("flood", call(format!("flood{i}")));
        }
        pool.submit_plain("other", call("other".to_string()));
        go_first.send(()).unwrap();
        let order: Vec<String> = (1..51).map(|_| starts.recv().unwrap()).collect();
        // Its turn comes after at most one more of the flood's calls (the
        // flood was waiting first), not after the forty-nine.
        let at = order.iter().position(|c| c == "other").unwrap();
        assert!(at <= 1, "{order:?}");
    }

    // Two threads, a client already running one call: a newcomer's call
    // takes the free thread before the first client's second.
    #[test]
    fn the_client_with_fewest_running_goes_first() {
        let pool = Pool::new(2).unwrap();
        let (started, starts) = mpsc::channel();
        let (a0, go_a0) = held(&started, "a0");
        let (a1, go_a1) = held(&started, "a1");
        let (a2, go_a2) = held(&started, "a2");
        let (b0, go_b0) = held(&started, "b0");
        pool.submit_plain("a", a0);
        pool.submit_plain("a", a1);
        let mut first = [starts.recv().unwrap(), starts.recv().unwrap()];
        first.sort();
        assert_eq!(first, ["a0", "a1"]);
        pool.submit_plain("a", a2);
        pool.submit_plain("b", b0);
        go_a0.send(()).unwrap();
        assert_eq!(starts.recv().unwrap(), "b0");
        for go in [go_a1, go_b0, go_a2] {
            let _ = go.send(());
        }
        assert_eq!(starts.recv().unwrap(), "a2");
    }

    // One thread held by a's call; a has two more queued, b one: three
    // calls wait, from two clients, and one runs.
    // A client that has its answer sees its call running no more: the
    // metrics test, scraping right after an answer, once saw it running.
    #[test]
    fn an_answer_arrives_once_its_call_stops_counting() {
        let pool = Pool::new(1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..2000 {
            rt.block_on(pool.run("a", || ())).unwrap();
            assert_eq!(pool.depth().running, 0, "after answer {i}");
        }
    }

    #[test]
    fn depth_counts_queued_and_running_calls() {
        let pool = Pool::new(1).unwrap();
        let (started, starts) = mpsc::channel();
        let (a0, go_a0) = held(&started, "a0");
        pool.submit_plain("a", a0);
        assert_eq!(starts.recv().unwrap(), "a0");
        for (client, name) in [("a", "a1"), ("a", "a2"), ("b", "b0")] {
            let (job, _) = held(&started, name);
            pool.submit_plain(client, job);
        }
        let want = Depth {
            waiting: 3,
            running: 1,
            clients_waiting: 2,
        };
        assert_eq!(pool.depth(), want);
        drop(go_a0);
    }

    #[test]
    fn a_panicking_call_answers_none_and_the_thread_serves_on() {
        let pool = Pool::new(1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let boom: Option<()> = rt.block_on(pool.run("a", || panic!("boom")));
        assert!(boom.is_none());
        assert_eq!(rt.block_on(pool.run("a", || 7)), Some(7));
    }
}
