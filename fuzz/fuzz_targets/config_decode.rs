//! A store's config as read from a store directory or bucket anyone may
//! have written: decoding never panics, and what it accepts has chunker,
//! pack and frame settings within the bounds persist relies on, and
//! encodes back to a config that decodes to the same thing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::config::StoreConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = StoreConfig::decode(data) else {
        return;
    };
    assert!(config.chunker.validate().is_ok());
    assert!(config.manifest_chunker.validate().is_ok());
    let again = StoreConfig::decode(&config.encode()).expect("an accepted config re-decodes");
    assert_eq!(again.encode(), config.encode());
});
