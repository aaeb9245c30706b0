//! The `layers` request (protocol v1, since the `layers` feature;
//! docs/protocol.md, "Layers and their manifests"): an attach's layer refs
//! and the manifests they name, in one round trip. What a client asks
//! (`LayersRequest`, the one decoder of it a server reads from a hostile
//! client) and the answer's framing both ways. Data only: which keys are
//! layer refs is `format::keys`', what a manifest holds `format::manifest`'s,
//! who may ask `access`'.

use serde::{Deserialize, Serialize};

use super::validate_key;
use crate::error::{Error, Result};

/// The feature a server announces in its hello when it answers `layers`.
pub const FEATURE: &str = "layers";

/// At most this many keys in one `layers` request.
pub const MAX_LAYER_KEYS: usize = 64;

/// At most this many bytes of manifests in one answer (their encodings'
/// lengths summed; the refs come on top, each a few hundred bytes).
pub const MAX_LAYERS_BYTES: u64 = 256 << 20;

/// The most a ref may be in an answer (a layer ref is a small record).
const MAX_REF_LEN: u64 = 1 << 20;

/// `POST layers`: these layer refs and their manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayersRequest {
    /// Layer refs' keys, each valid (`validate_key`).
    pub keys: Vec<String>,
}

impl LayersRequest {
    /// Reads a request a client sent, refusing a malformed body, no key,
    /// more than `MAX_LAYER_KEYS` keys, or a key that is not a valid store
    /// key (whether each is a layer ref is for the caller to check).
    pub fn decode(body: &[u8]) -> Result<LayersRequest> {
        let req: LayersRequest = serde_json::from_slice(body).map_err(|e| Error::BadRequest {
            detail: format!("layers: {e}"),
        })?;
        if req.keys.is_empty() {
            return Err(Error::BadRequest {
                detail: "layers: no key named".into(),
            });
        }
        if req.keys.len() > MAX_LAYER_KEYS {
            return Err(Error::TooLarge {
                detail: format!("at most {MAX_LAYER_KEYS} keys per layers request"),
            });
        }
        for key in &req.keys {
            validate_key(key)?;
        }
        Ok(req)
    }

    /// The request's body.
    pub fn encode(&self) -> Vec<u8> {
        #[allow(clippy::expect_used)] // strings always serialize
        serde_json::to_vec(self).expect("serializes")
    }
}

/// One layer of an answer: its ref's bytes and its manifest's encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerAnswer {
    /// The layer ref object.
    pub layer_ref: Vec<u8>,
    /// The encoding of the manifest it names.
    pub manifest: Vec<u8>,
}

/// The answer's body: each layer's ref and manifest after its length, in
/// order, compressed as one zstd frame.
pub fn encode_answer(layers: &[LayerAnswer]) -> Vec<u8> {
    let size: usize = layers
        .iter()
        .map(|l| 12 + l.layer_ref.len() + l.manifest.len())
        .sum();
    let mut raw = Vec::with_capacity(size);
    for l in layers {
        raw.extend_from_slice(&(l.layer_ref.len() as u32).to_le_bytes());
        raw.extend_from_slice(&l.layer_ref);
        raw.extend_from_slice(&(l.manifest.len() as u64).to_le_bytes());
        raw.extend_from_slice(&l.manifest);
    }
    #[allow(clippy::expect_used)] // compressing into memory fails only without memory
    zstd::bulk::compress(&raw, 1).expect("compressing to memory cannot fail")
}

/// Reads the answer to a `layers` request for `asked` keys, refusing one
/// that does not decompress, holds more than the limits allow (read no
/// further than them), more or fewer entries, or bytes past the last.
pub fn decode_answer(asked: usize, body: &[u8]) -> std::result::Result<Vec<LayerAnswer>, String> {
    use std::io::Read;
    let most = MAX_LAYERS_BYTES + asked as u64 * (12 + MAX_REF_LEN);
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(|e| format!("bad answer: {e}"))?
        .take(most + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("bad answer: {e}"))?;
    if raw.len() as u64 > most {
        return Err(format!("answer larger than {most} bytes"));
    }
    let mut rest = raw.as_slice();
    let mut out = Vec::with_capacity(asked);
    for _ in 0..asked {
        let layer_ref = take(&mut rest, 4, MAX_REF_LEN)?;
        let manifest = take(&mut rest, 8, MAX_LAYERS_BYTES)?;
        out.push(LayerAnswer {
            layer_ref,
            manifest,
        });
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last layer", rest.len()));
    }
    Ok(out)
}

/// Takes a field of `width`-byte little-endian length, at most `most`.
fn take(rest: &mut &[u8], width: usize, most: u64) -> std::result::Result<Vec<u8>, String> {
    let truncated = || "truncated answer".to_string();
    let head = rest.get(..width).ok_or_else(truncated)?;
    let mut len = [0u8; 8];
    len[..width].copy_from_slice(head);
    let len = u64::from_le_bytes(len);
    if len > most {
        return Err(format!("a field of {len} bytes, more than {most}"));
    }
    let end = width + len as usize;
    let field = rest.get(width..end).ok_or_else(truncated)?.to_vec();
    *rest = &rest[end..];
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_within_their_limits() {
        let ok = br#"{"keys":["runs/r/layers/a/0000000001-ab"]}"#;
        assert_eq!(LayersRequest::decode(ok).unwrap().keys.len(), 1);
        for bad in [
            &br#"{"keys":[]}"#[..],
            br#"{"keys":["../x"]}"#,
            br#"{"keys":["/runs/r"]}"#,
            br#"{"keys":["a"],"more":1}"#,
            br#"{}"#,
            b"not json",
        ] {
            assert!(
                LayersRequest::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = LayersRequest {
            keys: (0..=MAX_LAYER_KEYS).map(|i| format!("k{i}")).collect(),
        };
        assert!(matches!(
            LayersRequest::decode(&many.encode()),
            Err(Error::TooLarge { .. })
        ));
    }

    // The framing by hand (docs/protocol.md): u32 ref length, the ref,
    // u64 manifest length, the manifest.
    #[test]
    fn answers_are_framed_as_documented() {
        let mut raw = vec![2, 0, 0, 0, b'r', b'1'];
        raw.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        raw.extend_from_slice(b"abc");
        raw.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let body = zstd::bulk::compress(&raw, 1).unwrap();
        let want = vec![
            LayerAnswer {
                layer_ref: b"r1".to_vec(),
                manifest: b"abc".to_vec(),
            },
            LayerAnswer {
                layer_ref: vec![],
                manifest: vec![],
            },
        ];
        assert_eq!(decode_answer(2, &body).unwrap(), want);
        assert_eq!(decode_answer(2, &encode_answer(&want)).unwrap(), want);
        // Fewer or more entries than asked, or a truncated one, are refused.
        assert!(decode_answer(1, &body).is_err());
        assert!(decode_answer(3, &body).is_err());
        let cut = zstd::bulk::compress(&raw[..raw.len() - 1], 1).unwrap();
        assert!(decode_answer(2, &cut).is_err());
        assert!(decode_answer(1, b"not zstd").is_err());
    }
}
