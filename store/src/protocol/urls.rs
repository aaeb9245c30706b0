//! The `urls` route of protocol v1 (docs/protocol.md, "Reading packs from
//! the bucket"): what a client asks (`UrlsRequest`) and what a server
//! answers (`UrlsAnswer`), and the one decoder of the request a server
//! reads from a hostile client. Which URLs a grant may have is
//! `crate::access`'s (`Request::Url`); how a URL is signed is the S3
//! backend's. Knows nothing about HTTP or S3.

use serde::{Deserialize, Serialize};

use super::validate_key;
use crate::error::{Error, Result};

/// The version of the `urls` route a server offers (`"urls": 1` in its
/// hello); a change to what it means gets a new number.
pub const URLS_VERSION: u32 = 1;

/// The most keys one `urls` request may name.
pub const MAX_URL_KEYS: usize = 4096;

/// `POST urls`: presigned URLs for these keys, for `method`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlsRequest {
    /// The HTTP method the URLs are for (`GET`; anything else is refused
    /// by the access rules, but decodes, so the refusal names it).
    pub method: String,
    /// Store keys of the namespace, each valid (`validate_key`).
    pub keys: Vec<String>,
}

impl UrlsRequest {
    /// Reads a request a client sent, refusing a malformed body, more
    /// than `MAX_URL_KEYS` keys, or a key that is not a valid store key
    /// (so none can climb out of the namespace's prefix).
    pub fn decode(body: &[u8]) -> Result<UrlsRequest> {
        let req: UrlsRequest = serde_json::from_slice(body).map_err(|e| Error::BadRequest {
            detail: format!("urls: {e}"),
        })?;
        if req.keys.len() > MAX_URL_KEYS {
            return Err(Error::TooLarge {
                detail: format!("at most {MAX_URL_KEYS} keys per urls request"),
            });
        }
        for key in &req.keys {
            validate_key(key)?;
        }
        Ok(req)
    }

    /// Whether the URLs asked for would write (any method but `GET`).
    pub fn writes(&self) -> bool {
        self.method != "GET"
    }
}

/// The answer to `POST urls`: a URL per key asked, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlsAnswer {
    /// How long the URLs are valid, from when the server signed them.
    pub expires_in: u64,
    /// The URLs, one per key asked, in order.
    pub urls: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_within_their_limits() {
        let ok = br#"{"method":"GET","keys":["packs/ab/abcd"]}"#;
        let req = UrlsRequest::decode(ok).unwrap();
        assert_eq!(req.keys, ["packs/ab/abcd"]);
        assert!(!req.writes());
        let put = UrlsRequest::decode(br#"{"method":"PUT","keys":[]}"#).unwrap();
        assert!(put.writes());
        for bad in [
            &br#"{"method":"GET","keys":["../other/packs/ab/abcd"]}"#[..],
            br#"{"method":"GET","keys":["/packs/ab"]}"#,
            br#"{"method":"GET","keys":["packs//ab"]}"#,
            br#"{"method":"GET"}"#,
            br#"{"method":"GET","keys":[],"extra":1}"#,
            b"not json",
        ] {
            assert!(
                UrlsRequest::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<String> = (0..=MAX_URL_KEYS).map(|i| format!("k{i}")).collect();
        let body = serde_json::to_vec(&UrlsRequest {
            method: "GET".into(),
            keys: many,
        })
        .unwrap();
        assert!(matches!(
            UrlsRequest::decode(&body),
            Err(Error::TooLarge { .. })
        ));
    }
}
