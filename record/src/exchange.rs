//! The record of one API exchange: what the interceptor ships and the
//! aggregator stores. It is the wire format between them, one JSON object per
//! NDJSON line, so every change to it is versioned by [`FORMAT_VERSION`].
//!
//! No header is stored, apart from the User-Agent and the two Content-Types:
//! headers carry credentials.

use crate::next_line::NextLine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the record format. Readers refuse records from a newer
/// major format, with a message that names both versions.
///
/// 2: a long watch is shipped in parts while it runs (`Exchange::part`). A
/// reader of format 1 would count each part as a call of its own.
///
/// 3: a body may be shipped gzip as it came (`BodyContent::Gzip`), which
/// a reader of format 2 cannot read. A line is written with the lowest
/// format that reads it ([`Exchange::lowest_format`]), so that an older
/// reader still takes every line without such a body.
///
/// 4: a JSON body may travel unchecked on the line after its record's
/// (`BodyContent::NextLine`, [`crate::next_line`]).
pub const FORMAT_VERSION: u32 = FORMAT_NEXT_LINE;

/// The response header in which an aggregator states the newest record
/// format it reads, in every answer to a batch: a sidecar makes its
/// records for that format.
pub const FORMAT_HEADER: &str = "apiwitness-record-format";

/// The format of a line that holds a body on a line of its own.
pub const FORMAT_NEXT_LINE: u32 = 4;

/// The format of a line that holds a body shipped gzip, and none on a line
/// of its own.
pub const FORMAT_GZIP: u32 = 3;

/// The format of a line that holds no body shipped as it came: a drop
/// report, or most exchanges.
pub const FORMAT_PLAIN: u32 = 2;
const _: () = assert!(FORMAT_PLAIN < FORMAT_GZIP && FORMAT_GZIP < FORMAT_NEXT_LINE);

/// Who made the request: the pod the interceptor runs in, from downward-API
/// environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// The workload that owns the pod, such as `Deployment/web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// A captured body, decoded as far as it could be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BodyFields")]
pub struct Body {
    #[serde(flatten)]
    pub content: BodyContent,
    /// The size of the whole body once decoded (gzip undone), in bytes, even
    /// where only part of it was kept.
    pub size: u64,
    /// Only the first part of the body was kept, up to the configured limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The Content-Encoding it travelled with, if any (gzip is undone here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
}

/// A body as a line holds it: its content under one of four keys beside
/// its size. Read through these fields rather than through `flatten`, which
/// decodes the whole body into serde's own buffer first, and then again.
/// A JSON body is read as its text ([`RawJson`]): a reader that wants a
/// tree builds one, and one that wants the text (the aggregator stores
/// objects as text) never pays for a tree.
#[derive(Deserialize)]
struct BodyFields {
    #[serde(default, deserialize_with = "present")]
    json: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    protobuf: Option<ProtobufBody>,
    #[serde(default)]
    gzip: Option<String>,
    #[serde(default)]
    next_line: Option<NextLine>,
    size: u64,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    content_encoding: Option<String>,
}

/// `"json": null` is a body too: the JSON document `null`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<serde_json::value::RawValue>>, D::Error> {
    Box::<serde_json::value::RawValue>::deserialize(d).map(Some)
}

impl TryFrom<BodyFields> for Body {
    type Error = String;

    fn try_from(f: BodyFields) -> Result<Body, String> {
        let content = match (f.json, f.text, f.base64, f.protobuf, f.gzip, f.next_line) {
            (Some(v), None, None, None, None, None) => {
                BodyContent::RawJson(RawJson(RawText::Serde(v)))
            }
            (None, Some(t), None, None, None, None) => BodyContent::Text(t),
            (None, None, Some(b), None, None, None) => BodyContent::Base64(b),
            (None, None, None, Some(p), None, None) => BodyContent::Protobuf(p),
            (None, None, None, None, Some(g), None) => BodyContent::Gzip(g),
            (None, None, None, None, None, Some(n)) => BodyContent::NextLine(n),
            _ => {
                return Err(
                    "a body holds exactly one of json, text, base64, protobuf, gzip \
                     and next_line"
                        .to_string(),
                );
            }
        };
        Ok(Body {
            content,
            size: f.size,
            truncated: f.truncated,
            content_encoding: f.content_encoding,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyContent {
    /// A JSON document (including protobuf bodies decoded to JSON).
    Json(Value),
    /// UTF-8 text that is not JSON, such as a YAML apply patch, or a JSON
    /// body that was truncated.
    #[serde(serialize_with = "crate::json_string::serialize")]
    Text(String),
    /// Anything else, as base64, with the content type saying what it is.
    #[serde(serialize_with = "crate::json_string::serialize")]
    Base64(String),
    /// A Kubernetes protobuf body (`application/vnd.kubernetes.protobuf`).
    Protobuf(ProtobufBody),
    /// The body's bytes as they came, gzip, as base64: left by the sidecar
    /// for the aggregator to undo, where there can be nothing in it to
    /// redact (`crate::gzip`). Its content type says what it is once
    /// undone, and its size is that of the body undone. Format 3.
    #[serde(serialize_with = "crate::json_string::serialize")]
    Gzip(String),
    /// JSON text left unchecked by the sidecar, where nothing in it can
    /// need redacting: it travels on the line after its record's, whose
    /// line holds its length (`crate::next_line`). The aggregator reads it
    /// into `RawJson`, or `Text` where it is not JSON. Format 4.
    NextLine(NextLine),
    /// A JSON document kept as the text it came in: written into the line
    /// as it is, where a tree would be built and written out again (for a
    /// 64 KiB body, 18 against 54 µs). Written exactly as `Json` is; every
    /// JSON body of a line is read back as this.
    #[serde(rename = "json", skip_deserializing)]
    RawJson(RawJson),
}

impl BodyContent {
    /// The JSON document, as a tree, of a JSON body in either form.
    pub fn json(&self) -> Option<std::borrow::Cow<'_, Value>> {
        match self {
            BodyContent::Json(v) => Some(std::borrow::Cow::Borrowed(v)),
            BodyContent::RawJson(raw) => Some(std::borrow::Cow::Owned(raw.to_value())),
            _ => None,
        }
    }
}

/// A JSON document is the same document as a tree or as text.
impl PartialEq for BodyContent {
    fn eq(&self, other: &BodyContent) -> bool {
        use BodyContent::*;
        match (self, other) {
            (Json(a), Json(b)) => a == b,
            (RawJson(a), RawJson(b)) => a == b,
            (Json(a), RawJson(b)) | (RawJson(b), Json(a)) => *a == b.to_value(),
            (Text(a), Text(b)) | (Base64(a), Base64(b)) | (Gzip(a), Gzip(b)) => a == b,
            (Protobuf(a), Protobuf(b)) => a == b,
            (NextLine(a), NextLine(b)) => a == b,
            _ => false,
        }
    }
}

/// A document [`RawJson::scan`] checked, and what it found in it; `J`
/// holds the document (its text, for [`RawJson::scan_in_place`]).
#[derive(Debug)]
pub struct Scanned<J = RawJson> {
    pub json: J,
    /// Bit i: the i-th word asked for stands in the document.
    pub words_seen: u32,
    /// It holds a `\u` escape of an ASCII letter or digit, which could
    /// spell a word. (Go writes `<`, `>` and `&` as `\u003c`, `\u003e` and
    /// `\u0026`: those spell none.)
    pub letter_escape: bool,
}

impl<J> Scanned<J> {
    fn holding<K>(self, json: impl FnOnce(J) -> K) -> Scanned<K> {
        Scanned {
            json: json(self.json),
            words_seen: self.words_seen,
            letter_escape: self.letter_escape,
        }
    }

    /// None of the words asked for stands in the document, nor a `\u`
    /// escape that could spell one.
    pub fn holds_none(&self) -> bool {
        self.words_seen == 0 && !self.letter_escape
    }
}

/// The text of one JSON document, checked to be JSON, on one line.
#[derive(Debug, Clone)]
pub struct RawJson(RawText);

#[derive(Debug, Clone)]
enum RawText {
    /// As serde_json checked it: written into a line as it is.
    Serde(Box<serde_json::value::RawValue>),
    /// As a [`crate::json_reader::JsonReader`] checked it while reading a
    /// line: serde_json would check it again to make it a `RawValue`, which
    /// was a sixth of reading a record.
    Read(Box<str>),
    /// Captured bytes that [`RawJson::scan_shared`] checked (UTF-8, one
    /// document, one line), still in the buffer they were captured into.
    Shared(bytes::Bytes),
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            RawText::Serde(raw) => raw.serialize(serializer),
            // Only what a reader read is written again, rarely (the
            // aggregator keeps lines as they came): checked once more.
            RawText::Read(_) | RawText::Shared(_) => {
                serde_json::value::RawValue::from_string(self.text().to_string())
                    .map_err(serde::ser::Error::custom)?
                    .serialize(serializer)
            }
        }
    }
}

impl RawJson {
    /// The document in `bytes`, if they hold exactly one JSON document and
    /// no line break (a line of NDJSON holds the whole record). Surrounding
    /// whitespace is left out.
    pub fn parse(bytes: &[u8]) -> Option<RawJson> {
        RawJson::scan(bytes, &[]).map(|scan| scan.json)
    }

    /// As [`RawJson::parse`], noting on the way which of `words` stand in
    /// the document as a whole string, key or value (see
    /// [`crate::json_reader::JsonReader::noting`]).
    pub fn scan(bytes: &[u8], words: &'static [&'static [u8]]) -> Option<Scanned> {
        RawJson::scan_in_place(bytes, words)
            .map(|scan| scan.holding(|text| RawJson(RawText::Read(text.into()))))
    }

    /// As [`RawJson::scan`], with the document left where it is: its text
    /// in `bytes`, surrounding whitespace left out, for a caller that
    /// copies it on (the protobuf decoder, into the JSON it
    /// writes).
    pub fn scan_in_place<'b>(
        bytes: &'b [u8],
        words: &'static [&'static [u8]],
    ) -> Option<Scanned<&'b str>> {
        let (text, words_seen, letter_escape) = check(bytes, words)?;
        Some(Scanned {
            json: text,
            words_seen,
            letter_escape,
        })
    }

    /// As [`RawJson::scan`], keeping the document in the buffer it came in
    /// instead of a copy: a 64 KiB body was copied once more on its way to
    /// its record's line.
    pub fn scan_shared(bytes: &bytes::Bytes, words: &'static [&'static [u8]]) -> Option<Scanned> {
        RawJson::scan_in_place(bytes, words).map(|scan| {
            scan.holding(|text| RawJson(RawText::Shared(bytes.slice_ref(text.as_bytes()))))
        })
    }

    /// JSON text that code of this workspace wrote on one line, such as
    /// the protobuf decoder: taken as it is if it is UTF-8
    /// without a line break, not checked as JSON again (in tests it is).
    pub fn written(text: bytes::Bytes) -> Option<RawJson> {
        let utf8 = std::str::from_utf8(&text).ok()?;
        if utf8.contains('\n') {
            return None;
        }
        debug_assert!(check(&text, &[]).is_some(), "not one JSON document: {utf8}");
        Some(RawJson(RawText::Shared(text)))
    }

    /// A document a [`crate::json_reader::JsonReader`] read as one JSON
    /// value (the span [`crate::json_reader::JsonReader::skip_value`] gave):
    /// not checked again.
    pub fn read(text: &str) -> RawJson {
        RawJson(RawText::Read(text.into()))
    }

    pub fn text(&self) -> &str {
        match &self.0 {
            RawText::Serde(raw) => raw.get(),
            RawText::Read(text) => text,
            // Checked to be UTF-8 when it was made.
            RawText::Shared(bytes) => std::str::from_utf8(bytes).unwrap_or("null"),
        }
    }

    /// The document's bytes, which are UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            RawText::Serde(raw) => raw.get().as_bytes(),
            RawText::Read(text) => text.as_bytes(),
            RawText::Shared(bytes) => bytes,
        }
    }

    /// The document as a tree.
    pub fn to_value(&self) -> Value {
        // It was checked to be JSON when it was made.
        serde_json::from_str(self.text()).unwrap_or(Value::Null)
    }
}

/// The document in `bytes` without the whitespace around it, if they hold
/// exactly one JSON document and no line break (a line of NDJSON holds the
/// whole record); which of `words` stand in it, and whether it holds a `\u`
/// escape.
fn check<'b>(bytes: &'b [u8], words: &'static [&'static [u8]]) -> Option<(&'b str, u32, bool)> {
    let trimmed = bytes.trim_ascii();
    let text = std::str::from_utf8(trimmed).ok()?;
    // Line breaks, like any other control character outside a string, are
    // refused by the check.
    let found = crate::json_check::check(trimmed, words).ok()?;
    Some((text, found.words_seen, found.letter_escape))
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// What is read of a protobuf body without the type's full schema: its
/// envelope's apiVersion and kind, and the object metadata, which every
/// Kubernetes object carries as field 1 (for a list: the list metadata, and
/// each item's metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtobufBody {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// For a list: each item's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Value>>,
    /// The whole body, base64; left out where it could hold a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// One event of a watch response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    /// The object as a tree: `null` where `object_text` holds it.
    pub object: Value,
    /// The object's JSON text as it came, where the interceptor needed no
    /// tree of it (nothing in it to redact): written as it is. An event
    /// read from a line has its object in `object`.
    #[serde(skip)]
    pub object_text: Option<RawJson>,
}

impl WatchEvent {
    pub fn new(event_type: impl Into<String>, object: Value) -> WatchEvent {
        WatchEvent {
            event_type: event_type.into(),
            object,
            object_text: None,
        }
    }

    /// An event whose object stays the text it came as.
    pub fn text(event_type: impl Into<String>, object: RawJson) -> WatchEvent {
        WatchEvent {
            event_type: event_type.into(),
            object: Value::Null,
            object_text: Some(object),
        }
    }
}

impl Serialize for WatchEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut event = serializer.serialize_struct("WatchEvent", 2)?;
        event.serialize_field("type", &self.event_type)?;
        match &self.object_text {
            Some(text) => event.serialize_field("object", text)?,
            None => event.serialize_field("object", &self.object)?,
        }
        event.end()
    }
}

/// A watch response, recorded as its events rather than as one body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchEvents {
    pub events: Vec<WatchEvent>,
    /// Events seen but not kept: over the per-event size or the event count
    /// limit, or not decodable.
    #[serde(default)]
    pub cut: u64,
}

/// One request and its response, as the interceptor saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The record format version, [`FORMAT_VERSION`] when written.
    pub format: u32,
    /// Unique per exchange; the aggregator deduplicates on it. The
    /// interceptor writes a UUIDv7, which sorts by time.
    pub id: String,
    pub pod: PodIdentity,
    /// RFC 3339, UTC, when the request arrived.
    pub started_at: String,
    /// From the request's arrival to the end of the response body.
    pub duration_us: u64,
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// 0 when no response came from the apiserver (see `error`).
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchEvents>,
    /// The response is a `meta.k8s.io` Table (what `kubectl get` asks for):
    /// kept, but it shows columns, not objects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub table: bool,
    /// The protocol the connection was upgraded to (exec, attach, port-forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
    /// Why there is no complete response: the apiserver was unreachable, or the
    /// connection broke mid-body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One part of a watch that was shipped while it ran; `None` for a
    /// watch recorded whole and for every other exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<WatchPart>,
}

/// A watch stays open for minutes or hours, so the interceptor ships its
/// events in parts as they come instead of holding them to its end. Each
/// part is a record of its own, with its own id and the events since the
/// previous part; they share everything else about the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchPart {
    /// The id of the watch's first part, which stands for the whole watch:
    /// the call is counted once, by that part.
    pub watch: String,
    /// 0 for the first part, then one more for each.
    pub index: u32,
    /// The watch has ended: this is its last part, with its final duration
    /// and error.
    pub last: bool,
}

/// An exchange of the current format with nothing known yet: a start for
/// tests and tools that set the fields they care about.
impl Default for Exchange {
    fn default() -> Exchange {
        Exchange {
            format: FORMAT_VERSION,
            id: String::new(),
            pod: PodIdentity::default(),
            started_at: String::new(),
            duration_us: 0,
            method: String::new(),
            path: String::new(),
            query: String::new(),
            status: 0,
            user_agent: None,
            request_content_type: None,
            response_content_type: None,
            request_body: None,
            response_body: None,
            watch: None,
            table: false,
            upgrade: None,
            error: None,
            part: None,
        }
    }
}

impl Exchange {
    /// Whether it holds a body or a watch event: what [`Exchange::drop_bodies`]
    /// lets go.
    pub fn has_bodies(&self) -> bool {
        self.request_body.is_some()
            || self.response_body.is_some()
            || self.watch.as_ref().is_some_and(|w| !w.events.is_empty())
    }

    /// Undoes the gzip bodies, reads the bodies that travelled on lines of
    /// their own, and decodes the protobuf bodies and watch events'
    /// objects, that a sidecar shipped as they came, as the aggregator
    /// stores them. `undo_budget`: the bytes gzip bodies may
    /// still be undone into, less what these took; a body past it stays as
    /// it came. Returns whether any body or object changed; one that does
    /// not undo or decode stays as it came.
    pub fn decode_shipped(&mut self, undo_budget: &mut u64) -> bool {
        let mut decoded = false;
        for (body, content_type) in [
            (&mut self.request_body, &self.request_content_type),
            (&mut self.response_body, &self.response_content_type),
        ] {
            let Some(body) = body else { continue };
            if body.size <= *undo_budget && crate::gzip::undo_shipped(body, content_type.as_deref())
            {
                *undo_budget -= body.size;
                decoded = true;
            }
            decoded |= crate::next_line::read_shipped(body, content_type.as_deref());
            decoded |= crate::protobuf::decode_shipped(body);
        }
        for event in self.watch.iter_mut().flat_map(|w| &mut w.events) {
            decoded |= crate::protobuf::decode_shipped_object(&mut event.object);
        }
        decoded
    }

    /// The lowest record format that reads this exchange's line: format 4
    /// only where a body travels on a line of its own, 3 where one is
    /// shipped gzip.
    pub fn lowest_format(&self) -> u32 {
        let mut format = FORMAT_PLAIN;
        for body in [&self.request_body, &self.response_body]
            .into_iter()
            .flatten()
        {
            format = format.max(match body.content {
                BodyContent::NextLine(_) => FORMAT_NEXT_LINE,
                BodyContent::Gzip(_) => FORMAT_GZIP,
                _ => FORMAT_PLAIN,
            });
        }
        format
    }

    /// The bytes of the bodies kept as text, a writer's estimate of what they
    /// take in a line (a body kept as a tree counts nothing).
    pub fn body_bytes(&self) -> usize {
        [&self.request_body, &self.response_body]
            .into_iter()
            .flatten()
            .map(|body| match &body.content {
                BodyContent::Text(t) | BodyContent::Base64(t) | BodyContent::Gzip(t) => t.len(),
                // Its bytes, not its text: the text of a shared buffer is
                // checked for UTF-8 again, a pass over the whole body.
                BodyContent::RawJson(raw) => raw.as_bytes().len(),
                BodyContent::NextLine(next) => next.len() as usize,
                BodyContent::Json(_) | BodyContent::Protobuf(_) => 0,
            })
            .sum()
    }

    /// Lets the bodies and watch events go and keeps the rest: what was
    /// called, when, by whom, with what status, and each body's true size
    /// (marked truncated, with nothing kept). A queue short of room keeps
    /// the call this way rather than lose it.
    pub fn drop_bodies(&mut self) {
        for body in [&mut self.request_body, &mut self.response_body]
            .into_iter()
            .flatten()
        {
            body.content = BodyContent::Text(String::new());
            body.truncated = true;
        }
        if let Some(watch) = &mut self.watch {
            watch.cut += watch.events.len() as u64;
            watch.events.clear();
        }
    }

    /// A later part of a watch: its call was counted by the first part.
    pub fn is_later_part(&self) -> bool {
        self.part.as_ref().is_some_and(|p| p.index > 0)
    }
}

/// Exchanges that an interceptor had to drop (its queue was full while the
/// aggregator was unreachable), reported once it is reachable again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReport {
    pub format: u32,
    /// Unique per report, so a retried batch counts it once.
    pub id: String,
    pub pod: PodIdentity,
    pub dropped: u64,
    /// RFC 3339: the drops happened between these two times.
    pub first_dropped_at: String,
    pub last_dropped_at: String,
}

/// One line of a shipped batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Exchange(Box<Exchange>),
    DropReport(Box<DropReport>),
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not a record: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "record format {found} is newer than this reader's {supported}: \
         run a newer aggregator, or set the sidecars' --aggregator-format {supported}"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("not a record: unknown kind {0:?}, expected \"exchange\" or \"drop_report\"")]
    UnknownKind(String),
}

/// What a line is, before it is read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Exchange,
    DropReport,
}

/// A line's kind alone: everything else is skipped.
#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// Reads only a line's `kind`. A reader then parses the line as that kind:
/// serde's tagged enum would copy every other field, bodies included, into
/// a buffer before it knew the kind.
pub fn kind_of(text: &str) -> Result<LineKind, LineError> {
    // The interceptor writes the kind first: a line that starts so is
    // known without a pass over its bodies (a seventh of what reading a
    // 2 KB record cost). Whether it is JSON at all is found when it is
    // read as its kind.
    if text.starts_with(r#"{"kind":"exchange","#) {
        return Ok(LineKind::Exchange);
    }
    if text.starts_with(r#"{"kind":"drop_report","#) {
        return Ok(LineKind::DropReport);
    }
    let KindOnly { kind } = serde_json::from_str(text)?;
    match kind.as_str() {
        "exchange" => Ok(LineKind::Exchange),
        "drop_report" => Ok(LineKind::DropReport),
        _ => Err(LineError::UnknownKind(kind)),
    }
}

/// A line's format alone: everything else is skipped.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// The `format` a line says, read without the rest of it; `None` where it
/// is no JSON object with a format. Of a record with lines of its bodies
/// after it, the record's own line is read.
pub fn format_of(line: &[u8]) -> Option<u32> {
    let first = line.split(|b| *b == b'\n').next()?;
    serde_json::from_slice::<FormatOnly>(first)
        .ok()
        .map(|f| f.format)
}

/// Refuses a format newer than this reader's.
pub fn readable_format(found: u32) -> Result<(), LineError> {
    if found > FORMAT_VERSION {
        return Err(LineError::NewerFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// The error for a line whose format is newer than this reader's, if its
/// `format` says so. A reader that cannot read a line asks this before it
/// reports why: what such a line holds that the reader does not know (a
/// kind of body, say) follows from its format, and the format is what the
/// user can act on.
pub fn newer_format(text: &str) -> Option<LineError> {
    readable_format(format_of(text.as_bytes())?).err()
}

impl Line {
    /// Parses one NDJSON line, refusing formats newer than this reader.
    pub fn parse(text: &str) -> Result<Line, LineError> {
        let parsed = match kind_of(text)? {
            LineKind::Exchange => serde_json::from_str(text).map(Line::Exchange),
            LineKind::DropReport => serde_json::from_str(text).map(Line::DropReport),
        };
        let line = parsed.map_err(|e| newer_format(text).unwrap_or(LineError::Json(e)))?;
        readable_format(match &line {
            Line::Exchange(e) => e.format,
            Line::DropReport(d) => d.format,
        })?;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_raw_json_body_is_written_as_json_and_read_back_as_json() {
        let text = br#"  {"kind": "ConfigMap", "data": {"v": "a\"b"}, "n": [1, 2.5e3]}
"#;
        let raw = RawJson::parse(text).unwrap();
        assert_eq!(
            raw.text(),
            r#"{"kind": "ConfigMap", "data": {"v": "a\"b"}, "n": [1, 2.5e3]}"#
        );
        let mut e = exchange();
        e.response_body.as_mut().unwrap().content = BodyContent::RawJson(raw.clone());
        let line = serde_json::to_string(&Line::Exchange(Box::new(e))).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(r#""json":{"kind": "ConfigMap""#), "{line}");
        let back = match Line::parse(&line).unwrap() {
            Line::Exchange(back) => back,
            other => panic!("{other:?}"),
        };
        let content = back.response_body.unwrap().content;
        assert!(
            matches!(&content, BodyContent::RawJson(back) if back.text() == raw.text()),
            "read back as its text: {content:?}"
        );
        assert_eq!(content, BodyContent::Json(raw.to_value()));
        assert_ne!(content, BodyContent::Json(json!({"kind": "ConfigMap"})));
        assert_eq!(raw.to_value()["data"]["v"], "a\"b");
    }

    #[test]
    fn an_exchange_without_its_bodies_keeps_the_call_and_the_true_sizes() {
        let mut e = exchange();
        e.request_body = Some(Body {
            content: BodyContent::Text("a: b".into()),
            size: 4,
            truncated: false,
            content_encoding: None,
        });
        e.watch = Some(WatchEvents {
            events: vec![WatchEvent::new("ADDED", json!({"kind": "ConfigMap"}))],
            cut: 2,
        });
        let whole = e.clone();
        e.drop_bodies();
        for (body, size) in [(&e.request_body, 4), (&e.response_body, 24)] {
            let body = body.as_ref().unwrap();
            assert_eq!(body.content, BodyContent::Text(String::new()));
            assert!(body.truncated);
            assert_eq!(body.size, size);
        }
        let watch = e.watch.as_ref().unwrap();
        assert!(watch.events.is_empty());
        assert_eq!(watch.cut, 3);
        assert_eq!(
            (
                &e.method,
                &e.path,
                &e.query,
                e.status,
                &e.started_at,
                e.duration_us
            ),
            (
                &whole.method,
                &whole.path,
                &whole.query,
                whole.status,
                &whole.started_at,
                whole.duration_us
            )
        );
    }

    #[test]
    fn raw_json_is_only_one_document_on_one_line() {
        assert!(RawJson::parse(b"{\"a\":\n1}").is_none());
        assert!(RawJson::parse(b"{\"a\":1}\r{}").is_none());
        assert!(RawJson::parse(b"{\"a\":1} {}").is_none());
        assert!(RawJson::parse(b"{\"a\":").is_none());
        assert!(RawJson::parse(b"not json").is_none());
        assert!(RawJson::parse(b"").is_none());
        assert_eq!(RawJson::parse(b"null\n").unwrap().text(), "null");
    }

    fn exchange() -> Exchange {
        Exchange {
            format: FORMAT_VERSION,
            id: "0b5f".into(),
            pod: PodIdentity {
                namespace: "ns".into(),
                name: "web-1".into(),
                ..Default::default()
            },
            started_at: "2026-11-24T06:00:00.000000001Z".into(),
            duration_us: 1200,
            method: "GET".into(),
            path: "/api/v1/namespaces/ns/configmaps".into(),
            query: "limit=500".into(),
            status: 200,
            user_agent: Some("kubectl/v1.35.4".into()),
            request_content_type: None,
            response_content_type: Some("application/json".into()),
            request_body: None,
            response_body: Some(Body {
                content: BodyContent::Json(json!({"kind": "ConfigMapList"})),
                size: 24,
                truncated: false,
                content_encoding: None,
            }),
            watch: None,
            table: false,
            upgrade: None,
            error: None,
            part: None,
        }
    }

    #[test]
    fn a_line_round_trips_and_is_tagged() {
        let line = Line::Exchange(Box::new(exchange()));
        let text = serde_json::to_string(&line).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["kind"], "exchange");
        assert_eq!(value["response_body"]["json"]["kind"], "ConfigMapList");
        assert!(value.get("request_body").is_none());
        assert_eq!(Line::parse(&text).unwrap(), line);
    }

    #[test]
    fn every_kind_of_body_round_trips_and_a_body_has_one_content() {
        let bodies = [
            BodyContent::Json(json!({"kind": "ConfigMap"})),
            BodyContent::Json(Value::Null),
            BodyContent::Text("a: b\n".into()),
            BodyContent::Base64("AAE=".into()),
            BodyContent::Protobuf(ProtobufBody {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                metadata: Some(json!({"name": "c"})),
                items: None,
                base64: None,
            }),
            BodyContent::Gzip("H4sIAAAAAAAA/w==".into()),
            BodyContent::NextLine(NextLine::awaited(9)),
        ];
        for content in bodies {
            let body = Body {
                content,
                size: 9,
                truncated: true,
                content_encoding: Some("gzip".into()),
            };
            let text = serde_json::to_string(&body).unwrap();
            assert_eq!(serde_json::from_str::<Body>(&text).unwrap(), body, "{text}");
        }
        for wrong in [r#"{"size":1}"#, r#"{"json":{},"text":"t","size":1}"#] {
            let err = serde_json::from_str::<Body>(wrong).unwrap_err().to_string();
            assert!(err.contains("exactly one of"), "{err}");
        }
        assert!(
            serde_json::from_str::<Body>(r#"{"json":{}}"#).is_err(),
            "size is required"
        );
    }

    #[test]
    fn a_line_needs_a_newer_format_only_for_a_body_shipped_as_it_came() {
        let mut exchange = exchange();
        assert_eq!(exchange.lowest_format(), FORMAT_PLAIN);
        exchange.request_body = Some(Body {
            content: BodyContent::Gzip("H4sIAAAAAAAA/w==".into()),
            size: 0,
            truncated: false,
            content_encoding: Some("gzip".into()),
        });
        assert_eq!(exchange.lowest_format(), FORMAT_GZIP);
        exchange.response_body = Some(Body {
            content: BodyContent::NextLine(NextLine::of(bytes::Bytes::from_static(b"{}")).unwrap()),
            size: 2,
            truncated: false,
            content_encoding: None,
        });
        assert_eq!(exchange.lowest_format(), FORMAT_NEXT_LINE);
        exchange.request_body = None;
        assert_eq!(exchange.lowest_format(), FORMAT_NEXT_LINE);
    }

    #[test]
    fn newer_formats_and_garbage_are_refused_with_a_reason() {
        let mut newer = exchange();
        newer.format = FORMAT_VERSION + 1;
        let text = serde_json::to_string(&Line::Exchange(Box::new(newer))).unwrap();
        let err = Line::parse(&text).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        assert!(Line::parse("{\"kind\":\"exchange\"}").is_err());
        assert!(Line::parse("not json").is_err());
        // The kind is read wherever it stands, and a line that only
        // starts like a record is still read whole.
        let elsewhere = r#"{"format":1,"id":"d","pod":{"namespace":"n","name":"p"},"dropped":3,"first_dropped_at":"t","last_dropped_at":"t","kind":"drop_report"}"#;
        assert!(matches!(Line::parse(elsewhere), Ok(Line::DropReport(d)) if d.dropped == 3));
        assert_eq!(kind_of(elsewhere).unwrap(), LineKind::DropReport);
        assert!(Line::parse(r#"{"kind":"exchange","format":1,"#).is_err());
        assert!(Line::parse(r#"{"kind":"drop_report","format":1}"#).is_err());
        let unknown = Line::parse("{\"kind\":\"gossip\",\"format\":1}").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown kind \"gossip\""),
            "{unknown}"
        );
    }

    #[test]
    fn a_line_of_a_newer_format_is_refused_for_its_format_not_for_what_it_holds() {
        let mut e = exchange();
        e.format = FORMAT_VERSION + 1;
        let text = serde_json::to_string(&Line::Exchange(Box::new(e))).unwrap();
        // A body of a kind this reader has never seen, as a newer sidecar
        // might write.
        let text = text.replacen(
            r#""response_body":{"json":{"kind":"ConfigMapList"}"#,
            r#""response_body":{"hologram":{"frames":3}"#,
            1,
        );
        assert!(
            text.contains("hologram") && !text.contains("ConfigMapList"),
            "{text}"
        );
        let err = Line::parse(&text).unwrap_err();
        assert!(
            matches!(err, LineError::NewerFormat { found, supported }
                if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("--aggregator-format {FORMAT_VERSION}")),
            "{err}"
        );
        // The same body in a line of this reader's format is what it is:
        // a line this reader cannot read.
        let current = text.replacen(
            &format!(r#""format":{}"#, FORMAT_VERSION + 1),
            &format!(r#""format":{FORMAT_VERSION}"#),
            1,
        );
        assert!(matches!(Line::parse(&current), Err(LineError::Json(_))));
        assert!(newer_format(&current).is_none());
        assert!(newer_format("not json").is_none());
    }
}
