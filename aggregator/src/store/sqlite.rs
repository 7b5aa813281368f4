//! The embedded store: one SQLite file in WAL mode, with `synchronous=FULL`
//! so that a batch acknowledged is a batch on disk.

use super::{
    Batch, Dialect, FieldHit, Hit, IngestItem, IngestOutcome, Merged, ObjectFilter, ObjectSummary,
    ObjectTest, Origin, Scope, Store, StoreError, StoredRecord, doc, hour_of, join, key_version,
    merge_into, packed, undoc,
};
use crate::provenance::{Attempt, ObjectQuery, Version};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE records (
    id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    pod_namespace TEXT NOT NULL,
    pod_name TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX records_by_pod ON records (pod_namespace, pod_name);
CREATE TABLE hits (
    pod_namespace TEXT NOT NULL,
    pod_name TEXT NOT NULL,
    workload TEXT NOT NULL,
    client TEXT NOT NULL,
    method TEXT NOT NULL,
    template TEXT NOT NULL,
    status INTEGER NOT NULL,
    hour TEXT NOT NULL,
    hits INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (pod_namespace, pod_name, workload, client, method, template, status, hour)
);
CREATE TABLE drop_reports (
    id TEXT PRIMARY KEY,
    pod_namespace TEXT NOT NULL,
    pod_name TEXT NOT NULL,
    dropped INTEGER NOT NULL,
    first_dropped_at TEXT NOT NULL,
    last_dropped_at TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE versions (
    uid TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    grp TEXT NOT NULL,
    resource TEXT NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    time TEXT NOT NULL,
    doc TEXT NOT NULL,
    object TEXT,
    PRIMARY KEY (uid, resource_version)
);
CREATE INDEX versions_by_name ON versions (namespace, name);
CREATE TABLE attempts (
    record TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    resource TEXT NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX attempts_by_name ON attempts (namespace, name);
"#,
    r#"
CREATE TABLE field_hits (
    pod_namespace TEXT NOT NULL,
    pod_name TEXT NOT NULL,
    workload TEXT NOT NULL,
    client TEXT NOT NULL,
    method TEXT NOT NULL,
    template TEXT NOT NULL,
    hour TEXT NOT NULL,
    field TEXT NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (pod_namespace, pod_name, workload, client, method, template, hour, field)
);
"#,
    // Raw lines move to one compressed blob per batch (`packed.rs`); the
    // pod index was never read.
    r#"
CREATE TABLE record_batches (
    id INTEGER PRIMARY KEY,
    lines BLOB NOT NULL
);
ALTER TABLE records ADD COLUMN batch INTEGER;
ALTER TABLE records ADD COLUMN batch_line INTEGER;
DROP INDEX records_by_pod;
CREATE INDEX records_by_batch ON records (batch);
"#,
    // Versions keyed by resourceVersion first. The apiserver hands out
    // resourceVersions in order, so the versions a write or a watch shows
    // are the newest and go to the end of this key; keyed by uid, each
    // went to a random page of it, and every commit wrote all those pages
    // again (the ingest bench wrote 1,765 MB for a 280 MB store; 1,419 MB
    // with this key). Every lookup names both columns.
    r#"
CREATE TABLE versions_by_rv (
    uid TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    grp TEXT NOT NULL,
    resource TEXT NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    time TEXT NOT NULL,
    doc TEXT NOT NULL,
    object TEXT,
    PRIMARY KEY (resource_version, uid)
);
INSERT INTO versions_by_rv SELECT uid, resource_version, grp, resource, kind, namespace, name, time, doc, object FROM versions;
DROP TABLE versions;
ALTER TABLE versions_by_rv RENAME TO versions;
CREATE INDEX versions_by_name ON versions (namespace, name);
"#,
    // Versions found by name through a table of their names, and new names
    // wait in a small one before they join it (see RECENT_NAMES_TO_MERGE).
    r#"
CREATE TABLE version_names (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (namespace, name, resource_version, uid)
) WITHOUT ROWID;
CREATE TABLE version_names_recent (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (namespace, name, resource_version, uid)
) WITHOUT ROWID;
INSERT INTO version_names SELECT namespace, name, resource_version, uid FROM versions;
DROP INDEX versions_by_name;
"#,
];

/// Versions whose (namespace, name) are ?1 and ?2: the versions table has
/// no index by name of its own (see [`RECENT_NAMES_TO_MERGE`]).
macro_rules! versions_named {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM versions WHERE (resource_version, uid) IN (
               SELECT resource_version, uid FROM version_names WHERE namespace = ?1 AND name = ?2
               UNION ALL
               SELECT resource_version, uid FROM version_names_recent WHERE namespace = ?1 AND name = ?2)"
        )
    };
}

/// The page size of a new store.
const SQLITE_PAGE_BYTES: i64 = 16 * 1024;

/// The page cache of the store's connection.
const SQLITE_CACHE_KIB: i64 = 64 * 1024;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// [`RECENT_NAMES_TO_MERGE`], but for tests.
    names_to_merge: i64,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        // Set before the first table, so only a new store takes it. A
        // version's row (its document and object, 2 to 3 KB) fits once in a
        // 4 KiB page and leaves the rest unused; 16 KiB pages hold five or
        // six, and the same ingest writes a fifth fewer bytes.
        conn.pragma_update(None, "page_size", SQLITE_PAGE_BYTES)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // SQLite's own page cache defaults to 2 MiB, so reading an object's
        // 10,000 versions went to the OS for most pages (bisect read them in
        // 19 ms, 7 of it in page reads; 1 ms with this cache warm).
        conn.pragma_update(None, "cache_size", -SQLITE_CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            names_to_merge: RECENT_NAMES_TO_MERGE,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the store's schema is version {current}, newer than this aggregator's {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            [i as i64 + 1],
        )?;
        tx.commit()?;
    }
    Ok(())
}

struct Filter {
    sql: String,
    args: Vec<String>,
}

fn filter(scope: &Scope, has_workload: bool) -> Filter {
    let mut sql = String::from(" WHERE 1=1");
    let mut args = Vec::new();
    let mut add = |column: &str, value: &Option<String>, op: &str| {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            args.push(v.clone());
            sql.push_str(&format!(" AND {column} {op} ?{}", args.len()));
        }
    };
    add("pod_namespace", &scope.namespace, "=");
    add("pod_name", &scope.pod, "=");
    if has_workload {
        add("workload", &scope.workload, "=");
        add("client", &scope.user_agent, "=");
        add(
            "hour",
            &scope.since.as_ref().map(|s| hour_of(s).to_string()),
            ">=",
        );
    }
    Filter { sql, args }
}

impl Store for SqliteStore {
    fn ingest_group(&self, batches: &[Batch<'_>]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let outcomes = batches
            .iter()
            .map(|b| ingest_batch(&tx, b))
            .collect::<Result<Vec<_>, _>>()?;
        merge_recent_names(&tx, self.names_to_merge)?;
        tx.commit()?;
        Ok(outcomes)
    }

    fn hits(&self, scope: &Scope) -> Result<Vec<Hit>, StoreError> {
        let conn = self.lock();
        let f = filter(scope, true);
        let sql = format!(
            "SELECT method, template, status, client, SUM(hits), MIN(first_seen), MAX(last_seen) FROM hits{}
             GROUP BY method, template, status, client ORDER BY template, method, status, client",
            f.sql
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(f.args.iter()), |r| {
            Ok(Hit {
                method: r.get(0)?,
                template: r.get(1)?,
                status: r.get::<_, i64>(2)? as u16,
                client: r.get(3)?,
                hits: r.get::<_, i64>(4)? as u64,
                first_seen: r.get(5)?,
                last_seen: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn field_hits(&self, scope: &Scope) -> Result<Vec<FieldHit>, StoreError> {
        let conn = self.lock();
        let f = filter(scope, true);
        let sql = format!(
            "SELECT method, template, field, SUM(hits) FROM field_hits{} GROUP BY method, template, field",
            f.sql
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(f.args.iter()), |r| {
            Ok(FieldHit {
                method: r.get(0)?,
                template: r.get(1)?,
                field: r.get(2)?,
                hits: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn dropped(&self, scope: &Scope) -> Result<u64, StoreError> {
        let conn = self.lock();
        let f = filter(scope, false);
        let sql = format!(
            "SELECT COALESCE(SUM(dropped), 0) FROM drop_reports{}",
            f.sql
        );
        let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(f.args.iter()), |r| {
            r.get(0)
        })?;
        Ok(n as u64)
    }

    fn namespaces_of_pod(&self, pod: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT DISTINCT pod_namespace FROM hits WHERE pod_name = ?1 ORDER BY 1")?;
        let rows = stmt.query_map([pod], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn versions(&self, query: &ObjectQuery, objects: bool) -> Result<Vec<Version>, StoreError> {
        let conn = self.lock();
        let sql = if objects {
            versions_named!("doc, object")
        } else {
            versions_named!("doc, NULL")
        };
        let mut select = conn.prepare_cached(sql)?;
        let rows = select
            .query_map(params![query.namespace, query.name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let all = rows
            .iter()
            .map(|(d, o)| join(d, o.as_deref()))
            .collect::<Result<Vec<Version>, _>>()?;
        Ok(super::select_versions(query, all))
    }

    /// The key columns of a query's versions, and `holds` of each object's
    /// text where asked, read in place from SQLite's page.
    fn keyed_versions(
        &self,
        query: &ObjectQuery,
        holds: Option<ObjectTest<'_>>,
    ) -> Result<Vec<(Version, bool)>, StoreError> {
        let conn = self.lock();
        let mut select = conn.prepare_cached(if holds.is_some() {
            versions_named!(
                "grp, resource, kind, namespace, name, uid, resource_version, time, object"
            )
        } else {
            versions_named!(
                "grp, resource, kind, namespace, name, uid, resource_version, time, NULL"
            )
        })?;
        let mut all = Vec::new();
        let mut rows = select.query(params![query.namespace, query.name])?;
        while let Some(r) = rows.next()? {
            let keys = key_version([
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ]);
            let held = match (holds, r.get_ref(8)?) {
                (Some(holds), ValueRef::Text(object)) => holds(object),
                _ => false,
            };
            all.push((keys, held));
        }
        Ok(super::select_versions_by(query, all, |(v, _)| v))
    }

    fn versions_by_key(&self, keys: &[(String, String)]) -> Result<Vec<Version>, StoreError> {
        let conn = self.lock();
        let mut select = conn.prepare_cached(
            "SELECT doc, object FROM versions WHERE uid = ?1 AND resource_version = ?2",
        )?;
        let mut out = Vec::new();
        for (uid, rv) in keys {
            let row: Option<(String, Option<String>)> = select
                .query_row(params![uid, rv], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((d, o)) = row {
                out.push(join(&d, o.as_deref())?);
            }
        }
        Ok(out)
    }

    fn attempts(&self, query: &ObjectQuery) -> Result<Vec<Attempt>, StoreError> {
        let conn = self.lock();
        let mut select =
            conn.prepare_cached("SELECT doc FROM attempts WHERE namespace = ?1 AND name = ?2")?;
        let docs = select
            .query_map(params![query.namespace, query.name], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<String>, _>>()?;
        let all = docs
            .iter()
            .map(|d| undoc::<Attempt>(d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(all
            .into_iter()
            .filter(|a| query.matches(&a.group, &a.resource, &a.kind))
            .collect())
    }

    fn record(&self, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let conn = self.lock();
        let row: Option<(String, String, Option<i64>, Option<i64>)> = conn
            .query_row(
                "SELECT pod_namespace, line, batch, batch_line FROM records WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((pod_namespace, line, batch, index)) = row else {
            return Ok(None);
        };
        let line = match (batch, index) {
            (Some(batch), Some(index)) => {
                let packed: Vec<u8> = conn.query_row(
                    "SELECT lines FROM record_batches WHERE id = ?1",
                    [batch],
                    |r| r.get(0),
                )?;
                packed::line(&packed, index, id)?
            }
            // Stored before lines were packed.
            _ => line,
        };
        Ok(Some(StoredRecord {
            pod_namespace,
            line,
        }))
    }

    fn prune_records(&self, before: &str, keep_at_most: Option<u64>) -> Result<u64, StoreError> {
        let conn = self.lock();
        let mut gone = conn.execute("DELETE FROM records WHERE started_at < ?1", [before])? as u64;
        if let Some(keep) = keep_at_most {
            gone += conn.execute(
                "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY started_at DESC LIMIT -1 OFFSET ?1)",
                [keep as i64],
            )? as u64;
        }
        // A batch's blob goes with its last record.
        conn.execute(
            "DELETE FROM record_batches WHERE NOT EXISTS (SELECT 1 FROM records WHERE records.batch = record_batches.id)",
            [],
        )?;
        Ok(gone)
    }

    fn record_count(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let n: Option<i64> = conn
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
            .optional()?;
        Ok(n.unwrap_or(0) as u64)
    }

    fn origins(&self) -> Result<Vec<Origin>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(super::ORIGINS_SQL)?;
        let rows = stmt.query_map([], |r| {
            Ok(Origin {
                namespace: r.get(0)?,
                pod: r.get(1)?,
                workload: r.get(2)?,
                client: r.get(3)?,
                hits: r.get::<_, i64>(4)? as u64,
                last_seen: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn objects(
        &self,
        filter: &ObjectFilter,
        limit: usize,
    ) -> Result<Vec<ObjectSummary>, StoreError> {
        let (sql, args) = super::objects_sql(filter, limit, Dialect::Sqlite);
        let conn = self.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(ObjectSummary {
                group: r.get(0)?,
                resource: r.get(1)?,
                kind: r.get(2)?,
                namespace: r.get(3)?,
                name: r.get(4)?,
                versions: r.get::<_, i64>(5)? as u64,
                last_seen: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// One batch, within the group's transaction.
/// The statements a batch runs once a record or a version, prepared once a
/// batch: looking each up in rusqlite's cache, a hash of its SQL text, cost
/// about as much as running some of them.
struct Statements<'t> {
    insert_record: rusqlite::CachedStatement<'t>,
    read_version: rusqlite::CachedStatement<'t>,
    write_version: rusqlite::CachedStatement<'t>,
    update_version: rusqlite::CachedStatement<'t>,
    name_version: rusqlite::CachedStatement<'t>,
    insert_attempt: rusqlite::CachedStatement<'t>,
}

impl<'t> Statements<'t> {
    fn prepare(tx: &'t rusqlite::Transaction<'_>) -> Result<Statements<'t>, StoreError> {
        Ok(Statements {
            insert_record: tx.prepare_cached(
                "INSERT OR IGNORE INTO records (id, started_at, pod_namespace, pod_name, method, path, status, line, batch, batch_line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '', ?8, ?9)",
            )?,
            read_version: tx.prepare_cached(
                "SELECT doc, object IS NOT NULL FROM versions WHERE uid = ?1 AND resource_version = ?2",
            )?,
            write_version: tx.prepare_cached(
                "INSERT OR REPLACE INTO versions (uid, resource_version, grp, resource, kind, namespace, name, time, doc, object)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?,
            update_version: tx.prepare_cached(
                "UPDATE versions SET kind = ?3, time = ?4, doc = ?5 WHERE uid = ?1 AND resource_version = ?2",
            )?,
            name_version: tx.prepare_cached(
                "INSERT OR IGNORE INTO version_names_recent (namespace, name, resource_version, uid) VALUES (?1, ?2, ?3, ?4)",
            )?,
            insert_attempt: tx.prepare_cached(
                "INSERT OR IGNORE INTO attempts (record, grp, resource, kind, namespace, name, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?,
        })
    }
}

fn ingest_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: &Batch<'_>,
) -> Result<IngestOutcome, StoreError> {
    let (items, drops) = (batch.items, batch.drops);
    let mut outcome = IngestOutcome::default();
    let batch = if items.is_empty() {
        None
    } else {
        tx.execute(
            "INSERT INTO record_batches (lines) VALUES (?1)",
            [batch.packed_lines()?],
        )?;
        Some(tx.last_insert_rowid())
    };
    {
        let mut statements = Statements::prepare(tx)?;
        let mut counts = super::HitCounts::default();
        for (line, item) in items.iter().enumerate() {
            let inserted = statements.insert_record.execute(params![
                item.id,
                item.started_at,
                item.pod_namespace,
                item.pod_name,
                item.method,
                item.path,
                item.status,
                batch,
                line as i64
            ])?;
            if inserted == 0 {
                outcome.duplicates += 1;
            } else {
                outcome.accepted += 1;
                counts.add(item);
                store_provenance(&mut statements, item)?;
            }
        }
        let mut count = tx.prepare_cached(
            "INSERT INTO hits (pod_namespace, pod_name, workload, client, method, template, status, hour, hits, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT DO UPDATE SET hits = hits + excluded.hits,
               first_seen = MIN(first_seen, excluded.first_seen),
               last_seen = MAX(last_seen, excluded.last_seen)",
        )?;
        for (key, c) in &counts.rows {
            count.execute(params![
                key.pod_namespace,
                key.pod_name,
                key.workload,
                key.client,
                key.method,
                key.template,
                key.status,
                key.hour,
                c.hits as i64,
                c.first_seen,
                c.last_seen
            ])?;
        }
        let mut count_field = tx.prepare_cached(
            "INSERT INTO field_hits (pod_namespace, pod_name, workload, client, method, template, hour, field, hits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET hits = hits + excluded.hits",
        )?;
        for (k, hits) in &counts.fields {
            count_field.execute(params![
                k.pod_namespace,
                k.pod_name,
                k.workload,
                k.client,
                k.method,
                k.template,
                k.hour,
                k.field,
                *hits as i64
            ])?;
        }
        let mut drop_insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO drop_reports (id, pod_namespace, pod_name, dropped, first_dropped_at, last_dropped_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for d in drops {
            drop_insert.execute(params![
                d.id,
                d.pod.namespace,
                d.pod.name,
                d.dropped as i64,
                d.first_dropped_at,
                d.last_dropped_at
            ])?;
        }
    }
    if let (Some(batch), 0) = (batch, outcome.accepted) {
        // Every record was already stored: their lines are kept elsewhere.
        tx.execute("DELETE FROM record_batches WHERE id = ?1", [batch])?;
    }
    Ok(outcome)
}

/// How many versions' names wait in `version_names_recent` before they go
/// into `version_names` at once. Names land at random places in their
/// index, so each commit wrote nearly every page of an index by name, twice
/// (the WAL, then the checkpoint): a third of all the bytes ingest wrote.
/// New names wait in a table of a few dozen pages instead, and join the
/// large index in runs of this many, which touch each of its pages once.
const RECENT_NAMES_TO_MERGE: i64 = 8192;

/// Moves the waiting names into `version_names` once there are enough.
fn merge_recent_names(tx: &rusqlite::Transaction<'_>, at: i64) -> Result<(), StoreError> {
    let waiting: i64 = tx.query_row("SELECT COUNT(*) FROM version_names_recent", [], |r| {
        r.get(0)
    })?;
    if waiting >= at {
        tx.execute_batch(
            "INSERT OR IGNORE INTO version_names SELECT * FROM version_names_recent;
             DELETE FROM version_names_recent;",
        )?;
    }
    Ok(())
}

/// A new record's versions, each merged with any earlier sighting of the
/// same (uid, resourceVersion), and its refused writes.
fn store_provenance(statements: &mut Statements<'_>, item: &IngestItem) -> Result<(), StoreError> {
    for sighting in &item.versions {
        let version = &sighting.version;
        let existing: Option<(String, bool)> = statements
            .read_version
            .query_row(params![version.uid, version.resource_version], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((stored, has_object)) = existing else {
            write_version(
                &mut statements.write_version,
                version,
                &sighting.document,
                sighting.object.as_deref(),
            )?;
            statements.name_version.execute(params![
                version.namespace,
                version.name,
                version.resource_version,
                version.uid
            ])?;
            continue;
        };
        match merge_into(&stored, has_object, sighting)? {
            Merged::Nothing => {}
            Merged::Document(merged, document) => {
                statements.update_version.execute(params![
                    merged.uid,
                    merged.resource_version,
                    merged.kind,
                    merged.time,
                    document
                ])?;
            }
            Merged::Whole(merged, document) => {
                write_version(
                    &mut statements.write_version,
                    &merged,
                    &document,
                    sighting.object.as_deref(),
                )?;
            }
        }
    }
    for a in &item.attempts {
        statements.insert_attempt.execute(params![
            a.record,
            a.group,
            a.resource,
            a.kind,
            a.namespace,
            a.name,
            doc(a)?
        ])?;
    }
    Ok(())
}

fn write_version(
    write: &mut rusqlite::CachedStatement<'_>,
    version: &Version,
    document: &str,
    object: Option<&str>,
) -> Result<(), StoreError> {
    write.execute(params![
        version.uid,
        version.resource_version,
        version.group,
        version.resource,
        version.kind,
        version.namespace,
        version.name,
        version.time,
        document,
        object
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_item as item;

    #[test]
    fn ingest_is_idempotent_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let batch = [
            item("a", "/t", 200),
            item("b", "/t", 200),
            item("c", "/t", 404),
        ];
        assert_eq!(
            store.ingest(&batch, &[]).unwrap(),
            IngestOutcome {
                accepted: 3,
                duplicates: 0
            }
        );
        assert_eq!(
            store.ingest(&batch, &[]).unwrap(),
            IngestOutcome {
                accepted: 0,
                duplicates: 3
            }
        );
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let hits = store.hits(&Scope::default()).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].status, hits[0].hits), (200, 2));
        assert_eq!(store.record_count().unwrap(), 3);
        let stored = store.record("b").unwrap().unwrap();
        assert_eq!(
            (stored.pod_namespace.as_str(), stored.line.as_str()),
            ("ns", r#"{"id":"b"}"#)
        );
        assert_eq!(store.record("z").unwrap(), None);
        let blobs: i64 = store
            .lock()
            .query_row("SELECT COUNT(*) FROM record_batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            blobs, 1,
            "the repeated batch kept no second copy of its lines"
        );
        let other = Scope {
            namespace: Some("elsewhere".into()),
            ..Default::default()
        };
        assert!(store.hits(&other).unwrap().is_empty());
        assert_eq!(store.namespaces_of_pod("web-1").unwrap(), ["ns"]);
    }

    #[test]
    fn a_merged_version_is_one_row_and_each_object_text_is_tested_in_place() {
        use crate::provenance::{Source, Version};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        let version = |rv: &str, source: Source| Version {
            api_version: "v1".into(),
            verb: if source == Source::Write {
                "update".into()
            } else {
                "get".into()
            },
            source,
            record: format!("r{rv}"),
            object: Some(serde_json::json!({"data": {"v": rv}})),
            ..key_version(
                [
                    "",
                    "configmaps",
                    "ConfigMap",
                    "ns",
                    "c",
                    "u",
                    rv,
                    "2026-11-30T10:00:00Z",
                ]
                .map(String::from),
            )
        };
        let with = |id: &str, v: Version| IngestItem {
            versions: vec![crate::store::EncodedVersion::new(v).unwrap()],
            ..item(id, "/t", 200)
        };
        let query = ObjectQuery {
            namespace: "ns".into(),
            resource: "configmaps".into(),
            name: "c".into(),
        };
        store
            .ingest(&[with("a", version("1", Source::Observed))], &[])
            .unwrap();
        // The same state written: merged into the same row.
        store
            .ingest(&[with("b", version("1", Source::Write))], &[])
            .unwrap();
        assert_eq!(store.version_keys(&query).unwrap().len(), 1);
        assert_eq!(
            store.versions(&query, false).unwrap()[0].source,
            Source::Write
        );
        store
            .ingest(&[with("c", version("2", Source::Write))], &[])
            .unwrap();
        assert_eq!(store.version_keys(&query).unwrap().len(), 2);
        let holds = |object: &[u8]| object == br#"{"data":{"v":"2"}}"#;
        let mut tested: Vec<(String, bool)> = store
            .version_keys_where(&query, &holds)
            .unwrap()
            .into_iter()
            .map(|(v, held)| (v.resource_version, held))
            .collect();
        tested.sort();
        assert_eq!(tested, [("1".to_string(), false), ("2".to_string(), true)]);
    }

    #[test]
    fn a_store_from_before_versions_were_keyed_by_resource_version_keeps_its_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let version = crate::provenance::Version {
            object: Some(serde_json::json!({"data": {"v": "1"}})),
            ..key_version(
                ["", "configmaps", "ConfigMap", "ns", "c", "u1", "7", "t"].map(String::from),
            )
        };
        let encoded = crate::store::EncodedVersion::new(version).unwrap();
        {
            // The store as the aggregator before this key left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
                .unwrap();
            for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute("INSERT INTO schema_migrations VALUES (?1)", [i + 1])
                    .unwrap();
            }
            conn.execute(
                "INSERT INTO versions (uid, resource_version, grp, resource, kind, namespace, name, time, doc, object)
                 VALUES ('u1', '7', '', 'configmaps', 'ConfigMap', 'ns', 'c', 't', ?1, ?2)",
                params![encoded.document, encoded.object],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let back = store
            .versions_by_key(&[("u1".to_string(), "7".to_string())])
            .unwrap();
        assert_eq!(back, [encoded.decoded().unwrap()]);
        let by_name = ObjectQuery {
            namespace: "ns".into(),
            resource: "configmaps".into(),
            name: "c".into(),
        };
        assert_eq!(store.versions(&by_name, true).unwrap(), back);
        let key: Vec<String> = store
            .lock()
            .prepare(
                "SELECT name FROM pragma_index_info(
                   (SELECT name FROM pragma_index_list('versions') WHERE origin = 'pk'))",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(key, ["resource_version", "uid"]);
    }

    #[test]
    fn versions_are_found_by_name_while_their_names_wait_and_after_they_join_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("n.db")).unwrap();
        store.names_to_merge = 3;
        let with = |id: &str, name: &str, rv: usize| IngestItem {
            versions: vec![
                crate::store::EncodedVersion::new(crate::provenance::Version {
                    object: Some(serde_json::json!({"data": {"v": rv}})),
                    ..key_version(
                        [
                            "",
                            "configmaps",
                            "ConfigMap",
                            "ns",
                            name,
                            &format!("uid-{name}"),
                            &rv.to_string(),
                            "2026-11-30T10:00:00Z",
                        ]
                        .map(String::from),
                    )
                })
                .unwrap(),
            ],
            ..item(id, "/t", 200)
        };
        let query = |name: &str| ObjectQuery {
            namespace: "ns".into(),
            resource: "configmaps".into(),
            name: name.into(),
        };
        let rows = |store: &SqliteStore, table: &str| -> i64 {
            store
                .lock()
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        let mut seen_waiting = false;
        let mut seen_merged = false;
        for rv in 1..=7 {
            store
                .ingest(
                    &[
                        with(&format!("c{rv}"), "c", rv),
                        with(&format!("d{rv}"), "d", 100 + rv),
                    ],
                    &[],
                )
                .unwrap();
            // Every version so far, wherever its name is at the moment.
            let mut found: Vec<String> = store
                .versions(&query("c"), true)
                .unwrap()
                .into_iter()
                .map(|v| v.resource_version)
                .collect();
            found.sort_by_key(|rv| rv.parse::<usize>().unwrap());
            let expected: Vec<String> = (1..=rv).map(|r| r.to_string()).collect();
            assert_eq!(found, expected);
            assert_eq!(store.version_keys(&query("d")).unwrap().len(), rv);
            let waiting = rows(&store, "version_names_recent");
            assert!(waiting < 3, "{waiting} names wait after {rv} batches");
            seen_waiting |= waiting > 0;
            seen_merged |= rows(&store, "version_names") > 0;
            assert_eq!(rows(&store, "version_names") + waiting, 2 * rv as i64);
        }
        assert!(seen_waiting && seen_merged);
        assert!(store.versions(&query("e"), true).unwrap().is_empty());
    }

    #[test]
    fn pruning_removes_old_and_excess_records_and_keeps_the_aggregates() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.db")).unwrap();
        let at = |id: &str, time: &str| IngestItem {
            started_at: time.into(),
            ..item(id, "/x", 200)
        };
        store
            .ingest(
                &[
                    at("old", "2026-11-01T00:00:00Z"),
                    at("a", "2026-11-30T01:00:00Z"),
                    at("b", "2026-11-30T02:00:00Z"),
                    at("c", "2026-11-30T03:00:00Z"),
                ],
                &[],
            )
            .unwrap();
        assert_eq!(
            store.prune_records("2026-11-15T00:00:00Z", None).unwrap(),
            1
        );
        assert_eq!(
            store
                .prune_records("2026-11-15T00:00:00Z", Some(2))
                .unwrap(),
            1
        );
        assert_eq!(store.record_count().unwrap(), 2);
        assert_eq!(store.record("old").unwrap(), None);
        assert_eq!(store.record("c").unwrap().unwrap().line, r#"{"id":"c"}"#);
        // The batch's blob stays while one of its records does, then goes.
        let blobs = |s: &SqliteStore| -> i64 {
            s.lock()
                .query_row("SELECT COUNT(*) FROM record_batches", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(blobs(&store), 1);
        store.prune_records("2026-12-01T00:00:00Z", None).unwrap();
        assert_eq!(blobs(&store), 0);
        let hits: u64 = store
            .hits(&Scope::default())
            .unwrap()
            .iter()
            .map(|h| h.hits)
            .sum();
        assert_eq!(hits, 4, "the aggregates keep every record counted");
    }
}
