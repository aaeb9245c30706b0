//! The small records a store holds besides packs, manifests and index
//! objects: one `Record` trait, so each has its magic and version in one
//! place and is encoded and decoded the same way (`codec`'s envelope).
//! Where each record lives is `keys`'s; what it means is docs/format.md's.
//! This module knows nothing about how records are used.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::graph::Graph;
use crate::format::keys;
use crate::format::manifest::Totals;
use crate::id::{JobName, ManifestId, PackId, RunName};

/// A record type: its magic and version, and its encoding.
pub trait Record: Serialize + DeserializeOwned {
    /// The 8 bytes that name the record type in its envelope.
    const MAGIC: &'static [u8; 8];
    /// The format version this code writes and reads.
    const VERSION: u32;

    /// The record's bytes.
    fn encode(&self) -> Vec<u8> {
        codec::encode(Self::MAGIC, Self::VERSION, self)
    }

    /// Reads a record stored under `key` (named in errors).
    fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        codec::decode(Self::MAGIC, Self::VERSION, key, bytes)
    }
}

/// `runs/<run>/run`: a run's graph, written once by `run create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unix seconds.
    pub created: i64,
    /// The run's jobs and what each requires.
    pub graph: Graph,
    /// The ref of the CI job that created it, as its cache scope names it
    /// (`ref:refs/heads/main:`); `None` for a run created by hand (written
    /// as version 1).
    pub ref_scope: Option<String>,
}

impl RunRecord {
    /// Whether `other` is this run written again: the same graph and ref
    /// (the time may differ).
    pub fn same_run(&self, other: &RunRecord) -> bool {
        self.graph == other.graph && self.ref_scope == other.ref_scope
    }
}

/// The body of a version-1 run record.
#[derive(Serialize, Deserialize)]
struct RunRecordV1 {
    created: i64,
    graph: Graph,
}

impl Record for RunRecord {
    const MAGIC: &'static [u8; 8] = b"STRARUN1";
    const VERSION: u32 = 2;

    /// Version 1 when there is no ref, so older readers read it.
    fn encode(&self) -> Vec<u8> {
        match &self.ref_scope {
            None => codec::encode(
                Self::MAGIC,
                1,
                &RunRecordV1 {
                    created: self.created,
                    graph: self.graph.clone(),
                },
            ),
            Some(_) => codec::encode(Self::MAGIC, Self::VERSION, self),
        }
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.get(8..12) == Some(&1u32.to_le_bytes()[..]) {
            let v1: RunRecordV1 = codec::decode(Self::MAGIC, 1, key, bytes)?;
            return Ok(RunRecord {
                created: v1.created,
                graph: v1.graph,
                ref_scope: None,
            });
        }
        codec::decode(Self::MAGIC, Self::VERSION, key, bytes)
    }
}

/// `runs/<run>/layers/<job>/<seq>-<nonce>`: one persist's layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer's tree.
    pub manifest: ManifestId,
    /// Unix seconds.
    pub created: i64,
    /// What the tree holds.
    pub totals: Totals,
    /// Which leg and attempt of a CI job wrote it (version 2); `None`
    /// outside a CI (written as version 1).
    pub writer: Option<Writer>,
}

/// The leg and attempt of a CI job that wrote a layer (docs/format.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The parallel or matrix leg.
    pub leg: String,
    /// The CI's id of the try; `first-try:<id>` for a try the CI says is a
    /// job's first (Buildkite), which supersedes no other.
    pub attempt: String,
}

/// How an attempt that is known to be a job's first try starts.
pub const FIRST_TRY: &str = "first-try:";

impl Writer {
    /// Whether this try may be a retry of another of its leg, whose
    /// layers it then supersedes (format.md, "Layer refs").
    pub fn may_supersede(&self) -> bool {
        !self.attempt.starts_with(FIRST_TRY)
    }
}

/// The body of a version-1 layer ref.
#[derive(Serialize, Deserialize)]
struct LayerRecordV1 {
    manifest: ManifestId,
    created: i64,
    totals: Totals,
}

impl Record for LayerRecord {
    const MAGIC: &'static [u8; 8] = b"STRALAYR";
    const VERSION: u32 = 2;

    /// Version 1 when there is no writer, so older readers read it.
    fn encode(&self) -> Vec<u8> {
        match &self.writer {
            None => codec::encode(
                Self::MAGIC,
                1,
                &LayerRecordV1 {
                    manifest: self.manifest,
                    created: self.created,
                    totals: self.totals,
                },
            ),
            Some(_) => codec::encode(Self::MAGIC, Self::VERSION, self),
        }
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        let object = format!("layer ref {key}");
        if bytes.get(8..12) == Some(&1u32.to_le_bytes()[..]) {
            let v1: LayerRecordV1 = codec::decode(Self::MAGIC, 1, &object, bytes)?;
            return Ok(LayerRecord {
                manifest: v1.manifest,
                created: v1.created,
                totals: v1.totals,
                writer: None,
            });
        }
        codec::decode(Self::MAGIC, Self::VERSION, &object, bytes)
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// It succeeded: a rerun keeps its layers.
    Success,
    /// It failed: a rerun runs it again.
    Failed,
}

impl std::str::FromStr for JobStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "success" => Ok(JobStatus::Success),
            "failed" => Ok(JobStatus::Failed),
            _ => Err(Error::InvalidName {
                what: "job status",
                value: s.into(),
                reason: "it must be success or failed",
            }),
        }
    }
}

/// `runs/<run>/results/<job>/<time>-<nonce>`: a job's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// How it ended.
    pub status: JobStatus,
    /// Unix seconds.
    pub finished: i64,
}

impl Record for JobResult {
    const MAGIC: &'static [u8; 8] = b"STRARSLT";
    const VERSION: u32 = 1;
}

/// A use of a run or cache entry (an attach, a restore):
/// `runs/<run>/used/…` or `cache-used/<hex>/…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseRecord {
    /// Unix seconds.
    pub at: i64,
}

impl Record for UseRecord {
    const MAGIC: &'static [u8; 8] = b"STRAUSED";
    const VERSION: u32 = 1;
}

/// `runs/<run>/expired`: the note that a run's layers were dropped, and
/// why (docs/format.md, "Lifecycle records").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredRecord {
    /// When they were dropped (Unix seconds).
    pub expired_on: i64,
    /// The run's last use before that.
    pub last_use: i64,
    /// Why (version 2; a version-1 record's reason is `Expired`).
    pub reason: DropReason,
}

/// Why a run's layers were dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// Its retention ran out.
    Expired,
    /// gc evicted it, least recently used first, to keep the store under
    /// a storage budget of this many bytes.
    Evicted {
        /// The budget, in bytes.
        budget: u64,
    },
    /// Removed on request (`strata rm --run`).
    Removed {
        /// Who asked: the grant's name, or the local user.
        by: String,
    },
}

/// The body of a version-1 expired record.
#[derive(Serialize, Deserialize)]
struct ExpiredRecordV1 {
    expired_on: i64,
    last_use: i64,
}

impl Record for ExpiredRecord {
    const MAGIC: &'static [u8; 8] = b"STRAEXPD";
    const VERSION: u32 = 2;

    /// Version 1 when it simply expired, so older readers read it.
    fn encode(&self) -> Vec<u8> {
        match self.reason {
            DropReason::Expired => codec::encode(
                Self::MAGIC,
                1,
                &ExpiredRecordV1 {
                    expired_on: self.expired_on,
                    last_use: self.last_use,
                },
            ),
            _ => codec::encode(Self::MAGIC, Self::VERSION, self),
        }
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.get(8..12) == Some(&1u32.to_le_bytes()[..]) {
            let v1: ExpiredRecordV1 = codec::decode(Self::MAGIC, 1, key, bytes)?;
            return Ok(ExpiredRecord {
                expired_on: v1.expired_on,
                last_use: v1.last_use,
                reason: DropReason::Expired,
            });
        }
        codec::decode(Self::MAGIC, Self::VERSION, key, bytes)
    }
}

/// `runs/<run>/rerun`: the run this one reruns, and what it kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunRecord {
    /// The run rerun.
    pub from: RunName,
    /// Jobs that run again in this run.
    pub rerun: Vec<JobName>,
    /// Jobs whose layers were kept from `from`.
    pub reused: Vec<JobName>,
    /// Unix seconds.
    pub created: i64,
}

impl Record for RerunRecord {
    const MAGIC: &'static [u8; 8] = b"STRARRUN";
    const VERSION: u32 = 1;
}

/// `caches/<hex of key>/<time>-<nonce>`: a dependency cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The cache key, as the user wrote it.
    pub key: String,
    /// The cached tree.
    pub manifest: ManifestId,
    /// Unix seconds.
    pub created: i64,
    /// What the tree holds.
    pub totals: Totals,
}

impl Record for CacheRecord {
    const MAGIC: &'static [u8; 8] = b"STRACACH";
    const VERSION: u32 = 1;
}

/// `gc/condemned/<time>-<nonce>`: packs condemned by gc, with when each
/// was condemned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condemned {
    /// (pack, Unix seconds).
    pub packs: Vec<(PackId, i64)>,
}

impl Record for Condemned {
    const MAGIC: &'static [u8; 8] = b"STRACOND";
    const VERSION: u32 = 1;
}

/// Every condemned pack (the earliest time each was condemned), and the
/// keys of the lists that say so.
pub fn read_condemned(backend: &dyn Backend) -> Result<(HashMap<PackId, i64>, Vec<String>)> {
    let mut out: HashMap<PackId, i64> = HashMap::new();
    let keys = backend.list(keys::CONDEMNED_PREFIX)?;
    for key in &keys {
        let list = match backend.get(key) {
            Ok(b) => Condemned::decode(key, &b)?,
            // Replaced by a newer list meanwhile.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        for (p, t) in list.packs {
            let e = out.entry(p).or_insert(t);
            *e = (*e).min(t);
        }
    }
    Ok((out, keys))
}

/// `gc/deleted/<time>-<nonce>`: packs gc has deleted (tombstones), with
/// when, for every deletion at or after `since`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Unix seconds: the record lists every deletion from then on.
    pub since: i64,
    /// (pack, Unix seconds it was deleted).
    pub packs: Vec<(PackId, i64)>,
}

impl Record for Deleted {
    const MAGIC: &'static [u8; 8] = b"STRADELD";
    const VERSION: u32 = 1;
}

/// `gc/lease/<time>-<nonce>`: a gc that wants to run (and, under
/// `gc/running/`, the one that does): who, and until when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who: host and process.
    pub holder: String,
    /// Unix seconds: after this the lease is void.
    pub expires: i64,
}

impl Record for Lease {
    const MAGIC: &'static [u8; 8] = b"STRALEAS";
    const VERSION: u32 = 1;
}

/// What the tombstone records say, read at once.
#[derive(Debug, Clone, Default)]
pub struct Tombstones {
    /// Every pack listed, with when it was deleted.
    pub packs: HashMap<PackId, i64>,
    /// The newest record's `since` and its key's time, if there is one.
    pub newest: Option<(i64, i64)>,
    /// The records' keys, oldest first.
    pub keys: Vec<String>,
    /// The `since` of each record read (not of those `seen` knew).
    pub sinces: Vec<(String, i64)>,
}

/// Reads every tombstone record but those `seen` knows (it returns the
/// record's `since`: their packs were read before, so a reader in step
/// makes no request beyond the listing); a record replaced meanwhile is
/// skipped.
pub fn read_deleted(
    backend: &dyn Backend,
    seen: &dyn Fn(&str) -> Option<i64>,
) -> Result<Tombstones> {
    let mut out = Tombstones {
        keys: backend.list(keys::DELETED_PREFIX)?,
        ..Tombstones::default()
    };
    for key in out.keys.iter().rev() {
        if let Some(since) = seen(key) {
            if out.newest.is_none() {
                out.newest = Some((since, keys::key_time(key).unwrap_or(since)));
            }
            continue;
        }
        let record = match backend.get(key) {
            Ok(b) => Deleted::decode(key, &b)?,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if out.newest.is_none() {
            let time = keys::key_time(key).unwrap_or(record.since);
            out.newest = Some((record.since, time));
        }
        out.sinces.push((key.clone(), record.since));
        out.packs.extend(record.packs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_each_other() {
        let used = UseRecord { at: 7 };
        assert_eq!(UseRecord::decode("k", &used.encode()).unwrap(), used);
        let result = JobResult {
            status: JobStatus::Failed,
            finished: 9,
        };
        assert_eq!(JobResult::decode("k", &result.encode()).unwrap(), result);
        // Another record's bytes are refused by their magic.
        assert!(JobResult::decode("k", &used.encode()).is_err());
        let c = Condemned {
            packs: vec![(PackId::of(b"p"), 3)],
        };
        assert_eq!(Condemned::decode("k", &c.encode()).unwrap(), c);
        let d = Deleted {
            since: 2,
            packs: vec![(PackId::of(b"p"), 3)],
        };
        assert_eq!(Deleted::decode("k", &d.encode()).unwrap(), d);
        assert!(Condemned::decode("k", &d.encode()).is_err());
    }
}
