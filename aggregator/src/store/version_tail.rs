//! The newest versions of the embedded store, indexed in memory until they
//! join the store's own indexes in one sorted run.
//!
//! A version's row goes to the end of the `versions` table (its `seq`), but
//! its keys do not go to the end of their indexes: names come in any order,
//! and a tombstone from a Status has no resourceVersion to order it by, only
//! a random uid. Inserted one at a time, each commit rewrote nearly every
//! page of those indexes, twice (the WAL, then the checkpoint). So the
//! newest versions, those past `merged_upto`, are found through maps here;
//! once enough have come, their keys go into `version_keys` and
//! `version_names` at once, in key order, each page touched once.

use std::collections::HashMap;

/// The versions stored after the indexes' last run, by key and by name.
#[derive(Debug, Default)]
pub(crate) struct VersionTail {
    entries: Vec<TailEntry>,
    /// Nested (uid, then resourceVersion) so that a lookup by two `&str`s
    /// builds no key.
    keys: SeqsByKey,
    names: HashMap<String, HashMap<String, Vec<i64>>>,
}

/// uid -> resourceVersion -> seq.
type SeqsByKey = HashMap<String, HashMap<String, i64>>;

fn seq_in(keys: &SeqsByKey, uid: &str, resource_version: &str) -> Option<i64> {
    keys.get(uid)?.get(resource_version).copied()
}

fn add_key(keys: &mut SeqsByKey, e: &TailEntry) {
    keys.entry(e.uid.clone())
        .or_default()
        .insert(e.resource_version.clone(), e.seq);
}

/// One new version's keys.
#[derive(Debug, Clone)]
pub(crate) struct TailEntry {
    pub(crate) seq: i64,
    pub(crate) uid: String,
    pub(crate) resource_version: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl VersionTail {
    pub(crate) fn new(entries: impl IntoIterator<Item = TailEntry>) -> Self {
        let mut tail = VersionTail::default();
        tail.extend(entries);
        tail
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `seq` of the version (uid, resourceVersion), if it is here.
    pub(crate) fn seq_of(&self, uid: &str, resource_version: &str) -> Option<i64> {
        seq_in(&self.keys, uid, resource_version)
    }

    /// The `seq`s of the versions named (namespace, name) here.
    pub(crate) fn seqs_named(&self, namespace: &str, name: &str) -> &[i64] {
        self.names
            .get(namespace)
            .and_then(|names| names.get(name))
            .map_or(&[], Vec::as_slice)
    }

    pub(crate) fn extend(&mut self, entries: impl IntoIterator<Item = TailEntry>) {
        for e in entries {
            add_key(&mut self.keys, &e);
            self.names
                .entry(e.namespace.clone())
                .or_default()
                .entry(e.name.clone())
                .or_default()
                .push(e.seq);
            self.entries.push(e);
        }
    }

    pub(crate) fn entries(&self) -> &[TailEntry] {
        &self.entries
    }

    /// Empties the tail, once its versions are in the indexes.
    pub(crate) fn merged(&mut self) {
        *self = VersionTail::default();
    }
}

/// Index rows in index order: `version_keys` (resourceVersion, uid, seq) and
/// `version_names` (namespace, name, seq). A run in this order touches each
/// index page once.
pub(crate) type IndexRow<'a> = (&'a str, &'a str, i64);

pub(crate) fn sorted_runs<'a>(
    entries: impl Iterator<Item = &'a TailEntry> + Clone,
) -> (Vec<IndexRow<'a>>, Vec<IndexRow<'a>>) {
    let mut keys: Vec<IndexRow<'a>> = entries
        .clone()
        .map(|e| (e.resource_version.as_str(), e.uid.as_str(), e.seq))
        .collect();
    keys.sort_unstable();
    let mut names: Vec<IndexRow<'a>> = entries
        .map(|e| (e.namespace.as_str(), e.name.as_str(), e.seq))
        .collect();
    names.sort_unstable();
    (keys, names)
}

/// What a transaction adds to the tail: applied only once it commits, so
/// that a rolled-back batch leaves no version behind in memory.
#[derive(Debug, Default)]
pub(crate) struct TailAdditions {
    entries: Vec<TailEntry>,
    keys: SeqsByKey,
}

impl TailAdditions {
    pub(crate) fn push(&mut self, entry: TailEntry) {
        add_key(&mut self.keys, &entry);
        self.entries.push(entry);
    }

    pub(crate) fn seq_of(&self, uid: &str, resource_version: &str) -> Option<i64> {
        seq_in(&self.keys, uid, resource_version)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn entries(&self) -> &[TailEntry] {
        &self.entries
    }

    pub(crate) fn into_entries(self) -> Vec<TailEntry> {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, uid: &str, rv: &str, name: &str) -> TailEntry {
        TailEntry {
            seq,
            uid: uid.into(),
            resource_version: rv.into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn versions_are_found_by_key_and_by_name_and_come_out_in_index_order() {
        let tail = VersionTail::new([
            entry(11, "u-b", "deleted", "b"),
            entry(12, "u-a", "7", "a"),
            entry(13, "u-a", "9", "a"),
            entry(14, "u-c", "deleted", "c"),
        ]);
        assert_eq!(tail.len(), 4);
        assert_eq!(tail.seq_of("u-a", "9"), Some(13));
        assert_eq!(tail.seq_of("u-a", "8"), None);
        assert_eq!(tail.seqs_named("ns", "a"), [12, 13]);
        assert!(tail.seqs_named("other", "a").is_empty());
        let (keys, names) = sorted_runs(tail.entries().iter());
        assert_eq!(
            keys,
            [
                ("7", "u-a", 12),
                ("9", "u-a", 13),
                ("deleted", "u-b", 11),
                ("deleted", "u-c", 14)
            ]
        );
        assert_eq!(
            names,
            [
                ("ns", "a", 12),
                ("ns", "a", 13),
                ("ns", "b", 11),
                ("ns", "c", 14)
            ]
        );
    }

    #[test]
    fn additions_are_seen_before_they_join_the_tail() {
        let mut added = TailAdditions::default();
        added.push(entry(3, "u", "5", "x"));
        assert_eq!(added.seq_of("u", "5"), Some(3));
        assert_eq!(added.len(), 1);
        let mut tail = VersionTail::default();
        assert_eq!(tail.seq_of("u", "5"), None);
        tail.extend(added.into_entries());
        assert_eq!(tail.seq_of("u", "5"), Some(3));
    }
}
