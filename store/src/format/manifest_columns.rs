//! Decoding a version 1 manifest's columns (docs/format.md, "Version 1:
//! one column per field") straight
//! into its entries: each path is rebuilt from its front coding as it is
//! read and becomes an entry at once, and each later column (kinds, modes,
//! mtimes) fills those entries in place. Decoding a manifest so holds its
//! encoding and its entries, never a second copy of it as columns (an
//! attach of several million-file layers decodes them side by side; issue
//! 29). The bytes read are the same as `Columns`' derived decoder reads.
//!
//! This module knows the layout of the columns only: the checks attach
//! relies on (order, parents, sizes) are `manifest`'s `validate`, which
//! `manifest_stream` calls once it has read a version 1 encoding whole.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};

use crate::format::manifest::{Entry, EntryKind, Mtime, RelPath};

/// Why a body could not be read as columns.
#[derive(Debug)]
pub(crate) enum ColumnsError {
    /// A path is not a safe relative path: its bytes and why.
    UnsafePath(Vec<u8>, &'static str),
    /// Anything else: postcard's message, or ours.
    Corrupt(String),
}

/// Decodes the postcard body of a manifest's encoding into its entries.
pub(crate) fn decode_entries(body: &[u8]) -> Result<Vec<Entry>, ColumnsError> {
    // postcard keeps no message of a visitor's error: ours is kept here.
    let mut failed = None;
    let mut de = postcard::Deserializer::from_bytes(body);
    let decoded = de.deserialize_struct(
        "Columns",
        &["paths", "kinds", "modes", "mtimes"],
        ColumnsVisitor {
            failed: &mut failed,
            most: body.len() / MIN_ENTRY_BYTES,
        },
    );
    let entries = match (decoded, failed) {
        (_, Some(why)) => return Err(why),
        (Err(e), None) => return Err(ColumnsError::Corrupt(format!("cannot decode: {e}"))),
        (Ok(entries), None) => entries,
    };
    let rest = de
        .finalize()
        .map_err(|e| ColumnsError::Corrupt(format!("cannot decode: {e}")))?;
    if !rest.is_empty() {
        return Err(ColumnsError::Corrupt(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(entries)
}

/// The four columns in order, each filling the entries.
struct ColumnsVisitor<'f> {
    failed: &'f mut Option<ColumnsError>,
    /// The most entries the body could hold.
    most: usize,
}

/// The fewest bytes an entry takes in the columns: a path's two varints
/// (shared, the rest's length), a kind's tag, a mode, an mtime's two.
const MIN_ENTRY_BYTES: usize = 6;

/// Records why, for `decode_entries`, and stops the decoder.
fn fail<E: serde::de::Error>(failed: &mut Option<ColumnsError>, why: ColumnsError) -> E {
    *failed = Some(why);
    E::custom("see failed")
}

fn corrupt<E: serde::de::Error>(failed: &mut Option<ColumnsError>, why: &str) -> E {
    fail(failed, ColumnsError::Corrupt(why.to_string()))
}

impl<'de> Visitor<'de> for ColumnsVisitor<'_> {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a manifest's columns")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Entry>, A::Error> {
        let Some(mut entries) = seq.next_element_seed(Paths {
            failed: &mut *self.failed,
            most: self.most,
        })?
        else {
            return Err(corrupt(self.failed, "a column is missing"));
        };
        for column in [Column::Kinds, Column::Modes, Column::Mtimes] {
            let fill = Fill {
                column,
                entries: &mut entries,
                failed: &mut *self.failed,
            };
            if seq.next_element_seed(fill)?.is_none() {
                return Err(corrupt(self.failed, "a column is missing"));
            }
        }
        Ok(entries)
    }
}

/// The paths column: (bytes shared with the previous path, the rest),
/// each becoming an entry (a directory of mode 0 until the later columns
/// say what it is).
struct Paths<'f> {
    failed: &'f mut Option<ColumnsError>,
    most: usize,
}

impl<'de> DeserializeSeed<'de> for Paths<'_> {
    type Value = Vec<Entry>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Entry>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Paths<'_> {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("front-coded paths")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Entry>, A::Error> {
        // Sized once (a million entries grown by doubling would hold up
        // to twice their room), but to no more than the body could hold:
        // a hostile length prefix allocates nothing it does not carry.
        let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.most));
        let mut prev: Vec<u8> = Vec::new();
        while let Some((shared, rest)) = seq.next_element::<(u32, &[u8])>()? {
            let shared = shared as usize;
            if shared > prev.len() {
                return Err(corrupt(
                    self.failed,
                    "path shares more than its predecessor has",
                ));
            }
            prev.truncate(shared);
            prev.extend_from_slice(rest);
            let path = match RelPath::new(prev.clone()) {
                Ok(path) => path,
                Err(reason) => {
                    return Err(fail(self.failed, ColumnsError::UnsafePath(prev, reason)))
                }
            };
            entries.push(Entry {
                path,
                mode: 0,
                mtime: Mtime::default(),
                kind: EntryKind::Dir,
            });
        }
        Ok(entries)
    }
}

/// The next element of a column whose length was checked.
fn element<'de, A: SeqAccess<'de>, T: serde::Deserialize<'de>>(seq: &mut A) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| A::Error::custom("a column shorter than it said"))
}

/// A column after the paths.
#[derive(Clone, Copy)]
enum Column {
    Kinds,
    Modes,
    Mtimes,
}

/// One column after the paths, read into the entries in order; it must
/// have one element per entry.
struct Fill<'e> {
    column: Column,
    entries: &'e mut [Entry],
    failed: &'e mut Option<ColumnsError>,
}

impl<'de> DeserializeSeed<'de> for Fill<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Fill<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column of one element per path")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // postcard knows each column's length; one too short for its
        // bytes is corrupt too.
        if seq.size_hint() != Some(self.entries.len()) {
            return Err(corrupt(self.failed, "columns of different lengths"));
        }
        let mut secs = 0i64;
        for e in self.entries.iter_mut() {
            match self.column {
                Column::Kinds => e.kind = element(&mut seq)?,
                Column::Modes => e.mode = element(&mut seq)?,
                Column::Mtimes => {
                    let (dsecs, nanos): (i64, u32) = element(&mut seq)?;
                    secs = secs.wrapping_add(dsecs);
                    e.mtime = Mtime { secs, nanos };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{ChunkRef, Columns};
    use crate::id::ChunkId;

    fn columns() -> Columns {
        let file = EntryKind::File {
            size: 3,
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"abc"),
                len: 3,
            }],
        };
        Columns {
            // a, a/b, a/c, a/c/d, b
            paths: vec![
                (0, b"a".to_vec()),
                (1, b"/b".to_vec()),
                (2, b"c".to_vec()),
                (3, b"/d".to_vec()),
                (0, b"b".to_vec()),
            ],
            kinds: vec![
                EntryKind::Dir,
                file,
                EntryKind::Dir,
                EntryKind::Symlink {
                    target: b"../x".to_vec(),
                },
                EntryKind::Hardlink {
                    target: RelPath::new(b"a/b".to_vec()).unwrap(),
                },
            ],
            modes: vec![0o755, 0o644, 0o700, 0o777, 0o600],
            mtimes: vec![
                (1_700_000_000, 5),
                (-3, 0),
                (7, 999_999_999),
                (0, 1),
                (-1, 2),
            ],
        }
    }

    /// The entries the derived decoder's columns make, rebuilt by hand.
    fn expected(c: &Columns) -> Vec<Entry> {
        let (mut path, mut secs) = (Vec::new(), 0i64);
        let mut out = Vec::new();
        for i in 0..c.paths.len() {
            path.truncate(c.paths[i].0 as usize);
            path.extend_from_slice(&c.paths[i].1);
            secs += c.mtimes[i].0;
            out.push(Entry {
                path: RelPath::new(path.clone()).unwrap(),
                mode: c.modes[i],
                mtime: Mtime {
                    secs,
                    nanos: c.mtimes[i].1,
                },
                kind: c.kinds[i].clone(),
            });
        }
        out
    }

    #[test]
    fn reads_what_the_derived_columns_write() {
        let c = columns();
        let body = postcard::to_stdvec(&c).unwrap();
        let entries = decode_entries(&body).unwrap();
        assert_eq!(entries, expected(&c));
        assert_eq!(entries[1].path.as_bytes(), b"a/b");
        assert_eq!(entries[3].path.as_bytes(), b"a/c/d");
        assert_eq!(entries[2].mtime.secs, 1_700_000_004);
    }

    #[test]
    fn refuses_what_the_derived_decoder_refuses_and_unsafe_paths() {
        let corrupt = |c: Columns, why: &str| {
            let body = postcard::to_stdvec(&c).unwrap();
            match decode_entries(&body) {
                Err(ColumnsError::Corrupt(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{why}: {other:?}"),
            }
        };
        let mut c = columns();
        c.modes.pop();
        corrupt(c, "columns of different lengths");
        let mut c = columns();
        c.kinds.push(EntryKind::Dir);
        corrupt(c, "columns of different lengths");
        let mut c = columns();
        c.paths[1].0 = 2;
        corrupt(c, "shares more than its predecessor");
        let mut c = columns();
        c.paths[4] = (0, b"../etc".to_vec());
        let body = postcard::to_stdvec(&c).unwrap();
        match decode_entries(&body) {
            Err(ColumnsError::UnsafePath(p, why)) => {
                assert_eq!((p.as_slice(), why), (&b"../etc"[..], "'..' component"))
            }
            other => panic!("{other:?}"),
        }
        // Cut short anywhere, or with a byte more, a body is refused.
        let body = postcard::to_stdvec(&columns()).unwrap();
        for end in 0..body.len() {
            assert!(decode_entries(&body[..end]).is_err(), "cut at {end}");
        }
        let mut longer = body.clone();
        longer.push(0);
        match decode_entries(&longer) {
            Err(ColumnsError::Corrupt(m)) => assert_eq!(m, "1 trailing bytes"),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 29: decoding a manifest of 10^5 files holds its entries and
    /// little more, never the manifest a second time as columns: at most
    /// a quarter more than the entries it returns (a column copy costs
    /// 92 bytes an entry before its paths, more than half of an entry's
    /// 150-odd; the derived decoder peaked at 1.7 times them).
    #[test]
    fn decoding_holds_the_entries_and_not_a_copy_of_the_columns() {
        use crate::format::manifest::Manifest;
        let mut entries = Vec::new();
        for d in 0..100 {
            let dir = format!("node_modules/pkg-{d:03}");
            if d == 0 {
                entries.push(entry_at("node_modules", EntryKind::Dir));
            }
            entries.push(entry_at(&dir, EntryKind::Dir));
            for f in 0..1000 {
                let body = format!("{d}/{f}");
                let kind = EntryKind::File {
                    size: body.len() as u64,
                    chunks: vec![ChunkRef {
                        id: ChunkId::of(body.as_bytes()),
                        len: body.len() as u32,
                    }],
                };
                entries.push(entry_at(&format!("{dir}/lib/file-{f:04}.js"), kind));
                if f == 0 {
                    entries.push(entry_at(&format!("{dir}/lib"), EntryKind::Dir));
                }
            }
        }
        let mut m = Manifest { entries };
        m.sort();
        let (id, bytes) = m.encode_v1();
        let (decoded, peak, kept) = crate::testing::heap::measure(|| Manifest::decode(&id, &bytes));
        let decoded = decoded.unwrap();
        assert_eq!(decoded.entries.len(), 100_201);
        assert_eq!(decoded, m);
        eprintln!("decoding held {peak} bytes at most for {kept} bytes of entries");
        assert!(
            peak <= kept + kept / 4,
            "decoding held {peak} bytes at most for {kept} bytes of entries"
        );
    }

    fn entry_at(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: RelPath::new(path.as_bytes().to_vec()).unwrap(),
            mode: 0o644,
            mtime: Mtime {
                secs: 1_700_000_000,
                nanos: 0,
            },
            kind,
        }
    }
}
