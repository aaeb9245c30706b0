//! Sizes as people write and read them: `10GiB` parsed (the CLI's flags,
//! the server's config file and gc's budget share this one syntax), and
//! `10.0 GiB` printed. Knows nothing else.

/// A size in bytes: `512MiB`, `10GiB`, `64KiB`, or bare bytes; 0 allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size like 512MiB or 10GiB (a bare number is bytes)");
    let (n, unit) = split_number(s.trim());
    let n: f64 = n.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "B" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `n` bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `10.0 GiB`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The number at the start of `s` and the unit after it (sizes here; the
/// CLI's durations too).
pub fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_and_a_bare_number_is_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        for bad in ["", "10MB", "10 mib", "-1", "MiB", "1e3"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(10 << 30), "10.0 GiB");
        assert_eq!(
            parse_size("10.0GiB").map(format_size),
            Ok("10.0 GiB".into())
        );
    }
}
