//! `strata-proxy UPSTREAM [--one-way-ms MS] [--mbit N]`: runs the latency
//! proxy in front of a loopback `UPSTREAM` (`127.0.0.1:PORT`), prints the
//! address it listens on, and runs until killed. For scripts such as
//! bench/round_trips.sh; the tests and the benchmark use the library.
//! With `STRATA_PROXY_LOG=FILE` in its environment, it writes each
//! exchange it forwards to FILE (`Proxy::log_to`; bench/timeline.sh).

use std::net::SocketAddr;
use std::time::Duration;

use strata_proxy::{Faults, Proxy};

fn main() {
    if let Err(e) = run() {
        eprintln!("strata-proxy: {e}");
        eprintln!("usage: strata-proxy 127.0.0.1:PORT [--one-way-ms MS] [--mbit N]");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let upstream: SocketAddr = args
        .next()
        .ok_or("no upstream address")?
        .parse()
        .map_err(|e| format!("upstream address: {e}"))?;
    if !upstream.ip().is_loopback() {
        return Err(format!("{upstream} is not a loopback address"));
    }
    let mut faults = Faults::default();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number: f64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        if !(number >= 0.0 && number.is_finite()) {
            return Err(format!("{flag}: {value} is out of range"));
        }
        match flag.as_str() {
            "--one-way-ms" => faults.one_way = Duration::from_secs_f64(number / 1000.0),
            "--mbit" if number > 0.0 => faults.mbit = Some(number),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let proxy = Proxy::start(upstream, faults);
    if let Some(path) = std::env::var_os("STRATA_PROXY_LOG") {
        proxy
            .log_to(std::path::Path::new(&path))
            .map_err(|e| format!("STRATA_PROXY_LOG {path:?}: {e}"))?;
    }
    println!("{}", proxy.addr);
    loop {
        std::thread::park();
    }
}
