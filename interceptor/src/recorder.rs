//! Turns what the proxy saw into records, off the proxied path: decoding,
//! redaction and serialization happen in this task, never in a client's
//! request. The proxy hands over without waiting; if this task falls behind,
//! so that the bodies waiting for it would pass their byte bound, the
//! exchange is handed over without its bodies (their sizes stay), rather
//! than slowing traffic down or growing memory. Only when even that finds
//! no room (1024 exchanges waiting) is it dropped and counted, and reported
//! to the aggregator like the queue's drops.

use crate::aggregator_format::AggregatorFormat;
use crate::capture::{Capture, SharedCapture};
use crate::decode;
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::ship::Queue;
use apiwitness_record::{ApiRequest, Exchange, FORMAT_VERSION, PodIdentity, WatchPart};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// One exchange as the proxy saw it, before decoding.
pub struct RawExchange {
    pub started_at: SystemTime,
    pub duration: Duration,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub user_agent: Option<String>,
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    pub response_content_encoding: Option<String>,
    pub request_body: SharedCapture,
    pub response_body: Option<SharedCapture>,
    /// The request as the proxy parsed it (`ApiRequest::parse`), which the
    /// record needs again: parsing a path costs about a microsecond.
    pub request: Option<ApiRequest>,
    pub watch: bool,
    /// For a watch: the id of its first part, which stands for it.
    pub watch_id: Option<Arc<str>>,
    pub upgrade: Option<String>,
    pub error: Option<String>,
}

impl RawExchange {
    fn held_bytes(&self) -> usize {
        Capture::held_bytes(&self.request_body)
            + self.response_body.as_ref().map_or(0, Capture::held_bytes)
    }

    fn let_go_of_bodies(&self) {
        Capture::let_go_of_kept(&self.request_body);
        if let Some(response) = &self.response_body {
            Capture::let_go_of_kept(response);
        }
    }
}

/// An exchange handed over, with the bytes of body it holds.
struct HandedOver {
    raw: RawExchange,
    bytes: usize,
}

#[derive(Clone)]
pub struct RecorderHandle {
    sender: mpsc::Sender<HandedOver>,
    /// Bytes of bodies handed over and not yet recorded.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

impl RecorderHandle {
    /// Hands an exchange over without waiting.
    pub fn record(&self, raw: RawExchange) {
        self.metrics.count_exchange(raw.status);
        self.metrics.duration.observe(raw.duration.as_secs_f64());
        self.hand_over(raw);
    }

    /// Hands over a part of a watch that is still open: the exchange is
    /// counted once, when it ends.
    /// False when it was dropped.
    pub fn record_part(&self, raw: RawExchange) -> bool {
        self.hand_over(raw)
    }

    fn hand_over(&self, raw: RawExchange) -> bool {
        let mut bytes = raw.held_bytes();
        let before = self.waiting.fetch_add(bytes, Ordering::AcqRel);
        // One exchange is always taken when none waits, however large.
        if before > 0 && before + bytes > self.max_waiting {
            // No room for its bodies: the call is still recorded, without them.
            self.waiting.fetch_sub(bytes, Ordering::AcqRel);
            raw.let_go_of_bodies();
            self.metrics.stripped.inc();
            bytes = 0;
        }
        if self.sender.try_send(HandedOver { raw, bytes }).is_err() {
            self.waiting.fetch_sub(bytes, Ordering::AcqRel);
            self.queue.note_drops(1);
            return false;
        }
        true
    }
}

pub struct Recorder {
    receiver: mpsc::Receiver<HandedOver>,
    waiting: Arc<AtomicUsize>,
    pod: PodIdentity,
    redactor: Redactor,
    /// Read for each record: the shipper lowers it when the aggregator
    /// cannot read a line, and follows what the aggregator states.
    format: Arc<AggregatorFormat>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

/// The most exchanges waiting for the recorder, whatever their bytes.
const MAX_WAITING_EXCHANGES: usize = 1024;

/// `max_waiting_bytes` bounds the bodies waiting for the recorder.
pub fn channel(
    max_waiting_bytes: usize,
    pod: PodIdentity,
    redactor: Redactor,
    format: Arc<AggregatorFormat>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) -> (RecorderHandle, Recorder) {
    let (sender, receiver) = mpsc::channel(MAX_WAITING_EXCHANGES);
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        RecorderHandle {
            sender,
            waiting: waiting.clone(),
            max_waiting: max_waiting_bytes,
            queue: queue.clone(),
            metrics: metrics.clone(),
        },
        Recorder {
            receiver,
            waiting,
            pod,
            redactor,
            format,
            queue,
            metrics,
        },
    )
}

impl Recorder {
    /// Runs until every handle is dropped and the channel is drained.
    pub async fn run(mut self) {
        while let Some(handed) = self.receiver.recv().await {
            let record = self.record(handed);
            self.queue.push(record);
        }
    }

    /// The record of an exchange handed over; its bodies stop counting
    /// against the bound.
    fn record(&self, handed: HandedOver) -> Exchange {
        let record = self.build(handed.raw);
        self.waiting.fetch_sub(handed.bytes, Ordering::AcqRel);
        record
    }

    pub fn build(&self, mut raw: RawExchange) -> Exchange {
        let decoding = self.format.decoding();
        let parsed = raw.request.take();
        let redactor_keeps = parsed
            .as_ref()
            .is_some_and(|p| self.redactor.redacts_nothing_by_request(p));
        let request_captured = Capture::take(&raw.request_body);
        self.metrics.request_bytes.inc_by(request_captured.size);
        let mut request_body = decode::body(
            &request_captured,
            raw.request_content_type.as_deref(),
            None,
            redactor_keeps,
            decoding,
        );

        let mut response_body = None;
        let mut watch = None;
        let mut error = raw.error;
        let mut part = None;
        if let Some(shared) = &raw.response_body {
            let captured = Capture::take(shared);
            part = captured
                .part
                .zip(raw.watch_id.as_ref())
                .map(|(p, id)| WatchPart {
                    watch: id.to_string(),
                    index: p.index,
                    last: p.last,
                });
            self.metrics.response_bytes.inc_by(captured.size);
            if error.is_none() && !captured.complete {
                error = captured.error.clone();
            }
            if raw.watch && (200..300).contains(&raw.status) {
                watch = Some(decode::watch(
                    &captured,
                    raw.response_content_type.as_deref(),
                    redactor_keeps,
                    decoding.protobuf,
                ));
            } else {
                response_body = decode::body(
                    &captured,
                    raw.response_content_type.as_deref(),
                    raw.response_content_encoding.as_deref(),
                    redactor_keeps,
                    decoding,
                );
            }
            if let Some(e) = captured.decode_error {
                error.get_or_insert(e);
            }
        }

        if let Some(parsed) = &parsed {
            if let Some(b) = request_body.as_mut() {
                self.redactor.body(parsed, b);
            }
            if let Some(b) = response_body.as_mut() {
                self.redactor.body(parsed, b);
            }
            if let Some(w) = watch.as_mut() {
                for event in &mut w.events {
                    self.redactor.value(parsed, &mut event.object);
                }
            }
        } else {
            // An unparseable path is still recorded, but its bodies cannot be
            // judged safe: they go.
            request_body = None;
            response_body = None;
            watch = None;
        }

        let table = response_body.as_ref().is_some_and(decode::is_table);
        // A watch's first part (or the whole of a watch recorded at once)
        // takes the watch's id; every other record gets a new one.
        let id = match (&raw.watch_id, &part) {
            (Some(id), None) => id.to_string(),
            (_, Some(p)) if p.index == 0 => p.watch.clone(),
            // Time-ordered (UUIDv7): the aggregator's index of record ids
            // grows at its end instead of at a random page per record.
            _ => uuid::Uuid::now_v7().to_string(),
        };
        let mut exchange = Exchange {
            format: FORMAT_VERSION,
            id,
            pod: self.pod.clone(),
            started_at: humantime::format_rfc3339_micros(raw.started_at).to_string(),
            duration_us: raw.duration.as_micros().min(u128::from(u64::MAX)) as u64,
            method: raw.method,
            path: raw.path,
            query: raw.query,
            status: raw.status,
            user_agent: raw.user_agent,
            request_content_type: raw.request_content_type,
            response_content_type: raw.response_content_type,
            request_body,
            response_body,
            watch,
            table,
            upgrade: raw.upgrade,
            error,
            part,
        };
        exchange.format = exchange.lowest_format();
        exchange
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Captured;

    fn exchange_holding(bytes: usize) -> RawExchange {
        RawExchange {
            started_at: SystemTime::now(),
            duration: Duration::from_millis(1),
            method: "GET".into(),
            path: "/api/v1/namespaces/ns/configmaps/c".into(),
            query: String::new(),
            status: 200,
            user_agent: None,
            request_content_type: None,
            response_content_type: Some("text/plain".into()),
            response_content_encoding: None,
            request_body: Capture::finished(Captured::default()),
            response_body: Some(Capture::finished(Captured {
                bytes: vec![b'x'; bytes].into(),
                size: bytes as u64,
                complete: true,
                ..Captured::default()
            })),
            request: ApiRequest::parse("GET", "/api/v1/namespaces/ns/configmaps/c", "", None).ok(),
            watch: false,
            watch_id: None,
            upgrade: None,
            error: None,
        }
    }

    #[tokio::test]
    async fn bodies_waiting_for_the_recorder_are_bounded_in_bytes_and_calls_past_the_bound_kept_without_them()
     {
        let metrics = Arc::new(Metrics::new());
        let queue = Queue::new(100, usize::MAX, metrics.clone());
        let (handle, mut recorder) = channel(
            100,
            PodIdentity::default(),
            Redactor::new(Vec::new()).unwrap(),
            Arc::new(AggregatorFormat::new(apiwitness_record::FORMAT_VERSION)),
            queue.clone(),
            metrics,
        );
        // One exchange is taken whatever its size; the next would pass the
        // bound while the first waits, and goes without its body.
        handle.record(exchange_holding(150));
        handle.record(exchange_holding(10));
        assert_eq!(queue.drops.count(), 0);
        assert_eq!(handle.waiting.load(Ordering::SeqCst), 150);

        let handed = recorder.receiver.recv().await.unwrap();
        assert_eq!(handed.bytes, 150);
        let record = recorder.record(handed);
        let body = record.response_body.unwrap();
        assert_eq!((body.size, body.truncated), (150, false));
        let handed = recorder.receiver.recv().await.unwrap();
        assert_eq!(handed.bytes, 0);
        let stripped = recorder.record(handed);
        let body = stripped.response_body.unwrap();
        assert_eq!((body.size, body.truncated), (10, true), "{body:?}");
        assert_eq!(
            body.content,
            apiwitness_record::BodyContent::Text(String::new())
        );
        assert_eq!(stripped.status, 200);
        // Recorded, its bytes no longer count: two small ones fit.
        handle.record(exchange_holding(40));
        handle.record(exchange_holding(40));
        assert_eq!(handle.waiting.load(Ordering::SeqCst), 80);
        assert_eq!(queue.drops.count(), 0, "nothing dropped");
    }
}
