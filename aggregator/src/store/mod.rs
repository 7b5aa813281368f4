//! Storage: one interface, with the embedded SQLite store behind it.
//!
//! Raw records are kept for provenance and audit; coverage reads only the
//! `hits` aggregates, which ingest keeps up to date, so a report never
//! rescans raw records.

pub mod packed;
pub mod postgres;
pub mod sqlite;
mod version_tail;

use std::sync::Arc;

/// The store a `--db` value names: a `postgres://` URL, or a SQLite file.
pub fn open(db: &str) -> Result<Arc<dyn Store>, StoreError> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::connect(db)?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(
            db,
        ))?))
    }
}

use apiwitness_record::DropReport;

/// One record, ready to store: its keys, and the aggregate it counts toward.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub id: String,
    pub started_at: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `Kind/name`, or empty.
    pub workload: String,
    /// The User-Agent's product token (`kubectl/v1.35.4`), or empty.
    pub client: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The spec templates this request counts for (two for a watch).
    pub templates: Vec<String>,
    /// The record as received, one JSON line.
    pub line: String,
    /// Where it was in its batch (1-based), for error messages.
    pub line_number: usize,
    /// The fields its request body set (field coverage), list items
    /// collapsed; the schema decides at report time which field each is.
    pub fields: Vec<String>,
    /// A later part of a long watch: the call was counted by its first
    /// part, so this one adds to no hit or field count.
    pub later_part: bool,
    /// The object versions and refused writes it shows (provenance).
    pub versions: Vec<EncodedVersion>,
    pub attempts: Vec<crate::provenance::Attempt>,
}

/// A version as a store writes it (see [`crate::provenance::EncodedVersion`]).
pub use crate::provenance::EncodedVersion;

/// The `hits` rows a batch adds to: one entry per distinct key, so a batch
/// of many calls to the same operation costs one upsert, not one per call.
/// The keys borrow the batch's own strings: a batch of 500 records made
/// eight copies of each record's names for keys that mostly exist already.
/// A fast hash, not a keyed one: the keys come from authenticated senders,
/// a map holds one batch, and SipHash of eight strings a record was a
/// twentieth of the store's time.
#[derive(Debug, Default)]
pub struct HitCounts<'a> {
    pub rows: std::collections::HashMap<HitKey<'a>, HitCount<'a>, foldhash::fast::RandomState>,
    /// How often each field was set, by the same keys less the status.
    pub fields: std::collections::HashMap<FieldKey<'a>, u64, foldhash::fast::RandomState>,
}

/// Who called which operation in which hour: what a row of `hits` and a
/// row of `field_hits` are both counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey<'a> {
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub workload: &'a str,
    pub client: &'a str,
    pub method: &'a str,
    pub template: &'a str,
    pub hour: &'a str,
}

/// The columns of a [`CallKey`], in the order [`CallKey::columns`] gives
/// their values.
macro_rules! call_columns {
    () => {
        "pod_namespace, pod_name, workload, client, method, template, hour"
    };
}
pub(crate) use call_columns;

impl<'a> CallKey<'a> {
    /// Its values, in the order of [`call_columns!`].
    pub(crate) fn columns(&self) -> [&'a str; 7] {
        [
            self.pod_namespace,
            self.pod_name,
            self.workload,
            self.client,
            self.method,
            self.template,
            self.hour,
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldKey<'a> {
    pub call: CallKey<'a>,
    pub field: &'a str,
}

/// How often one field of one operation's request body was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldHit {
    pub method: String,
    pub template: String,
    pub field: String,
    pub hits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HitKey<'a> {
    pub call: CallKey<'a>,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct HitCount<'a> {
    pub hits: u64,
    pub first_seen: &'a str,
    pub last_seen: &'a str,
}

/// `2026-11-24T06:00:00.123456Z` -> `2026-11-24T06`: the hour bucket of hits.
pub(crate) fn hour_of(started_at: &str) -> &str {
    started_at.get(..13).unwrap_or(started_at)
}

impl<'a> HitCounts<'a> {
    /// Counts a newly stored record toward each of its templates.
    pub fn add(&mut self, item: &'a IngestItem) {
        if item.later_part {
            return;
        }
        let hour = hour_of(&item.started_at);
        let started_at = item.started_at.as_str();
        let call = |template: &'a str| CallKey {
            pod_namespace: &item.pod_namespace,
            pod_name: &item.pod_name,
            workload: &item.workload,
            client: &item.client,
            method: &item.method,
            template,
            hour,
        };
        for template in &item.templates {
            let key = HitKey {
                call: call(template),
                status: item.status,
            };
            let entry = self.rows.entry(key).or_insert(HitCount {
                hits: 0,
                first_seen: started_at,
                last_seen: started_at,
            });
            entry.hits += 1;
            entry.first_seen = entry.first_seen.min(started_at);
            entry.last_seen = entry.last_seen.max(started_at);
        }
        // A body belongs to its request's own operation: the second template
        // of a watch takes no body.
        let Some(template) = item.templates.first() else {
            return;
        };
        for field in &item.fields {
            let key = FieldKey {
                call: call(template),
                field,
            };
            *self.fields.entry(key).or_default() += 1;
        }
    }
}

/// One batch as it came, for [`Store::ingest_group`].
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub items: &'a [IngestItem],
    pub drops: &'a [DropReport],
    /// The batch's lines, packed where the batch was received, off the
    /// store's writing thread, and how its records' lines are found in
    /// them; `None` packs the items' lines here.
    pub packed: Option<(&'a [u8], packed::Lines)>,
}

impl Batch<'_> {
    /// The packed lines of a batch that has items, and how to find a
    /// record's line in them.
    pub(crate) fn packed_lines(
        &self,
    ) -> Result<(std::borrow::Cow<'_, [u8]>, packed::Lines), StoreError> {
        Ok(match self.packed {
            Some((blob, lines)) => (std::borrow::Cow::Borrowed(blob), lines),
            None => (
                std::borrow::Cow::Owned(packed::pack(self.items)?),
                packed::Lines::Items,
            ),
        })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Which records a report covers. Empty fields match everything.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub workload: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// RFC 3339: only hits at or after this time (hour granularity).
    #[serde(default)]
    pub since: Option<String>,
}

/// Hits of one (method, template, status, client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub method: String,
    pub template: String,
    pub status: u16,
    pub client: String,
    pub hits: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// Whose traffic a store holds: one pod and client, with its workload.
/// What a reader picks a report's scope from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    pub namespace: String,
    pub pod: String,
    pub workload: String,
    pub client: String,
    pub hits: u64,
    pub last_seen: String,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub pod_namespace: String,
    /// The NDJSON line it was ingested from.
    pub line: String,
}

/// A test of an object's JSON text, as the store wrote it.
pub type ObjectTest<'a> = &'a dyn Fn(&[u8]) -> bool;

/// Which objects an object search returns. Empty fields match everything.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ObjectFilter {
    /// A Kind or a plural resource, in any case.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// A part of the name.
    #[serde(default)]
    pub name: Option<String>,
}

/// An object with recorded versions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectSummary {
    pub group: String,
    pub resource: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub versions: u64,
    pub last_seen: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
}

pub trait Store: Send + Sync {
    /// Stores a batch atomically and durably; records already stored (by id)
    /// are counted as duplicates and change nothing.
    fn ingest(
        &self,
        items: &[IngestItem],
        drops: &[DropReport],
    ) -> Result<IngestOutcome, StoreError> {
        let mut outcomes = self.ingest_group(&[Batch {
            items,
            drops,
            packed: None,
        }])?;
        Ok(outcomes.pop().unwrap_or_default())
    }
    /// Stores several batches in one transaction, with one durable commit,
    /// and tells each batch's outcome in order. All are stored, or none.
    fn ingest_group(&self, batches: &[Batch<'_>]) -> Result<Vec<IngestOutcome>, StoreError>;
    fn hits(&self, scope: &Scope) -> Result<Vec<Hit>, StoreError>;
    /// The fields set in the scope's request bodies, by operation.
    fn field_hits(&self, scope: &Scope) -> Result<Vec<FieldHit>, StoreError>;
    /// Records dropped by interceptors before reaching the store.
    fn dropped(&self, scope: &Scope) -> Result<u64, StoreError>;
    /// The namespaces that have a pod of this name.
    fn namespaces_of_pod(&self, pod: &str) -> Result<Vec<String>, StoreError>;
    fn record_count(&self) -> Result<u64, StoreError>;
    /// A stored record: its line as it came, or as ingest wrote it again
    /// with its protobuf bodies decoded.
    fn record(&self, id: &str) -> Result<Option<StoredRecord>, StoreError>;
    /// Every (namespace, pod, workload, client) with traffic.
    fn origins(&self) -> Result<Vec<Origin>, StoreError>;
    /// Objects with versions that pass the filter, latest first, at most
    /// `limit` of them.
    fn objects(
        &self,
        filter: &ObjectFilter,
        limit: usize,
    ) -> Result<Vec<ObjectSummary>, StoreError>;
    /// Removes raw records that started before `before` (RFC 3339), and
    /// then the oldest beyond `keep_at_most`; the aggregates (hits, fields,
    /// versions) stay. Returns how many went.
    fn prune_records(&self, before: &str, keep_at_most: Option<u64>) -> Result<u64, StoreError>;
    /// Every version of the objects a query names (unordered), tombstones
    /// included; with their objects only if `objects` (they are most of the
    /// bytes, and a listing or a diff needs few or none).
    fn versions(&self, query: &ObjectQuery, objects: bool) -> Result<Vec<Version>, StoreError>;
    /// What orders the versions of the objects a query names, from the key
    /// columns alone: each version with only its group, resource, kind,
    /// name, uid, resourceVersion and time (no document is decoded).
    fn version_keys(&self, query: &ObjectQuery) -> Result<Vec<Version>, StoreError> {
        let keyed = self.keyed_versions(query, None)?;
        Ok(keyed.into_iter().map(|(v, _)| v).collect())
    }
    /// [`Store::version_keys`], each with whether `holds` is true of its
    /// object's JSON text as the store wrote it (false for a tombstone
    /// without an object). Bisect asks this: each object is looked at where
    /// it is read, not copied out or decoded whole.
    fn version_keys_where(
        &self,
        query: &ObjectQuery,
        holds: ObjectTest<'_>,
    ) -> Result<Vec<(Version, bool)>, StoreError> {
        self.keyed_versions(query, Some(holds))
    }
    /// The key columns of a query's versions, and `holds` of each object's
    /// text where given (false where not).
    fn keyed_versions(
        &self,
        query: &ObjectQuery,
        holds: Option<ObjectTest<'_>>,
    ) -> Result<Vec<(Version, bool)>, StoreError>;
    /// Whole versions (documents and objects) by (uid, resourceVersion).
    fn versions_by_key(&self, keys: &[(String, String)]) -> Result<Vec<Version>, StoreError>;
    /// The writes to those objects that the apiserver refused.
    fn attempts(&self, query: &ObjectQuery) -> Result<Vec<Attempt>, StoreError>;
}

use crate::provenance::{Attempt, ObjectQuery, Version};

/// What differs between the two stores' SQL in the queries they share.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

pub(crate) const ORIGINS_SQL: &str = "SELECT pod_namespace, pod_name, workload, client, CAST(SUM(hits) AS BIGINT), MAX(last_seen) FROM hits
     GROUP BY pod_namespace, pod_name, workload, client ORDER BY 1, 2, 4";

/// The object search, and its arguments in placeholder order.
pub(crate) fn objects_sql(
    filter: &ObjectFilter,
    limit: usize,
    dialect: Dialect,
) -> (String, Vec<String>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(kind) = given(&filter.kind) {
        args.push(kind.to_lowercase());
        let p = dialect.placeholder(args.len());
        conditions.push(format!("(LOWER(kind) = {p} OR resource = {p})"));
    }
    if let Some(namespace) = given(&filter.namespace) {
        args.push(namespace.to_string());
        conditions.push(format!("namespace = {}", dialect.placeholder(args.len())));
    }
    if let Some(name) = given(&filter.name) {
        args.push(name.to_string());
        let p = dialect.placeholder(args.len());
        conditions.push(match dialect {
            Dialect::Sqlite => format!("instr(name, {p}) > 0"),
            Dialect::Postgres => format!("strpos(name, {p}) > 0"),
        });
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (
        format!(
            "SELECT grp, resource, MAX(kind), namespace, name, COUNT(*), MAX(time) FROM versions{filter}
             GROUP BY grp, resource, namespace, name ORDER BY MAX(time) DESC, namespace, name LIMIT {limit}"
        ),
        args,
    )
}

/// Of the versions stored under a namespace and name, those of the asked
/// resource or Kind, and the rest of their lineages (a tombstone from a
/// Status does not know its Kind).
pub(crate) fn select_versions(query: &ObjectQuery, candidates: Vec<Version>) -> Vec<Version> {
    select_versions_by(query, candidates, |v| v)
}

/// [`select_versions`] of anything that carries a version.
pub(crate) fn select_versions_by<T>(
    query: &ObjectQuery,
    candidates: Vec<T>,
    version: impl Fn(&T) -> &Version,
) -> Vec<T> {
    // Most often every version is of the one resource asked for.
    if candidates
        .iter()
        .map(&version)
        .all(|v| query.matches(&v.group, &v.resource, &v.kind))
    {
        return candidates;
    }
    let uids: std::collections::HashSet<String> = candidates
        .iter()
        .map(&version)
        .filter(|v| query.matches(&v.group, &v.resource, &v.kind))
        .map(|v| v.uid.clone())
        .collect();
    candidates
        .into_iter()
        .filter(|c| uids.contains(&version(c).uid))
        .collect()
}

/// A version that only says where it stands: for ordering.
/// The columns are group, resource, kind, namespace, name, uid,
/// resourceVersion and time, in that order.
pub(crate) fn key_version(columns: [String; 8]) -> Version {
    let [
        group,
        resource,
        kind,
        namespace,
        name,
        uid,
        resource_version,
        time,
    ] = columns;
    Version {
        group,
        resource,
        kind,
        api_version: String::new(),
        namespace,
        name,
        uid,
        resource_version,
        generation: None,
        time,
        verb: String::new(),
        source: crate::provenance::Source::Observed,
        deleted: false,
        partial: false,
        who: Default::default(),
        record: String::new(),
        object: None,
    }
}

/// What another sighting of a stored (uid, resourceVersion) writes.
#[derive(Debug, PartialEq)]
pub(crate) enum Merged {
    /// Nothing changes: the same state seen again, as a relist or a poll
    /// sees it. Most sightings are this, and cost no write.
    Nothing,
    /// The document changes (who wrote it, how), the stored object stays.
    Document(Version, String),
    /// The sighting's object replaces the stored one (a whole object
    /// replaces a partial one). The version comes without its object, with
    /// its document.
    Whole(Version, String),
}

/// Merges a sighting into a stored version, knowing only its document and
/// whether it has an object: neither object is read or decoded.
pub(crate) fn merge_into(
    document: &str,
    has_object: bool,
    sighting: &EncodedVersion,
) -> Result<Merged, StoreError> {
    use serde_json::Value;
    // Most sightings change nothing: a few fields of the document say so,
    // without decoding it whole (a third of the records of the ingest
    // bench see a stored version again).
    let fields: crate::provenance::StandingFields<'_> = undoc_borrowed(document)?;
    let mut seen = sighting.version.standing();
    seen.has_object = sighting.object.is_some();
    if !fields.standing(has_object).changed_by(&seen) {
        return Ok(Merged::Nothing);
    }
    let mut stored: Version = undoc(document)?;
    // Two different stand-ins for the objects, whose presence alone counts:
    // the merge's object then says which one it kept.
    stored.object = has_object.then_some(Value::Null);
    let mut seen = sighting.version.clone();
    seen.object = sighting.object.is_some().then_some(Value::Bool(true));
    let mut merged = stored.clone();
    merged.merge(seen);
    if merged == stored {
        return Ok(Merged::Nothing);
    }
    let took_object = merged.object.take() == Some(Value::Bool(true));
    let document = doc(&merged)?;
    Ok(if took_object {
        Merged::Whole(merged, document)
    } else {
        Merged::Document(merged, document)
    })
}

pub(crate) fn join(document: &str, object: Option<&str>) -> Result<Version, StoreError> {
    let mut version: Version = undoc(document)?;
    version.object = object.map(undoc).transpose()?;
    Ok(version)
}

/// The documents stored for versions and attempts: their JSON.
pub(crate) fn doc<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("encoding a version: {e}")))
}

pub(crate) fn undoc<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    undoc_borrowed(text)
}

/// [`undoc`], for a type that borrows from the text.
pub(crate) fn undoc_borrowed<'a, T: serde::Deserialize<'a>>(
    text: &'a str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Invalid(format!("a stored version is not readable: {e}")))
}

/// A record as tests ingest it.
#[cfg(test)]
pub(crate) fn test_item(id: &str, template: &str, status: u16) -> IngestItem {
    IngestItem {
        id: id.into(),
        started_at: "2026-11-24T06:00:00.000001Z".into(),
        pod_namespace: "ns".into(),
        pod_name: "web-1".into(),
        workload: "Deployment/web".into(),
        client: "kubectl/v1.35.4".into(),
        method: "GET".into(),
        path: "/x".into(),
        status,
        templates: vec![template.into()],
        line: format!("{{\"id\":\"{id}\"}}"),
        line_number: 1,
        fields: Vec::new(),
        later_part: false,
        versions: Vec::new(),
        attempts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::Source;

    fn sighting(source: Source, partial: bool) -> Version {
        Version {
            api_version: "v1".into(),
            verb: "get".into(),
            source,
            partial,
            record: "r1".into(),
            object: Some(serde_json::json!({"data": {"k": "v"}})),
            ..key_version(
                ["", "configmaps", "ConfigMap", "ns", "c", "u", "7", "t1"].map(String::from),
            )
        }
    }

    /// Every way a stored version and a sighting can stand for a merge.
    fn standings() -> Vec<(Version, bool)> {
        let mut all = Vec::new();
        for bits in 0..64u32 {
            let bit = |i: u32| bits & (1 << i) != 0;
            let version = Version {
                kind: if bit(0) { "Scale" } else { "ConfigMap" }.into(),
                source: if bit(1) {
                    Source::Write
                } else {
                    Source::Observed
                },
                partial: bit(2),
                deleted: bit(3),
                generation: bit(4).then_some(3),
                object: None,
                ..sighting(Source::Observed, false)
            };
            all.push((version, bit(5)));
        }
        all
    }

    #[test]
    fn the_fields_read_for_a_merge_say_whether_it_changes_anything_exactly_as_the_merge_does() {
        use serde_json::Value;
        for (stored, stored_has_object) in standings() {
            let document = doc(&stored).unwrap();
            for (seen, seen_has_object) in standings() {
                let sighting = EncodedVersion {
                    object: seen_has_object.then(|| "{}".to_string()),
                    ..EncodedVersion::new(seen.clone()).unwrap()
                };
                // The whole merge, as it runs when something changes.
                let mut before = stored.clone();
                before.object = stored_has_object.then_some(Value::Null);
                let mut after = before.clone();
                let mut seen = seen.clone();
                seen.object = seen_has_object.then_some(Value::Bool(true));
                after.merge(seen);
                let merged = merge_into(&document, stored_has_object, &sighting).unwrap();
                assert_eq!(
                    merged == Merged::Nothing,
                    after == before,
                    "stored {stored:?} ({stored_has_object}), seen {:?} ({seen_has_object})",
                    sighting.version
                );
            }
        }
    }

    #[test]
    fn a_merge_writes_only_what_changes() {
        let encoded = |v: Version| EncodedVersion::new(v).unwrap();
        let observed = encoded(sighting(Source::Observed, false));
        let (document, has_object) = (observed.document.clone(), true);
        assert_eq!(
            merge_into(&document, has_object, &observed).unwrap(),
            Merged::Nothing
        );
        let written = encoded(Version {
            verb: "update".into(),
            record: "r2".into(),
            time: "t2".into(),
            ..sighting(Source::Write, false)
        });
        match merge_into(&document, has_object, &written).unwrap() {
            Merged::Document(_, d) => {
                let v: Version = undoc(&d).unwrap();
                assert_eq!(
                    (v.source, v.verb.as_str(), v.object),
                    (Source::Write, "update", None)
                );
            }
            other => panic!("{other:?}"),
        }
        // A whole object replaces a partial one; a partial one never
        // replaces a whole one.
        let partial = encoded(sighting(Source::Observed, true));
        match merge_into(&partial.document, true, &observed).unwrap() {
            Merged::Whole(_, d) => {
                let v: Version = undoc(&d).unwrap();
                assert_eq!((v.partial, v.object), (false, None));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            merge_into(&observed.document, true, &partial).unwrap(),
            Merged::Nothing
        );
        // A stored version without an object takes the sighting's.
        let mut bare = sighting(Source::Observed, false);
        bare.object = None;
        let bare = encoded(bare);
        assert!(matches!(
            merge_into(&bare.document, false, &observed).unwrap(),
            Merged::Whole(..)
        ));
    }
}
