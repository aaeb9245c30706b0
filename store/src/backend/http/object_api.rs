//! `HttpStore`: the object API of a `strata serve` namespace as a
//! `Backend`, over `HttpTransport` (the routes and bodies are
//! `protocol`'s).

use std::ops::Range;

use std::sync::Arc;

use super::direct::DirectReads;
use super::{HttpOptions, HttpTransport, DEFAULT_STALL_TIMEOUT};
use crate::backend::{validate_key, Backend, Ready, Traffic};
use crate::error::{Error, Result};
use crate::protocol::layers::{self, LayerAnswer};
use crate::protocol::{decode_answer, objects, route, ErrorBody, KeyList, RangesRequest};

/// The object API of a `strata serve` namespace, as a `Backend`. The
/// server checks what it is given: it refuses objects that do not verify,
/// and deletes of anything but run records and layer refs
/// (`protocol::client_may_delete`).
#[derive(Debug, Clone)]
pub struct HttpStore {
    transport: HttpTransport,
    /// Pack reads straight from the bucket, when the server offers URLs.
    direct: Arc<DirectReads>,
}

impl HttpStore {
    /// Parses `http(s)://HOST[:PORT]/NAMESPACE`.
    pub fn new(url: &str, options: HttpOptions) -> Result<Self> {
        let stall = options.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT);
        Ok(Self {
            transport: HttpTransport::new(url, options)?,
            direct: Arc::new(DirectReads::new(stall)),
        })
    }

    /// Takes up the server's offer of URLs to read packs from the bucket
    /// (its hello's `urls`: docs/protocol.md, "Reading packs from the
    /// bucket"); without it, or of a version this client does not speak,
    /// packs are read through the server.
    pub fn use_urls(&self, offered: Option<u32>) {
        self.direct.offer(offered);
    }

    /// The transport under the object API (for the other routes).
    pub fn transport(&self) -> &HttpTransport {
        &self.transport
    }
}

impl HttpStore {
    /// One `layers` request for `keys` (at most `MAX_LAYER_KEYS`).
    fn layers_of(&self, keys: &[String]) -> Result<Option<Vec<LayerAnswer>>> {
        let body = layers::LayersRequest {
            keys: keys.to_vec(),
        }
        .encode();
        let (status, answer) = self.transport.call("POST", route::LAYERS, Some(&body))?;
        let kind = decode_answer::<ErrorBody>(&answer)
            .ok()
            .and_then(|b| b.kind);
        if (status == 404 && kind.is_none()) || status == 413 {
            return Ok(None);
        }
        let answer = self.transport.expect_ok((status, answer), route::LAYERS)?;
        layers::decode_answer(keys.len(), &answer)
            .map(Some)
            .map_err(|e| Error::Remote {
                server: self.transport.location_string(),
                detail: format!("{}: {e}", route::LAYERS),
            })
    }
}

impl Backend for HttpStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        let r = self
            .transport
            .call("PUT", &format!("{}{key}", route::OBJECT), Some(data))?;
        self.transport.expect_ok(r, key).map(|_| ())
    }

    /// One `objects` request when the server has the feature (one round
    /// trip: it stores them in order); else, or when the replica that
    /// answers does not know the route (`404` with no kind) or finds the
    /// body too large (`413`: a pack rode along), the same puts one after
    /// another.
    fn put_then(
        &self,
        first: &[(&str, &[u8])],
        last: (&str, &[u8]),
        ready: Ready<'_>,
    ) -> Result<()> {
        if !self.transport.has_feature(objects::FEATURE) {
            return crate::backend::put_at_once_then(self, first, last, ready);
        }
        let mut all: Vec<(&str, &[u8])> = first.to_vec();
        all.push(last);
        for (k, _) in &all {
            validate_key(k)?;
        }
        // All at once: the last is sent now.
        ready()?;
        let tail = format!("{}?{}", route::OBJECTS, objects::encode_query(&all));
        let body: Vec<u8> = all.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let (status, answer) = self.transport.call("POST", &tail, Some(&body))?;
        let unknown =
            status == 404 && decode_answer::<ErrorBody>(&answer).map_or(true, |b| b.kind.is_none());
        if unknown || status == 413 {
            // In order as promised (`stores_in_order`): a pack before the
            // index object that names it.
            for (k, b) in first {
                self.put(k, b)?;
            }
            ready()?;
            return self.put(last.0, last.1);
        }
        self.transport
            .expect_ok((status, answer), last.0)
            .map(|_| ())
    }

    fn stores_in_order(&self) -> bool {
        self.transport.has_feature(objects::FEATURE)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let r = self
            .transport
            .call("GET", &format!("{}{key}", route::OBJECT), None)?;
        self.transport.expect_ok(r, key)
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        validate_key(key)?;
        if self.direct.applies(key) {
            // A bucket the runner cannot read (a URL refused, the endpoint
            // unreachable) leaves the server's own route: the data is
            // checked against its ids either way.
            if let Ok(got) = self.direct.get_ranges(&self.transport, key, ranges) {
                return Ok(got);
            }
        }
        let req = RangesRequest {
            key: key.into(),
            ranges: ranges.iter().map(|r| (r.start, r.end)).collect(),
        };
        #[allow(clippy::expect_used)] // a string and numbers always serialize
        let body = serde_json::to_vec(&req).expect("serializes");
        let r = self.transport.call("POST", route::RANGES, Some(&body))?;
        let all = self.transport.expect_ok(r, key)?;
        let want: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        if all.len() as u64 != want {
            return Err(Error::Remote {
                server: self.transport.location_string(),
                detail: format!("{key}: asked for {want} bytes, got {}", all.len()),
            });
        }
        // One range (nearby frames are coalesced into one): the answer
        // is it, without a copy.
        if ranges.len() == 1 {
            return Ok(vec![all]);
        }
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0usize;
        for r in ranges {
            let n = (r.end - r.start) as usize;
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }

    fn size(&self, key: &str) -> Result<u64> {
        validate_key(key)?;
        let r = self
            .transport
            .call("HEAD", &format!("{}{key}", route::OBJECT), None)?;
        let b = self.transport.expect_ok(r, key)?;
        b.get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| Error::Remote {
                server: self.transport.location_string(),
                detail: format!("{key}: no content-length"),
            })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.list_after(prefix, "")
    }

    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<String>> {
        let mut path = format!("{}?prefix={}", route::LIST, encode_query(prefix));
        if !after.is_empty() {
            path.push_str(&format!("&after={}", encode_query(after)));
        }
        let r = self.transport.call("GET", &path, None)?;
        let body = self.transport.expect_ok(r, "list")?;
        let list: KeyList = decode_answer(&body).map_err(|e| Error::Remote {
            server: self.transport.location_string(),
            detail: format!("list: bad answer: {e}"),
        })?;
        Ok(list.keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let r = self
            .transport
            .call("DELETE", &format!("{}{key}", route::OBJECT), None)?;
        match r.0 {
            404 => Ok(()),
            _ => self.transport.expect_ok(r, key).map(|_| ()),
        }
    }

    fn location(&self) -> String {
        self.transport.location_string()
    }

    fn coalesce_gap(&self) -> u64 {
        256 << 10
    }

    fn parallelism(&self) -> usize {
        8
    }

    fn traffic(&self) -> Traffic {
        self.transport.inner.traffic.snapshot()
    }

    /// One `layers` request per 64 keys, all at once, when the server has
    /// the feature; `None` (read them object by object) without it, from
    /// a replica that does not know the route (`404` with no kind), or
    /// when the manifests are too large for one answer (`413`).
    fn layers(&self, keys: &[String]) -> Result<Option<Vec<LayerAnswer>>> {
        if !self.transport.has_feature(layers::FEATURE) {
            return Ok(None);
        }
        let parts: Vec<Result<Option<Vec<LayerAnswer>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .chunks(layers::MAX_LAYER_KEYS)
                .map(|group| s.spawn(move || self.layers_of(group)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    // A thread that panicked answers as a server without
                    // the feature: the layers are read object by object.
                    h.join().unwrap_or(Ok(None))
                })
                .collect()
        });
        let mut all = Vec::with_capacity(keys.len());
        for part in parts {
            match part? {
                Some(answers) => all.extend(answers),
                None => return Ok(None),
            }
        }
        Ok(Some(all))
    }

    fn will_read(&self, keys: &[String]) -> Result<()> {
        self.direct.announce(keys);
        Ok(())
    }
}

/// Percent-encodes what a key prefix may hold that a query string may not
/// (keys are `[A-Za-z0-9._/-]`, so only `/` needs care; it is allowed).
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
