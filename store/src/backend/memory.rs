//! An in-memory backend: the reference the others are compared with in the
//! conformance suite, and a store for tests that need no disk.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use super::{validate_key, Backend};
use crate::error::{Error, Result};

/// Objects in memory: the reference backend of the conformance suite.
#[derive(Debug, Default)]
pub struct Memory {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T) -> T {
        f(&mut self.objects.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Backend for Memory {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        self.with(|o| o.insert(key.to_string(), data.to_vec()));
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        self.with(|o| o.get(key).cloned())
            .ok_or_else(|| Error::NotFound { key: key.into() })
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let data = self.get(key)?;
        ranges
            .iter()
            .map(|r| {
                data.get(r.start as usize..r.end as usize)
                    .filter(|_| r.end <= data.len() as u64)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        Error::corrupt(
                            format!("object {key}"),
                            format!("shorter than the range {}..{}", r.start, r.end),
                        )
                    })
            })
            .collect()
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.get(key).map(|d| d.len() as u64)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        Ok(self.with(|o| o.contains_key(key)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.with(|o| {
            o.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<String>> {
        let from = after.max(prefix).to_string();
        Ok(self.with(|o| {
            o.range(from..)
                .filter(|(k, _)| k.as_str() > after)
                .take_while(|(k, _)| k.starts_with(prefix) || k.as_str() < prefix)
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.with(|o| o.remove(key));
        Ok(())
    }

    fn location(&self) -> String {
        "memory".into()
    }
}
