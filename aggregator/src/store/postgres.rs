//! PostgreSQL, for deployments that outgrow one aggregator: several replicas
//! share one database. Same tables and the same semantics as SQLite: a batch
//! is one transaction, records are keyed by id, and `hits` is upserted in the
//! same transaction, so concurrent replicas count each record once.

use super::{
    Batch, CallKey, Dialect, EncodedVersion, FieldHit, Hit, IngestItem, IngestOutcome, Merged,
    ObjectFilter, ObjectSummary, ObjectTest, Origin, Scope, Store, StoreError, StoredRecord,
    call_columns, doc, hour_of, join, key_version, merge_into, packed, undoc,
};
use crate::provenance::{Attempt, ObjectQuery, Version};
use postgres::{Client, NoTls};
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
    hits BIGINT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (pod_namespace, pod_name, workload, client, method, template, status, hour)
);
CREATE TABLE drop_reports (
    id TEXT PRIMARY KEY,
    pod_namespace TEXT NOT NULL,
    pod_name TEXT NOT NULL,
    dropped BIGINT NOT NULL,
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
    hits BIGINT NOT NULL,
    PRIMARY KEY (pod_namespace, pod_name, workload, client, method, template, hour, field)
);
"#,
    // Raw lines move to one compressed blob per batch (`packed.rs`); the
    // pod index was never read.
    r#"
CREATE TABLE record_batches (
    id BIGSERIAL PRIMARY KEY,
    lines BYTEA NOT NULL
);
ALTER TABLE records ADD COLUMN batch BIGINT, ADD COLUMN batch_line INTEGER;
DROP INDEX records_by_pod;
CREATE INDEX records_by_batch ON records (batch);
"#,
    // As in SQLite: the newest versions go to the end of the key.
    r#"
ALTER TABLE versions DROP CONSTRAINT versions_pkey, ADD PRIMARY KEY (resource_version, uid);
"#,
    // As in SQLite, a record's row keeps what retention and access checks
    // read; nothing read the request's columns. The line is there only for
    // records stored before lines were packed.
    r#"
ALTER TABLE records DROP COLUMN pod_name, DROP COLUMN method, DROP COLUMN path, DROP COLUMN status,
    ALTER COLUMN line DROP NOT NULL;
UPDATE records SET line = NULL WHERE line = '';
"#,
];

pub struct PostgresStore {
    client: Mutex<Client>,
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::Invalid(format!("PostgreSQL: {e}"))
    }
}

impl PostgresStore {
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut client = Client::connect(url, NoTls)?;
        migrate(&mut client)?;
        Ok(PostgresStore {
            client: Mutex::new(client),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Replicas starting together migrate one at a time.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7140505);
         CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)",
    )?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the store's schema is version {current}, newer than this aggregator's {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A WHERE clause and its parameters, for the scope's filters.
fn filter(scope: &Scope, with_hits_columns: bool) -> (String, Vec<String>) {
    let mut sql = String::from(" WHERE TRUE");
    let mut args: Vec<String> = Vec::new();
    let mut add = |column: &str, value: Option<&str>, op: &str| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            args.push(v.to_string());
            sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
        }
    };
    add("pod_namespace", scope.namespace.as_deref(), "=");
    add("pod_name", scope.pod.as_deref(), "=");
    if with_hits_columns {
        add("workload", scope.workload.as_deref(), "=");
        add("client", scope.user_agent.as_deref(), "=");
        add("hour", scope.since.as_deref().map(hour_of), ">=");
    }
    (sql, args)
}

fn params(args: &[String]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Store for PostgresStore {
    fn ingest_group(&self, batches: &[Batch<'_>]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut client = self.lock();
        let mut tx = client.transaction()?;
        let mut outcomes = Vec::with_capacity(batches.len());
        for b in batches {
            outcomes.push(ingest_batch(&mut tx, b)?);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn hits(&self, scope: &Scope) -> Result<Vec<Hit>, StoreError> {
        let (where_sql, args) = filter(scope, true);
        let sql = format!(
            "SELECT method, template, status, client, SUM(hits)::BIGINT, MIN(first_seen), MAX(last_seen) FROM hits{where_sql}
             GROUP BY method, template, status, client ORDER BY template, method, status, client"
        );
        let rows = self.lock().query(&sql, &params(&args))?;
        Ok(rows
            .iter()
            .map(|r| Hit {
                method: r.get(0),
                template: r.get(1),
                status: r.get::<_, i32>(2) as u16,
                client: r.get(3),
                hits: r.get::<_, i64>(4) as u64,
                first_seen: r.get(5),
                last_seen: r.get(6),
            })
            .collect())
    }

    fn field_hits(&self, scope: &Scope) -> Result<Vec<FieldHit>, StoreError> {
        let (filter_sql, args) = filter(scope, true);
        let sql = format!(
            "SELECT method, template, field, SUM(hits)::BIGINT FROM field_hits{filter_sql} GROUP BY method, template, field"
        );
        let rows = self.lock().query(&sql, &params(&args))?;
        Ok(rows
            .iter()
            .map(|r| FieldHit {
                method: r.get(0),
                template: r.get(1),
                field: r.get(2),
                hits: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    fn dropped(&self, scope: &Scope) -> Result<u64, StoreError> {
        let (where_sql, args) = filter(scope, false);
        let sql = format!("SELECT COALESCE(SUM(dropped), 0)::BIGINT FROM drop_reports{where_sql}");
        let n: i64 = self.lock().query_one(&sql, &params(&args))?.get(0);
        Ok(n as u64)
    }

    fn namespaces_of_pod(&self, pod: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.lock().query(
            "SELECT DISTINCT pod_namespace FROM hits WHERE pod_name = $1 ORDER BY 1",
            &[&pod],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn versions(&self, query: &ObjectQuery, objects: bool) -> Result<Vec<Version>, StoreError> {
        let sql = if objects {
            "SELECT doc, object FROM versions WHERE namespace = $1 AND name = $2"
        } else {
            "SELECT doc, NULL::text FROM versions WHERE namespace = $1 AND name = $2"
        };
        let rows = self.lock().query(sql, &[&query.namespace, &query.name])?;
        let all = rows
            .iter()
            .map(|r| join(r.get::<_, &str>(0), r.get::<_, Option<&str>>(1)))
            .collect::<Result<Vec<Version>, _>>()?;
        Ok(super::select_versions(query, all))
    }

    /// The key columns of a query's versions, and `holds` of each object's
    /// text where asked, read in place from the received rows.
    fn keyed_versions(
        &self,
        query: &ObjectQuery,
        holds: Option<ObjectTest<'_>>,
    ) -> Result<Vec<(Version, bool)>, StoreError> {
        let rows = self.lock().query(
            if holds.is_some() {
                "SELECT grp, resource, kind, namespace, name, uid, resource_version, time, object FROM versions WHERE namespace = $1 AND name = $2"
            } else {
                "SELECT grp, resource, kind, namespace, name, uid, resource_version, time, NULL::text FROM versions WHERE namespace = $1 AND name = $2"
            },
            &[&query.namespace, &query.name],
        )?;
        let all = rows
            .iter()
            .map(|r| {
                let keys = key_version([
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                ]);
                let object: Option<&str> = r.get(8);
                let held = holds
                    .zip(object)
                    .is_some_and(|(holds, o)| holds(o.as_bytes()));
                (keys, held)
            })
            .collect();
        Ok(super::select_versions_by(query, all, |(v, _)| v))
    }

    fn versions_by_key(&self, keys: &[(String, String)]) -> Result<Vec<Version>, StoreError> {
        let uids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let rvs: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let rows = self.lock().query(
            "SELECT v.doc, v.object FROM versions v
             JOIN UNNEST($1::text[], $2::text[]) AS k(uid, rv) ON v.uid = k.uid AND v.resource_version = k.rv",
            &[&uids, &rvs],
        )?;
        rows.iter()
            .map(|r| join(r.get::<_, &str>(0), r.get::<_, Option<&str>>(1)))
            .collect()
    }

    fn attempts(&self, query: &ObjectQuery) -> Result<Vec<Attempt>, StoreError> {
        let rows = self.lock().query(
            "SELECT doc FROM attempts WHERE namespace = $1 AND name = $2",
            &[&query.namespace, &query.name],
        )?;
        let all = rows
            .iter()
            .map(|r| undoc::<Attempt>(r.get::<_, &str>(0)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(all
            .into_iter()
            .filter(|a| query.matches(&a.group, &a.resource, &a.kind))
            .collect())
    }

    fn prune_records(&self, before: &str, keep_at_most: Option<u64>) -> Result<u64, StoreError> {
        let mut client = self.lock();
        let mut gone = client.execute("DELETE FROM records WHERE started_at < $1", &[&before])?;
        if let Some(keep) = keep_at_most {
            let keep = keep as i64;
            gone += client.execute(
                "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY started_at DESC OFFSET $1)",
                &[&keep],
            )?;
        }
        // A batch's blob goes with its last record.
        client.execute(
            "DELETE FROM record_batches b WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.batch = b.id)",
            &[],
        )?;
        Ok(gone)
    }

    fn record(&self, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let Some(row) = self.lock().query_opt(
            "SELECT r.pod_namespace, COALESCE(r.line, ''), r.batch, r.batch_line, b.lines FROM records r LEFT JOIN record_batches b ON b.id = r.batch WHERE r.id = $1",
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let line = match (row.get::<_, Option<i64>>(2), row.get::<_, Option<i32>>(3)) {
            (Some(_), Some(index)) => {
                let packed: Vec<u8> = row.get::<_, Option<Vec<u8>>>(4).ok_or_else(|| {
                    StoreError::Invalid(format!("record {id}'s batch is missing"))
                })?;
                packed::line(&packed, index.into(), id)?
            }
            // Stored before lines were packed.
            _ => row.get(1),
        };
        Ok(Some(StoredRecord {
            pod_namespace: row.get(0),
            line,
        }))
    }

    fn record_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .lock()
            .query_one("SELECT COUNT(*) FROM records", &[])?
            .get(0);
        Ok(n as u64)
    }

    fn origins(&self) -> Result<Vec<Origin>, StoreError> {
        let rows = self.lock().query(super::ORIGINS_SQL, &[])?;
        Ok(rows
            .iter()
            .map(|r| Origin {
                namespace: r.get(0),
                pod: r.get(1),
                workload: r.get(2),
                client: r.get(3),
                hits: r.get::<_, i64>(4) as u64,
                last_seen: r.get(5),
            })
            .collect())
    }

    fn objects(
        &self,
        filter: &ObjectFilter,
        limit: usize,
    ) -> Result<Vec<ObjectSummary>, StoreError> {
        let (sql, args) = super::objects_sql(filter, limit, Dialect::Postgres);
        let rows = self.lock().query(&sql, &params(&args))?;
        Ok(rows
            .iter()
            .map(|r| ObjectSummary {
                group: r.get(0),
                resource: r.get(1),
                kind: r.get(2),
                namespace: r.get(3),
                name: r.get(4),
                versions: r.get::<_, i64>(5) as u64,
                last_seen: r.get(6),
            })
            .collect())
    }
}

/// One batch, within the group's transaction.
fn ingest_batch(
    tx: &mut postgres::Transaction<'_>,
    batch: &Batch<'_>,
) -> Result<IngestOutcome, StoreError> {
    let (items, drops) = (batch.items, batch.drops);
    // One round trip for the whole batch: the rows go as arrays, and
    // RETURNING says which were new.
    let column =
        |f: fn(&IngestItem) -> &String| items.iter().map(|i| f(i).as_str()).collect::<Vec<&str>>();
    let (batch, lines) = if items.is_empty() {
        (None, packed::Lines::Items)
    } else {
        let (blob, lines) = batch.packed_lines()?;
        let row = tx.query_one(
            "INSERT INTO record_batches (lines) VALUES ($1) RETURNING id",
            &[&blob.as_ref()],
        )?;
        (Some(row.get::<_, i64>(0)), lines)
    };
    let lines: Vec<i32> = items
        .iter()
        .enumerate()
        .map(|(position, item)| lines.index_of(position, item) as i32)
        .collect();
    let inserted: std::collections::HashSet<String> = tx
        .query(
            "INSERT INTO records (id, started_at, pod_namespace, batch, batch_line)
             SELECT id, started_at, pod_namespace, $4, batch_line
             FROM UNNEST($1::text[], $2::text[], $3::text[], $5::int[])
               AS t(id, started_at, pod_namespace, batch_line)
             ON CONFLICT (id) DO NOTHING RETURNING id",
            &[
                &column(|i| &i.id),
                &column(|i| &i.started_at),
                &column(|i| &i.pod_namespace),
                &batch,
                &lines,
            ],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut outcome = IngestOutcome::default();
    let mut counts = super::HitCounts::default();
    let mut counted = std::collections::HashSet::new();
    let mut new_items = Vec::new();
    for item in items {
        // A record is new once, even when a batch repeats it.
        if inserted.contains(&item.id) && counted.insert(item.id.as_str()) {
            outcome.accepted += 1;
            counts.add(item);
            new_items.push(item);
        } else {
            outcome.duplicates += 1;
        }
    }
    store_provenance(tx, &new_items)?;
    upsert_hits(tx, &counts)?;
    if let (Some(batch), true) = (batch, inserted.is_empty()) {
        // Every record was already stored: their lines are kept elsewhere.
        tx.execute("DELETE FROM record_batches WHERE id = $1", &[&batch])?;
    }
    for d in drops {
        let dropped = d.dropped as i64;
        tx.execute(
            "INSERT INTO drop_reports (id, pod_namespace, pod_name, dropped, first_dropped_at, last_dropped_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            &[&d.id, &d.pod.namespace, &d.pod.name, &dropped, &d.first_dropped_at, &d.last_dropped_at],
        )?;
    }
    Ok(outcome)
}

/// Adds a batch's counts to `hits` and `field_hits`, one statement each:
/// a batch touches a few hundred keys, and a round trip per key cost more
/// than all the rest of its ingest. The rows go in key order, so replicas
/// writing the same keys take their row locks in one order and never
/// deadlock.
fn upsert_hits<'a>(
    tx: &mut postgres::Transaction<'_>,
    counts: &super::HitCounts<'a>,
) -> Result<(), StoreError> {
    if !counts.rows.is_empty() {
        let mut rows: Vec<_> = counts.rows.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let [a, b, c, d, e, f, g] = &call_arrays(rows.iter().map(|(k, _)| &k.call));
        let statuses: Vec<i32> = rows.iter().map(|(k, _)| i32::from(k.status)).collect();
        let hits: Vec<i64> = rows.iter().map(|(_, c)| c.hits as i64).collect();
        let first: Vec<&str> = rows.iter().map(|(_, c)| c.first_seen).collect();
        let last: Vec<&str> = rows.iter().map(|(_, c)| c.last_seen).collect();
        tx.execute(
            concat!(
                "INSERT INTO hits (",
                call_columns!(),
                ", status, hits, first_seen, last_seen)
             SELECT ",
                call_columns!(),
                ", status, hits, first_seen, last_seen
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bigint[], $10::text[], $11::text[])
               WITH ORDINALITY AS u(",
                call_columns!(),
                ", status, hits, first_seen, last_seen, n)
             ORDER BY n
             ON CONFLICT (",
                call_columns!(),
                ", status)
             DO UPDATE SET hits = hits.hits + EXCLUDED.hits,
               first_seen = LEAST(hits.first_seen, EXCLUDED.first_seen),
               last_seen = GREATEST(hits.last_seen, EXCLUDED.last_seen)"
            ),
            &[a, b, c, d, e, f, g, &statuses, &hits, &first, &last],
        )?;
    }
    if !counts.fields.is_empty() {
        let mut fields: Vec<_> = counts.fields.iter().collect();
        fields.sort();
        let [a, b, c, d, e, f, g] = &call_arrays(fields.iter().map(|(k, _)| &k.call));
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.field).collect();
        let hits: Vec<i64> = fields.iter().map(|(_, h)| **h as i64).collect();
        tx.execute(
            concat!(
                "INSERT INTO field_hits (",
                call_columns!(),
                ", field, hits)
             SELECT ",
                call_columns!(),
                ", field, hits
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[])
               WITH ORDINALITY AS u(",
                call_columns!(),
                ", field, hits, n)
             ORDER BY n
             ON CONFLICT (",
                call_columns!(),
                ", field)
             DO UPDATE SET hits = field_hits.hits + EXCLUDED.hits"
            ),
            &[a, b, c, d, e, f, g, &names, &hits],
        )?;
    }
    Ok(())
}

/// The keys' columns as arrays, one a column, for `UNNEST`.
fn call_arrays<'a, 'k: 'a>(calls: impl Iterator<Item = &'a CallKey<'k>>) -> [Vec<&'k str>; 7] {
    let mut arrays: [Vec<&str>; 7] = Default::default();
    for call in calls {
        for (array, value) in arrays.iter_mut().zip(call.columns()) {
            array.push(value);
        }
    }
    arrays
}

/// A version the batch meets, as it will be written back.
struct Pending {
    /// Its document as it stands, stored or merged.
    document: String,
    has_object: bool,
    /// The version it stands for (without its object), once it changes.
    version: Option<Version>,
    write: Write,
}

enum Write {
    Nothing,
    /// The document (and kind and time) only.
    Document,
    /// The whole row, with this object.
    Whole(Option<String>),
}

/// The versions and refused writes of a batch's new records. The stored
/// versions they meet are read in one query, merged in memory, and written
/// back in two statements: round trips, not rows, are what cost here.
fn store_provenance(
    tx: &mut postgres::Transaction<'_>,
    items: &[&IngestItem],
) -> Result<(), StoreError> {
    let sightings: Vec<&EncodedVersion> = items.iter().flat_map(|i| &i.versions).collect();
    let (uids, rvs): (Vec<&str>, Vec<&str>) = sightings
        .iter()
        .map(|s| (s.version.uid.as_str(), s.version.resource_version.as_str()))
        .unzip();
    // Locked in key order, so that replicas never wait on each other in a
    // cycle.
    let stored = if sightings.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "SELECT uid, resource_version, doc, object IS NOT NULL FROM versions
             WHERE (uid, resource_version) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
             ORDER BY uid, resource_version FOR UPDATE",
            &[&uids, &rvs],
        )?
    };
    let mut pending: std::collections::BTreeMap<(String, String), Pending> = stored
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                Pending {
                    document: r.get(2),
                    has_object: r.get(3),
                    version: None,
                    write: Write::Nothing,
                },
            )
        })
        .collect();
    for sighting in sightings {
        let v = &sighting.version;
        let key = (v.uid.clone(), v.resource_version.clone());
        let Some(p) = pending.get_mut(&key) else {
            pending.insert(
                key,
                Pending {
                    document: sighting.document.clone(),
                    has_object: sighting.object.is_some(),
                    version: Some(v.clone()),
                    write: Write::Whole(sighting.object.clone()),
                },
            );
            continue;
        };
        match merge_into(&p.document, p.has_object, sighting)? {
            Merged::Nothing => {}
            Merged::Document(merged, document) => {
                p.document = document;
                p.version = Some(merged);
                // A row not yet written is still written whole.
                if matches!(p.write, Write::Nothing) {
                    p.write = Write::Document;
                }
            }
            Merged::Whole(merged, document) => {
                p.document = document;
                p.version = Some(merged);
                p.has_object = true;
                p.write = Write::Whole(sighting.object.clone());
            }
        }
    }
    // Column arrays, for UNNEST.
    let mut whole: [Vec<Option<String>>; 10] = Default::default();
    let mut documents: [Vec<String>; 5] = Default::default();
    for (_, p) in pending {
        let Some(v) = p.version else { continue };
        match p.write {
            Write::Whole(object) => {
                let row = [
                    Some(v.uid),
                    Some(v.resource_version),
                    Some(v.group),
                    Some(v.resource),
                    Some(v.kind),
                    Some(v.namespace),
                    Some(v.name),
                    Some(v.time),
                    Some(p.document),
                    object,
                ];
                for (column, value) in whole.iter_mut().zip(row) {
                    column.push(value);
                }
            }
            Write::Document => {
                let row = [v.uid, v.resource_version, v.kind, v.time, p.document];
                for (column, value) in documents.iter_mut().zip(row) {
                    column.push(value);
                }
            }
            Write::Nothing => {}
        }
    }
    if !whole[0].is_empty() {
        let args: Vec<&(dyn postgres::types::ToSql + Sync)> = whole
            .iter()
            .map(|c| c as &(dyn postgres::types::ToSql + Sync))
            .collect();
        tx.execute(
            "INSERT INTO versions (uid, resource_version, grp, resource, kind, namespace, name, time, doc, object)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
             ON CONFLICT (uid, resource_version) DO UPDATE SET kind = EXCLUDED.kind, time = EXCLUDED.time, doc = EXCLUDED.doc, object = EXCLUDED.object",
            &args,
        )?;
    }
    if !documents[0].is_empty() {
        let args: Vec<&(dyn postgres::types::ToSql + Sync)> = documents
            .iter()
            .map(|c| c as &(dyn postgres::types::ToSql + Sync))
            .collect();
        tx.execute(
            "UPDATE versions v SET kind = u.kind, time = u.time, doc = u.doc
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(uid, resource_version, kind, time, doc)
             WHERE v.uid = u.uid AND v.resource_version = u.resource_version",
            &args,
        )?;
    }
    for item in items {
        store_attempts(tx, item)?;
    }
    Ok(())
}

fn store_attempts(tx: &mut postgres::Transaction<'_>, item: &IngestItem) -> Result<(), StoreError> {
    for a in &item.attempts {
        tx.execute(
            "INSERT INTO attempts (record, grp, resource, kind, namespace, name, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (record) DO NOTHING",
            &[&a.record, &a.group, &a.resource, &a.kind, &a.namespace, &a.name, &doc(a)?],
        )?;
    }
    Ok(())
}
