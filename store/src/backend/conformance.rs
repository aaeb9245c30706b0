//! The backend contract as a test suite: every backend (local directory,
//! memory, and the HTTP and S3 ones to come) runs these same checks, the
//! in-memory backend being the reference. `check` panics with the first
//! violation, naming the backend and the rule.

use std::ops::Range;

use super::Backend;
use crate::error::Error;

/// Runs every rule of the contract against `b`, which must start empty.
pub fn check(b: &dyn Backend) {
    let who = b.location();
    let fail = |rule: &str| -> ! { panic!("backend {who}: {rule}") };

    // Missing objects.
    match b.get("conf/missing") {
        Err(Error::NotFound { .. }) => {}
        other => fail(&format!(
            "get of a missing key must be NotFound, got {other:?}"
        )),
    }
    if !matches!(b.size("conf/missing"), Err(Error::NotFound { .. })) {
        fail("size of a missing key must be NotFound");
    }
    if !matches!(
        b.get_ranges("conf/missing", std::slice::from_ref(&(0..1))),
        Err(Error::NotFound { .. })
    ) {
        fail("get_ranges of a missing key must be NotFound");
    }
    if b.exists("conf/missing").unwrap() {
        fail("exists of a missing key must be false");
    }
    b.delete("conf/missing")
        .unwrap_or_else(|e| fail(&format!("deleting a missing key must succeed: {e}")));

    // Put and read back, including empty and multi-MiB objects.
    let big: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (key, data) in [
        ("conf/a/one", b"hello".to_vec()),
        ("conf/a/empty", vec![]),
        ("conf/b/big", big.clone()),
    ] {
        b.put(key, &data)
            .unwrap_or_else(|e| fail(&format!("put {key}: {e}")));
        if b.get(key).unwrap() != data {
            fail(&format!("get {key} must return what was put"));
        }
        if b.size(key).unwrap() != data.len() as u64 {
            fail(&format!("size {key} must be the length put"));
        }
        if !b.exists(key).unwrap() {
            fail(&format!("exists {key} must be true after put"));
        }
    }

    // Overwriting replaces (content-addressed keys make it harmless).
    b.put("conf/a/one", b"world!").unwrap();
    if b.get("conf/a/one").unwrap() != b"world!" {
        fail("a second put must replace the object");
    }

    // Ranges: several, in the order asked, and never past the end.
    let ranges: Vec<Range<u64>> = vec![4096..4100, 0..3, (5 << 20) - 2..5 << 20];
    let got = b.get_ranges("conf/b/big", &ranges).unwrap();
    for (r, bytes) in ranges.iter().zip(&got) {
        if bytes[..] != big[r.start as usize..r.end as usize] {
            fail(&format!(
                "get_ranges must return bytes {}..{}",
                r.start, r.end
            ));
        }
    }
    if !matches!(
        b.get_ranges("conf/a/one", std::slice::from_ref(&(2..99))),
        Err(Error::Corrupt { .. })
    ) {
        fail("a range past the end must be Corrupt");
    }

    // Listing: by prefix, sorted, nothing from other prefixes.
    b.put("conf/ab", b"x").unwrap();
    if b.list("conf/a/").unwrap() != ["conf/a/empty", "conf/a/one"] {
        fail(&format!(
            "list conf/a/ must be the two keys under it, sorted: {:?}",
            b.list("conf/a/")
        ));
    }
    if b.list("conf/").unwrap().len() != 4 {
        fail("list conf/ must show every key under it");
    }
    if !b.list("nothing/").unwrap().is_empty() {
        fail("list of an empty prefix must be empty");
    }

    // Delete.
    b.delete("conf/a/one").unwrap();
    if b.exists("conf/a/one").unwrap() || b.list("conf/a/").unwrap() != ["conf/a/empty"] {
        fail("a deleted key must be gone from get and list");
    }

    // Keys that could escape or collide are refused, never panicking.
    for bad in ["", "../x", "a//b", ".local/x", "a/.tmp", "a b", "/abs"] {
        if b.put(bad, b"x").is_ok() {
            fail(&format!("put of the invalid key {bad:?} must fail"));
        }
    }

    // Concurrent writers to distinct keys all land.
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in 0..16 {
                    b.put(&format!("conc/{t}/{i}"), format!("{t}-{i}").as_bytes())
                        .unwrap();
                }
            });
        }
    });
    if b.list("conc/").unwrap().len() != 128 {
        fail("8 threads writing 16 keys each must leave 128 keys");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_the_reference() {
        check(&crate::backend::Memory::new());
    }

    #[test]
    fn local_dir_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::backend::LocalDir::new(dir.path().join("o"), dir.path().join("t")).unwrap();
        check(&b);
    }
}
