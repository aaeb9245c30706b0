//! The names attach gives what it writes for a moment in a user's tree:
//! temporary files (`.strata-tmp-<pid>-<hex nanos>-<n>`) and the staging
//! directory of an attach into an empty target
//! (`.strata-staging-<pid>-<hex nanos>-<n>`, `util::unique_tmp_name`). A
//! later attach removes names of exactly these shapes that a dead process
//! left, so persist refuses them (a layer holding one would have it swept)
//! and the sweep leaves alone those a live process holds. Knows nothing
//! about stores or plans.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The prefix of every temporary name attach writes in the target.
pub(crate) const TMP_PREFIX: &str = ".strata-tmp-";

/// The prefix of the staging directory an attach into an empty target
/// builds the tree in, at the target's top.
pub(crate) const STAGING_PREFIX: &str = ".strata-staging-";

/// Why persist refuses a reserved name (`Error::UnsafePath`'s reason).
pub(crate) const RESERVED_REASON: &str = "the name has the shape of strata's own temporary files \
     (.strata-tmp-PID-HEX-N, .strata-staging-PID-HEX-N), which attach removes; rename it";

/// Whether `name` is one attach gives its temporary files or staging
/// directory (`prefix` says which): `<prefix><pid>-<hex nanos>-<counter>`.
pub(crate) fn is_temp_name(name: &OsStr, prefix: &str) -> bool {
    pid_of(name.as_bytes(), prefix).is_some()
}

/// Whether `name` is either kind of name attach reserves.
pub(crate) fn is_reserved(name: &[u8]) -> bool {
    pid_of(name, TMP_PREFIX).is_some() || pid_of(name, STAGING_PREFIX).is_some()
}

/// The process that made a reserved name, if `name` is one.
fn pid_of(name: &[u8], prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix.as_bytes())?;
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'-').collect();
    let all = |p: &[u8], f: fn(&u8) -> bool| !p.is_empty() && p.iter().all(f);
    match parts.as_slice() {
        [pid, nanos, n]
            if all(pid, u8::is_ascii_digit)
                && all(nanos, u8::is_ascii_hexdigit)
                && all(n, u8::is_ascii_digit) =>
        {
            std::str::from_utf8(pid).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// Whether a reserved name (`prefix` says which kind) belongs to a process
/// other than this one that is still running, so a sweep must leave it: a
/// concurrent attach into a directory below this one's target. A pid of a
/// process that has since died (or of another PID namespace's) that is
/// now some other running process only leaves a stale name for later.
/// This process's own names are never live here: its attaches into one
/// target are serialized by the target lock and clean up after
/// themselves.
pub(crate) fn held_by_another_live_process(name: &OsStr, prefix: &str) -> bool {
    let Some(pid) = pid_of(name.as_bytes(), prefix) else {
        return false;
    };
    if pid == std::process::id() || pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // Linux lists every process of this PID namespace, any user's, in /proc.
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_exactly_attachs_shapes() {
        assert!(is_reserved(b".strata-tmp-12-1f-3"));
        assert!(is_reserved(b".strata-staging-12-abc-0"));
        for name in [
            &b".strata-tmp-notes"[..],
            b".strata-staging-",
            b".strata-tmp-12-xyz-3",
            b"strata-tmp-12-1f-3",
        ] {
            assert!(!is_reserved(name), "{name:?}");
        }
        let mine = format!("{STAGING_PREFIX}{}-1f-0", std::process::id());
        assert!(!held_by_another_live_process(
            OsStr::new(&mine),
            STAGING_PREFIX
        ));
        // pid 1 always runs (in this namespace).
        let init = format!("{STAGING_PREFIX}1-1f-0");
        assert!(held_by_another_live_process(
            OsStr::new(&init),
            STAGING_PREFIX
        ));
    }
}
