//! What the interceptor and the aggregator share, and nothing else: the parsing
//! of a Kubernetes API request, and (from the interceptor issue on) the record
//! of one exchange.

pub mod request;

pub use request::{ApiRequest, PatchType, RequestError, Verb};
