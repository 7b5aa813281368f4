//! Batches in: NDJSON record lines (gzip or not), each checked on its own.
//! A bad line gets an error naming its line number; the valid lines of the
//! same batch are still stored.

use crate::provenance::text::Outline;
use crate::record_line::read_exchange;
use crate::store::{IngestItem, StoreError};
use apiwitness_record::{ApiRequest, DropReport, Exchange};
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
    /// Lines stored as written again (their protobuf bodies decoded), not
    /// as they came: the batch as it came is then not what is stored.
    pub rewritten: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("the body is marked {encoding} but is not: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
    #[error("the body is not UTF-8 text")]
    NotText,
    /// Over the size the aggregator accepts, once decompressed.
    #[error("the batch is larger than {0} bytes once decompressed")]
    TooLarge(usize),
    #[error("content encoding {0:?} is not supported: send gzip, zstd or no encoding")]
    UnsupportedEncoding(String),
}

/// The largest batch accepted, decompressed: a compression bomb stops here.
pub const MAX_BATCH_BYTES: usize = 256 << 20;

/// How a batch's body is compressed (its Content-Encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The encoding a Content-Encoding header names; none is identity.
    pub fn of_header(value: Option<&str>) -> Result<Encoding, BatchError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Encoding::Identity),
            Some(v) if v.eq_ignore_ascii_case("identity") => Ok(Encoding::Identity),
            Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => {
                Ok(Encoding::Gzip)
            }
            Some(v) if v.eq_ignore_ascii_case("zstd") => Ok(Encoding::Zstd),
            Some(v) => Err(BatchError::UnsupportedEncoding(v.to_string())),
        }
    }
}

pub fn decompress(body: &[u8], encoding: Encoding) -> Result<String, BatchError> {
    let (name, read): (&'static str, Box<dyn Read + '_>) = match encoding {
        Encoding::Identity => {
            return String::from_utf8(body.to_vec()).map_err(|_| BatchError::NotText);
        }
        Encoding::Zstd if let Some(text) = unzstd_sized(body) => {
            return String::from_utf8(text).map_err(|_| BatchError::NotText);
        }
        Encoding::Gzip => ("gzip", Box::new(flate2::read::GzDecoder::new(body))),
        Encoding::Zstd => (
            "zstd",
            Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(|e| {
                BatchError::Corrupt {
                    encoding: "zstd",
                    reason: e.to_string(),
                }
            })?),
        ),
    };
    let mut out = Vec::new();
    read.take(MAX_BATCH_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Corrupt {
            encoding: name,
            reason: e.to_string(),
        })?;
    if out.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge(MAX_BATCH_BYTES));
    }
    String::from_utf8(out).map_err(|_| BatchError::NotText)
}

/// A zstd body whose frame says its size (an interceptor's does), in one
/// call into exactly that much room: six times faster than the streaming
/// decoder, which was half a microsecond of a 2 KB record's storing. `None`
/// for any body this does not take, which the streaming decoder then reads
/// (and reports on): no size said, a size over [`MAX_BATCH_BYTES`], more
/// than one frame, or a size that is not the truth.
pub(crate) fn unzstd_sized(body: &[u8]) -> Option<Vec<u8>> {
    let size = zstd::zstd_safe::get_frame_content_size(body).ok()??;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_BATCH_BYTES)?;
    zstd::bulk::decompress(body, size).ok()
}

/// The product token of a User-Agent: `kubectl/v1.35.4 (linux/amd64) ...`
/// groups as `kubectl/v1.35.4`.
pub fn client_of(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

enum ParsedLine {
    /// With its response body's outline, where that is JSON.
    Exchange(Box<Exchange>, Option<Box<Outline>>),
    DropReport(Box<DropReport>),
}

/// A line is read once, bodies and all: the versions it shows are taken out
/// of the decoded record rather than decoded again or copied.
fn parse_line(raw: &str) -> Result<ParsedLine, String> {
    // A line this reader cannot read, of a format newer than its own, is
    // reported for its format: that is what the user can act on.
    let not_a_record = |e: serde_json::Error| {
        apiwitness_record::newer_format(raw)
            .map_or_else(|| format!("not a record: {e}"), |newer| newer.to_string())
    };
    let line = match apiwitness_record::kind_of(raw).map_err(|e| e.to_string())? {
        apiwitness_record::LineKind::Exchange => {
            let (exchange, outline) = read_exchange(raw).map_err(not_a_record)?;
            ParsedLine::Exchange(exchange, outline.map(Box::new))
        }
        apiwitness_record::LineKind::DropReport => {
            ParsedLine::DropReport(serde_json::from_str(raw).map_err(not_a_record)?)
        }
    };
    let format = match &line {
        ParsedLine::Exchange(e, _) => e.format,
        ParsedLine::DropReport(d) => d.format,
    };
    apiwitness_record::readable_format(format).map_err(|e| e.to_string())?;
    Ok(line)
}

/// Undoes the gzip bodies and decodes the protobuf bodies and watch
/// events' objects the sidecar shipped as they came, and writes the line
/// again with their JSON, which is then what is stored (with its
/// response's outline). Returns `None` where the exchange holds no such
/// body, or none this aggregator can read; such a body is stored as it
/// came. `undo_budget`: the bytes the batch's gzip bodies may still be
/// undone into; a body past it is stored as it came, so that a batch of
/// small lines cannot make the aggregator hold more than its own bound.
fn with_shipped_bodies_decoded(
    exchange: &mut Exchange,
    undo_budget: &mut u64,
) -> Option<(String, Option<Box<Outline>>)> {
    let outlined = outline_response_on_its_own_line(exchange);
    if !exchange.decode_shipped(undo_budget) && outlined.is_none() {
        return None;
    }
    let mut line = Vec::with_capacity(exchange.body_bytes() + 1024);
    exchange.write_line(&mut line);
    // A line is written from strings and JSON text: it is UTF-8.
    let line = String::from_utf8(line)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    // Outlined from the response's own text, as reading the line again
    // would outline it, without reading the rest of the line again.
    let outline = outlined.or_else(|| match &exchange.response_body {
        Some(apiwitness_record::Body {
            content: apiwitness_record::BodyContent::RawJson(raw),
            ..
        }) => crate::provenance::text::outline_of(raw.text()).map(Box::new),
        _ => None,
    });
    Some((line, outline))
}

/// A JSON response that travelled on its own line, checked as it is
/// outlined: one pass over it, where checking it and then outlining it
/// took two (809 against 406 µs for a list of 50 Pods). Taken as its text
/// where it is JSON; anything else is left to `decode_shipped`.
fn outline_response_on_its_own_line(exchange: &mut Exchange) -> Option<Box<Outline>> {
    use apiwitness_record::{BodyContent, RawJson, media};
    let body = exchange.response_body.as_mut()?;
    let BodyContent::NextLine(next) = &body.content else {
        return None;
    };
    let media = media::media_type(exchange.response_content_type.as_deref());
    if !media::is_json(&media) {
        return None;
    }
    // The reader accepts what the sidecar's check accepts, but for line
    // breaks, which such a line cannot hold.
    let text = std::str::from_utf8(apiwitness_record::json_reader::trim_whitespace(
        next.text()?,
    ))
    .ok()?;
    let outline = crate::provenance::text::outline_of(text)?;
    body.content = BodyContent::RawJson(RawJson::read(text));
    Some(Box::new(outline))
}

/// The fields a write's JSON object body set (field coverage).
fn fields_of(exchange: &Exchange) -> Vec<String> {
    let body = exchange
        .request_body
        .as_ref()
        .and_then(|b| b.content.json());
    crate::fields::written_fields(&exchange.method, body.as_deref())
}

/// What ingest stores of one exchange: its keys, the operations it counts
/// for, the fields it set, and the versions it shows, encoded for the store.
fn item_of(
    mut e: Exchange,
    response_outline: Option<Box<Outline>>,
    line: String,
    line_number: usize,
) -> Result<IngestItem, StoreError> {
    let request = ApiRequest::parse(
        &e.method,
        &e.path,
        &e.query,
        e.request_content_type.as_deref(),
    );
    let templates = match &request {
        Ok(r) => {
            let mut t = vec![r.path_template()];
            t.extend(r.watch_twin_template());
            t
        }
        // Kept for the record, but it matches no operation.
        Err(_) => vec![e.path.clone()],
    };
    let fields = fields_of(&e);
    let found = match &request {
        Ok(r) => crate::provenance::extract::from_request(&mut e, r, response_outline.as_deref())
            .map_err(|e| StoreError::Invalid(format!("encoding a version: {e}")))?,
        Err(_) => Default::default(),
    };
    Ok(IngestItem {
        client: client_of(e.user_agent.as_deref()),
        workload: e
            .pod
            .workload
            .as_ref()
            .map(|w| [&*w.kind, "/", &w.name].concat())
            .unwrap_or_default(),
        id: e.id,
        started_at: e.started_at,
        pod_namespace: e.pod.namespace,
        pod_name: e.pod.name,
        method: e.method,
        path: e.path,
        status: e.status,
        templates,
        line,
        line_number,
        fields,
        later_part: e.part.as_ref().is_some_and(|p| p.index > 0),
        versions: found.versions,
        attempts: found.attempts,
    })
}

/// The lines of a text as `str::lines` cuts them, found with memchr:
/// `str::lines` took a twentieth of parsing a batch of 2 KB lines.
pub(crate) fn lines_of(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(at) = memchr::memchr(b'\n', rest.as_bytes()) else {
            // The last line, without a line break: kept as it is.
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..at];
        rest = &rest[at + 1..];
        Some(line.strip_suffix('\r').unwrap_or(line))
    })
}

pub fn parse_batch(text: &str) -> ParsedBatch {
    parse_batch_undoing_at_most(text, MAX_BATCH_BYTES as u64)
}

/// [`parse_batch`], undoing at most `undo_budget` bytes of gzip bodies.
fn parse_batch_undoing_at_most(text: &str, mut undo_budget: u64) -> ParsedBatch {
    let mut batch = ParsedBatch::default();
    let mut lines = lines_of(text).enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        if raw.trim().is_empty() {
            continue;
        }
        let error = match parse_line(raw) {
            Ok(ParsedLine::Exchange(mut e, outline)) => {
                // Taken whatever else is wrong with the record, so that no
                // body is read as a line of its own.
                let taken = take_next_lines(&mut e, &mut lines);
                if let Err(missing) = taken {
                    missing.to_string()
                } else if e.id.is_empty() {
                    "the record has no id".to_string()
                } else {
                    let (line, outline) =
                        match with_shipped_bodies_decoded(&mut e, &mut undo_budget) {
                            Some(decoded) => {
                                batch.rewritten += 1;
                                decoded
                            }
                            None => (raw.to_string(), outline),
                        };
                    match item_of(*e, outline, line, i + 1) {
                        Ok(item) => {
                            batch.items.push(item);
                            continue;
                        }
                        Err(e) => e.to_string(),
                    }
                }
            }
            Ok(ParsedLine::DropReport(d)) => {
                batch.drops.push((i + 1, *d));
                continue;
            }
            Err(error) => error,
        };
        batch.errors.push(LineError { line: i + 1, error });
    }
    batch
}

/// Takes the lines a record's bodies travel on, those after its own.
fn take_next_lines<'a>(
    exchange: &mut Exchange,
    lines: &mut std::iter::Peekable<impl Iterator<Item = (usize, &'a str)>>,
) -> Result<(), apiwitness_record::next_line::NextLineError> {
    exchange.take_next_lines(|len| {
        lines
            .next_if(|(_, line)| line.len() as u64 == len)
            .map(|(_, line)| line)
            .ok_or_else(|| lines.peek().map(|(_, line)| line.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    #[test]
    fn lines_are_cut_as_str_lines_cuts_them() {
        for text in [
            "",
            "a",
            "a\n",
            "a\nb",
            "a\r\nb\r\n",
            "\n",
            "\n\n",
            "a\n\nb\n",
            "a\rb\n",
            "ü\r\n日本\n\r",
        ] {
            assert_eq!(
                lines_of(text).collect::<Vec<_>>(),
                text.lines().collect::<Vec<_>>(),
                "{text:?}"
            );
        }
    }

    const RECORD: &str = r#"{"kind":"exchange","format":1,"id":"r1","pod":{"namespace":"ns","name":"p","workload":{"kind":"Deployment","name":"web"}},"started_at":"2026-11-24T06:00:00Z","duration_us":5,"method":"GET","path":"/api/v1/namespaces/ns/configmaps","query":"watch=true","status":200,"user_agent":"kubectl/v1.35.4 (linux/amd64) kubernetes/abc"}"#;

    #[test]
    fn good_lines_are_kept_beside_bad_ones() {
        // A newer sidecar's record, with a body of a kind this reader has
        // never seen: refused for its format, which the user can act on.
        let newer = RECORD.replace(r#""format":1"#, r#""format":99"#).replace(
            r#""status":200"#,
            r#""status":200,"response_body":{"hologram":{"frames":3},"size":3}"#,
        );
        let text =
            format!("{RECORD}\nnot json\n\n{{\"kind\":\"exchange\",\"format\":99}}\n{newer}\n");
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
        assert_eq!(lines, [2, 4, 5]);
        assert!(
            batch.errors[0].error.contains("not a record"),
            "{:?}",
            batch.errors
        );
        for newer in &batch.errors[1..] {
            assert!(
                newer.error.starts_with(&format!(
                    "record format 99 is newer than this reader's {}",
                    apiwitness_record::FORMAT_VERSION
                )) && newer.error.contains("--aggregator-format"),
                "{newer:?}"
            );
        }
    }

    #[test]
    fn a_watch_shipped_in_parts_counts_once_and_shows_every_part_s_versions() {
        use crate::store::Store;
        let object = |rv: u32| {
            format!(
                r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c","namespace":"ns","uid":"u1","resourceVersion":"{rv}"}}}}"#
            )
        };
        let part = |id: &str, index: u32, last: bool, rv: u32| {
            RECORD
                .replace(r#""id":"r1""#, &format!(r#""id":"{id}""#))
                .replace(r#""format":1"#, r#""format":2"#)
                .replace(
                    r#""status":200"#,
                    &format!(
                        r#""status":200,"watch":{{"events":[{{"type":"ADDED","object":{}}}]}},"part":{{"watch":"w1","index":{index},"last":{last}}}"#,
                        object(rv)
                    ),
                )
        };
        let text = [
            part("w1", 0, false, 5),
            part("w1-b", 1, false, 6),
            part("w1-c", 2, true, 7),
        ]
        .join("\n");
        let batch = parse_batch(&text);
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        let later: Vec<bool> = batch.items.iter().map(|i| i.later_part).collect();
        assert_eq!(later, [false, true, true]);

        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("w.db")).unwrap();
        store.ingest(&batch.items, &[]).unwrap();
        let hits = store.hits(&Default::default()).unwrap();
        // The list and the watch operation, once each.
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert!(hits.iter().all(|h| h.hits == 1), "{hits:?}");
        let query = crate::provenance::ObjectQuery {
            namespace: "ns".into(),
            resource: "configmaps".into(),
            name: "c".into(),
        };
        assert_eq!(store.version_keys(&query).unwrap().len(), 3);
    }

    /// A GET of a list of 50 Pods whose response body is `content`.
    fn pod_list_line(content: apiwitness_record::BodyContent) -> String {
        let mut exchange: Exchange = serde_json::from_str(RECORD).unwrap();
        exchange.path = "/api/v1/namespaces/apiwitness-bench/pods".into();
        exchange.query = String::new();
        exchange.response_content_type = Some("application/vnd.kubernetes.protobuf".into());
        exchange.response_body = Some(apiwitness_record::Body {
            content,
            size: PODS_50.len() as u64,
            truncated: false,
            content_encoding: None,
        });
        let mut line = Vec::new();
        exchange.write_line(&mut line);
        String::from_utf8(line).unwrap()
    }

    /// The apiserver's list of 50 Pods in protobuf, as the interceptor
    /// bench gets it.
    const PODS_50: &[u8] = include_bytes!("../../interceptor/benches/data/pods-50.pb");

    /// `bytes` as the interceptor ships a body of the list's kind.
    fn shipped_as_it_came(bytes: &[u8]) -> apiwitness_record::BodyContent {
        use apiwitness_record::protobuf::{envelope_kind, shipped_body};
        apiwitness_record::BodyContent::Protobuf(shipped_body(
            envelope_kind(PODS_50).unwrap(),
            bytes,
        ))
    }

    #[test]
    fn protobuf_shipped_as_it_came_is_stored_as_the_sidecar_would_have_decoded_it() {
        let json = pods_50_json();
        let decoded_in_the_sidecar = pod_list_line(apiwitness_record::BodyContent::RawJson(
            apiwitness_record::RawJson::written(json.into()).unwrap(),
        ));
        let shipped = pod_list_line(shipped_as_it_came(PODS_50));
        let batch = parse_batch(&format!("{shipped}\n{decoded_in_the_sidecar}\n"));
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        let [left, decoded] = &batch.items[..] else {
            panic!("two items: {:?}", batch.items.len())
        };
        assert_eq!(left.line, decoded.line);
        assert_eq!(batch.rewritten, 1);
        assert!(left.line.contains(r#""response_body":{"json":{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"#));
        assert_eq!(left.versions.len(), 50);
        assert_eq!(left.versions, decoded.versions);

        // Bytes that do not decode are stored as they came, beside the kind.
        let mut cut = PODS_50.to_vec();
        cut.truncate(PODS_50.len() / 2);
        let shipped = pod_list_line(shipped_as_it_came(&cut));
        let batch = parse_batch(&shipped);
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert_eq!(batch.items[0].line, shipped);
        assert_eq!(batch.rewritten, 0);
        assert!(batch.items[0].versions.is_empty());
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// The JSON the apiserver writes for the list of 50 Pods.
    fn pods_50_json() -> Vec<u8> {
        let Ok(apiwitness_record::protobuf::DecodedText::Full { json, .. }) =
            apiwitness_record::protobuf::decode_body_text(PODS_50, &[])
        else {
            panic!("the list decodes whole")
        };
        json
    }

    /// A GET of the list as JSON (of `json_len` bytes) whose response body
    /// is `content`.
    fn json_pod_list_line(content: apiwitness_record::BodyContent, json_len: usize) -> String {
        pod_list_line(content)
            .replace("application/vnd.kubernetes.protobuf", "application/json")
            .replace(
                &format!(r#""size":{}"#, PODS_50.len()),
                &format!(r#""size":{json_len}"#),
            )
    }

    #[test]
    fn bodies_shipped_gzip_are_stored_as_the_sidecar_would_have_recorded_them() {
        let json = pods_50_json();
        let as_json = |content| json_pod_list_line(content, json.len());
        let recorded = as_json(apiwitness_record::BodyContent::RawJson(
            apiwitness_record::RawJson::written(json.clone().into()).unwrap(),
        ));
        let shipped_json = as_json(apiwitness_record::gzip::shipped_body(&gzip(&json)));
        // Protobuf, gzip: undone, then decoded.
        let shipped_protobuf = pod_list_line(apiwitness_record::gzip::shipped_body(&gzip(PODS_50)));
        let batch = parse_batch(&format!("{shipped_json}\n{recorded}\n{shipped_protobuf}\n"));
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        let [json_left, json_recorded, protobuf_left] = &batch.items[..] else {
            panic!("three items: {:?}", batch.items.len())
        };
        assert_eq!(batch.rewritten, 2);
        assert_eq!(json_left.line, json_recorded.line);
        assert_eq!(json_left.versions.len(), 50);
        assert_eq!(json_left.versions, json_recorded.versions);
        assert!(
            protobuf_left
                .line
                .contains(r#""response_body":{"json":{"kind":"PodList","#)
        );
        assert_eq!(protobuf_left.versions, json_recorded.versions);

        // What does not undo is stored as it came.
        let broken = as_json(apiwitness_record::BodyContent::Gzip("H4sIAAAA".into()));
        let batch = parse_batch(&broken);
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert_eq!(batch.items[0].line, broken);
        assert_eq!(batch.rewritten, 0);

        // So is what is past the batch's bound for bodies undone: the
        // first list fits it, the second would not.
        let second = shipped_json.replace(r#""id":"r1""#, r#""id":"r2""#);
        let batch = parse_batch_undoing_at_most(
            &format!("{shipped_json}\n{second}\n"),
            json.len() as u64 * 3 / 2,
        );
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert_eq!(batch.rewritten, 1);
        assert_eq!(batch.items[0].line, json_recorded.line);
        assert!(batch.items[1].line.contains(r#""response_body":{"gzip":"#));
    }

    #[test]
    fn bodies_on_lines_of_their_own_are_stored_as_the_sidecar_would_have_checked_them() {
        let json = pods_50_json();
        let as_json = |content, id: &str| {
            json_pod_list_line(content, json.len())
                .replace(r#""id":"r1""#, &format!(r#""id":"{id}""#))
        };
        let next_line = |text: &[u8]| {
            apiwitness_record::BodyContent::NextLine(
                apiwitness_record::NextLine::of(text.to_vec()).unwrap(),
            )
        };
        let recorded = as_json(
            apiwitness_record::BodyContent::RawJson(
                apiwitness_record::RawJson::written(json.clone().into()).unwrap(),
            ),
            "r1",
        );
        let sent = as_json(next_line(&json), "r1");
        assert_eq!(sent.lines().count(), 2);
        // Not JSON: kept as text.
        let cut = &json[..json.len() / 2];
        let sent_cut = as_json(next_line(cut), "r2");
        let batch = parse_batch(&format!("{sent}\n{recorded}\n{sent_cut}\n"));
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        let [left, checked, cut_left] = &batch.items[..] else {
            panic!("three items: {:?}", batch.items.len())
        };
        assert_eq!(batch.rewritten, 2);
        assert_eq!(left.line, checked.line);
        assert_eq!(left.versions.len(), 50);
        assert_eq!(left.versions, checked.versions);
        assert!(
            cut_left
                .line
                .contains(r#""response_body":{"text":"{\"kind\":\"PodList\""#)
        );
        assert!(cut_left.versions.is_empty());

        // Space before the document is left out, as the sidecar's check
        // leaves it out, and the versions are still found.
        let mut spaced = b"  ".to_vec();
        spaced.extend_from_slice(&json);
        let batch = parse_batch(&as_json(next_line(&spaced), "r3"));
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert_eq!(
            batch.items[0].line,
            checked.line.replace(r#""id":"r1""#, r#""id":"r3""#)
        );
        let resource_versions = |item: &IngestItem| -> Vec<String> {
            item.versions
                .iter()
                .map(|v| v.version.resource_version.clone())
                .collect()
        };
        assert_eq!(
            resource_versions(&batch.items[0]),
            resource_versions(checked)
        );
        assert_eq!(batch.items[0].versions.len(), 50);

        // A record whose body line is missing is refused, and the next one
        // is still read; so is a record after a body line of the wrong
        // length, which is not taken as the body.
        let (sent_record, _) = sent.split_once('\n').unwrap();
        let batch = parse_batch(&format!("{sent_record}\n{recorded}\n{sent_record}\n"));
        let errors: Vec<(usize, &str)> = batch
            .errors
            .iter()
            .map(|e| (e.line, e.error.as_str()))
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, 1);
        assert!(errors[0].1.contains("but that line holds"), "{errors:?}");
        assert_eq!(
            errors[1],
            (
                3,
                "the record's response body travels on the next line, but the batch ends"
            )
        );
        assert_eq!(batch.items.len(), 1);
        assert_eq!(batch.items[0].line, checked.line);
    }

    #[test]
    fn watch_events_shipped_as_they_came_show_their_versions() {
        use k8s_pb::api::core::v1::ConfigMap;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
        use prost::Message;
        let enveloped = |rv: &str| {
            let config_map = ConfigMap {
                metadata: Some(ObjectMeta {
                    name: Some("c".into()),
                    namespace: Some("ns".into()),
                    uid: Some("u1".into()),
                    resource_version: Some(rv.into()),
                    ..Default::default()
                }),
                data: [("v".to_string(), rv.to_string())].into(),
                ..Default::default()
            };
            let mut out = b"k8s\0".to_vec();
            Unknown {
                type_meta: Some(TypeMeta {
                    api_version: Some("v1".into()),
                    kind: Some("ConfigMap".into()),
                }),
                raw: Some(config_map.encode_to_vec()),
                ..Default::default()
            }
            .encode(&mut out)
            .unwrap();
            out
        };
        let mut exchange: Exchange = serde_json::from_str(RECORD).unwrap();
        exchange.watch = Some(apiwitness_record::WatchEvents {
            events: ["5", "6"]
                .map(|rv| {
                    let bytes = enveloped(rv);
                    let envelope = apiwitness_record::protobuf::envelope_kind(&bytes).unwrap();
                    apiwitness_record::WatchEvent::new(
                        "MODIFIED",
                        apiwitness_record::protobuf::shipped_object(envelope, &bytes),
                    )
                })
                .to_vec(),
            cut: 0,
        });
        let mut line = Vec::new();
        exchange.write_line(&mut line);
        let batch = parse_batch(&String::from_utf8(line).unwrap());
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert_eq!(batch.rewritten, 1);
        let item = &batch.items[0];
        assert_eq!(item.versions.len(), 2, "{}", item.line);
        // As the sidecar writes a decoded event: a tree, its keys in order.
        assert!(
            item.line.contains(
                r#""object":{"apiVersion":"v1","data":{"v":"5"},"kind":"ConfigMap","metadata":{"#
            ),
            "{}",
            item.line
        );
        assert!(!item.line.contains("base64"), "{}", item.line);
    }

    #[test]
    fn gzip_and_zstd_are_undone_and_garbage_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(RECORD.as_bytes()).unwrap();
        let gzipped = gz.finish().unwrap();
        assert_eq!(decompress(&gzipped, Encoding::Gzip).unwrap(), RECORD);
        let zstded = zstd::bulk::compress(RECORD.as_bytes(), 1).unwrap();
        assert_eq!(decompress(&zstded, Encoding::Zstd).unwrap(), RECORD);
        for (encoding, name) in [(Encoding::Gzip, "gzip"), (Encoding::Zstd, "zstd")] {
            let error = decompress(b"plain", encoding).unwrap_err();
            assert!(
                matches!(&error, BatchError::Corrupt { encoding, .. } if *encoding == name),
                "{error:?}"
            );
        }
        // Read whole whichever way it was written: two frames one after
        // the other, and a frame that does not say its size.
        let twice = [zstded.clone(), zstded.clone()].concat();
        assert_eq!(
            decompress(&twice, Encoding::Zstd).unwrap(),
            format!("{RECORD}{RECORD}")
        );
        let mut no_size = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        no_size.include_contentsize(false).unwrap();
        no_size.write_all(RECORD.as_bytes()).unwrap();
        let no_size = no_size.finish().unwrap();
        assert_eq!(unzstd_sized(&no_size), None);
        assert_eq!(decompress(&no_size, Encoding::Zstd).unwrap(), RECORD);
        assert_eq!(unzstd_sized(&zstded).as_deref(), Some(RECORD.as_bytes()));
        // A zstd stream cut short is an error, not a shorter batch.
        let cut = decompress(&zstded[..zstded.len() - 4], Encoding::Zstd);
        assert!(matches!(cut, Err(BatchError::Corrupt { .. })), "{cut:?}");
        assert_eq!(
            decompress(&[0xff, 0xfe], Encoding::Identity),
            Err(BatchError::NotText)
        );
    }

    #[test]
    fn a_bomb_stops_at_the_batch_bound() {
        let big = zstd::bulk::compress(&vec![b' '; MAX_BATCH_BYTES + 10], 3).unwrap();
        assert!(big.len() < 1 << 20);
        assert_eq!(
            decompress(&big, Encoding::Zstd),
            Err(BatchError::TooLarge(MAX_BATCH_BYTES))
        );
    }

    #[test]
    fn content_encodings_are_read_from_the_header() {
        assert_eq!(Encoding::of_header(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::of_header(Some("GZIP")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::of_header(Some("zstd")), Ok(Encoding::Zstd));
        let error = Encoding::of_header(Some("br")).unwrap_err();
        assert_eq!(error, BatchError::UnsupportedEncoding("br".into()));
        assert!(error.to_string().contains("gzip, zstd"));
    }
}
