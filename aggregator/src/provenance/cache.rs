//! Decoded histories kept for bisect, which must look at every version's
//! object: decoding 10,000 objects costs far more than the bisect itself.
//! An entry is used only while the store's fingerprint of the object's rows
//! is unchanged (a new version, or a merge, changes it), so every replica
//! sees its own and the others' ingest. The cache is bounded in versions.

use super::history::Numbered;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// (namespace, name, resource or Kind as asked).
pub type HistoryKey = (String, String, String);

struct Entry {
    fingerprint: String,
    history: Arc<Vec<Numbered>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<HistoryKey, Entry>,
    /// Oldest first.
    order: VecDeque<HistoryKey>,
    versions: usize,
}

pub struct HistoryCache {
    inner: Mutex<Inner>,
    max_versions: usize,
}

impl HistoryCache {
    pub fn new(max_versions: usize) -> HistoryCache {
        HistoryCache {
            inner: Mutex::new(Inner::default()),
            max_versions,
        }
    }

    pub fn get(&self, key: &HistoryKey, fingerprint: &str) -> Option<Arc<Vec<Numbered>>> {
        let inner = self.inner.lock().ok()?;
        inner
            .entries
            .get(key)
            .filter(|e| e.fingerprint == fingerprint)
            .map(|e| e.history.clone())
    }

    pub fn put(&self, key: HistoryKey, fingerprint: String, history: Arc<Vec<Numbered>>) {
        if history.len() > self.max_versions {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.entries.remove(&key) {
            inner.versions -= old.history.len();
            inner.order.retain(|k| k != &key);
        }
        while inner.versions + history.len() > self.max_versions {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.versions -= e.history.len();
            }
        }
        inner.versions += history.len();
        inner.order.push_back(key.clone());
        inner.entries.insert(
            key,
            Entry {
                fingerprint,
                history,
            },
        );
    }

    /// Versions held, for tests and metrics.
    pub fn versions(&self) -> usize {
        self.inner.lock().map(|i| i.versions).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::history::number;

    fn history(n: usize) -> Arc<Vec<Numbered>> {
        let v = |i: usize| {
            crate::store::key_version(
                [
                    "",
                    "configmaps",
                    "ConfigMap",
                    "ns",
                    "c",
                    "u",
                    &i.to_string(),
                    "t",
                ]
                .map(String::from),
            )
        };
        Arc::new(number((0..n).map(v).collect()))
    }

    fn key(name: &str) -> HistoryKey {
        ("ns".into(), name.into(), "configmaps".into())
    }

    #[test]
    fn a_changed_fingerprint_misses() {
        let cache = HistoryCache::new(100);
        cache.put(key("a"), "1:10".into(), history(3));
        assert_eq!(cache.get(&key("a"), "1:10").unwrap().len(), 3);
        assert!(cache.get(&key("a"), "2:11").is_none());
        assert!(cache.get(&key("b"), "1:10").is_none());
    }

    #[test]
    fn the_oldest_entries_go_first_and_the_bound_holds() {
        let cache = HistoryCache::new(10);
        cache.put(key("a"), "f".into(), history(4));
        cache.put(key("b"), "f".into(), history(4));
        cache.put(key("c"), "f".into(), history(4));
        assert!(cache.get(&key("a"), "f").is_none());
        assert!(cache.get(&key("c"), "f").is_some());
        assert_eq!(cache.versions(), 8);
        // Larger than the whole bound: not kept.
        cache.put(key("d"), "f".into(), history(11));
        assert!(cache.get(&key("d"), "f").is_none());
        // Replacing an entry does not count it twice.
        cache.put(key("c"), "g".into(), history(5));
        assert_eq!(cache.versions(), 9);
    }
}
