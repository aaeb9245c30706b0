//! Reading packs straight from the bucket, through the presigned URLs a
//! `strata serve` over S3 hands out (`POST urls`, docs/protocol.md,
//! "Reading packs from the bucket"), so the bytes of an attach do not pass
//! through the server.
//!
//! `DirectReads` remembers the packs an attach announced (`will_read`),
//! asks the server for all their URLs in one request when the first is
//! needed, keeps each URL until a quarter of its lifetime before it
//! expires, and reads ranges from the bucket with a `Range` header and no
//! `Authorization` (the strata token never goes to the bucket). What it
//! reads is checked by the caller as any read (every chunk against its
//! id). Knows nothing about S3 signing (the server's) nor about packs
//! beyond their key prefix.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::HttpTransport;
use crate::error::{Error, Result};
use crate::protocol::urls::{UrlsAnswer, UrlsRequest, MAX_URL_KEYS};
use crate::protocol::{decode_answer, route};

/// URLs of packs, fetched from the server as they are needed.
#[derive(Debug)]
pub(crate) struct DirectReads {
    /// Whether the server offers URLs (its hello said `"urls": 1`).
    offered: AtomicBool,
    urls: Mutex<Urls>,
    /// Held while URLs are asked for, so threads reading at once ask once.
    asking: Mutex<()>,
    /// An agent without the server's token, for the bucket.
    agent: ureq::Agent,
}

#[derive(Debug, Default)]
struct Urls {
    /// Packs announced and not yet given a URL.
    announced: Vec<String>,
    /// Each pack's URL and until when to use it.
    known: HashMap<String, (String, Instant)>,
}

impl DirectReads {
    pub(crate) fn new(stall: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(stall))
            .timeout_per_read(Some(stall))
            .timeout_per_write(Some(stall))
            .max_idle_connections_per_host(32)
            .user_agent(format!("strata/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self {
            offered: AtomicBool::new(false),
            urls: Mutex::new(Urls::default()),
            asking: Mutex::new(()),
            agent,
        }
    }

    /// The server's hello said which version of `urls` it offers; only
    /// the version this client speaks is used.
    pub(crate) fn offer(&self, version: Option<u32>) {
        let ours = version == Some(crate::protocol::urls::URLS_VERSION);
        self.offered.store(ours, Relaxed);
    }

    /// Whether ranges of `key` are read from the bucket.
    pub(crate) fn applies(&self, key: &str) -> bool {
        self.offered.load(Relaxed) && key.starts_with("packs/")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Urls> {
        self.urls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers packs about to be read (no request yet).
    pub(crate) fn announce(&self, keys: &[String]) {
        if !self.offered.load(Relaxed) {
            return;
        }
        let mut urls = self.lock();
        let now = Instant::now();
        let fresh: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with("packs/"))
            .filter(|k| urls.known.get(*k).is_none_or(|(_, until)| *until <= now))
            .cloned()
            .collect();
        urls.announced.extend(fresh);
    }

    /// A usable URL of `key`, asking the server (for it and every pack
    /// announced) when none is known.
    fn url(&self, transport: &HttpTransport, key: &str) -> Result<String> {
        let usable = |urls: &Urls| {
            urls.known
                .get(key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(u, _)| u.clone())
        };
        if let Some(u) = usable(&self.lock()) {
            return Ok(u);
        }
        let _asking = self.asking.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have asked meanwhile.
        if let Some(u) = usable(&self.lock()) {
            return Ok(u);
        }
        let mut keys = std::mem::take(&mut self.lock().announced);
        keys.retain(|k| k != key);
        keys.insert(0, key.to_string());
        keys.truncate(MAX_URL_KEYS);
        let asked = Instant::now();
        let answer = ask(transport, &keys)?;
        // Used until a quarter of its life before it expires: a read
        // started then still finds it valid.
        let until = asked + Duration::from_secs(answer.expires_in) * 3 / 4;
        let mut urls = self.lock();
        for (k, u) in keys.into_iter().zip(answer.urls) {
            urls.known.insert(k, (u, until));
        }
        usable(&urls).ok_or_else(|| Error::Remote {
            server: transport.location_string(),
            detail: format!("urls: the URL of {key} expired as it arrived"),
        })
    }

    /// Forgets `key`'s URL (the bucket refused it).
    fn forget(&self, key: &str) {
        self.lock().known.remove(key);
    }

    /// The bytes of `ranges` of `key`, read from the bucket.
    pub(crate) fn get_ranges(
        &self,
        transport: &HttpTransport,
        key: &str,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Vec<u8>>> {
        let url = self.url(transport, key)?;
        let result: Result<Vec<Vec<u8>>> = ranges
            .iter()
            .map(|r| self.get_range(transport, &url, key, r))
            .collect();
        if result.is_err() {
            self.forget(key);
        }
        result
    }

    fn get_range(
        &self,
        transport: &HttpTransport,
        url: &str,
        key: &str,
        r: &Range<u64>,
    ) -> Result<Vec<u8>> {
        if r.start >= r.end {
            return Ok(Vec::new());
        }
        let counter = &transport.inner.traffic;
        let _in_flight = counter.request();
        let failed = |detail: String| Error::Remote {
            server: "the bucket (a presigned URL)".into(),
            detail: format!("{key}: {detail}"),
        };
        let response = self
            .agent
            .get(url)
            .header("range", format!("bytes={}-{}", r.start, r.end - 1))
            .call()
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        let want = (r.end - r.start) as usize;
        let mut bytes = Vec::with_capacity(if status == 206 { want } else { 0 });
        response
            .into_body()
            .into_with_config()
            .limit(1 << 30)
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        counter.received(bytes.len() as u64);
        let got = match status {
            206 => bytes,
            // A bucket that ignored the range sent the whole object.
            200 => bytes
                .get(r.start as usize..r.end as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| failed(format!("the object is shorter than {}", r.end)))?,
            s => return Err(failed(format!("the bucket answered {s}"))),
        };
        if got.len() != want {
            return Err(failed(format!("asked for {want} bytes, got {}", got.len())));
        }
        Ok(got)
    }
}

/// `POST urls` for `keys`: one URL per key, in order.
fn ask(transport: &HttpTransport, keys: &[String]) -> Result<UrlsAnswer> {
    let req = UrlsRequest {
        method: "GET".into(),
        keys: keys.to_vec(),
    };
    #[allow(clippy::expect_used)] // strings always serialize
    let body = serde_json::to_vec(&req).expect("serializes");
    let r = transport.call("POST", route::URLS, Some(&body))?;
    let body = transport.expect_ok(r, "urls")?;
    let answer: UrlsAnswer = decode_answer(&body).map_err(|e| Error::Remote {
        server: transport.location_string(),
        detail: format!("urls: bad answer: {e}"),
    })?;
    if answer.urls.len() != keys.len() {
        return Err(Error::Remote {
            server: transport.location_string(),
            detail: format!(
                "urls: asked for {} URLs, got {}",
                keys.len(),
                answer.urls.len()
            ),
        });
    }
    Ok(answer)
}
