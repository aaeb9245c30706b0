//! A run's life: job results, uses, and when its workspace expires.
//!
//! Objects (all immutable, each key used by one writer; the time in a key
//! is the writer's clock, so a listing alone tells a run's history):
//! - `runs/R/results/J/<time>-<nonce>`: a job's result (`strata job
//!   finish`); the latest one counts;
//! - `runs/R/used/<time>-<nonce>`: written by every attach;
//! - `runs/R/expired`: written when a run's layers are dropped (by gc when
//!   it expires, by gc's budget when evicted, by `rm` when removed), so the
//!   run's end is reported with its date and reason long after.
//!
//! A run's workspace expires `retention_days` (a store setting, default 15)
//! after its last use: the latest of its creation, a job's finish and an
//! attach. Attaching or persisting into an expired run fails with the date
//! and the remedy, never a bare "not found". This module knows nothing
//! about chunks or files.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::keys::{expired_key, key_time, results_prefix, timed_key, used_prefix};
use crate::format::records::{
    DropReason, ExpiredRecord, JobResult, JobStatus, Record, RunRecord, UseRecord,
};
use crate::id::{JobName, RunName};
use crate::repo::Store;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Records `job`'s result in `run`.
pub fn finish_job(
    store: &Store,
    run: &RunName,
    job: &JobName,
    status: JobStatus,
) -> Result<JobResult> {
    store.run_job(run, job)?;
    check_live(store, run)?;
    let result = JobResult {
        status,
        finished: store.now(),
    };
    let key = timed_key(&format!("{}{job}/", results_prefix(run)), result.finished);
    store.backend().put(&key, &result.encode())?;
    Ok(result)
}

/// The latest result of each job of `run` that has one.
pub fn job_results(store: &Store, run: &RunName) -> Result<BTreeMap<JobName, JobResult>> {
    let prefix = results_prefix(run);
    let mut latest: BTreeMap<JobName, String> = BTreeMap::new();
    for key in store.backend().list(&prefix)? {
        let Some((job, _)) = key[prefix.len()..].split_once('/') else {
            continue;
        };
        let Ok(job) = JobName::new(job) else { continue };
        // Keys sort by time within a job: the last is the latest.
        latest.insert(job, key);
    }
    latest
        .into_iter()
        .map(|(job, key)| Ok((job, JobResult::decode(&key, &store.backend().get(&key)?)?)))
        .collect()
}

/// Notes a use of `run` (after an attach).
pub fn record_use(store: &Store, run: &RunName) -> Result<()> {
    let now = store.now();
    let key = timed_key(&used_prefix(run), now);
    // A read-only store (a read-only mount of a shared one) is attached
    // from without a record: its retention is its writers' to keep.
    if store.is_read_only() {
        return Ok(());
    }
    store.backend().put(&key, &UseRecord { at: now }.encode())
}

/// When a run was last used and when its workspace expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunLife {
    /// When the run was created (Unix seconds).
    pub created: i64,
    /// Its last use: creation, persist, attach or result (Unix seconds).
    pub last_use: i64,
    /// When it expires (Unix seconds).
    pub expires: i64,
    /// Its layers were dropped (expired by gc, evicted or removed).
    pub dropped: bool,
    /// Why, if dropped.
    pub reason: Option<DropReason>,
}

impl RunLife {
    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.dropped || now >= self.expires
    }
}

/// A run's life, from one listing of its keys.
pub fn run_life(store: &Store, run: &RunName) -> Result<RunLife> {
    let (record, keys) = store.run_with_keys(run)?;
    life_among(store, run, &record, &keys)
}

/// A run's life from its record and `keys` (a listing of `runs/<run>/`).
pub(crate) fn life_among(
    store: &Store,
    run: &RunName,
    record: &RunRecord,
    keys: &[String],
) -> Result<RunLife> {
    let days = store.config().retention_days as i64;
    let mut last_use = record.created;
    let mut dropped = None;
    for key in keys {
        if *key == expired_key(run) {
            dropped = Some(ExpiredRecord::decode(key, &store.backend().get(key)?)?);
        } else if key.starts_with(&results_prefix(run)) || key.starts_with(&used_prefix(run)) {
            if let Some(t) = key_time(key) {
                last_use = last_use.max(t);
            }
        }
    }
    Ok(match dropped {
        Some(d) => RunLife {
            created: record.created,
            last_use: d.last_use,
            expires: d.expired_on,
            dropped: true,
            reason: Some(d.reason),
        },
        None => RunLife {
            created: record.created,
            last_use,
            expires: last_use + days * DAY,
            dropped: false,
            reason: None,
        },
    })
}

/// Fails with `Error::Expired` if `run`'s workspace has expired.
pub fn check_live(store: &Store, run: &RunName) -> Result<RunLife> {
    let (record, keys) = store.run_with_keys(run)?;
    check_live_among(store, run, &record, &keys)
}

/// `check_live` from the run's record and a listing of its keys.
pub(crate) fn check_live_among(
    store: &Store,
    run: &RunName,
    record: &RunRecord,
    keys: &[String],
) -> Result<RunLife> {
    let life = life_among(store, run, record, keys)?;
    if life.is_expired(store.now()) {
        return Err(Error::Expired {
            what: format!("workspace of run {run}"),
            on: format_date(life.expires),
            why: why_dropped(&life),
            remedy: "rerun its upstream jobs to rebuild it",
        });
    }
    Ok(life)
}

/// Why a run's workspace ended, for its error: "15 days after its last
/// use", or why it was evicted or removed.
pub fn why_dropped(life: &RunLife) -> String {
    let last = format_date(life.last_use);
    match &life.reason {
        None | Some(DropReason::Expired) => {
            format!("{} days after its last use", (life.expires - life.last_use) / DAY)
        }
        Some(DropReason::Evicted { budget }) => format!(
            "evicted, least recently used first, to keep the store under its budget of {}; last used {last}",
            crate::size::format_size(*budget)
        ),
        Some(DropReason::Removed { by }) => format!("removed by {by}; last used {last}"),
    }
}

/// `YYYY-MM-DD` (UTC) of Unix seconds.
pub fn format_date(secs: i64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = secs.div_euclid(DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) of Unix seconds.
pub fn format_time(secs: i64) -> String {
    let t = secs.rem_euclid(DAY);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        format_date(secs),
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// Parses `$STRATA_NOW`: Unix seconds, or `YYYY-MM-DD[THH:MM:SS[Z]]` (UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<i64>() {
        return Some(t);
    }
    let s = s.trim_end_matches('Z');
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (the inverse of format_date).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * DAY + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_date(0), "1970-01-01");
        let t = parse_time("2026-12-06").unwrap();
        assert_eq!(format_date(t), "2026-12-06");
        assert_eq!(parse_time("2026-12-06T01:02:03Z").unwrap(), t + 3723);
        assert_eq!(format_time(t + 3723), "2026-12-06T01:02:03Z");
        assert_eq!(format_date(parse_time("2024-02-29").unwrap()), "2024-02-29");
        assert_eq!(parse_time("1764547200"), Some(1_764_547_200));
        assert!(parse_time("2026-13-01").is_none());
        assert!(parse_time("yesterday").is_none());
    }
}
