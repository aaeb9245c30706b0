//! Every JSON answer a client decodes from a `strata serve` it may not
//! trust (a proxy, a wrong host, a hostile server): the hello, key lists,
//! error bodies, stats and gc reports, and a `layers` answer (zstd, framed
//! by lengths) never make the client panic, and a `layers` answer accepted
//! holds exactly the entries asked.
//! (Byte 0 picks the answer; the rest is its body.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::gc::GcReport;
use strata_store::protocol::{decode_answer, error_text, Hello, KeyList};
use strata_store::stats::StoreStats;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            let _ = decode_answer::<Hello>(body);
        }
        1 => {
            if let Ok(list) = decode_answer::<KeyList>(body) {
                let _ = list.keys.len();
            }
        }
        2 => {
            let _ = error_text(body);
        }
        3 => {
            let _ = decode_answer::<StoreStats>(body);
        }
        5 => {
            let asked = usize::from(body.first().copied().unwrap_or(0) % 4);
            if let Ok(layers) = strata_store::protocol::layers::decode_answer(
                asked,
                body.get(1..).unwrap_or_default(),
            ) {
                assert_eq!(layers.len(), asked);
            }
        }
        _ => {
            let _ = decode_answer::<GcReport>(body);
        }
    }
});
