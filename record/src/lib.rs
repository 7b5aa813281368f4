//! What the interceptor and the aggregator share, and nothing else: the parsing
//! of a Kubernetes API request, and the record of one exchange (the wire format
//! between them).

pub mod exchange;
pub mod gzip;
mod json_check;
pub mod json_reader;
pub mod json_string;
mod line_writer;
pub mod media;
pub mod next_line;
pub mod protobuf;
pub mod request;

pub use exchange::{
    Body, BodyContent, DropReport, Exchange, FORMAT_GZIP, FORMAT_HEADER, FORMAT_NEXT_LINE,
    FORMAT_PLAIN, FORMAT_VERSION, Line, LineError, LineKind, PodIdentity, ProtobufBody, RawJson,
    Scanned, WatchEvent, WatchEvents, WatchPart, WorkloadRef, format_of, kind_of, newer_format,
    readable_format,
};
pub use next_line::NextLine;
pub use request::{ApiRequest, PatchType, RequestError, Verb};
