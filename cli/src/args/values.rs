//! The one syntax of every time and size option (docs/cli.md, "Values"):
//! a duration is a number with `s`, `m`, `h` or `d` (`10s`, `30m`, `6h`,
//! `1.5s`), a bare number being seconds, so `STRATA_NET_TIMEOUT=10` in an
//! existing CI config keeps its meaning; a size is a number with `B`,
//! `KiB`, `MiB`, `GiB` or `TiB` (`512MiB`, `10GiB`), a bare number being
//! bytes.

use std::time::Duration;

use strata_store::size::split_number;

/// A positive duration: `10s`, `30m`, `6h`, `1d`, `0.5s`, or bare seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    match duration_or_zero(s)? {
        Duration::ZERO => Err(format!("{s:?}: the duration must be more than 0")),
        d => Ok(d),
    }
}

/// A duration as `duration` reads it, 0 allowed (a gc's grace: at once).
pub(crate) fn duration_or_zero(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("{s:?} is not a duration like 10s, 30m, 6h or 1d (a bare number is seconds)");
    let (n, unit) = split_number(s.trim());
    let n: f64 = n.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size in bytes: `512MiB`, `10GiB`, `64KiB`, or bare bytes; 0 allowed
/// (the store's one definition, which the server's config file reads too).
pub(crate) fn size(s: &str) -> Result<u64, String> {
    strata_store::size::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_a_bare_number_is_seconds() {
        let secs = |s| duration(s).map(|d| d.as_secs_f64());
        assert_eq!(secs("10"), Ok(10.0));
        assert_eq!(secs("10s"), Ok(10.0));
        assert_eq!(secs("0.5"), Ok(0.5));
        assert_eq!(secs("30m"), Ok(1800.0));
        assert_eq!(secs("6h"), Ok(21_600.0));
        assert_eq!(secs("1d"), Ok(86_400.0));
        for bad in ["", "0", "0s", "-1", "10x", "s", "1.2.3s", "inf"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(duration_or_zero("0s"), Ok(Duration::ZERO));
    }
}
