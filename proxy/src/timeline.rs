//! The exchanges the proxy forwards, written down one line each as they
//! end: which connection, when the request started and finished arriving,
//! when the answer's first and last bytes left for the client, the bytes
//! each way, and the request's first line. On the wall clock (microseconds
//! since the Unix epoch), so a timeline of the client's own stages, taken
//! by another process, lines up with it (bench/timeline.sh).
//!
//! Times are the client's, as in `exchanges`: a request's when the proxy
//! read it (before the delay it adds), an answer's when the proxy
//! forwarded it (after). Knows nothing about HTTP beyond taking the
//! bytes up to the first line end as a label; nothing about faults.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where exchange lines go, and the clock that turns the runtime's
/// instants into wall-clock time.
#[derive(Debug)]
pub(crate) struct Timeline {
    out: Mutex<File>,
    /// An instant and the wall clock at it, in microseconds.
    origin: (Instant, u64),
}

/// One exchange as it is forwarded.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    /// The connection's number, in the order the proxy accepted them.
    pub connection: u64,
    /// The request's first bytes and last bytes read from the client.
    pub start: Instant,
    pub sent: Instant,
    /// The answer's first and last bytes forwarded to the client.
    pub first_answer: Option<Instant>,
    pub end: Option<Instant>,
    pub up_bytes: u64,
    pub down_bytes: u64,
    /// The request's first line, as far as it came in the first read.
    pub head: String,
}

/// The longest request line kept.
const HEAD_MAX: usize = 160;

impl Exchange {
    /// An exchange whose request starts with `bytes`, read at `at`.
    pub(crate) fn new(connection: u64, at: Instant, bytes: &[u8]) -> Exchange {
        let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let head = line
            .iter()
            .take(HEAD_MAX)
            .map(|&b| match b {
                b' '..=b'~' if b != b'"' && b != b'\\' => b as char,
                _ => '.',
            })
            .collect::<String>()
            .trim_end_matches('.')
            .to_string();
        Exchange {
            connection,
            start: at,
            sent: at,
            first_answer: None,
            end: None,
            up_bytes: bytes.len() as u64,
            down_bytes: 0,
            head,
        }
    }
}

impl Timeline {
    /// Appends to `path` (created if missing).
    pub(crate) fn open(path: &Path) -> std::io::Result<Timeline> {
        let out = File::options().create(true).append(true).open(path)?;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Ok(Timeline {
            out: Mutex::new(out),
            origin: (Instant::now(), wall),
        })
    }

    fn micros(&self, at: Instant) -> u64 {
        let (i, w) = self.origin;
        if at >= i {
            w + (at - i).as_micros() as u64
        } else {
            w.saturating_sub((i - at).as_micros() as u64)
        }
    }

    /// Writes one line for `e` (a JSON object; lost on a write error: the
    /// log is an aid, the traffic goes on).
    pub(crate) fn write(&self, e: &Exchange) {
        let opt = |t: Option<Instant>| t.map_or("null".to_string(), |t| self.micros(t).to_string());
        let line = format!(
            "{{\"connection\":{},\"start_us\":{},\"sent_us\":{},\"first_answer_us\":{},\
             \"end_us\":{},\"up_bytes\":{},\"down_bytes\":{},\"request\":\"{}\"}}\n",
            e.connection,
            self.micros(e.start),
            self.micros(e.sent),
            opt(e.first_answer),
            opt(e.end),
            e.up_bytes,
            e.down_bytes,
            e.head
        );
        let _ = self.out.lock().unwrap().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use crate::{Faults, Proxy};

    /// A server that answers each request (a line) with `answer`.
    fn serve(answer: &'static [u8]) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                        if conn.write_all(answer).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn field<'a>(line: &'a str, name: &str) -> &'a str {
        let at = line.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        let rest = &line[at..];
        rest[..rest.find([',', '}']).unwrap()].trim_matches('"')
    }

    #[test]
    fn each_exchange_is_written_with_its_connection_bytes_times_and_request_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("exchanges.jsonl");
        let one_way = Duration::from_millis(20);
        let proxy = Proxy::start(
            serve(b"HTTP/1.1 200 OK\r\n\r\nhello"),
            Faults {
                one_way,
                ..Faults::default()
            },
        );
        proxy.log_to(&log).unwrap();
        let mut answer = [0u8; 24];
        for _ in 0..2 {
            let mut conn = TcpStream::connect(proxy.addr).unwrap();
            for request in [
                &b"GET /a HTTP/1.1\r\nx: \"y\"\r\n\r\n"[..],
                b"PUT /b HTTP/1.1\r\n\r\nabc",
            ] {
                conn.write_all(request).unwrap();
                conn.read_exact(&mut answer).unwrap();
            }
        }
        // Both connections closed: their last exchanges are written.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        while text.lines().count() < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            text = std::fs::read_to_string(&log).unwrap();
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for (i, line) in lines.iter().enumerate() {
            let (get, connection) = (i % 2 == 0, (i / 2).to_string());
            assert_eq!(field(line, "connection"), connection, "{line}");
            let request = if get {
                "GET /a HTTP/1.1"
            } else {
                "PUT /b HTTP/1.1"
            };
            assert_eq!(field(line, "request"), request, "{line}");
            let up = if get { 27 } else { 22 };
            assert_eq!(field(line, "up_bytes"), up.to_string(), "{line}");
            assert_eq!(field(line, "down_bytes"), "24", "{line}");
            let us = |name| field(line, name).parse::<u64>().unwrap();
            // The answer reached the client a round trip after the request
            // left it.
            assert!(us("end_us") >= us("start_us") + 40_000, "{line}");
            assert!(us("first_answer_us") <= us("end_us"), "{line}");
            assert!(us("start_us") <= us("sent_us"), "{line}");
        }
    }
}
