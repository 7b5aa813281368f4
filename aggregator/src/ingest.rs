//! Batches in: NDJSON record lines (gzip or not), each checked on its own.
//! A bad line gets an error naming its line number; the valid lines of the
//! same batch are still stored.

use crate::store::IngestItem;
use apiwitness_record::{ApiRequest, DropReport};
use std::io::Read;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct ParsedBatch {
    pub items: Vec<IngestItem>,
    /// With their line numbers.
    pub drops: Vec<(usize, DropReport)>,
    pub errors: Vec<LineError>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("the body is marked gzip but is not: {0}")]
    Gzip(String),
    #[error("the body is not UTF-8 text")]
    NotText,
    /// Over the size the aggregator accepts, once decompressed.
    #[error("the batch is larger than {0} bytes once decompressed")]
    TooLarge(usize),
}

/// The largest batch accepted, decompressed: a gzip bomb stops here.
pub const MAX_BATCH_BYTES: usize = 256 << 20;

pub fn decompress(body: &[u8], gzip: bool) -> Result<String, BatchError> {
    if !gzip {
        return String::from_utf8(body.to_vec()).map_err(|_| BatchError::NotText);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_BATCH_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Gzip(e.to_string()))?;
    if out.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge(MAX_BATCH_BYTES));
    }
    String::from_utf8(out).map_err(|_| BatchError::NotText)
}

/// The product token of a User-Agent: `kubectl/v1.35.4 (linux/amd64) ...`
/// groups as `kubectl/v1.35.4`.
pub fn client_of(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

/// The parts of an exchange line that ingest needs. Bodies are checked to be
/// JSON but not built into values: parsing stays cheap however large they are.
#[derive(Debug, serde::Deserialize)]
struct ExchangeKeys {
    format: u32,
    id: String,
    pod: apiwitness_record::PodIdentity,
    started_at: String,
    method: String,
    path: String,
    #[serde(default)]
    query: String,
    status: u16,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    request_content_type: Option<String>,
}

#[derive(Debug)]
enum LineKeys {
    Exchange(ExchangeKeys),
    DropReport(DropReport),
}

fn parse_line(raw: &str) -> Result<LineKeys, String> {
    let not_a_record = |e: serde_json::Error| format!("not a record: {e}");
    let line = match apiwitness_record::kind_of(raw).map_err(|e| e.to_string())? {
        apiwitness_record::LineKind::Exchange => {
            LineKeys::Exchange(serde_json::from_str(raw).map_err(not_a_record)?)
        }
        apiwitness_record::LineKind::DropReport => {
            LineKeys::DropReport(serde_json::from_str(raw).map_err(not_a_record)?)
        }
    };
    let format = match &line {
        LineKeys::Exchange(e) => e.format,
        LineKeys::DropReport(d) => d.format,
    };
    if format > apiwitness_record::FORMAT_VERSION {
        return Err(format!(
            "record format {format} is newer than this reader's {}",
            apiwitness_record::FORMAT_VERSION
        ));
    }
    Ok(line)
}

/// The versions a record shows. Only records that can show one are read
/// whole: a 2xx read or any write to a resource.
fn provenance_of(
    keys: &ExchangeKeys,
    raw: &str,
) -> (crate::provenance::extract::Found, Vec<String>) {
    let may_show = matches!(keys.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
        || (keys.method == "GET" && (200..300).contains(&keys.status));
    if !may_show {
        return Default::default();
    }
    // Known to be an exchange: read as one directly.
    match serde_json::from_str::<apiwitness_record::Exchange>(raw) {
        Ok(exchange) => (
            crate::provenance::extract::from_exchange(&exchange),
            fields_of(&exchange),
        ),
        Err(_) => Default::default(),
    }
}

/// The fields a write's JSON object body set (field coverage).
fn fields_of(exchange: &apiwitness_record::Exchange) -> Vec<String> {
    let body = match exchange.request_body.as_ref().map(|b| &b.content) {
        Some(apiwitness_record::BodyContent::Json(body)) => Some(body),
        _ => None,
    };
    crate::fields::written_fields(&exchange.method, body)
}

pub fn parse_batch(text: &str) -> ParsedBatch {
    let mut batch = ParsedBatch::default();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match parse_line(raw) {
            Ok(LineKeys::Exchange(e)) => {
                if e.id.is_empty() {
                    batch.errors.push(LineError {
                        line: i + 1,
                        error: "the record has no id".into(),
                    });
                    continue;
                }
                let templates = match ApiRequest::parse(
                    &e.method,
                    &e.path,
                    &e.query,
                    e.request_content_type.as_deref(),
                ) {
                    Ok(r) => {
                        let mut t = vec![r.path_template()];
                        t.extend(r.watch_twin_template());
                        t
                    }
                    // Kept for the record, but it matches no operation.
                    Err(_) => vec![e.path.clone()],
                };
                let (found, fields) = provenance_of(&e, raw);
                batch.items.push(IngestItem {
                    client: client_of(e.user_agent.as_deref()),
                    workload: e
                        .pod
                        .workload
                        .as_ref()
                        .map(|w| format!("{}/{}", w.kind, w.name))
                        .unwrap_or_default(),
                    id: e.id,
                    started_at: e.started_at,
                    pod_namespace: e.pod.namespace,
                    pod_name: e.pod.name,
                    method: e.method,
                    path: e.path,
                    status: e.status,
                    templates,
                    line: raw.to_string(),
                    line_number: i + 1,
                    fields,
                    versions: found.versions,
                    attempts: found.attempts,
                });
            }
            Ok(LineKeys::DropReport(d)) => batch.drops.push((i + 1, d)),
            Err(error) => batch.errors.push(LineError { line: i + 1, error }),
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const RECORD: &str = r#"{"kind":"exchange","format":1,"id":"r1","pod":{"namespace":"ns","name":"p","workload":{"kind":"Deployment","name":"web"}},"started_at":"2026-11-24T06:00:00Z","duration_us":5,"method":"GET","path":"/api/v1/namespaces/ns/configmaps","query":"watch=true","status":200,"user_agent":"kubectl/v1.35.4 (linux/amd64) kubernetes/abc"}"#;

    #[test]
    fn good_lines_are_kept_beside_bad_ones() {
        let text = format!("{RECORD}\nnot json\n\n{{\"kind\":\"exchange\",\"format\":99}}\n");
        let batch = parse_batch(&text);
        assert_eq!(batch.items.len(), 1);
        let item = &batch.items[0];
        assert_eq!(item.workload, "Deployment/web");
        assert_eq!(item.client, "kubectl/v1.35.4");
        assert_eq!(
            item.templates,
            [
                "/api/v1/namespaces/{namespace}/configmaps",
                "/api/v1/watch/namespaces/{namespace}/configmaps"
            ]
        );
        let lines: Vec<usize> = batch.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4]);
        assert!(
            batch.errors[0].error.contains("not a record"),
            "{:?}",
            batch.errors
        );
    }

    #[test]
    fn gzip_is_undone_and_garbage_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(RECORD.as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        assert_eq!(decompress(&body, true).unwrap(), RECORD);
        assert!(matches!(
            decompress(b"plain", true),
            Err(BatchError::Gzip(_))
        ));
        assert_eq!(decompress(&[0xff, 0xfe], false), Err(BatchError::NotText));
    }
}
