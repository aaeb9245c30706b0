//! A format-2 store's index log, snapshots and tombstones (docs/format.md,
//! "Format 2: the index log, snapshots and tombstones"): the rules a
//! reader follows, as a pure function from what it listed and what it
//! remembers to what it reads (`plan_sync`, `snapshot_trusted`), when
//! it writes a snapshot of its own (`snapshot_to_write`), and what gc's
//! snapshot supersedes (`superseded`). The constants the
//! rules name live here too. Knows nothing of where a reader keeps its
//! state (`meta::chunks` keeps it in sled) or of how objects are fetched.

use crate::format::index::IndexObject;
use crate::format::keys::{log_time_and_id, snapshot_key};
use crate::id::IndexId;

/// How far before its position a reader lists the index log, in seconds:
/// room for writers' clocks apart and a PUT's duration (docs/format.md).
pub const LOG_MARGIN_SECS: i64 = 900;

/// How long gc keeps index log entries its snapshot already holds, in
/// seconds: a reader that synced within this reads on from its position.
pub const LOG_KEEP_SECS: i64 = 86_400;

/// How long gc's tombstones name a deleted pack, in seconds.
pub const TOMBSTONE_KEEP_SECS: i64 = 7 * 86_400;

/// A reader that started over and read this many index log entries after
/// the newest snapshot writes a snapshot of its own, so the next one reads
/// fewer.
pub const SNAPSHOT_AFTER_ENTRIES: usize = 1000;

/// What a reader remembers of the log from its last sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogState {
    /// The newest log time it has read, if it ever synced.
    pub position: Option<i64>,
    /// The key time of the newest tombstone record it has seen.
    pub tombstones_seen: Option<i64>,
}

/// How a sync reads the log, decided before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Whether the reader starts over: its state is dropped (if it had
    /// any), and it reads from the newest snapshot, or the whole log.
    pub starting_over: bool,
    /// The snapshot to read first when starting over, if one is trusted:
    /// its key, time and id.
    pub snapshot: Option<(String, i64, IndexId)>,
    /// Whether no snapshot can be trusted though one is listed (the
    /// reader then lists the whole log and every pack, as format 1 does).
    pub distrusted_snapshot: bool,
}

/// Decides how to sync: `state` is what the reader remembers, `newest_tombstone`
/// the newest tombstone record's `since` and key time, `snapshots` the
/// listing of `snapshots/` (sorted by key). A reader starts over when it
/// has no position, when its state is older than the newest tombstone
/// record's `since` or it never saw one (it may have missed deletions), or
/// when its position is further behind the
/// newest snapshot than gc keeps log entries (the entries it has not read
/// may be gone, held by the snapshot).
pub fn plan_sync(
    state: LogState,
    newest_tombstone: Option<(i64, i64)>,
    snapshots: &[String],
) -> SyncPlan {
    let newest = snapshots
        .iter()
        .filter_map(|k| log_time_and_id(k).map(|(t, id)| (k.clone(), t, id)))
        .next_back();
    let missed_deletions = match (newest_tombstone, state.tombstones_seen) {
        (Some((since, _)), Some(seen)) => since > seen,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let behind_gc = match (state.position, &newest) {
        (Some(p), Some((_, t, _))) => p - LOG_MARGIN_SECS < t - LOG_KEEP_SECS,
        _ => false,
    };
    let starting_over = state.position.is_none() || missed_deletions || behind_gc;
    if !starting_over {
        return SyncPlan {
            starting_over,
            snapshot: None,
            distrusted_snapshot: false,
        };
    }
    let listed = newest.is_some();
    let trusted = newest.filter(|(_, t, _)| snapshot_trusted(*t, newest_tombstone));
    SyncPlan {
        starting_over,
        distrusted_snapshot: listed && trusted.is_none(),
        snapshot: trusted,
    }
}

/// Whether a snapshot taken at `time` may be trusted given the newest
/// tombstone record (`since`, key time): only if the tombstones reach back
/// before it, with two margins to spare; an older snapshot may list packs
/// deleted since that no tombstone names any more.
pub fn snapshot_trusted(time: i64, newest_tombstone: Option<(i64, i64)>) -> bool {
    newest_tombstone.is_none_or(|(since, _)| since <= time - 2 * LOG_MARGIN_SECS)
}

/// The snapshot a reader that started over writes of what it read
/// (`object`, `entries` log entries after the snapshot it started from),
/// named by `position`: only after `SNAPSHOT_AFTER_ENTRIES` entries, so
/// the next reader reads fewer. Its key and bytes.
pub fn snapshot_to_write(
    object: &IndexObject,
    entries: usize,
    position: i64,
) -> Option<(String, Vec<u8>)> {
    (entries >= SNAPSHOT_AFTER_ENTRIES).then(|| {
        let (id, bytes) = object.encode();
        (snapshot_key(&id, position), bytes)
    })
}

/// What gc's snapshot `written` (as of `at`) supersedes: the snapshots
/// listed older than it, and the index log entries listed more than
/// `LOG_KEEP_SECS` older than it (a reader that synced within that reads
/// on from its position), and any index object whose key has no time.
pub fn superseded<'k>(
    written: &str,
    at: i64,
    snapshots: &'k [String],
    index: &'k [String],
) -> (Vec<&'k String>, Vec<&'k String>) {
    let old_snapshots = snapshots.iter().filter(|k| k.as_str() < written).collect();
    let old_entries = index
        .iter()
        .filter(|k| log_time_and_id(k).is_none_or(|(t, _)| t < at - LOG_KEEP_SECS))
        .collect();
    (old_snapshots, old_entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn snapshot(time: i64) -> String {
        let (id, _) = IndexObject::default().encode();
        snapshot_key(&id, time)
    }

    fn at(position: i64, seen: Option<i64>) -> LogState {
        LogState {
            position: Some(position),
            tombstones_seen: seen,
        }
    }

    // A reader without a position reads the newest snapshot, then the log.
    #[test]
    fn a_new_reader_starts_from_the_newest_snapshot() {
        let listed = [snapshot(NOW - 100), snapshot(NOW)];
        let plan = plan_sync(LogState::default(), None, &listed);
        assert!(plan.starting_over);
        let (key, time, _) = plan.snapshot.unwrap();
        assert_eq!((key, time), (listed[1].clone(), NOW));
        let plan = plan_sync(LogState::default(), None, &[]);
        assert!(plan.starting_over && plan.snapshot.is_none() && !plan.distrusted_snapshot);
    }

    // A reader that synced recently reads on from its position.
    #[test]
    fn a_reader_in_step_reads_on_from_its_position() {
        let plan = plan_sync(
            at(NOW, Some(NOW - 10)),
            Some((NOW - 7 * 86_400, NOW - 10)),
            &[snapshot(NOW - 60)],
        );
        assert_eq!(
            plan,
            SyncPlan {
                starting_over: false,
                snapshot: None,
                distrusted_snapshot: false
            }
        );
    }

    // A reader whose state is older than the newest tombstone record's
    // `since` (or that never saw one) may have missed deletions: it starts
    // over.
    #[test]
    fn a_reader_older_than_the_tombstones_starts_over() {
        let week = 7 * 86_400;
        let tombstone = Some((NOW - week, NOW));
        assert!(plan_sync(at(NOW, Some(NOW - week - 1)), tombstone, &[]).starting_over);
        assert!(plan_sync(at(NOW, None), tombstone, &[]).starting_over);
        assert!(!plan_sync(at(NOW, Some(NOW - week)), tombstone, &[]).starting_over);
    }

    // A position further behind the newest snapshot than gc keeps log
    // entries (a day, less the margin): the entries may be gone.
    #[test]
    fn a_reader_behind_gcs_log_starts_over() {
        let listed = [snapshot(NOW)];
        let edge = NOW - LOG_KEEP_SECS + LOG_MARGIN_SECS;
        assert!(!plan_sync(at(edge, None), None, &listed).starting_over);
        assert!(plan_sync(at(edge - 1, None), None, &listed).starting_over);
    }

    // A snapshot older than the tombstones reach back (their `since`, plus
    // two margins) is not trusted.
    #[test]
    fn a_snapshot_the_tombstones_do_not_cover_is_not_trusted() {
        let time = NOW - 86_400;
        let covering = Some((time - 2 * LOG_MARGIN_SECS, NOW));
        let short = Some((time - 2 * LOG_MARGIN_SECS + 1, NOW));
        assert!(snapshot_trusted(time, None) && snapshot_trusted(time, covering));
        assert!(!snapshot_trusted(time, short));
        let plan = plan_sync(LogState::default(), short, &[snapshot(time)]);
        assert!(plan.starting_over && plan.snapshot.is_none() && plan.distrusted_snapshot);
    }

    // A reader that started over writes a snapshot only after many entries,
    // named by its position.
    #[test]
    fn a_snapshot_is_written_after_many_entries() {
        let object = IndexObject::default();
        assert_eq!(
            snapshot_to_write(&object, SNAPSHOT_AFTER_ENTRIES - 1, NOW),
            None
        );
        let (key, bytes) = snapshot_to_write(&object, SNAPSHOT_AFTER_ENTRIES, NOW).unwrap();
        assert_eq!(log_time_and_id(&key).map(|(t, _)| t), Some(NOW));
        assert_eq!(
            IndexObject::decode(&log_time_and_id(&key).unwrap().1, &bytes).unwrap(),
            object
        );
    }

    // gc's snapshot replaces the older snapshots, and the log entries a
    // day older than it (an index object named the format-1 way too).
    #[test]
    fn gcs_snapshot_supersedes_old_snapshots_and_old_entries() {
        use crate::format::keys::{index_key, index_log_key};
        let (id, _) = IndexObject::default().encode();
        let written = snapshot(NOW);
        let snapshots = [snapshot(NOW - 10), written.clone(), snapshot(NOW + 10)];
        let kept = index_log_key(&id, NOW - LOG_KEEP_SECS);
        let index = [
            index_log_key(&id, NOW - LOG_KEEP_SECS - 1),
            kept,
            index_key(&id),
        ];
        let (old_snapshots, old_entries) = superseded(&written, NOW, &snapshots, &index);
        assert_eq!(old_snapshots, vec![&snapshots[0]]);
        assert_eq!(old_entries, vec![&index[0], &index[2]]);
    }
}
