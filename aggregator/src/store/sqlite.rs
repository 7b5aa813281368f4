//! The embedded store: one SQLite file in WAL mode, with `synchronous=FULL`
//! so that a batch acknowledged is a batch on disk.

use super::version_tail::{RvCeiling, TailEntry, VersionTail, sorted_runs};
use super::{
    Batch, Dialect, FieldHit, Hit, IngestItem, IngestOutcome, Merged, ObjectFilter, ObjectSummary,
    ObjectTest, Origin, Scope, Store, StoreError, StoredRecord, call_columns, doc, hour_of, join,
    key_version, merge_into, packed, undoc,
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
    // Versions in the order they came (`seq`), found by key and by name
    // through indexes of their own, which the newest versions join in
    // sorted runs (see `version_tail`).
    r#"
CREATE TABLE versions_by_seq (
    seq INTEGER PRIMARY KEY,
    uid TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    grp TEXT NOT NULL,
    resource TEXT NOT NULL,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    time TEXT NOT NULL,
    doc TEXT NOT NULL,
    object TEXT
);
INSERT INTO versions_by_seq (uid, resource_version, grp, resource, kind, namespace, name, time, doc, object)
    SELECT uid, resource_version, grp, resource, kind, namespace, name, time, doc, object FROM versions
    ORDER BY resource_version, uid;
DROP TABLE versions;
ALTER TABLE versions_by_seq RENAME TO versions;
CREATE TABLE version_keys (
    resource_version TEXT NOT NULL,
    uid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (resource_version, uid)
) WITHOUT ROWID;
INSERT INTO version_keys SELECT resource_version, uid, seq FROM versions;
CREATE TABLE version_names (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (namespace, name, seq)
) WITHOUT ROWID;
INSERT INTO version_names SELECT namespace, name, seq FROM versions;
CREATE TABLE version_index (merged_upto INTEGER NOT NULL);
INSERT INTO version_index SELECT COALESCE(MAX(seq), 0) FROM versions;
"#,
    // Records keyed by id alone, in one b-tree: a row of its own beside an
    // index of ids, and an index of batches, were three inserts a record
    // and about a third of the pages a commit wrote. Ids are UUIDv7, so
    // new ones go to the end of the key. Nothing read the request's
    // columns; the line is there only for records stored before lines
    // were packed.
    r#"
CREATE TABLE records_by_id (
    id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    pod_namespace TEXT NOT NULL,
    batch INTEGER,
    batch_line INTEGER,
    line TEXT
) WITHOUT ROWID;
INSERT INTO records_by_id SELECT id, started_at, pod_namespace, batch, batch_line, NULLIF(line, '') FROM records;
DROP TABLE records;
ALTER TABLE records_by_id RENAME TO records;
"#,
    // The indexes' `RvCeiling`, as `RvCeiling::to_stored` writes it; NULL
    // until `read_ceiling` reads the indexes of a store made before it.
    r#"
ALTER TABLE version_index ADD COLUMN rv_ceiling TEXT;
"#,
];

/// `FROM versions` where (namespace, name) are ?1 and ?2: those in
/// `version_names`, and those of the tail, whose seqs ?3 lists as JSON.
macro_rules! versions_named {
    () => {
        " FROM versions WHERE seq IN (
           SELECT seq FROM version_names WHERE namespace = ?1 AND name = ?2
           UNION ALL
           SELECT value FROM json_each(?3))"
    };
}

/// The page size of a new store.
const SQLITE_PAGE_BYTES: i64 = 16 * 1024;

/// The page cache of the store's connection.
const SQLITE_CACHE_KIB: i64 = 64 * 1024;

pub struct SqliteStore {
    inner: Mutex<Inner>,
    /// [`TAIL_TO_MERGE`], but for tests.
    tail_to_merge: usize,
}

/// The connection, and the newest versions, which only it writes.
struct Inner {
    conn: Connection,
    tail: VersionTail,
    /// Of the versions in the indexes (not the tail's): what versions
    /// above it are known to be new.
    ceiling: RvCeiling,
}

impl Inner {
    /// The seqs of the tail's versions that a query names, as a JSON array.
    fn tail_named(&self, query: &ObjectQuery) -> String {
        let seqs = self.tail.seqs_named(&query.namespace, &query.name);
        let listed: Vec<String> = seqs.iter().map(i64::to_string).collect();
        format!("[{}]", listed.join(","))
    }
}

impl std::ops::Deref for Inner {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
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
        let tail = read_tail(&conn)?;
        let ceiling = read_ceiling(&conn)?;
        Ok(SqliteStore {
            inner: Mutex::new(Inner {
                conn,
                tail,
                ceiling,
            }),
            tail_to_merge: TAIL_TO_MERGE,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The ceiling of the indexes' resourceVersions. A store made before it was
/// kept has it worked out here, once, from every key.
fn read_ceiling(conn: &Connection) -> Result<RvCeiling, StoreError> {
    let stored: Option<String> =
        conn.query_row("SELECT rv_ceiling FROM version_index", [], |r| r.get(0))?;
    if let Some(ceiling) = stored.as_deref().and_then(RvCeiling::from_stored) {
        return Ok(ceiling);
    }
    let mut ceiling = RvCeiling::default();
    let mut keys = conn.prepare("SELECT resource_version FROM version_keys")?;
    let mut rows = keys.query([])?;
    while let Some(row) = rows.next()? {
        if let ValueRef::Text(rv) = row.get_ref(0)? {
            ceiling.raise(std::str::from_utf8(rv).unwrap_or_default());
        }
    }
    conn.execute(
        "UPDATE version_index SET rv_ceiling = ?1",
        [ceiling.to_stored()],
    )?;
    Ok(ceiling)
}

/// The versions past the indexes' last run, as the store holds them.
fn read_tail(conn: &Connection) -> Result<VersionTail, StoreError> {
    let merged_upto: i64 =
        conn.query_row("SELECT merged_upto FROM version_index", [], |r| r.get(0))?;
    let mut select = conn.prepare(
        "SELECT seq, uid, resource_version, namespace, name FROM versions WHERE seq > ?1",
    )?;
    let entries = select
        .query_map([merged_upto], |r| {
            Ok(TailEntry {
                seq: r.get(0)?,
                uid: r.get(1)?,
                resource_version: r.get(2)?,
                namespace: r.get(3)?,
                name: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VersionTail::new(entries))
}

/// How many new versions the memory holds before their keys and names join
/// the store's indexes in one run. A run touches most pages of those
/// indexes; the waiting costs a few hundred bytes of memory a version (a
/// few MB in all) and nothing on disk. Keyed on insert, the ingest bench's
/// commits wrote 124 pages each, two thirds of them index pages (random
/// tombstone uids and names); with the tail, 56, most of them new rows.
const TAIL_TO_MERGE: usize = 8192;

/// Moves the tail's keys and names into the indexes, in their order, and
/// gives the indexes' ceiling with them in.
fn merge_tail(
    tx: &rusqlite::Transaction<'_>,
    tail: &VersionTail,
    added: &VersionTail,
    mut ceiling: RvCeiling,
) -> Result<RvCeiling, StoreError> {
    let (keys, names) = sorted_runs(&[tail, added]);
    let mut insert_key = tx.prepare_cached(
        "INSERT INTO version_keys (resource_version, uid, seq) VALUES (?1, ?2, ?3)",
    )?;
    for (rv, uid, seq) in keys {
        insert_key.execute(params![rv, uid, seq])?;
        ceiling.raise(rv);
    }
    let mut insert_name =
        tx.prepare_cached("INSERT INTO version_names (namespace, name, seq) VALUES (?1, ?2, ?3)")?;
    for (namespace, name, seq) in names {
        insert_name.execute(params![namespace, name, seq])?;
    }
    let upto: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM versions", [], |r| {
        r.get(0)
    })?;
    tx.execute(
        "UPDATE version_index SET merged_upto = ?1, rv_ceiling = ?2",
        params![upto, ceiling.to_stored()],
    )?;
    Ok(ceiling)
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
        let mut guard = self.lock();
        let Inner {
            conn,
            tail,
            ceiling,
        } = &mut *guard;
        let tx = conn.transaction()?;
        let mut added = VersionTail::default();
        let known = Known {
            tail,
            ceiling: *ceiling,
        };
        let outcomes = batches
            .iter()
            .map(|b| ingest_batch(&tx, b, known, &mut added))
            .collect::<Result<Vec<_>, _>>()?;
        let merged = if tail.len() + added.len() >= self.tail_to_merge {
            Some(merge_tail(&tx, tail, &added, *ceiling)?)
        } else {
            None
        };
        tx.commit()?;
        match merged {
            Some(raised) => {
                tail.merged();
                *ceiling = raised;
            }
            None => tail.absorb(added),
        }
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
        let inner = self.lock();
        let sql = if objects {
            concat!("SELECT doc, object", versions_named!())
        } else {
            concat!("SELECT doc, NULL", versions_named!())
        };
        let mut select = inner.prepare_cached(sql)?;
        let rows = select
            .query_map(
                params![query.namespace, query.name, inner.tail_named(query)],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )?
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
        let inner = self.lock();
        let mut select = inner.prepare_cached(if holds.is_some() {
            concat!(
                "SELECT grp, resource, kind, namespace, name, uid, resource_version, time, object",
                versions_named!()
            )
        } else {
            concat!(
                "SELECT grp, resource, kind, namespace, name, uid, resource_version, time, NULL",
                versions_named!()
            )
        })?;
        let mut all = Vec::new();
        let mut rows = select.query(params![
            query.namespace,
            query.name,
            inner.tail_named(query)
        ])?;
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
        let inner = self.lock();
        let mut by_seq = inner.prepare_cached("SELECT doc, object FROM versions WHERE seq = ?1")?;
        let mut by_key = inner.prepare_cached(
            "SELECT v.doc, v.object FROM version_keys k JOIN versions v ON v.seq = k.seq
             WHERE k.resource_version = ?1 AND k.uid = ?2",
        )?;
        let mut out = Vec::new();
        for (uid, rv) in keys {
            let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
            let row: Option<(String, Option<String>)> = match inner.tail.seq_of(uid, rv) {
                Some(seq) => by_seq.query_row([seq], read).optional()?,
                None => by_key.query_row(params![rv, uid], read).optional()?,
            };
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
                "SELECT pod_namespace, COALESCE(line, ''), batch, batch_line FROM records WHERE id = ?1",
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
            // One pass over the records, not one a batch: no index has
            // records by batch.
            "DELETE FROM record_batches WHERE id NOT IN (SELECT batch FROM records WHERE batch IS NOT NULL)",
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

/// The statements a batch runs once a record or a version, prepared once a
/// batch: looking each up in rusqlite's cache, a hash of its SQL text, cost
/// about as much as running some of them.
struct Statements<'t> {
    insert_record: rusqlite::CachedStatement<'t>,
    read_version_by_seq: rusqlite::CachedStatement<'t>,
    read_version_by_key: rusqlite::CachedStatement<'t>,
    insert_version: rusqlite::CachedStatement<'t>,
    rewrite_version: rusqlite::CachedStatement<'t>,
    update_version: rusqlite::CachedStatement<'t>,
    insert_attempt: rusqlite::CachedStatement<'t>,
}

impl<'t> Statements<'t> {
    fn prepare(tx: &'t rusqlite::Transaction<'_>) -> Result<Statements<'t>, StoreError> {
        Ok(Statements {
            insert_record: tx.prepare_cached(
                "INSERT OR IGNORE INTO records (id, started_at, pod_namespace, batch, batch_line)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            read_version_by_seq: tx.prepare_cached(
                "SELECT doc, object IS NOT NULL FROM versions WHERE seq = ?1",
            )?,
            read_version_by_key: tx.prepare_cached(
                "SELECT v.seq, v.doc, v.object IS NOT NULL FROM version_keys k JOIN versions v ON v.seq = k.seq
                 WHERE k.resource_version = ?1 AND k.uid = ?2",
            )?,
            insert_version: tx.prepare_cached(
                "INSERT INTO versions (uid, resource_version, grp, resource, kind, namespace, name, time, doc, object)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?,
            rewrite_version: tx.prepare_cached(
                "UPDATE versions SET grp = ?2, resource = ?3, kind = ?4, namespace = ?5, name = ?6, time = ?7, doc = ?8, object = ?9
                 WHERE seq = ?1",
            )?,
            update_version: tx.prepare_cached(
                "UPDATE versions SET kind = ?2, time = ?3, doc = ?4 WHERE seq = ?1",
            )?,
            insert_attempt: tx.prepare_cached(
                "INSERT OR IGNORE INTO attempts (record, grp, resource, kind, namespace, name, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?,
        })
    }
}

/// Where a transaction finds the versions stored before it: the tail, and
/// the indexes, which the ceiling may tell a version is not in.
#[derive(Clone, Copy)]
struct Known<'a> {
    tail: &'a VersionTail,
    ceiling: RvCeiling,
}

/// One batch, within the group's transaction.
fn ingest_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: &Batch<'_>,
    known: Known<'_>,
    added: &mut VersionTail,
) -> Result<IngestOutcome, StoreError> {
    let (items, drops) = (batch.items, batch.drops);
    let mut outcome = IngestOutcome::default();
    let (batch, lines) = if items.is_empty() {
        (None, packed::Lines::Items)
    } else {
        let (blob, lines) = batch.packed_lines()?;
        tx.execute("INSERT INTO record_batches (lines) VALUES (?1)", [blob])?;
        (Some(tx.last_insert_rowid()), lines)
    };
    {
        let mut statements = Statements::prepare(tx)?;
        let mut counts = super::HitCounts::default();
        for (position, item) in items.iter().enumerate() {
            let inserted = statements.insert_record.execute(params![
                item.id,
                item.started_at,
                item.pod_namespace,
                batch,
                lines.index_of(position, item)
            ])?;
            if inserted == 0 {
                outcome.duplicates += 1;
            } else {
                outcome.accepted += 1;
                counts.add(item);
                store_provenance(&mut statements, known, added, item)?;
            }
        }
        let mut count = tx.prepare_cached(concat!(
            "INSERT INTO hits (",
            call_columns!(),
            ", status, hits, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT DO UPDATE SET hits = hits + excluded.hits,
               first_seen = MIN(first_seen, excluded.first_seen),
               last_seen = MAX(last_seen, excluded.last_seen)"
        ))?;
        for (key, hit) in &counts.rows {
            let [a, b, c, d, e, f, g] = key.call.columns();
            count.execute(params![
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                key.status,
                hit.hits as i64,
                hit.first_seen,
                hit.last_seen
            ])?;
        }
        let mut count_field = tx.prepare_cached(concat!(
            "INSERT INTO field_hits (",
            call_columns!(),
            ", field, hits) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET hits = hits + excluded.hits"
        ))?;
        for (key, hits) in &counts.fields {
            let [a, b, c, d, e, f, g] = key.call.columns();
            count_field.execute(params![a, b, c, d, e, f, g, key.field, *hits as i64])?;
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

/// A new record's versions, each merged with any earlier sighting of the
/// same (uid, resourceVersion), and its refused writes.
fn store_provenance(
    statements: &mut Statements<'_>,
    known: Known<'_>,
    added: &mut VersionTail,
    item: &IngestItem,
) -> Result<(), StoreError> {
    for sighting in &item.versions {
        let version = &sighting.version;
        let (uid, rv) = (&version.uid, &version.resource_version);
        let existing: Option<(i64, String, bool)> =
            match known.tail.seq_of(uid, rv).or_else(|| added.seq_of(uid, rv)) {
                Some(seq) => statements
                    .read_version_by_seq
                    .query_row([seq], |r| Ok((seq, r.get(0)?, r.get(1)?)))
                    .optional()?,
                // Writes and watch events show versions above all indexed:
                // the index would be searched for nothing.
                None if known.ceiling.rules_out(rv) => None,
                None => statements
                    .read_version_by_key
                    .query_row(params![rv, uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?,
            };
        let Some((seq, stored, has_object)) = existing else {
            let seq = statements.insert_version.insert(params![
                version.uid,
                version.resource_version,
                version.group,
                version.resource,
                version.kind,
                version.namespace,
                version.name,
                version.time,
                sighting.document,
                sighting.object.as_deref()
            ])?;
            added.push(TailEntry {
                seq,
                uid: version.uid.clone(),
                resource_version: version.resource_version.clone(),
                namespace: version.namespace.clone(),
                name: version.name.clone(),
            });
            continue;
        };
        match merge_into(&stored, has_object, sighting)? {
            Merged::Nothing => {}
            Merged::Document(merged, document) => {
                statements.update_version.execute(params![
                    seq,
                    merged.kind,
                    merged.time,
                    document
                ])?;
            }
            Merged::Whole(merged, document) => {
                statements.rewrite_version.execute(params![
                    seq,
                    merged.group,
                    merged.resource,
                    merged.kind,
                    merged.namespace,
                    merged.name,
                    merged.time,
                    document,
                    sighting.object.as_deref()
                ])?;
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

    /// A store as an aggregator left it that knew the first `migrations`.
    fn store_at_migration(path: &Path, migrations: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .unwrap();
        for (i, sql) in MIGRATIONS[..migrations].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1)", [i + 1])
                .unwrap();
        }
        conn
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
            let conn = store_at_migration(&path, 4);
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
                   (SELECT name FROM pragma_index_list('version_keys') WHERE origin = 'pk'))",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(key, ["resource_version", "uid"]);
        // Its keys were read for the ceiling once, on opening: the version
        // seen again is found in the index, and one above it is new.
        let ceiling: String = store
            .lock()
            .query_row("SELECT rv_ceiling FROM version_index", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ceiling, "7");
        let seen = |id: &str, rv: &str| IngestItem {
            versions: vec![
                crate::store::EncodedVersion::new(crate::provenance::Version {
                    object: Some(serde_json::json!({"data": {"v": rv}})),
                    ..key_version(
                        ["", "configmaps", "ConfigMap", "ns", "c", "u1", rv, "t"].map(String::from),
                    )
                })
                .unwrap(),
            ],
            ..item(id, "/t", 200)
        };
        store.ingest(&[seen("again", "7")], &[]).unwrap();
        assert_eq!(store.versions(&by_name, true).unwrap().len(), 1);
        store.ingest(&[seen("next", "8")], &[]).unwrap();
        assert_eq!(store.versions(&by_name, true).unwrap().len(), 2);
    }

    #[test]
    fn records_stored_before_rows_were_keyed_by_id_alone_keep_their_lines_ids_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let packed_item = item("packed", "/x", 200);
        {
            // The store as the aggregator before this key left it: one
            // record from before lines were packed, one packed.
            let conn = store_at_migration(&path, 6);
            conn.execute(
                "INSERT INTO records (id, started_at, pod_namespace, pod_name, method, path, status, line)
                 VALUES ('legacy', '2026-11-01T00:00:00Z', 'old-ns', 'p', 'GET', '/x', 200, '{\"id\":\"legacy\"}')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO record_batches (id, lines) VALUES (9, ?1)",
                [packed::pack(std::slice::from_ref(&packed_item)).unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO records (id, started_at, pod_namespace, pod_name, method, path, status, line, batch, batch_line)
                 VALUES ('packed', '2026-11-02T00:00:00Z', 'ns', 'p', 'GET', '/x', 200, '', 9, 0)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let legacy = store.record("legacy").unwrap().unwrap();
        assert_eq!(
            (legacy.pod_namespace.as_str(), legacy.line.as_str()),
            ("old-ns", "{\"id\":\"legacy\"}")
        );
        assert_eq!(
            store.record("packed").unwrap().unwrap().line,
            packed_item.line
        );
        // Their ids still make a retried record a duplicate.
        let outcome = store
            .ingest(&[item("legacy", "/x", 200), item("new", "/x", 200)], &[])
            .unwrap();
        assert_eq!((outcome.accepted, outcome.duplicates), (1, 1));
        // Retention takes both old records, and the packed one's batch.
        assert_eq!(
            store.prune_records("2026-11-10T00:00:00Z", None).unwrap(),
            2
        );
        let batches: Vec<i64> = store
            .lock()
            .prepare("SELECT id FROM record_batches")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!batches.contains(&9), "{batches:?}");
        assert_eq!(batches.len(), 1, "the new record's batch stays");
        assert!(store.record("new").unwrap().is_some());
    }

    #[test]
    fn versions_are_found_while_they_wait_in_memory_after_they_join_the_indexes_and_after_a_reopening()
     {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.tail_to_merge = 3;
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
            if rv == 4 {
                // What waited in memory is read back from the store.
                drop(store);
                store = SqliteStore::open(&path).unwrap();
                store.tail_to_merge = 3;
            }
            // Every version so far, wherever its keys are at the moment.
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
            let by_key = store
                .versions_by_key(&[("uid-c".to_string(), rv.to_string())])
                .unwrap();
            assert_eq!(by_key.len(), 1, "version {rv} by its key");
            // Seen again, every version so far, those of the indexes below
            // and at their ceiling among them: each merged into its row,
            // not a second one.
            let again: Vec<IngestItem> = (1..=rv)
                .flat_map(|r| {
                    [
                        with(&format!("again-c{rv}-{r}"), "c", r),
                        with(&format!("again-d{rv}-{r}"), "d", 100 + r),
                    ]
                })
                .collect();
            store.ingest(&again, &[]).unwrap();
            assert_eq!(rows(&store, "versions"), 2 * rv as i64);
            let waiting = store.lock().tail.len();
            assert!(waiting < 3, "{waiting} versions wait after {rv} batches");
            seen_waiting |= waiting > 0;
            let indexed = rows(&store, "version_keys");
            seen_merged |= indexed > 0;
            assert_eq!(indexed + waiting as i64, 2 * rv as i64);
            assert_eq!(rows(&store, "version_names"), indexed);
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
