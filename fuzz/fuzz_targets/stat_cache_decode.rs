//! A runner's stat cache as read from its cache directory, which a CI
//! cache step may have restored from elsewhere: decoding never panics, and
//! what it accepts encodes back to the same entries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::stat_cache::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(known) = decode(data) else {
        return;
    };
    let again = decode(&encode(&known)).expect("an accepted cache re-decodes");
    assert_eq!(again, known);
});
