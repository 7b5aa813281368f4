//! A Kubernetes protobuf message into the JSON the apiserver writes for the
//! same object, following the table in `generated.rs`.
//!
//! Go writes that JSON from its structs, so a field missing from the message
//! still appears unless encoding/json leaves it out: a plain string as `""`,
//! a nil slice, map or pointer as `null`, a struct as its own zero fields.
//! The decoder does the same, so that a protobuf client and a JSON client
//! doing the same thing leave the same record.

use super::ProtobufError;
use super::generated::{KINDS, MESSAGES};
use super::schema::{Field, Omit, Shape, Ty};
use base64::Engine;
use serde_json::{Map, Value};

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
    let mut out = Map::new();
    read_message(index, bytes, depth, &mut out)?;
    Ok(out)
}

/// One field of the wire format.
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

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        prost::encoding::decode_varint(&mut self.rest).map_err(|e| decode_error(e.to_string()))
    }

    fn fixed64(&mut self) -> Result<u64, ProtobufError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.rest.len() {
            return Err(decode_error("a field runs past the end of its message"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// The next field's number and value, or `None` at the end.
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

fn decode_error(message: impl Into<String>) -> ProtobufError {
    ProtobufError::Decode(message.into())
}

fn read_message(
    index: u16,
    bytes: &[u8],
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(decode_error("messages nest too deep"));
    }
    let message = MESSAGES[usize::from(index)];
    let fields = message.fields();
    // Which fields came; no message has more than 64 (a test checks).
    let mut seen = 0u64;
    let mut reader = Reader::new(bytes);
    let in_message = |e: ProtobufError| match e {
        ProtobufError::Decode(m) => decode_error(format!("{}: {m}", message.name.get())),
        other => other,
    };
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
        let field = &fields[at];
        seen |= 1 << at;
        let context = |e: ProtobufError| match e {
            ProtobufError::Decode(m) => {
                decode_error(format!("{}.{}: {m}", message.name.get(), json_name(field)))
            }
            other => other,
        };
        match field.shape {
            Shape::Single | Shape::Pointer => {
                let v = value(field.ty, wire, depth).map_err(context)?;
                if field.shape == Shape::Single && left_out(field, &v) {
                    out.remove(field.json.get());
                } else {
                    out.insert(field.json.get().to_string(), v);
                }
            }
            Shape::Inline => {
                let (Ty::Message(inner), Wire::Bytes(b)) = (field.ty, wire) else {
                    return Err(context(decode_error(
                        "an inline field that is not a message",
                    )));
                };
                read_message(inner, b, depth + 1, out).map_err(context)?;
            }
            Shape::Repeated => match out.get_mut(field.json.get()) {
                Some(Value::Array(items)) => {
                    repeated(field.ty, wire, depth, items).map_err(context)?;
                }
                _ => {
                    let mut items = Vec::new();
                    repeated(field.ty, wire, depth, &mut items).map_err(context)?;
                    out.insert(field.json.get().to_string(), Value::Array(items));
                }
            },
            Shape::Map => {
                let Wire::Bytes(entry) = wire else {
                    return Err(context(decode_error("a map entry that is not a message")));
                };
                let (key, v) = map_entry(field.ty, entry, depth).map_err(context)?;
                match out.get_mut(field.json.get()) {
                    Some(Value::Object(map)) => {
                        map.insert(key, v);
                    }
                    _ => {
                        out.insert(
                            field.json.get().to_string(),
                            Value::Object(Map::from_iter([(key, v)])),
                        );
                    }
                }
            }
        }
    }
    for (at, field) in fields.iter().enumerate() {
        if seen & (1 << at) == 0 {
            write_absent(field, out);
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

/// Whether encoding/json leaves out a value the message holds.
fn left_out(field: &Field, v: &Value) -> bool {
    match field.omit {
        Omit::Never => false,
        Omit::Empty => !is_struct(field.ty) && is_empty(v),
        // Only Time and MicroTime carry omitzero; zero, they are null.
        Omit::EmptyOrZero => v.is_null() || (!is_struct(field.ty) && is_empty(v)),
    }
}

/// Writes what Go writes for a field the message does not hold: its zero
/// value, unless encoding/json leaves it out.
fn write_absent(field: &Field, out: &mut Map<String, Value>) {
    let value = match (field.shape, field.omit) {
        (Shape::Inline, _) => {
            if let Ty::Message(inner) = field.ty {
                zero_message(inner, out);
            }
            return;
        }
        (Shape::Single, Omit::Never) => zero(field.ty),
        (Shape::Single, Omit::Empty) if is_struct(field.ty) => zero(field.ty),
        (_, Omit::Never) => Value::Null,
        _ => return,
    };
    // An inline struct's field may have come already.
    let name = field.json.get();
    if !out.contains_key(name) {
        out.insert(name.to_string(), value);
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

/// Go's "empty" for `omitempty`: false, 0, "", and an empty slice.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        Value::Object(_) => false,
    }
}

/// The JSON of a Go zero value of the type.
fn zero(ty: Ty) -> Value {
    match ty {
        Ty::String => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Int => Value::from(0),
        Ty::Double => number(0.0),
        Ty::Message(inner) => {
            let mut map = Map::new();
            zero_message(inner, &mut map);
            Value::Object(map)
        }
        Ty::Quantity => Value::String("0".into()),
        Ty::IntOrString => Value::from(0),
        Ty::SchemaOrBool(_) => Value::Bool(false),
        Ty::Bytes
        | Ty::Time
        | Ty::MicroTime
        | Ty::RawExtension
        | Ty::RawJson
        | Ty::StringItems
        | Ty::SchemaOrArray(_)
        | Ty::SchemaOrStringArray(_) => Value::Null,
    }
}

fn zero_message(index: u16, out: &mut Map<String, Value>) {
    for field in MESSAGES[usize::from(index)].fields() {
        write_absent(field, out);
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

fn text(bytes: &[u8]) -> String {
    // encoding/json writes invalid UTF-8 as U+FFFD, as this does.
    String::from_utf8_lossy(bytes).into_owned()
}

/// One value of a field.
fn value(ty: Ty, wire: Wire<'_>, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match ty {
        Ty::String => Value::String(text(expect_bytes(wire)?)),
        Ty::Bytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(expect_bytes(wire)?))
        }
        Ty::Bool => Value::Bool(expect_varint(wire)? != 0),
        // A negative int32 travels sign-extended to 64 bits.
        Ty::Int => Value::from(expect_varint(wire)? as i64),
        Ty::Double => match wire {
            Wire::Fixed64(bits) => number(f64::from_bits(bits)),
            Wire::Fixed32(bits) => number(f64::from(f32::from_bits(bits))),
            _ => return Err(decode_error("expected a fixed-size number")),
        },
        Ty::Message(inner) => {
            let mut map = Map::new();
            read_message(inner, expect_bytes(wire)?, depth + 1, &mut map)?;
            Value::Object(map)
        }
        Ty::Time => timestamp(expect_bytes(wire)?, false)?,
        Ty::MicroTime => timestamp(expect_bytes(wire)?, true)?,
        Ty::Quantity => {
            // The apiserver and client-go write a quantity's canonical text,
            // which is what JSON would carry too.
            let mut s = String::from("0");
            each_field(expect_bytes(wire)?, |tag, w| {
                if tag == 1 {
                    s = text(expect_bytes(w)?);
                }
                Ok(())
            })?;
            Value::String(s)
        }
        Ty::IntOrString => {
            let (mut kind, mut int, mut string) = (0u64, 0i64, String::new());
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => kind = expect_varint(w)?,
                    2 => int = expect_varint(w)? as i64,
                    3 => string = text(expect_bytes(w)?),
                    _ => {}
                }
                Ok(())
            })?;
            if kind == 1 {
                Value::String(string)
            } else {
                Value::from(int)
            }
        }
        Ty::RawExtension => {
            let raw = first_bytes(expect_bytes(wire)?)?;
            match raw {
                None | Some([]) => Value::Null,
                Some(raw) if raw.starts_with(super::MAGIC) => super::object_json(raw, depth + 1)?,
                Some(raw) => serde_json::from_slice(raw).unwrap_or_else(|_| {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
                }),
            }
        }
        Ty::RawJson => match first_bytes(expect_bytes(wire)?)? {
            None | Some([]) => Value::Null,
            Some(raw) => serde_json::from_slice(raw).unwrap_or_else(|_| Value::String(text(raw))),
        },
        Ty::StringItems => {
            let mut items = Vec::new();
            each_field(expect_bytes(wire)?, |tag, w| {
                if tag == 1 {
                    items.push(Value::String(text(expect_bytes(w)?)));
                }
                Ok(())
            })?;
            Value::Array(items)
        }
        Ty::SchemaOrArray(props) => {
            // Field 1: one schema; field 2: a list of them, which wins.
            let (mut one, mut many) = (Value::Null, Vec::new());
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => one = value(Ty::Message(props), w, depth + 1)?,
                    2 => many.push(value(Ty::Message(props), w, depth + 1)?),
                    _ => {}
                }
                Ok(())
            })?;
            if many.is_empty() {
                one
            } else {
                Value::Array(many)
            }
        }
        Ty::SchemaOrBool(props) => {
            // Field 1: allows; field 2: a schema, which wins.
            let (mut allows, mut schema) = (false, None);
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => allows = expect_varint(w)? != 0,
                    2 => schema = Some(value(Ty::Message(props), w, depth + 1)?),
                    _ => {}
                }
                Ok(())
            })?;
            schema.unwrap_or(Value::Bool(allows))
        }
        Ty::SchemaOrStringArray(props) => {
            // Field 1: a schema; field 2: a list of names, which wins.
            let (mut schema, mut names) = (Value::Null, Vec::new());
            each_field(expect_bytes(wire)?, |tag, w| {
                match tag {
                    1 => schema = value(Ty::Message(props), w, depth + 1)?,
                    2 => names.push(Value::String(text(expect_bytes(w)?))),
                    _ => {}
                }
                Ok(())
            })?;
            if names.is_empty() {
                schema
            } else {
                Value::Array(names)
            }
        }
    })
}

/// A float64 as Go writes it: `100`, not `100.0`, when it is whole.
fn number(x: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() < EXACT {
        Value::from(x as i64)
    } else {
        Value::from(x)
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

/// The items of a repeated field: one, or several packed into one string.
fn repeated(
    ty: Ty,
    wire: Wire<'_>,
    depth: usize,
    items: &mut Vec<Value>,
) -> Result<(), ProtobufError> {
    match (ty, wire) {
        (Ty::Int | Ty::Bool, Wire::Bytes(packed)) => {
            let mut reader = Reader::new(packed);
            while !reader.rest.is_empty() {
                items.push(value(ty, Wire::Varint(reader.varint()?), depth)?);
            }
        }
        (Ty::Double, Wire::Bytes(packed)) => {
            let mut reader = Reader::new(packed);
            while !reader.rest.is_empty() {
                items.push(number(f64::from_bits(reader.fixed64()?)));
            }
        }
        (ty, wire) => items.push(value(ty, wire, depth)?),
    }
    Ok(())
}

/// A map entry: key 1 (a string), value 2; a missing value is the zero value.
fn map_entry(ty: Ty, entry: &[u8], depth: usize) -> Result<(String, Value), ProtobufError> {
    let (mut key, mut v) = (String::new(), None);
    each_field(entry, |tag, w| {
        match tag {
            1 => key = text(expect_bytes(w)?),
            2 => v = Some(value(ty, w, depth + 1)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok((key, v.unwrap_or_else(|| zero(ty))))
}

/// A `metav1.Time` (to the second, as its protobuf decoder keeps it) or a
/// `metav1.MicroTime` (to the microsecond), from a Timestamp message.
fn timestamp(bytes: &[u8], micro: bool) -> Result<Value, ProtobufError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
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
        return Ok(Value::Null);
    }
    let at = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| decode_error(format!("time {seconds}: {e}")))?;
    let date = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    Ok(Value::String(if micro {
        format!("{date}.{:06}Z", (nanos / 1000).clamp(0, 999_999))
    } else {
        format!("{date}Z")
    }))
}
