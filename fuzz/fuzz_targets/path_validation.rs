//! Path validation: an accepted path is relative, has no empty, `.` or `..`
//! component and no NUL, so joining it under a directory stays inside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use strata_store::format::manifest::RelPath;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RelPath::new(data.to_vec()) {
        assert!(!data.is_empty() && data[0] != b'/' && !data.contains(&0));
        let joined = Path::new("/target").join(p.to_path());
        assert!(joined.starts_with("/target"));
        assert!(p
            .to_path()
            .components()
            .all(|c| matches!(c, Component::Normal(_))));
    }
});
