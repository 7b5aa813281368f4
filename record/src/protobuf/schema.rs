//! The shape of the table in `generated.rs`: for each Kubernetes message, its
//! fields by protobuf number, with what encoding/json makes of each. The
//! table holds no pointer: names are places in one string, and a message's
//! fields a run of one array.

use super::generated::{FIELDS, NAMES};

/// A string of `NAMES`: where it starts, and its length.
#[derive(Debug, Clone, Copy)]
pub(super) struct Name {
    at: u32,
    len: u16,
}

impl Name {
    pub fn get(self) -> &'static str {
        let start = self.at as usize;
        NAMES
            .get(start..start + usize::from(self.len))
            .unwrap_or("")
    }
}

/// A kind the apiserver serves in protobuf, and its message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kind {
    pub api_version: Name,
    pub kind: Name,
    pub message: u16,
}

/// One Go struct that travels as a protobuf message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Message {
    /// The Go type, for error messages.
    pub name: Name,
    first_field: u16,
    field_count: u8,
}

impl Message {
    /// In the Go struct's order, which is the order of the JSON it writes.
    pub fn fields(self) -> &'static [Field] {
        let first = usize::from(self.first_field);
        FIELDS
            .get(first..first + usize::from(self.field_count))
            .unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    pub tag: u32,
    /// The JSON name; empty for an embedded struct written inline.
    pub json: Name,
    pub ty: Ty,
    pub shape: Shape,
    pub omit: Omit,
}

/// What the field holds, and how its JSON is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    String,
    /// `[]byte`: base64 in JSON.
    Bytes,
    Bool,
    /// Any signed Go integer: a varint. (No served type has an unsigned one.)
    Int,
    /// `float64`: fixed 64 bits.
    Double,
    /// A struct: its index in `MESSAGES`.
    Message(u16),
    /// `metav1.Time`: RFC 3339 to the second, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 to the microsecond, `null` when zero.
    MicroTime,
    /// `resource.Quantity`: its text.
    Quantity,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `runtime.RawExtension`: the embedded object, JSON or protobuf.
    RawExtension,
    /// A message whose field 1 holds JSON text (`FieldsV1`, apiextensions' `JSON`).
    RawJson,
    /// A named `[]string` with protobuf methods of its own (`ExtraValue`,
    /// `Verbs`): a message whose field 1 repeats the items.
    StringItems,
    /// apiextensions' `JSONSchemaPropsOrArray`, holding JSONSchemaProps.
    SchemaOrArray(u16),
    /// apiextensions' `JSONSchemaPropsOrBool`.
    SchemaOrBool(u16),
    /// apiextensions' `JSONSchemaPropsOrStringArray`.
    SchemaOrStringArray(u16),
}

/// How the Go field holds its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A value: its zero value when absent from the message.
    Single,
    /// A pointer: `null` when absent.
    Pointer,
    /// A slice: `null` when absent.
    Repeated,
    /// A map with string keys (entries: key 1, value 2): `null` when absent.
    Map,
    /// An embedded struct, whose fields JSON writes into its parent's object.
    Inline,
}

/// When encoding/json leaves the field out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Omit {
    Never,
    /// `omitempty`: false, 0, "", and a nil pointer, slice or map. Never a struct.
    Empty,
    /// `omitempty,omitzero`: as `Empty`, and a struct whose `IsZero` holds.
    EmptyOrZero,
}

pub(super) const fn field(
    tag: u32,
    json_at: u32,
    json_len: u16,
    ty: Ty,
    shape: Shape,
    omit: Omit,
) -> Field {
    Field {
        tag,
        json: Name {
            at: json_at,
            len: json_len,
        },
        ty,
        shape,
        omit,
    }
}

pub(super) const fn kind(
    api_version_at: u32,
    api_version_len: u16,
    kind_at: u32,
    kind_len: u16,
    message: u16,
) -> Kind {
    Kind {
        api_version: Name {
            at: api_version_at,
            len: api_version_len,
        },
        kind: Name {
            at: kind_at,
            len: kind_len,
        },
        message,
    }
}

pub(super) const fn message(
    name_at: u32,
    name_len: u16,
    first_field: u16,
    field_count: u8,
) -> Message {
    Message {
        name: Name {
            at: name_at,
            len: name_len,
        },
        first_field,
        field_count,
    }
}
