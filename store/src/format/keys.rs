//! Object keys: the one place that names where each object lives, and the
//! one parser of keys (`classify`). Every other module builds and reads
//! keys through these functions; no other module spells `"packs/"`.
//!
//! The layout (docs/format.md):
//! - `config`: the store's config;
//! - `packs/<hh>/<pack id>`, `manifests/<hh>/<id>`: content-addressed;
//! - `index/<time>-<index id>` (format 1: `index/<index id>`),
//!   `snapshots/<time>-<index id>`: content-addressed and time-ordered;
//! - `runs/<run>/run`, `runs/<run>/layers/<job>/<10-digit seq>-<nonce>`,
//!   `runs/<run>/results/<job>/<time>-<nonce>`, `runs/<run>/used/<time>-<nonce>`,
//!   `runs/<run>/expired`, `runs/<run>/rerun`;
//! - `caches/<hex of key>/<time>-<nonce>`, `cache-used/<hex of key>/<time>-<nonce>`;
//! - `gc/condemned/<time>-<nonce>`, `gc/deleted/<time>-<nonce>`,
//!   `gc/lease/<time>-<nonce>`, `gc/running/<time>-<nonce>`.
//!
//! A `<time>-<nonce>` name is a key only its writer uses, that sorts by
//! time (`timed_key`). This module knows nothing about what the objects hold.

use crate::error::{Error, Result};
use crate::id::{IndexId, JobName, ManifestId, PackId, RunName};
use crate::util::nonce;

/// The store's config.
pub const CONFIG_KEY: &str = "config";
/// Where packs are.
pub const PACK_PREFIX: &str = "packs/";
/// Where index objects are.
pub const INDEX_PREFIX: &str = "index/";
/// Where manifests are.
pub const MANIFEST_PREFIX: &str = "manifests/";
/// Where runs are.
pub const RUNS_PREFIX: &str = "runs/";
/// Where cache entries are.
pub const CACHES_PREFIX: &str = "caches/";
/// Where cache use records are.
pub const CACHE_USED_PREFIX: &str = "cache-used/";
/// Where gc's condemned lists are.
pub const CONDEMNED_PREFIX: &str = "gc/condemned/";
/// Where gc's tombstones (packs it deleted) are.
pub const DELETED_PREFIX: &str = "gc/deleted/";
/// Where gc candidates' leases are.
pub const LEASE_PREFIX: &str = "gc/lease/";
/// Where the lease of the gc that runs is marked.
pub const RUNNING_PREFIX: &str = "gc/running/";
/// Where consolidated index snapshots are.
pub const SNAPSHOT_PREFIX: &str = "snapshots/";

/// The longest cache key, in bytes (its object key holds it as hex).
pub const MAX_CACHE_KEY_LEN: usize = 200;

/// `packs/<hh>/<id>`.
pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{PACK_PREFIX}{}/{hex}", &hex[..2])
}

/// The pack id a `packs/hh/<id>` key names.
pub fn pack_id_of(key: &str) -> Option<PackId> {
    key.strip_prefix(PACK_PREFIX)?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

/// `index/<id>`: an index object of a format-1 store.
pub fn index_key(id: &IndexId) -> String {
    format!("{INDEX_PREFIX}{}", id.to_hex())
}

/// `index/<time>-<id>`: an index object of a format-2 store, in the
/// time-ordered index log.
pub fn index_log_key(id: &IndexId, time: i64) -> String {
    format!("{INDEX_PREFIX}{:012}-{}", time.max(0), id.to_hex())
}

/// Where a listing of the index log from `time` on starts: every log key
/// of that time or later sorts after it.
pub fn index_log_start(time: i64) -> String {
    format!("{INDEX_PREFIX}{:012}", time.max(0))
}

/// The index id an `index/<id>` or `index/<time>-<id>` key names.
pub fn index_id_of(key: &str) -> Option<IndexId> {
    let name = key.strip_prefix(INDEX_PREFIX)?;
    timed_id(name)
        .map(|(_, id)| id)
        .or_else(|| name.parse().ok())
}

/// `snapshots/<time>-<id>`.
pub fn snapshot_key(id: &IndexId, time: i64) -> String {
    format!("{SNAPSHOT_PREFIX}{:012}-{}", time.max(0), id.to_hex())
}

/// The time and id of an `index/<time>-<id>` or `snapshots/<time>-<id>`
/// key.
pub fn log_time_and_id(key: &str) -> Option<(i64, IndexId)> {
    let name = key
        .strip_prefix(INDEX_PREFIX)
        .or_else(|| key.strip_prefix(SNAPSHOT_PREFIX))?;
    timed_id(name)
}

/// `<12-digit time>-<64 hex id>`.
fn timed_id(name: &str) -> Option<(i64, IndexId)> {
    let (t, id) = name.split_once('-')?;
    if t.len() != 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((t.parse().ok()?, id.parse().ok()?))
}

/// `manifests/<hh>/<id>`.
pub fn manifest_key(id: &ManifestId) -> String {
    let hex = id.to_hex();
    format!("{MANIFEST_PREFIX}{}/{hex}", &hex[..2])
}

/// `runs/<run>/`: everything of one run.
pub fn run_prefix(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/")
}

/// `runs/<run>/run`: the run record.
pub fn run_key(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/run")
}

/// The run a `runs/<run>/run` key names.
pub fn run_of_record_key(key: &str) -> Option<RunName> {
    let name = key.strip_prefix(RUNS_PREFIX)?.strip_suffix("/run")?;
    RunName::new(name).ok()
}

/// `runs/<run>/layers/`: the layer refs of every job of a run.
pub fn run_layers_prefix(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/layers/")
}

/// `runs/<run>/layers/<job>/`: a job's layer refs.
pub fn layer_prefix(run: &RunName, job: &JobName) -> String {
    format!("{}{job}/", run_layers_prefix(run))
}

/// `runs/<run>/layers/<job>/<seq>-<nonce>`: a new layer ref, unique to
/// its writer (the nonce), ordered by `seq`.
pub fn layer_key(run: &RunName, job: &JobName, seq: u64) -> String {
    format!("{}{seq:010}-{}", layer_prefix(run, job), nonce())
}

/// The sequence number of a layer ref's key.
pub fn layer_seq_of(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    name.split_once('-')?.0.parse().ok()
}

/// `runs/<run>/results/`: every job's results.
pub fn results_prefix(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/results/")
}

/// `runs/<run>/results/<job>/`: one job's results.
pub fn job_results_prefix(run: &RunName, job: &JobName) -> String {
    format!("{RUNS_PREFIX}{run}/results/{job}/")
}

/// `runs/<run>/used/`: the run's use records.
pub fn used_prefix(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/used/")
}

/// `runs/<run>/expired`: gc's note.
pub fn expired_key(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/expired")
}

/// `runs/<run>/rerun`: the rerun record.
pub fn rerun_key(run: &RunName) -> String {
    format!("{RUNS_PREFIX}{run}/rerun")
}

/// A cache key as it appears in object keys: its bytes in hex, so any key
/// is a valid object key and a key's prefix stays a prefix.
pub fn hex_key(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Cache keys up to this many bytes are named by their hex alone; a longer
/// one by the hex of these first bytes and a hash (docs/format.md, "Cache
/// entry names", version 2).
pub const CACHE_NAME_HEAD: usize = 100;

/// Hex digits of the whole key's BLAKE3 in a long key's name.
const CACHE_NAME_HASH: usize = 32;

/// The name a cache key's entries are stored under (`caches/<name>/`):
/// its hex, or for a key over `CACHE_NAME_HEAD` bytes the hex of its head,
/// `-` and a hash of the whole, so the name fits one path component of a
/// directory store (255 bytes) and a short prefix's hex stays its prefix.
pub fn cache_name(key: &str) -> String {
    if key.len() <= CACHE_NAME_HEAD {
        return hex_key(key);
    }
    let head: String = key.as_bytes()[..CACHE_NAME_HEAD]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hash = blake3::hash(key.as_bytes()).to_hex();
    format!("{head}-{}", &hash[..CACHE_NAME_HASH])
}

/// What every name of a key starting with `prefix` starts with: the hex of
/// its first `CACHE_NAME_HEAD` bytes (a listing of it is a superset; the
/// records say which entries really match).
pub fn cache_name_prefix(prefix: &str) -> String {
    let head = &prefix.as_bytes()[..prefix.len().min(CACHE_NAME_HEAD)];
    head.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache key a name stands for, as far as the name tells: the whole
/// key for a hex name, and for a long key's name (version 2) its head, the
/// longest valid UTF-8 of it, which is a prefix of the key (`None` for a
/// name that is neither).
pub fn unhex_key(name: &str) -> Option<String> {
    let (hex, long) = match name.split_once('-') {
        Some((head, hash))
            if head.len() == 2 * CACHE_NAME_HEAD
                && hash.len() == CACHE_NAME_HASH
                && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            (head, true)
        }
        Some(_) => return None,
        None => (name, false),
    };
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    match String::from_utf8(bytes?) {
        Ok(key) => Some(key),
        // The head may end inside a character.
        Err(e) if long => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).ok()
        }
        Err(_) => None,
    }
}

/// `caches/<hex>`: the entries of every cache key starting with the
/// (hex) prefix; with a trailing `/`, of exactly one key.
pub fn cache_prefix(hex: &str) -> String {
    format!("{CACHES_PREFIX}{hex}")
}

/// `cache-used/<hex>`, like `cache_prefix`.
pub fn cache_used_prefix(hex: &str) -> String {
    format!("{CACHE_USED_PREFIX}{hex}")
}

/// The name (`cache_name`) in a `caches/<name>/…` key.
pub fn cache_hex_of(key: &str) -> Option<&str> {
    key.strip_prefix(CACHES_PREFIX)?.split('/').next()
}

/// The hex cache key of a `cache-used/<hex>/…` key.
pub fn cache_used_hex_of(key: &str) -> Option<&str> {
    key.strip_prefix(CACHE_USED_PREFIX)?.split('/').next()
}

/// `prefix<time, 12 digits>-<nonce>`: a key only this writer uses, that
/// sorts by time.
pub fn timed_key(prefix: &str, now: i64) -> String {
    format!("{prefix}{:012}-{}", now.max(0), nonce())
}

/// The time in a `timed_key`.
pub fn key_time(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?;
    let (t, n) = name.split_once('-')?;
    (t.len() == 12 && !n.is_empty()).then(|| t.parse().ok())?
}

/// What kind of object a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    /// `config`
    Config,
    /// `packs/<hh>/<id>`
    Pack(PackId),
    /// `index/<id>` or `index/<time>-<id>`
    Index(IndexId),
    /// `snapshots/<time>-<id>` (gc's and syncing readers')
    Snapshot(IndexId),
    /// `manifests/<hh>/<id>`
    Manifest(ManifestId),
    /// `runs/R/run`
    Run(RunName),
    /// `runs/R/layers/J/<seq>-<nonce>`
    Layer(RunName, JobName),
    /// `runs/R/results/J/<time>-<nonce>`
    Result(RunName, JobName),
    /// `runs/R/used/<time>-<nonce>`
    Used(RunName),
    /// `runs/R/rerun`
    Rerun(RunName),
    /// `runs/R/expired` (gc's)
    Expired(RunName),
    /// `caches/<hex key>/<time>-<nonce>`
    Cache,
    /// `cache-used/<hex key>/<time>-<nonce>`
    CacheUsed,
    /// `gc/condemned/<time>-<nonce>` (gc's)
    Condemned,
    /// `gc/deleted/<time>-<nonce>` (gc's)
    Deleted,
    /// `gc/lease/<time>-<nonce>` or `gc/running/<time>-<nonce>` (gc's)
    Lease,
}

impl ObjectKind {
    /// Use records are written by readers too: an attach or restore by a
    /// read-only token still counts as a use.
    pub fn is_use_record(&self) -> bool {
        matches!(self, ObjectKind::Used(_) | ObjectKind::CacheUsed)
    }
}

fn is_timed(name: &str) -> bool {
    key_time(name).is_some()
        && name
            .split_once('-')
            .is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_hex_key(h: &str) -> bool {
    // A long key's name (version 2): its head's hex, `-`, a hash.
    if let Some((head, hash)) = h.split_once('-') {
        return head.len() == 2 * CACHE_NAME_HEAD
            && is_hex_key(head)
            && hash.len() == CACHE_NAME_HASH
            && is_hex_key(hash);
    }
    !h.is_empty()
        && h.len() <= 2 * MAX_CACHE_KEY_LEN
        && h.len().is_multiple_of(2)
        && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Classifies a key, or says why it is not one a store holds.
pub fn classify(key: &str) -> Result<ObjectKind> {
    let bad = |why: &str| Error::corrupt(format!("object key {key:?}"), why.to_string());
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [k] if *k == CONFIG_KEY => Ok(ObjectKind::Config),
        ["packs", _, id] => {
            let id: PackId = id.parse().map_err(|_| bad("not a pack id"))?;
            (pack_key(&id) == key)
                .then_some(ObjectKind::Pack(id))
                .ok_or_else(|| bad("pack in the wrong directory"))
        }
        ["index", _] => {
            Ok(ObjectKind::Index(index_id_of(key).ok_or_else(|| {
                bad("not an index id or <time>-<index id>")
            })?))
        }
        ["snapshots", _] => Ok(ObjectKind::Snapshot(
            log_time_and_id(key)
                .ok_or_else(|| bad("a snapshot is named <time>-<index id>"))?
                .1,
        )),
        ["manifests", _, id] => {
            let id: ManifestId = id.parse().map_err(|_| bad("not a manifest id"))?;
            (manifest_key(&id) == key)
                .then_some(ObjectKind::Manifest(id))
                .ok_or_else(|| bad("manifest in the wrong directory"))
        }
        ["runs", run, "run"] => Ok(ObjectKind::Run(RunName::new(run)?)),
        ["runs", run, "rerun"] => Ok(ObjectKind::Rerun(RunName::new(run)?)),
        ["runs", run, "expired"] => Ok(ObjectKind::Expired(RunName::new(run)?)),
        ["runs", run, "results", job, name] if is_timed(name) => {
            Ok(ObjectKind::Result(RunName::new(run)?, JobName::new(job)?))
        }
        ["runs", run, "used", name] if is_timed(name) => Ok(ObjectKind::Used(RunName::new(run)?)),
        ["caches", hex, name] if is_hex_key(hex) && is_timed(name) => Ok(ObjectKind::Cache),
        ["cache-used", hex, name] if is_hex_key(hex) && is_timed(name) => Ok(ObjectKind::CacheUsed),
        ["gc", "condemned", name] if is_timed(name) => Ok(ObjectKind::Condemned),
        ["gc", "deleted", name] if is_timed(name) => Ok(ObjectKind::Deleted),
        ["gc", "lease" | "running", name] if is_timed(name) => Ok(ObjectKind::Lease),
        ["runs", run, "layers", job, name] => {
            let well_formed = name.split_once('-').is_some_and(|(seq, nonce)| {
                seq.len() == 10
                    && seq.bytes().all(|b| b.is_ascii_digit())
                    && !nonce.is_empty()
                    && nonce.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !well_formed {
                return Err(bad("a layer ref is named <10-digit seq>-<hex nonce>"));
            }
            Ok(ObjectKind::Layer(RunName::new(run)?, JobName::new(job)?))
        }
        _ => Err(bad("not a key a strata store holds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key this module builds, `classify` reads back as its kind.
    #[test]
    fn built_keys_classify_as_their_kind() {
        let run = RunName::new("r1").unwrap();
        let job = JobName::new("build").unwrap();
        let pack = PackId::of(b"p");
        assert_eq!(classify(&pack_key(&pack)).unwrap(), ObjectKind::Pack(pack));
        assert_eq!(pack_id_of(&pack_key(&pack)), Some(pack));
        let index = IndexId::of(b"i");
        assert_eq!(
            classify(&index_key(&index)).unwrap(),
            ObjectKind::Index(index)
        );
        assert_eq!(index_id_of(&index_key(&index)), Some(index));
        let logged = index_log_key(&index, 1_764_547_200);
        assert_eq!(classify(&logged).unwrap(), ObjectKind::Index(index));
        assert_eq!(index_id_of(&logged), Some(index));
        assert_eq!(log_time_and_id(&logged), Some((1_764_547_200, index)));
        assert!(index_log_start(1_764_547_200) < logged);
        assert!(index_log_start(1_764_547_201) > logged);
        let snap = snapshot_key(&index, 7);
        assert_eq!(classify(&snap).unwrap(), ObjectKind::Snapshot(index));
        assert_eq!(log_time_and_id(&snap), Some((7, index)));
        assert_eq!(
            classify(&timed_key(DELETED_PREFIX, 5)).unwrap(),
            ObjectKind::Deleted
        );
        for prefix in [LEASE_PREFIX, RUNNING_PREFIX] {
            assert_eq!(classify(&timed_key(prefix, 5)).unwrap(), ObjectKind::Lease);
        }
        let m = ManifestId::of(b"m");
        assert_eq!(
            classify(&manifest_key(&m)).unwrap(),
            ObjectKind::Manifest(m)
        );
        assert_eq!(
            classify(&run_key(&run)).unwrap(),
            ObjectKind::Run(run.clone())
        );
        assert_eq!(run_of_record_key(&run_key(&run)), Some(run.clone()));
        let layer = layer_key(&run, &job, 42);
        assert_eq!(
            classify(&layer).unwrap(),
            ObjectKind::Layer(run.clone(), job.clone())
        );
        assert_eq!(layer_seq_of(&layer), Some(42));
        let result = timed_key(&job_results_prefix(&run, &job), 1_764_547_200);
        assert_eq!(
            classify(&result).unwrap(),
            ObjectKind::Result(run.clone(), job.clone())
        );
        assert_eq!(key_time(&result), Some(1_764_547_200));
        let used = timed_key(&used_prefix(&run), 5);
        assert!(classify(&used).unwrap().is_use_record());
        assert_eq!(
            classify(&expired_key(&run)).unwrap(),
            ObjectKind::Expired(run.clone())
        );
        assert_eq!(
            classify(&rerun_key(&run)).unwrap(),
            ObjectKind::Rerun(run.clone())
        );
        let hex = hex_key("npm-v1");
        let cache = timed_key(&cache_prefix(&format!("{hex}/")), 5);
        assert_eq!(classify(&cache).unwrap(), ObjectKind::Cache);
        assert_eq!(cache_hex_of(&cache), Some(hex.as_str()));
        assert_eq!(unhex_key(&hex).as_deref(), Some("npm-v1"));
        let cache_used = timed_key(&cache_used_prefix(&format!("{hex}/")), 5);
        assert_eq!(classify(&cache_used).unwrap(), ObjectKind::CacheUsed);
        assert_eq!(
            classify(&timed_key(CONDEMNED_PREFIX, 5)).unwrap(),
            ObjectKind::Condemned
        );
        assert_eq!(classify(CONFIG_KEY).unwrap(), ObjectKind::Config);
        assert!(key_time(&run_key(&run)).is_none());
    }

    #[test]
    fn malformed_keys_are_refused() {
        for key in [
            "runs/r1/layers/build/1-00ff",
            "runs/r1/layers/build/0000000001-xyz",
            "runs/r1/other",
            "packs/00/zz",
            "manifests/00/00",
            "index/abc",
            "index/12-00ff",
            "snapshots/abc",
            "caches/zz/000000000001-ab",
        ] {
            assert!(classify(key).is_err(), "{key}");
        }
        let id = PackId::of(b"x");
        assert!(classify(&format!("packs/zz/{}", id.to_hex())).is_err());
    }

    // A key's name fits one path component of a directory store however
    // long the key, a short key keeps its version 1 name, and a prefix's
    // hex stays a prefix of the name of every key that starts with it.
    #[test]
    fn cache_names_fit_a_file_name_and_keep_prefixes() {
        assert_eq!(cache_name("npm-v1"), hex_key("npm-v1"));
        let short = "k".repeat(CACHE_NAME_HEAD);
        assert_eq!(cache_name(&short), hex_key(&short));
        let scope = "ref:refs/heads/main:";
        let long = format!("{scope}deps-{}", "a1b2c3".repeat(25));
        let name = cache_name(&long);
        assert!(name.len() <= 255, "{}", name.len());
        assert!(name.starts_with(&hex_key(scope)));
        assert!(name.starts_with(&cache_name_prefix(&long[..150])));
        assert_ne!(name, cache_name(&format!("{long}x")));
        let key = timed_key(&format!("{CACHES_PREFIX}{name}/"), 5);
        assert_eq!(classify(&key).unwrap(), ObjectKind::Cache);
        assert_eq!(cache_hex_of(&key), Some(name.as_str()));
        // The server's view of a long name: its head, a prefix of the key.
        assert_eq!(unhex_key(&name).unwrap(), long[..CACHE_NAME_HEAD]);
        let wide = format!("{}é{}", "x".repeat(CACHE_NAME_HEAD - 1), "y".repeat(20));
        assert_eq!(unhex_key(&cache_name(&wide)).unwrap(), "x".repeat(99));
        // A version 1 name of a long key (S3 took them) still classifies.
        let v1 = timed_key(&format!("{CACHES_PREFIX}{}/", hex_key(&long)), 5);
        assert_eq!(classify(&v1).unwrap(), ObjectKind::Cache);
        for bad in [format!("{name}0"), format!("ab-{}", "0".repeat(32))] {
            assert!(classify(&format!("{CACHES_PREFIX}{bad}/000000000005-ab")).is_err());
            assert!(unhex_key(&bad).is_none());
        }
    }
}
