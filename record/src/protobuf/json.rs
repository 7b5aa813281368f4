//! A Kubernetes protobuf message written as the JSON text the apiserver
//! writes for the same object, following the table in `generated.rs`.
//!
//! Go writes that JSON from its structs, so a field missing from the message
//! still appears unless encoding/json leaves it out: a plain string as `""`,
//! a nil slice, map or pointer as `null`, a struct as its own zero fields.
//! The decoder does the same, so that a protobuf client and a JSON client
//! doing the same thing leave the same record.

use super::ProtobufError;
use super::generated::{KINDS, MESSAGES};
use super::schema::{Field, Omit, Shape, Ty};
use crate::json_string::push_json_string;
use base64::Engine;
use serde_json::{Map, Value};
use smallvec::SmallVec;
use std::io::Write;

/// JSON text being written, which notes on the way whether any of some
/// words stands in it as a whole string (a key or a value): what a reader
/// of the text would otherwise scan it for.
pub(crate) struct JsonText {
    pub text: Vec<u8>,
    words: &'static [&'static [u8]],
    pub words_seen: bool,
    /// The most text the message may be written as; see [`JsonText::new`].
    limit: usize,
}

impl JsonText {
    /// For a message of `message_len` bytes. Go writes the fields of an
    /// empty message that `omitempty` does not leave out, so a few bytes of
    /// protobuf can be many bytes of JSON: a crafted body of empty nested
    /// messages could have the decoder (in the sidecar, or in the
    /// aggregator, which decodes bodies shipped as they came) write far more
    /// than it read. Real objects write two to five times their bytes; the
    /// text may reach sixteen times them, and 64 KiB more.
    pub fn new(message_len: usize, words: &'static [&'static [u8]]) -> JsonText {
        JsonText {
            text: Vec::with_capacity(message_len.saturating_mul(2)),
            words,
            words_seen: false,
            limit: message_len.saturating_mul(16).saturating_add(64 << 10),
        }
    }

    fn note(&mut self, string: &[u8]) {
        if !self.words_seen && self.words.contains(&string) {
            self.words_seen = true;
        }
    }

    /// Writes `string` as a JSON string.
    pub fn string(&mut self, string: &str) {
        self.note(string.as_bytes());
        push_json_string(&mut self.text, string);
    }

    /// Writes a string that [`is_plain_ascii`] passed: as it is, in quotes.
    fn plain_ascii_string(&mut self, bytes: &[u8]) {
        debug_assert!(is_plain_ascii(bytes));
        self.note(bytes);
        self.text.reserve(bytes.len() + 2);
        self.text.push(b'"');
        self.text.extend_from_slice(bytes);
        self.text.push(b'"');
    }

    /// Writes JSON text from elsewhere, whose words are unknown.
    pub fn unknown_json(&mut self, json: &[u8]) {
        self.words_seen |= !self.words.is_empty();
        self.text.extend_from_slice(json);
    }
}

impl std::ops::Deref for JsonText {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.text
    }
}

impl std::ops::DerefMut for JsonText {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.text
    }
}

impl Write for JsonText {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deeper than any Kubernetes object nests (a CRD's schema included), so a
/// crafted body cannot exhaust the stack.
const MAX_DEPTH: usize = 200;

/// Go's zero `time.Time` in Unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// The table's message for a kind, if it knows the kind.
pub(super) fn message_of(api_version: &str, kind: &str) -> Option<u16> {
    KINDS
        .binary_search_by(|k| (k.api_version.get(), k.kind.get()).cmp(&(api_version, kind)))
        .ok()
        .map(|i| KINDS[i].message)
}

/// One message's fields as a JSON object; `depth`: how deep it lies in the body.
pub(super) fn message(
    index: u16,
    bytes: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    let mut out = JsonText::new(bytes.len(), &[]);
    write_object(index, bytes, depth, &[], &mut out)?;
    match super::read_back(&out.text)? {
        Value::Object(map) => Ok(map),
        _ => Err(decode_error("the JSON written for a message is no object")),
    }
}

/// Writes one message as a JSON object into `out`, with the string members
/// of `first` ahead of its own fields; a field of the same name as one of
/// them is left out.
pub(super) fn write_object(
    index: u16,
    bytes: &[u8],
    depth: usize,
    first: &[(&'static str, &str)],
    out: &mut JsonText,
) -> Result<(), ProtobufError> {
    let mut object = Object::open(out, !first.is_empty() || has_inline(index));
    for (name, value) in first {
        object.key(name);
        object.out.string(value);
    }
    write_members(index, bytes, depth, &mut object)?;
    object.close();
    Ok(())
}

/// One field of the wire format.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        // Most are one byte: field keys, and the lengths of short strings.
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[cold]
    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, ProtobufError> {
        prost::encoding::decode_varint(&mut self.rest).map_err(|e| decode_error(e.to_string()))
    }

    fn fixed64(&mut self) -> Result<u64, ProtobufError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.rest.len() {
            return Err(decode_error("a field runs past the end of its message"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// The next field's number and value, or `None` at the end.
    #[inline]
    fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtobufError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| decode_error("field number too large"))?;
        if tag == 0 {
            return Err(decode_error("field number 0"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(self.fixed64()?),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| decode_error("length too large"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            other => {
                return Err(decode_error(format!(
                    "wire type {other} (groups are not used by Kubernetes)"
                )));
            }
        };
        Ok(Some((tag, wire)))
    }
}

/// The fields of a `runtime.Unknown`, the envelope of a body: apiVersion
/// and kind (its TypeMeta, field 1) and the object's bytes (field 2), read
/// in place. As prost reads a message, a field given twice takes its last
/// value; unknown fields are passed over.
pub(crate) fn read_envelope(unknown: &[u8]) -> Result<(String, String, &[u8]), ProtobufError> {
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| decode_error("apiVersion or kind is not UTF-8"))
    };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut reader = Reader::new(unknown);
    while let Some((tag, wire)) = reader.next_field()? {
        match (tag, wire) {
            (1, Wire::Bytes(type_meta)) => {
                let mut fields = Reader::new(type_meta);
                while let Some((tag, wire)) = fields.next_field()? {
                    match (tag, wire) {
                        (1, Wire::Bytes(bytes)) => api_version = text(bytes)?,
                        (2, Wire::Bytes(bytes)) => kind = text(bytes)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

fn decode_error(message: impl Into<String>) -> ProtobufError {
    ProtobufError::Decode(message.into())
}

/// A JSON object being written. It keeps its members' names where two
/// sources could write the same one (an embedded struct's fields beside its
/// parent's, or members written ahead of the message's own), so that no
/// name is written twice.
struct Object<'o> {
    out: &'o mut JsonText,
    names: Vec<&'static str>,
    members: usize,
    check_names: bool,
}

impl<'o> Object<'o> {
    /// `check_names`: two sources may write one name into this object.
    fn open(out: &'o mut JsonText, check_names: bool) -> Object<'o> {
        out.push(b'{');
        Object {
            out,
            names: Vec::new(),
            members: 0,
            check_names,
        }
    }

    fn has(&self, name: &str) -> bool {
        self.check_names && self.names.contains(&name)
    }

    /// Writes a member's name; gives where the member starts, for `undo`.
    /// The table's names need no escape, and none is one of the words the
    /// text notes (a test checks both), so a name is not looked up in them.
    fn key(&mut self, name: &'static str) -> usize {
        let mark = self.out.len();
        if self.members > 0 {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.members += 1;
        if self.check_names {
            self.names.push(name);
        }
        mark
    }

    /// Takes back the member that started at `mark`.
    fn undo(&mut self, mark: usize) {
        self.out.truncate(mark);
        self.members -= 1;
        if self.check_names {
            self.names.pop();
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Whether a message embeds a struct, whose fields JSON writes beside its own.
fn has_inline(index: u16) -> bool {
    MESSAGES[usize::from(index)]
        .fields()
        .iter()
        .any(|f| f.shape == Shape::Inline)
}

/// Writes one message's fields as members of `object`, in the Go struct's
/// order; `depth`: how deep the message lies in the body.
fn write_members(
    index: u16,
    bytes: &[u8],
    depth: usize,
    object: &mut Object<'_>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(decode_error("messages nest too deep"));
    }
    if object.out.text.len() > object.out.limit {
        return Err(decode_error(format!(
            "its JSON grows past {} bytes",
            object.out.limit
        )));
    }
    let message = MESSAGES[usize::from(index)];
    let fields = message.fields();
    let in_message = |e: ProtobufError| match e {
        ProtobufError::Decode(m) => decode_error(format!("{}: {m}", message.name.get())),
        other => other,
    };
    // The fields that came, by their place in the table.
    let mut came: SmallVec<[(usize, Wire<'_>); 24]> = SmallVec::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field().map_err(in_message)? {
        // Fields mostly come numbered from 1 in the struct's order.
        let at = match fields.get(tag as usize - 1) {
            Some(f) if f.tag == tag => tag as usize - 1,
            // A field the table does not know (a newer apiserver's) is
            // skipped, as Go's decoder would skip it.
            _ => match fields.iter().position(|f| f.tag == tag) {
                Some(at) => at,
                None => continue,
            },
        };
        came.push((at, wire));
    }
    // Go writes the fields in order, so they mostly come sorted. Stable: a
    // repeated field's items keep their order, and the last of a single
    // field stays last.
    if !came.is_sorted_by_key(|(at, _)| *at) {
        came.sort_by_key(|(at, _)| *at);
    }
    let mut next = 0;
    for (at, field) in fields.iter().enumerate() {
        let start = next;
        while came.get(next).is_some_and(|(a, _)| *a == at) {
            next += 1;
        }
        if start == next {
            write_absent(field, object);
            continue;
        }
        write_field(field, &came[start..next], depth, object).map_err(|e| match e {
            ProtobufError::Decode(m) => {
                decode_error(format!("{}.{}: {m}", message.name.get(), json_name(field)))
            }
            other => other,
        })?;
    }
    Ok(())
}

/// Writes a field that came, once or more (`wires`, in the order they came).
fn write_field(
    field: &Field,
    wires: &[(usize, Wire<'_>)],
    depth: usize,
    object: &mut Object<'_>,
) -> Result<(), ProtobufError> {
    let name = field.json.get();
    match field.shape {
        Shape::Single | Shape::Pointer => {
            if object.has(name) {
                return Ok(());
            }
            // The last of a field that came more than once is its value.
            let Some(&(_, wire)) = wires.last() else {
                return Ok(());
            };
            let mark = object.key(name);
            let start = object.out.len();
            write_value(field.ty, wire, depth, object.out)?;
            if field.shape == Shape::Single && left_out(field, &object.out[start..]) {
                object.undo(mark);
            }
        }
        Shape::Inline => {
            let Ty::Message(inner) = field.ty else {
                return Err(decode_error("an inline field that is not a message"));
            };
            // Parts of one message that came apart are that message, merged.
            let parts: Vec<&[u8]> = wires
                .iter()
                .map(|(_, w)| expect_bytes(*w))
                .collect::<Result<_, _>>()?;
            match parts[..] {
                [one] => write_members(inner, one, depth + 1, object)?,
                _ => write_members(inner, &parts.concat(), depth + 1, object)?,
            }
        }
        Shape::Repeated => {
            if object.has(name) {
                return Ok(());
            }
            object.key(name);
            object.out.push(b'[');
            let mut items = 0;
            for &(_, wire) in wires {
                repeated(field.ty, wire, depth, object.out, &mut items)?;
            }
            object.out.push(b']');
        }
        Shape::Map => {
            if object.has(name) {
                return Ok(());
            }
            let mut entries = wires
                .iter()
                .map(|&(_, wire)| match wire {
                    Wire::Bytes(entry) => map_entry(entry),
                    _ => Err(decode_error("a map entry that is not a message")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            // encoding/json writes a map's keys sorted. Stable: of entries
            // with one key, the last to come is the last of its run, and wins.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            object.key(name);
            let out = &mut *object.out;
            out.push(b'{');
            let mut written = 0;
            for (i, (key, value)) in entries.iter().enumerate() {
                if entries.get(i + 1).is_some_and(|next| next.0 == *key) {
                    continue;
                }
                if written > 0 {
                    out.push(b',');
                }
                written += 1;
                out.string(key);
                out.push(b':');
                match value {
                    Some(wire) => write_value(field.ty, *wire, depth + 1, out)?,
                    None => write_zero(field.ty, out),
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn json_name(field: &Field) -> &'static str {
    match field.json.get() {
        "" => "(inline)",
        name => name,
    }
}

/// Whether encoding/json leaves out a value the message holds, from the
/// JSON written for it.
fn left_out(field: &Field, written: &[u8]) -> bool {
    // Go's "empty" for `omitempty`: false, 0, "", nil and an empty slice.
    let empty = matches!(written, b"\"\"" | b"0" | b"false" | b"null" | b"[]");
    match field.omit {
        Omit::Never => false,
        Omit::Empty => !is_struct(field.ty) && empty,
        // Only Time and MicroTime carry omitzero; zero, they are null.
        Omit::EmptyOrZero => written == b"null" || (!is_struct(field.ty) && empty),
    }
}

/// Writes what Go writes for a field the message does not hold: its zero
/// value, unless encoding/json leaves it out.
fn write_absent(field: &Field, object: &mut Object<'_>) {
    let zero = match (field.shape, field.omit) {
        (Shape::Inline, _) => {
            if let Ty::Message(inner) = field.ty {
                write_absent_fields(inner, object);
            }
            return;
        }
        (Shape::Single, Omit::Never) => true,
        (Shape::Single, Omit::Empty) if is_struct(field.ty) => true,
        (_, Omit::Never) => false,
        _ => return,
    };
    // An inline struct's field may have come already.
    let name = field.json.get();
    if object.has(name) {
        return;
    }
    object.key(name);
    if zero {
        write_zero(field.ty, object.out);
    } else {
        object.out.extend_from_slice(b"null");
    }
}

/// Writes every field of a message as absent: a zero struct's JSON.
fn write_absent_fields(index: u16, object: &mut Object<'_>) {
    for field in MESSAGES[usize::from(index)].fields() {
        write_absent(field, object);
    }
}

/// Whether Go holds the type as a struct, which `omitempty` never leaves out.
fn is_struct(ty: Ty) -> bool {
    matches!(
        ty,
        Ty::Message(_)
            | Ty::Time
            | Ty::MicroTime
            | Ty::Quantity
            | Ty::IntOrString
            | Ty::RawExtension
            | Ty::RawJson
            | Ty::SchemaOrArray(_)
            | Ty::SchemaOrBool(_)
            | Ty::SchemaOrStringArray(_)
    )
}

/// Writes the JSON of a Go zero value of the type.
fn write_zero(ty: Ty, out: &mut JsonText) {
    match ty {
        Ty::String => out.extend_from_slice(b"\"\""),
        Ty::Bool | Ty::SchemaOrBool(_) => out.extend_from_slice(b"false"),
        Ty::Int | Ty::Double | Ty::IntOrString => out.push(b'0'),
        Ty::Message(inner) => {
            let mut object = Object::open(out, has_inline(inner));
            write_absent_fields(inner, &mut object);
            object.close();
        }
        Ty::Quantity => out.extend_from_slice(b"\"0\""),
        Ty::Bytes
        | Ty::Time
        | Ty::MicroTime
        | Ty::RawExtension
        | Ty::RawJson
        | Ty::StringItems
        | Ty::SchemaOrArray(_)
        | Ty::SchemaOrStringArray(_) => out.extend_from_slice(b"null"),
    }
}

fn expect_bytes(wire: Wire<'_>) -> Result<&[u8], ProtobufError> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        _ => Err(decode_error("expected a length-delimited field")),
    }
}

fn expect_varint(wire: Wire<'_>) -> Result<u64, ProtobufError> {
    match wire {
        Wire::Varint(v) => Ok(v),
        _ => Err(decode_error("expected a varint")),
    }
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    // The check for valid text first: it reads a word at a time, where the
    // lossy reading goes a character at a time even through valid text.
    match std::str::from_utf8(bytes) {
        Ok(valid) => std::borrow::Cow::Borrowed(valid),
        // encoding/json writes invalid UTF-8 as U+FFFD, as this does.
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn write_text(bytes: &[u8], out: &mut JsonText) {
    // Most strings of an object (names, labels, images, times) are ASCII
    // that needs no escape: written as they are, without the UTF-8 check
    // and the search for escapes, a third of the cost of writing them.
    if is_plain_ascii(bytes) {
        out.plain_ascii_string(bytes);
    } else {
        out.string(&text(bytes));
    }
}

/// ASCII with no byte that a JSON string escapes: no control character,
/// quote or backslash. Every byte is tested, with no early exit, so that a
/// long string is tested a vector at a time.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |plain, &b| {
        plain & (0x20..0x80).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

fn write_base64(bytes: &[u8], out: &mut JsonText) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

fn write_int(v: i64, out: &mut JsonText) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes JSON text from a message (a RawExtension's or a FieldsV1's) as
/// one value on the line; false where it is not JSON.
fn write_embedded_json(raw: &[u8], out: &mut JsonText) -> bool {
    if let Some(scanned) = crate::RawJson::scan_in_place(raw, out.words) {
        out.words_seen |= !scanned.holds_none();
        out.text.extend_from_slice(scanned.json.as_bytes());
        return true;
    }
    // JSON over several lines, written again on one.
    match serde_json::from_slice::<Value>(raw).and_then(|value| serde_json::to_vec(&value)) {
        Ok(json) => {
            out.unknown_json(&json);
            true
        }
        Err(_) => false,
    }
}

/// Writes one value of a field.
fn write_value(
    ty: Ty,
    wire: Wire<'_>,
    depth: usize,
    out: &mut JsonText,
) -> Result<(), ProtobufError> {
    match ty {
        Ty::String => write_text(expect_bytes(wire)?, out),
        Ty::Bytes => write_base64(expect_bytes(wire)?, out),
        Ty::Bool => out.extend_from_slice(if expect_varint(wire)? != 0 {
            b"true"
        } else {
            b"false"
        }),
        // A negative int32 travels sign-extended to 64 bits.
        Ty::Int => write_int(expect_varint(wire)? as i64, out),
        Ty::Double => match wire {
            Wire::Fixed64(bits) => write_number(f64::from_bits(bits), out),
            Wire::Fixed32(bits) => write_number(f64::from(f32::from_bits(bits)), out),
            _ => return Err(decode_error("expected a fixed-size number")),
        },
        Ty::Message(inner) => write_object(inner, expect_bytes(wire)?, depth + 1, &[], out)?,
        Ty::Time => write_timestamp(expect_bytes(wire)?, false, out)?,
        Ty::MicroTime => write_timestamp(expect_bytes(wire)?, true, out)?,
        Ty::Quantity => {
            // The apiserver and client-go write a quantity's canonical text,
            // which is what JSON would carry too.
            let mut quantity: &[u8] = b"0";
            each_field(expect_bytes(wire)?, |tag, w| {
                if tag == 1 {
                    quantity = expect_bytes(w)?;
                }
                Ok(())
            })?;
            write_text(quantity, out);
        }
        Ty::IntOrString => {
            let (mut kind, mut int, mut string): (u64, i64, &[u8]) = (0, 0, b"");
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => kind = expect_varint(w)?,
                    2 => int = expect_varint(w)? as i64,
                    3 => string = expect_bytes(w)?,
                    _ => {}
                }
                Ok(())
            })?;
            if kind == 1 {
                write_text(string, out);
            } else {
                write_int(int, out);
            }
        }
        Ty::RawExtension => match first_bytes(expect_bytes(wire)?)? {
            None | Some([]) => out.extend_from_slice(b"null"),
            Some(raw) if raw.starts_with(super::MAGIC) => {
                super::write_object_json(raw, depth + 1, out)?
            }
            Some(raw) => {
                if !write_embedded_json(raw, out) {
                    write_base64(raw, out);
                }
            }
        },
        Ty::RawJson => match first_bytes(expect_bytes(wire)?)? {
            None | Some([]) => out.extend_from_slice(b"null"),
            Some(raw) => {
                if !write_embedded_json(raw, out) {
                    write_text(raw, out);
                }
            }
        },
        Ty::StringItems => {
            out.push(b'[');
            let mut items = 0;
            each_field(expect_bytes(wire)?, |tag, w| {
                if tag == 1 {
                    if items > 0 {
                        out.push(b',');
                    }
                    items += 1;
                    write_text(expect_bytes(w)?, out);
                }
                Ok(())
            })?;
            out.push(b']');
        }
        Ty::SchemaOrArray(props) => {
            // Field 1: one schema; field 2: a list of them, which wins.
            let (mut one, mut many) = (None, Vec::new());
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => one = Some(w),
                    2 => many.push(w),
                    _ => {}
                }
                Ok(())
            })?;
            if many.is_empty() {
                match one {
                    Some(w) => write_value(Ty::Message(props), w, depth + 1, out)?,
                    None => out.extend_from_slice(b"null"),
                }
            } else {
                write_list(&many, Ty::Message(props), depth + 1, out)?;
            }
        }
        Ty::SchemaOrBool(props) => {
            // Field 1: allows; field 2: a schema, which wins.
            let (mut allows, mut schema) = (false, None);
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => allows = expect_varint(w)? != 0,
                    2 => schema = Some(w),
                    _ => {}
                }
                Ok(())
            })?;
            match schema {
                Some(w) => write_value(Ty::Message(props), w, depth + 1, out)?,
                None => out.extend_from_slice(if allows { b"true" } else { b"false" }),
            }
        }
        Ty::SchemaOrStringArray(props) => {
            // Field 1: a schema; field 2: a list of names, which wins.
            let (mut schema, mut names) = (None, Vec::new());
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => schema = Some(w),
                    2 => names.push(w),
                    _ => {}
                }
                Ok(())
            })?;
            if !names.is_empty() {
                write_list(&names, Ty::String, depth, out)?;
            } else if let Some(w) = schema {
                write_value(Ty::Message(props), w, depth + 1, out)?;
            } else {
                out.extend_from_slice(b"null");
            }
        }
    }
    Ok(())
}

fn write_list(
    wires: &[Wire<'_>],
    ty: Ty,
    depth: usize,
    out: &mut JsonText,
) -> Result<(), ProtobufError> {
    out.push(b'[');
    for (i, &w) in wires.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(ty, w, depth, out)?;
    }
    out.push(b']');
    Ok(())
}

/// A float64 as Go writes it: `100`, not `100.0`, when it is whole.
fn write_number(x: f64, out: &mut JsonText) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() < EXACT {
        write_int(x as i64, out);
    } else {
        // Go refuses to write a number that is not finite; it is written
        // as null here, so that the line stays JSON.
        let _ = serde_json::to_writer(&mut *out, &x);
    }
}

fn each_field<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(u32, Wire<'a>) -> Result<(), ProtobufError>,
) -> Result<(), ProtobufError> {
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field()? {
        each(tag, wire)?;
    }
    Ok(())
}

/// Field 1 of a message that holds one byte string.
fn first_bytes(bytes: &[u8]) -> Result<Option<&[u8]>, ProtobufError> {
    let mut raw = None;
    each_field(bytes, |tag, w| {
        if tag == 1 {
            raw = Some(expect_bytes(w)?);
        }
        Ok(())
    })?;
    Ok(raw)
}

/// Writes the items of one occurrence of a repeated field: one, or several
/// packed into one string. `items`: how many the list holds so far.
fn repeated(
    ty: Ty,
    wire: Wire<'_>,
    depth: usize,
    out: &mut JsonText,
    items: &mut usize,
) -> Result<(), ProtobufError> {
    let mut separate = |out: &mut JsonText| {
        if *items > 0 {
            out.push(b',');
        }
        *items += 1;
    };
    match (ty, wire) {
        (Ty::Int | Ty::Bool, Wire::Bytes(packed)) => {
            let mut reader = Reader::new(packed);
            while !reader.rest.is_empty() {
                let v = reader.varint()?;
                separate(out);
                write_value(ty, Wire::Varint(v), depth, out)?;
            }
        }
        (Ty::Double, Wire::Bytes(packed)) => {
            let mut reader = Reader::new(packed);
            while !reader.rest.is_empty() {
                let bits = reader.fixed64()?;
                separate(out);
                write_number(f64::from_bits(bits), out);
            }
        }
        (ty, wire) => {
            separate(out);
            write_value(ty, wire, depth, out)?;
        }
    }
    Ok(())
}

/// A map entry: key 1 (a string), value 2, `None` when missing (the zero
/// value).
fn map_entry(entry: &[u8]) -> Result<(std::borrow::Cow<'_, str>, Option<Wire<'_>>), ProtobufError> {
    let (mut key, mut value): (&[u8], _) = (b"", None);
    each_field(entry, |tag, w| {
        match tag {
            1 => key = expect_bytes(w)?,
            2 => value = Some(w),
            _ => {}
        }
        Ok(())
    })?;
    Ok((text(key), value))
}

/// Writes a `metav1.Time` (to the second, as its protobuf decoder keeps it)
/// or a `metav1.MicroTime` (to the microsecond), from a Timestamp message.
fn write_timestamp(bytes: &[u8], micro: bool, out: &mut JsonText) -> Result<(), ProtobufError> {
    if bytes.is_empty() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let (mut seconds, mut nanos) = (0i64, 0i64);
    each_field(bytes, |tag, w| {
        match tag {
            1 => seconds = expect_varint(w)? as i64,
            2 => nanos = expect_varint(w)? as i64,
            _ => {}
        }
        Ok(())
    })?;
    // Go's zero time, January 1 of year 1, is what JSON writes as null.
    if seconds == GO_ZERO_TIME && (!micro || nanos / 1000 == 0) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let at = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| decode_error(format!("time {seconds}: {e}")))?;
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if micro {
        let _ = write!(out, ".{:06}", (nanos / 1000).clamp(0, 999_999));
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}
