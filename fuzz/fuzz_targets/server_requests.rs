//! What a client sends `strata serve` besides objects: a `ranges` body, a
//! `list` prefix and cursor, a `gc` grace, chunk queries, the keys of
//! object routes as the access rules see them, and an `objects` query and
//! body (the part before the first NUL is the query). Each is refused or accepted
//! without a panic, and what is accepted keeps the promises the server
//! relies on: a ranges request within its limits (summed without
//! overflow), a prefix that cannot leave the namespace, no grace below the
//! store's, a read grant that writes nothing but uses, and a `urls`
//! request whose keys stay in the namespace and whose only grantable URLs
//! are GETs of packs, and a `layers` request of at most 64 keys that stay
//! in the namespace.
//! (Byte 0 picks the request; the rest is its body.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::access::{self, Grant, Role};
use strata_store::format::keys::{classify, ObjectKind};
use strata_store::protocol::layers::{LayersRequest, MAX_LAYER_KEYS};
use strata_store::protocol::urls::{UrlsRequest, MAX_URL_KEYS};
use strata_store::protocol::objects::{decode_query, split_body, MAX_OBJECTS};
use strata_store::protocol::{decode_ids, ListQuery, RangesRequest, MAX_RANGES_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    match kind % 8 {
        0 => {
            if let Ok((req, total)) = RangesRequest::decode(body) {
                let sum: u128 = req.ranges.iter().map(|&(a, b)| u128::from(b - a)).sum();
                assert_eq!(sum, u128::from(total));
                assert!(total <= MAX_RANGES_BYTES);
            }
        }
        1 => {
            let (prefix, after) = text.split_once('\0').unwrap_or((&text, ""));
            let q = ListQuery {
                prefix: prefix.to_string(),
                after: (!after.is_empty()).then(|| after.to_string()),
            };
            if q.validate().is_ok() {
                for s in [&q.prefix, q.after.as_ref().unwrap_or(&String::new())] {
                    assert!(!s.starts_with('/'), "{s:?}");
                    assert!(s.split('/').all(|c| !c.starts_with('.')), "{s:?}");
                }
            }
        }
        2 => {
            let asked = body.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
            if let Ok(grace) = access::gc_grace(asked, 3600) {
                assert!(grace >= 3600);
            }
        }
        3 => {
            let _ = decode_ids(body);
        }
        5 => {
            let Ok(req) = UrlsRequest::decode(body) else {
                return;
            };
            assert!(req.keys.len() <= MAX_URL_KEYS);
            let read = Grant::everything("ns");
            for key in &req.keys {
                assert!(!key.starts_with('/'), "{key:?}");
                assert!(key.split('/').all(|c| !c.starts_with('.')), "{key:?}");
                let Ok(object) = classify(key) else {
                    continue;
                };
                let asked = access::Request::Url {
                    write: req.writes(),
                    kind: &object,
                };
                if access::allow(&read, "ns", &asked).is_ok() {
                    assert!(!req.writes() && matches!(object, ObjectKind::Pack(_)));
                }
            }
        }
        6 => {
            let at = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            let query = String::from_utf8_lossy(&body[..at]);
            let rest = body.get(at + 1..).unwrap_or_default();
            if let Ok((parts, total)) = decode_query(&query, 1 << 20) {
                assert!(!parts.is_empty() && parts.len() <= MAX_OBJECTS);
                assert_eq!(parts.iter().map(|p| p.size).sum::<u64>(), total);
                assert!(total <= 1 << 20);
                if let Ok(cut) = split_body(&parts, rest) {
                    assert_eq!(cut.iter().map(|c| c.len()).sum::<usize>(), rest.len());
                }
            }
        }
        7 => {
            if let Ok(req) = LayersRequest::decode(body) {
                assert!(!req.keys.is_empty() && req.keys.len() <= MAX_LAYER_KEYS);
                for key in &req.keys {
                    assert!(!key.starts_with('/'), "{key:?}");
                    assert!(key.split('/').all(|c| !c.starts_with('.')), "{key:?}");
                }
            }
        }
        _ => {
            let Ok(object) = classify(&text) else {
                return;
            };
            let read = Grant {
                name: "fuzz".into(),
                namespace: "ns".into(),
                role: Role::Read,
                runs: None,
                cache_keys: None,
                run_names: None,
                jobs: None,
            };
            if access::allow(&read, "ns", &access::Request::Put(&object)).is_ok() {
                assert!(matches!(object, ObjectKind::Used(_) | ObjectKind::CacheUsed));
            }
            assert!(access::allow(&read, "ns", &access::Request::Delete(&object)).is_err());
        }
    }
});
