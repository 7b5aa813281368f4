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

/// The tail's maps hash short strings the store chose to keep; SipHash's
/// resistance is not needed and cost a tenth of a microsecond a record.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Versions stored after the indexes' last run, by key and by name: those
/// the store holds, and, as a tail of their own, those a transaction adds,
/// which join the store's once it commits (so that a rolled-back batch
/// leaves no version behind in memory).
#[derive(Debug, Default)]
pub(crate) struct VersionTail {
    /// uid, then resourceVersion, to seq: nested so that a lookup by two
    /// `&str`s builds no key.
    keys: HashMap<String, HashMap<String, i64>>,
    /// namespace, then name, to seqs.
    names: HashMap<String, HashMap<String, Vec<i64>>>,
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
        for e in entries {
            tail.push(e);
        }
        tail
    }

    pub(crate) fn push(&mut self, e: TailEntry) {
        self.keys
            .entry(e.uid)
            .or_default()
            .insert(e.resource_version, e.seq);
        self.names
            .entry(e.namespace)
            .or_default()
            .entry(e.name)
            .or_default()
            .push(e.seq);
    }

    /// Takes in another tail's versions.
    pub(crate) fn absorb(&mut self, other: VersionTail) {
        for (uid, versions) in other.keys {
            self.keys.entry(uid).or_default().extend(versions);
        }
        for (namespace, names) in other.names {
            let here = self.names.entry(namespace).or_default();
            for (name, seqs) in names {
                here.entry(name).or_default().extend(seqs);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.values().map(HashMap::len).sum()
    }

    /// The `seq` of the version (uid, resourceVersion), if it is here.
    pub(crate) fn seq_of(&self, uid: &str, resource_version: &str) -> Option<i64> {
        self.keys.get(uid)?.get(resource_version).copied()
    }

    /// The `seq`s of the versions named (namespace, name) here.
    pub(crate) fn seqs_named(&self, namespace: &str, name: &str) -> &[i64] {
        self.names
            .get(namespace)
            .and_then(|names| names.get(name))
            .map_or(&[], Vec::as_slice)
    }

    /// Empties the tail, once its versions are in the indexes.
    pub(crate) fn merged(&mut self) {
        *self = VersionTail::default();
    }
}

/// The highest resourceVersion among the versions in the indexes that reads
/// as a number, so that a version with a higher one is known to be new
/// without a search of `version_keys`. The apiserver hands out numbers
/// that grow: every write, and every watch event, shows one above all
/// before it. A resourceVersion that is not a number is never ruled out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RvCeiling(Option<u64>);

impl RvCeiling {
    /// As the store keeps it: empty for none.
    pub(crate) fn from_stored(text: &str) -> Option<RvCeiling> {
        if text.is_empty() {
            return Some(RvCeiling(None));
        }
        text.parse().ok().map(|n| RvCeiling(Some(n)))
    }

    pub(crate) fn to_stored(self) -> String {
        self.0.map(|n| n.to_string()).unwrap_or_default()
    }

    /// Raised to take in one more version of the indexes.
    pub(crate) fn raise(&mut self, resource_version: &str) {
        if let Ok(n) = resource_version.parse::<u64>() {
            self.0 = Some(self.0.map_or(n, |c| c.max(n)));
        }
    }

    /// Whether no version in the indexes has this resourceVersion. Sound
    /// whatever the strings: one that is equal reads as the same number,
    /// which would have raised the ceiling to at least it.
    pub(crate) fn rules_out(self, resource_version: &str) -> bool {
        resource_version
            .parse::<u64>()
            .is_ok_and(|n| self.0.is_none_or(|c| n > c))
    }
}

/// Index rows in index order: `version_keys` (resourceVersion, uid, seq) and
/// `version_names` (namespace, name, seq). A run in this order touches each
/// index page once.
pub(crate) type IndexRow<'a> = (&'a str, &'a str, i64);

/// The index rows of the versions of these tails, each run sorted.
pub(crate) fn sorted_runs<'a>(tails: &[&'a VersionTail]) -> (Vec<IndexRow<'a>>, Vec<IndexRow<'a>>) {
    let mut keys: Vec<IndexRow<'a>> = tails
        .iter()
        .flat_map(|t| &t.keys)
        .flat_map(|(uid, versions)| {
            versions
                .iter()
                .map(move |(rv, seq)| (rv.as_str(), uid.as_str(), *seq))
        })
        .collect();
    keys.sort_unstable();
    let mut names: Vec<IndexRow<'a>> = tails
        .iter()
        .flat_map(|t| &t.names)
        .flat_map(|(namespace, names)| {
            names.iter().flat_map(move |(name, seqs)| {
                seqs.iter()
                    .map(move |seq| (namespace.as_str(), name.as_str(), *seq))
            })
        })
        .collect();
    names.sort_unstable();
    (keys, names)
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
        let (keys, names) = sorted_runs(&[&tail]);
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
    fn the_ceiling_rules_out_only_numbers_above_every_number_it_took() {
        let mut ceiling = RvCeiling::default();
        assert!(ceiling.rules_out("1"));
        assert!(!ceiling.rules_out("deleted"));
        for rv in ["12", "deleted", "9", "+15", "007"] {
            ceiling.raise(rv);
        }
        assert_eq!(ceiling, RvCeiling(Some(15)));
        // "+15" was taken: "15" reads the same, and so is not ruled out.
        for rv in [
            "15", "+15", "015", "9", "0", "deleted", "", "-16", "16.0", "1e9",
        ] {
            assert!(!ceiling.rules_out(rv), "{rv:?}");
        }
        for rv in ["16", "+16", "0016", "18446744073709551615"] {
            assert!(ceiling.rules_out(rv), "{rv:?}");
        }
        for stored in [RvCeiling(None), ceiling, RvCeiling(Some(u64::MAX))] {
            assert_eq!(RvCeiling::from_stored(&stored.to_stored()), Some(stored));
        }
        assert_eq!(RvCeiling::from_stored("x"), None);
    }

    #[test]
    fn additions_are_seen_before_they_join_the_tail_and_after() {
        let mut added = VersionTail::default();
        added.push(entry(3, "u", "5", "x"));
        assert_eq!(added.seq_of("u", "5"), Some(3));
        assert_eq!(added.len(), 1);
        let mut tail = VersionTail::new([entry(2, "u", "4", "x")]);
        assert_eq!(tail.seq_of("u", "5"), None);
        tail.absorb(added);
        assert_eq!(tail.seq_of("u", "5"), Some(3));
        assert_eq!(tail.seq_of("u", "4"), Some(2));
        assert_eq!(tail.seqs_named("ns", "x"), [2, 3]);
        assert_eq!(tail.len(), 2);
    }
}
