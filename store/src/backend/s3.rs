//! An S3-compatible bucket as a `Backend`, through `object_store`.
//!
//! `s3://BUCKET/PREFIX` names the store; every key lives under `PREFIX/`.
//! The endpoint, region and credentials come from the environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`; docs/deploy.md), with path-style addressing so
//! self-hosted servers (Garage, MinIO) work unchanged. Nothing here uses a
//! conditional write: the store's keys make repeated writes harmless.
//!
//! Every request has a connect timeout and a read timeout (no byte for the
//! stall timeout, `--net-timeout`, 10 s by default) and a whole-attempt
//! bound of three stall timeouts; failed attempts are retried with backoff
//! (100 ms doubling, 6 attempts) until three stall timeouts have passed, so
//! a stalled server ends a command within about a minute by default
//! (docs/protocol.md, "Retries and timeouts").
//!
//! `object_store` is async; this backend owns a small tokio runtime and
//! blocks on it, so the rest of the library stays synchronous. Range reads
//! go out as one request per range, in parallel (`object_store` coalesces
//! ranges closer than 1 MiB), never as many small sequential GETs: a small
//! GET stalls for ~44 ms on the servers measured (docs/deploy.md, "What S3
//! servers disagree on").

use std::ops::Range;

use futures::TryStreamExt;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, Signer};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{validate_key, Backend, Traffic, TrafficCounter};
use crate::error::{Error, Result};

/// An S3 bucket and prefix (`s3://BUCKET/PREFIX`), through `object_store`.
#[derive(Debug)]
pub struct S3 {
    store: AmazonS3,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    traffic: TrafficCounter,
}

impl S3 {
    /// Opens `s3://BUCKET[/PREFIX]` with settings from the environment and
    /// the default stall timeout.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_stall_timeout(url, crate::backend::http::DEFAULT_STALL_TIMEOUT)
    }

    /// Opens `s3://BUCKET[/PREFIX]`; a connection that makes no progress
    /// for `stall` is given up and the request retried.
    pub fn with_stall_timeout(url: &str, stall: Duration) -> Result<Self> {
        let bad = |reason: &'static str| Error::InvalidName {
            what: "S3 location",
            value: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Err(bad("it has no bucket"));
        }
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|_| bad("the prefix must be a valid key path"))?;
        }
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(stall)
                    .with_read_timeout(stall)
                    .with_timeout(stall * 3),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: stall * 3,
            });
        if let Some(e) = &endpoint {
            builder = builder
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| Error::ObjectStore {
            store: url.into(),
            detail: e.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::ObjectStore {
                store: url.into(),
                detail: format!("starting the I/O runtime: {e}"),
            })?;
        Ok(Self {
            store,
            bucket: bucket.into(),
            prefix: prefix.into(),
            runtime,
            traffic: TrafficCounter::default(),
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn err(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { key: key.into() },
            e => Error::ObjectStore {
                store: self.location(),
                detail: format!("{key}: {e}"),
            },
        }
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let _in_flight = self.traffic.request();
        self.runtime.block_on(f)
    }

    /// What to list for `prefix`: object_store lists by whole path
    /// segments, so the directory part of the prefix (callers filter by the
    /// whole prefix).
    fn list_base(&self, prefix: &str) -> Option<ObjectPath> {
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(ObjectPath::from(dir)),
            (false, true) => Some(ObjectPath::from(self.prefix.as_str())),
            (false, false) => Some(ObjectPath::from(format!("{}/{dir}", self.prefix))),
        }
    }

    /// The store keys of listed objects that start with `prefix`, sorted.
    fn keys_under(&self, prefix: &str, metas: Vec<object_store::ObjectMeta>) -> Vec<String> {
        self.traffic.pages(metas.len());
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                let k = m
                    .location
                    .as_ref()
                    .strip_prefix(strip.as_str())?
                    .to_string();
                k.starts_with(prefix).then_some(k)
            })
            .collect();
        keys.sort();
        keys
    }
}

impl Backend for S3 {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        self.traffic.sent(data.len() as u64);
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        self.block(self.store.put(&self.path(key), payload))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let path = self.path(key);
        let bytes = self
            .block(async { self.store.get(&path).await?.bytes().await })
            .map_err(|e| self.err(key, e))?;
        self.traffic.received(bytes.len() as u64);
        Ok(bytes.to_vec())
    }

    /// No HEAD first: the ranges are asked for at once, and a short or
    /// failed answer is checked against the object's size only then (one
    /// request on the happy path, not two in sequence).
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        validate_key(key)?;
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let past_end = |r: &Range<u64>, size: u64| {
            Error::corrupt(
                key,
                format!(
                    "range {}..{} is past the end ({size} bytes)",
                    r.start, r.end
                ),
            )
        };
        if let Some(r) = ranges.iter().find(|r| r.start > r.end) {
            return Err(Error::corrupt(
                key,
                format!("range {}..{} is reversed", r.start, r.end),
            ));
        }
        let got = match self.block(self.store.get_ranges(&self.path(key), ranges)) {
            Ok(got) => got,
            Err(e @ object_store::Error::NotFound { .. }) => return Err(self.err(key, e)),
            Err(e) => {
                // A range past the end is the caller's mistake about the
                // object, not the store failing: say which.
                if let Ok(size) = self.size(key) {
                    if let Some(r) = ranges.iter().find(|r| r.end > size) {
                        return Err(past_end(r, size));
                    }
                }
                return Err(self.err(key, e));
            }
        };
        let short = ranges
            .iter()
            .zip(&got)
            .find(|(r, b)| b.len() as u64 != r.end - r.start);
        if got.len() != ranges.len() || short.is_some() {
            let size = self.size(key)?;
            if let Some(r) = ranges.iter().find(|r| r.end > size) {
                return Err(past_end(r, size));
            }
            return Err(Error::ObjectStore {
                store: self.location(),
                detail: format!("{key}: a ranged read returned the wrong number of bytes"),
            });
        }
        let n: u64 = got.iter().map(|b| b.len() as u64).sum();
        self.traffic.received(n);
        Ok(got.into_iter().map(|b| b.to_vec()).collect())
    }

    fn size(&self, key: &str) -> Result<u64> {
        validate_key(key)?;
        self.block(self.store.head(&self.path(key)))
            .map(|m| m.size)
            .map_err(|e| self.err(key, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let base = self.list_base(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .block(self.store.list(base.as_ref()).try_collect())
            .map_err(|e| self.err(prefix, e))?;
        Ok(self.keys_under(prefix, metas))
    }

    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<String>> {
        if after.is_empty() {
            return self.list(prefix);
        }
        // The listing starts after `after` (S3 `start-after`): one request
        // for the tail of a long prefix.
        let base = self.list_base(prefix);
        let offset = self.path(after);
        let metas: Vec<object_store::ObjectMeta> = self
            .block(
                self.store
                    .list_with_offset(base.as_ref(), &offset)
                    .try_collect(),
            )
            .map_err(|e| self.err(prefix, e))?;
        let mut keys = self.keys_under(prefix, metas);
        keys.retain(|k| k.as_str() > after);
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match self.block(self.store.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn coalesce_gap(&self) -> u64 {
        1 << 20
    }

    fn parallelism(&self) -> usize {
        16
    }

    fn traffic(&self) -> Traffic {
        self.traffic.snapshot()
    }

    /// A presigned `GET` (AWS Signature V4 in the query string) of exactly
    /// this key under the store's prefix: the signature covers the method,
    /// the bucket, the whole path and the time, so the URL reads this one
    /// object for `ttl` and nothing else. Signed locally: no request.
    fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        validate_key(key)?;
        let path = self.path(key);
        let url = self
            .runtime
            .block_on(self.store.signed_url(Method::GET, &path, ttl))
            .map_err(|e| self.err(key, e))?;
        Ok(Some(url.to_string()))
    }
}
