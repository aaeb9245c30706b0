//! A TCP proxy on loopback that puts a real network's faults between a
//! client and a server: a delay in each direction, a bandwidth cap, and
//! faults (reset after N bytes, stall forever after N bytes, accept and
//! never answer). The kernel here has no netem, so this is how tests and
//! the benchmark see latency and broken connections.
//!
//! Faults can be changed while it runs (`set`); each new connection takes
//! the settings of the moment it is accepted. A fault can be limited to the
//! first N connections (`fault_connections`), so a retry on a fresh
//! connection gets through. The bandwidth cap is the link's: all
//! connections share it, each direction on its own, as on a real link.
//!
//! Used in-process by the tests (tests/support) and the benchmark, and as
//! the `strata-proxy` command for anything else (it only ever listens on
//! and connects to loopback addresses it is given). It knows nothing about
//! HTTP or strata: it moves bytes.

mod exchanges;
mod timeline;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use exchanges::{Exchanges, Turns};
use timeline::Timeline;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Delay added to each direction (the round trip grows by twice this).
    pub one_way: Duration,
    /// Bandwidth cap per direction, shared by all connections, in Mbit/s.
    pub mbit: Option<f64>,
    /// After this many bytes from the server, stop forwarding its answers
    /// for good, but keep the connection open (a stalled server).
    pub stall_after: Option<u64>,
    /// After this many bytes from the server, reset the connection.
    pub reset_after: Option<u64>,
    /// After this many bytes from the client (mid-upload), reset the
    /// connection.
    pub reset_up_after: Option<u64>,
    /// Reset the connection when the client sends these bytes (before
    /// forwarding them): cuts one chosen request, say the PUT of a layer
    /// ref (`/layers/`), mid-commit.
    pub reset_on_sending: Option<Vec<u8>>,
    /// Accept connections and never answer nor forward anything.
    pub black_hole: bool,
    /// Apply the faults above (not the delay or the cap) only to the first
    /// this many connections; `None`: to all.
    pub fault_connections: Option<u64>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    /// Connections the proxy reset so far.
    resets: Arc<AtomicU64>,
    /// The request-answer exchanges forwarded (`exchanges`).
    exchanges: Arc<Exchanges>,
    /// Where each exchange is written down, once `log_to` is called.
    timeline: Arc<Mutex<Option<Arc<Timeline>>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on an ephemeral loopback port.
    pub fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listens");
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(faults));
        let accepted = Arc::new(AtomicU64::new(0));
        let resets = Arc::new(AtomicU64::new(0));
        let exchanges = Arc::new(Exchanges::default());
        let timeline = Arc::new(Mutex::new(None::<Arc<Timeline>>));
        let (f, a, r, x, t) = (
            faults.clone(),
            accepted.clone(),
            resets.clone(),
            exchanges.clone(),
            timeline.clone(),
        );
        let links = (Arc::new(Link::default()), Arc::new(Link::default()));
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = a.fetch_add(1, SeqCst);
                let mut now = f.lock().unwrap().clone();
                if now.fault_connections.is_some_and(|k| n >= k) {
                    now.stall_after = None;
                    now.reset_after = None;
                    now.reset_up_after = None;
                    now.reset_on_sending = None;
                    now.black_hole = false;
                }
                let log = t.lock().unwrap().clone().map(|t| (t, n));
                let turns = Arc::new(Turns::new(x.clone(), log));
                tokio::spawn(connection(
                    client,
                    upstream,
                    now,
                    r.clone(),
                    (links.clone(), turns),
                ));
            }
        });
        Proxy {
            addr,
            faults,
            accepted,
            resets,
            exchanges,
            timeline,
            runtime: Some(runtime),
        }
    }

    /// A proxy in front of a `strata serve` at `url` (`http://127.0.0.1:P`),
    /// and the URL to use instead.
    pub fn in_front_of(url: &str, faults: Faults) -> (Proxy, String) {
        let hostport = url
            .strip_prefix("http://")
            .expect("an http:// url")
            .trim_end_matches('/');
        let upstream: SocketAddr = hostport.parse().expect("host:port");
        let proxy = Proxy::start(upstream, faults);
        let url = format!("http://{}", proxy.addr);
        (proxy, url)
    }

    /// Changes the faults for connections accepted from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(SeqCst)
    }

    /// Connections reset so far.
    pub fn resets(&self) -> u64 {
        self.resets.load(SeqCst)
    }

    /// The round trips on the critical path since the last call (or the
    /// start), counted from the bytes the proxy forwarded, not from what
    /// the client says: the most request-answer exchanges of which no two
    /// overlapped in time. Also how many exchanges there were in all.
    pub fn take_round_trips(&self) -> (u64, u64) {
        self.exchanges.take()
    }

    /// From now on, writes each exchange of the connections accepted
    /// after this call to `path` (appended, one JSON object a line, as the
    /// exchange ends: `connection`, `start_us`, `sent_us`,
    /// `first_answer_us`, `end_us` on the wall clock in microseconds,
    /// `up_bytes`, `down_bytes`, `request`: the first line of the
    /// request). A connection's last exchange is written when it closes.
    pub fn log_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        *self.timeline.lock().unwrap() = Some(Arc::new(Timeline::open(path)?));
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One direction of the link: when it is next free to send.
#[derive(Debug, Default)]
struct Link {
    free_at: Mutex<Option<Instant>>,
}

impl Link {
    /// Books `bytes` on the link at `mbit`; returns when they have left.
    fn book(&self, bytes: usize, mbit: f64) -> Instant {
        let took = Duration::from_secs_f64(bytes as f64 * 8.0 / (mbit * 1e6));
        let mut free_at = self.free_at.lock().unwrap();
        let start = free_at.map_or(Instant::now(), |t| t.max(Instant::now()));
        let done = start + took;
        *free_at = Some(done);
        done
    }
}

/// The two directions of the link: client to server, server to client.
type Links = (Arc<Link>, Arc<Link>);

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    faults: Faults,
    resets: Arc<AtomicU64>,
    (links, turns): (Links, Arc<Turns>),
) {
    if faults.black_hole {
        // Hold the connection, read and drop what comes, answer nothing.
        let mut client = client;
        let mut buf = [0u8; 16 << 10];
        while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Set when the connection is reset: both readers stop, so the sockets
    // close (with SO_LINGER 0: a reset).
    let (kill, killed) = watch::channel(false);
    let up = Faults {
        stall_after: None,
        reset_after: faults.reset_up_after,
        ..faults.clone()
    };
    let faults = Faults {
        reset_on_sending: None,
        ..faults
    };
    tokio::spawn(pump(
        cr,
        sw,
        up,
        (links.0, Side::Up(turns.clone())),
        (kill.clone(), killed.clone()),
        resets.clone(),
    ));
    pump(
        sr,
        cw,
        faults,
        (links.1, Side::Down(turns)),
        (kill, killed),
        resets,
    )
    .await;
}

/// Resets the connection `to` belongs to.
fn reset(to: tokio::net::tcp::OwnedWriteHalf, kill: &watch::Sender<bool>, resets: &AtomicU64) {
    // Linger 0 never blocks: it makes the close a reset.
    #[allow(deprecated)]
    let _ = to.as_ref().set_linger(Some(Duration::ZERO));
    // Not a FIN: the socket closes (with a reset) once the readers, told
    // to stop, drop their halves.
    to.forget();
    resets.fetch_add(1, SeqCst);
    let _ = kill.send(true);
}

/// Forwards one direction: a reader task stamps each read with when it may
/// leave, the writer sends it then, at the capped rate, applying faults.
async fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Faults,
    (link, side): (Arc<Link>, Side),
    (kill, mut killed): (watch::Sender<bool>, watch::Receiver<bool>),
    resets: Arc<AtomicU64>,
) {
    let mut rx = stamp_reads(from, faults.one_way, killed.clone());
    let mut sent = 0u64;
    // The last bytes forwarded, so a pattern split across reads is found.
    let mut tail: Vec<u8> = Vec::new();
    // A read taken from the queue but not yet due.
    let mut held: Option<(Instant, Vec<u8>)> = None;
    loop {
        let next = match held.take() {
            Some(h) => Some(h),
            None => tokio::select! {
                n = rx.recv() => n,
                _ = killed.changed() => None,
            },
        };
        let Some((due, mut bytes)) = next else {
            break;
        };
        held = gather_due(&mut rx, due, &mut bytes).await;
        match cut(&faults, sent, &mut tail, &mut bytes) {
            Cut::None => {}
            Cut::Reset => {
                let _ = to.write_all(&bytes).await;
                reset(to, &kill, &resets);
                return;
            }
            Cut::Stall => {
                let _ = to.write_all(&bytes).await;
                // Never another byte; the connection stays open.
                while rx.recv().await.is_some() {}
                std::future::pending::<()>().await;
            }
        }
        if let Some(mbit) = faults.mbit {
            let done = link.book(bytes.len(), mbit);
            if done > Instant::now() {
                tokio::time::sleep_until(done).await;
            }
        }
        match &side {
            Side::Up(turns) => turns.up(due - faults.one_way, &bytes),
            Side::Down(turns) => turns.down(bytes.len()),
        }
        if to.write_all(&bytes).await.is_err() {
            return;
        }
        sent += bytes.len() as u64;
    }
    let _ = to.shutdown().await;
}

/// Which way a pump forwards, for counting exchanges.
enum Side {
    /// Client to server.
    Up(Arc<Turns>),
    /// Server to client.
    Down(Arc<Turns>),
}

/// Reads are stamped with the instant they may leave.
type Stamped = mpsc::UnboundedReceiver<(Instant, Vec<u8>)>;

/// Spawns the reader task: every read of `from`, stamped `delay` after it
/// arrived, until the peer closes or the connection is killed.
fn stamp_reads(
    mut from: tokio::net::tcp::OwnedReadHalf,
    delay: Duration,
    mut killed: watch::Receiver<bool>,
) -> Stamped {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                },
                _ = killed.changed() => break,
            }
        }
    });
    rx
}

/// Waits until `bytes` are due, then appends every queued read due by
/// then (up to 1 MiB); returns the first read not yet due, if taken.
///
/// The timer ticks in milliseconds: sleep only when the bytes are not due
/// within the tick, and send every read due by then in one write, or small
/// reads would each wait for a tick of their own.
async fn gather_due(
    rx: &mut Stamped,
    due: Instant,
    bytes: &mut Vec<u8>,
) -> Option<(Instant, Vec<u8>)> {
    let tick = Duration::from_millis(1);
    if due > Instant::now() + tick {
        tokio::time::sleep_until(due).await;
    }
    while let Ok((d, more)) = rx.try_recv() {
        if d > Instant::now() + tick || bytes.len() >= 1 << 20 {
            return Some((d, more));
        }
        bytes.extend_from_slice(&more);
    }
    None
}

/// What the faults do to the next `bytes` after `sent` bytes.
enum Cut {
    /// Send them.
    None,
    /// Send what `bytes` was truncated to, then reset the connection.
    Reset,
    /// Send what `bytes` was truncated to, then never another byte.
    Stall,
}

/// Applies the faults that cut a connection to the next `bytes`,
/// truncating them to what gets through (`tail`: the last bytes sent, for
/// a pattern split across reads).
fn cut(faults: &Faults, sent: u64, tail: &mut Vec<u8>, bytes: &mut Vec<u8>) -> Cut {
    if let Some(pattern) = &faults.reset_on_sending {
        let mut window = std::mem::take(tail);
        window.extend_from_slice(bytes);
        if window
            .windows(pattern.len())
            .any(|w| w == pattern.as_slice())
        {
            bytes.clear();
            return Cut::Reset;
        }
        let keep = window.len().min(pattern.len());
        *tail = window[window.len() - keep..].to_vec();
    }
    if let Some(limit) = faults.reset_after {
        if sent + bytes.len() as u64 > limit {
            bytes.truncate((limit - sent.min(limit)) as usize);
            return Cut::Reset;
        }
    }
    if let Some(limit) = faults.stall_after {
        if sent + bytes.len() as u64 > limit {
            bytes.truncate((limit - sent.min(limit)) as usize);
            return Cut::Stall;
        }
    }
    Cut::None
}
