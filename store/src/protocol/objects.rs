//! The `objects` request (protocol v1, since the `objects` feature): a
//! few objects stored one after another in one round trip, which is how a
//! persist commits (its index object and manifest root, then the ref that
//! names them). The keys and sizes travel in the query, so the server
//! decides every object's right before it reads the body; the body is the
//! objects back to back. Data only: what storing means is the server's.

use crate::error::{Error, Result};

use super::validate_key;

/// The feature a server announces in its hello when it answers `objects`.
pub const FEATURE: &str = "objects";

/// At most this many objects in one `objects` request.
pub const MAX_OBJECTS: usize = 16;

/// One object of an `objects` request: its key and size in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The object's key.
    pub key: String,
    /// Its bytes in the body.
    pub size: u64,
}

/// The query of an `objects` request for `parts`, in order:
/// `put=KEY:SIZE&put=KEY:SIZE...` (keys need no escaping: `validate_key`).
pub fn encode_query(parts: &[(&str, &[u8])]) -> String {
    let each: Vec<String> = parts
        .iter()
        .map(|(k, b)| format!("put={k}:{}", b.len()))
        .collect();
    each.join("&")
}

/// Reads the query of an `objects` request a client sent, refusing a
/// malformed one, an invalid key, no object or more than `MAX_OBJECTS`,
/// or sizes summing past `max_total` (without overflow). Returns the
/// parts in order and their total size.
pub fn decode_query(query: &str, max_total: u64) -> Result<(Vec<Part>, u64)> {
    let bad = |detail: String| Error::BadRequest {
        detail: format!("objects: {detail}"),
    };
    let mut parts = Vec::new();
    let mut total = 0u64;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let value = pair
            .strip_prefix("put=")
            .ok_or_else(|| bad(format!("{pair:?} is not put=KEY:SIZE")))?;
        let (key, size) = value
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{value:?} is not KEY:SIZE")))?;
        validate_key(key)?;
        let size: u64 = size
            .parse()
            .map_err(|_| bad(format!("size {size:?} of {key} is not a number")))?;
        if parts.len() == MAX_OBJECTS {
            return Err(Error::TooLarge {
                detail: format!("at most {MAX_OBJECTS} objects per objects request"),
            });
        }
        total = total
            .checked_add(size)
            .filter(|&t| t <= max_total)
            .ok_or_else(|| Error::TooLarge {
                detail: format!("at most {max_total} bytes per objects request"),
            })?;
        parts.push(Part {
            key: key.to_string(),
            size,
        });
    }
    if parts.is_empty() {
        return Err(bad("no object named (put=KEY:SIZE)".into()));
    }
    Ok((parts, total))
}

/// Cuts `body` into the objects `parts` name, in order; the body must be
/// exactly their sizes summed.
pub fn split_body<'b>(parts: &[Part], body: &'b [u8]) -> Result<Vec<&'b [u8]>> {
    let mut rest = body;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let n = usize::try_from(p.size).unwrap_or(usize::MAX);
        if rest.len() < n {
            return Err(Error::BadRequest {
                detail: format!("objects: the body ends inside {}", p.key),
            });
        }
        let (this, tail) = rest.split_at(n);
        out.push(this);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::BadRequest {
            detail: format!("objects: {} bytes after the last object", rest.len()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // What a client encodes the server reads back, and the body cuts
    // where the sizes say.
    #[test]
    fn a_query_round_trips_and_cuts_the_body() {
        let objects: [(&str, &[u8]); 2] = [("manifests/ab/abcd", b"root"), ("runs/r/run", b"xy")];
        let q = encode_query(&objects);
        assert_eq!(q, "put=manifests/ab/abcd:4&put=runs/r/run:2");
        let (parts, total) = decode_query(&q, 100).unwrap();
        assert_eq!(total, 6);
        assert_eq!(
            split_body(&parts, b"rootxy").unwrap(),
            [&b"root"[..], b"xy"]
        );
        assert!(split_body(&parts, b"rootx").is_err());
        assert!(split_body(&parts, b"rootxyz").is_err());
    }

    #[test]
    fn bad_queries_are_refused_by_kind() {
        let kind = |q: &str| decode_query(q, 100).unwrap_err().kind();
        use crate::error::ErrorKind::*;
        assert_eq!(kind(""), BadRequest);
        assert_eq!(kind("get=a:1"), BadRequest);
        assert_eq!(kind("put=a"), BadRequest);
        assert_eq!(kind("put=a:x"), BadRequest);
        assert_eq!(kind("put=../a:1"), Corrupt);
        assert_eq!(kind("put=a:60&put=b:41"), TooLarge);
        assert_eq!(kind(&format!("put=a:{}&put=b:1", u64::MAX)), TooLarge);
        let many = vec!["put=a:1"; MAX_OBJECTS + 1].join("&");
        assert_eq!(kind(&many), TooLarge);
    }
}
