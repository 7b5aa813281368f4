//! Ships records to the aggregator: a bounded queue, batches by size or time,
//! zstd (or gzip) NDJSON over HTTP(S), retry with backoff.
//!
//! The proxied traffic never waits here. When the aggregator is unreachable
//! for long enough to fill the queue, the oldest records are dropped; the
//! drops are counted, and reported to the aggregator once it is back.

use crate::aggregator_format::AggregatorFormat;
use crate::drops::{Drops, Failure, Reports};
use crate::metrics::Metrics;
use apiwitness_record::{DropReport, Exchange, FORMAT_PLAIN, PodIdentity};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Records as their NDJSON lines (UTF-8 bytes), and the bytes they hold. A record is
/// serialized as soon as it is built: a decoded body (a `Value` tree) takes
/// several times its text's memory, and the queue's byte bound is then
/// exact.
///
/// Short of room, the oldest record first loses its bodies and watch events
/// (it is stripped: the call, its status and its sizes stay, and so does
/// the coverage it counts for, and a watch's last part keeps its final
/// duration and error); only a stripped record is ever dropped. Stripped
/// records are the oldest, so they stand first.
#[derive(Default)]
struct Records {
    lines: VecDeque<Queued>,
    /// Of the lines, and of their stripped forms made ahead.
    bytes: usize,
    /// How many of the first lines are stripped.
    stripped: usize,
}

/// A line is bytes, UTF-8 as `Exchange::write_line` wrote it.
struct Queued {
    line: Vec<u8>,
    stripped: Stripped,
}

/// A queued line's stripped form.
enum Stripped {
    /// Not made: stripping reads the whole line.
    NotMade,
    /// The record has no bodies or events: stripped, it is the same.
    Same,
    /// Made when the record was queued into a queue already half full:
    /// from the record it is a small write, from the line a read of all
    /// of it.
    Made(Vec<u8>),
}

impl Queued {
    fn bytes(&self) -> usize {
        match &self.stripped {
            Stripped::Made(stripped) => self.line.len() + stripped.len(),
            _ => self.line.len(),
        }
    }

    /// Puts the stripped form in the line's place. `None` where the line is
    /// no record (not one this queue wrote); else whether anything was let
    /// go.
    fn strip(&mut self) -> Option<bool> {
        match std::mem::replace(&mut self.stripped, Stripped::Same) {
            Stripped::Same => Some(false),
            Stripped::Made(line) => {
                self.line = line;
                Some(true)
            }
            Stripped::NotMade => {
                self.line = stripped(&self.line)?;
                Some(true)
            }
        }
    }
}

impl Records {
    fn len(&self) -> usize {
        self.lines.len()
    }
    fn whole(&self) -> usize {
        self.lines.len() - self.stripped
    }
    fn push_back(&mut self, queued: Queued) {
        self.bytes += queued.bytes();
        self.lines.push_back(queued);
    }
    /// A whole batch is waiting: `max` records, or `max_bytes` of lines.
    fn hold_a_batch(&self, max: usize, max_bytes: usize) -> bool {
        self.len() >= max || self.bytes >= max_bytes
    }
}

/// A record's line without its bodies and watch events; `None` if the line
/// is not an exchange. The lines of its bodies that travel apart, after
/// its own, go with them.
fn stripped(line: &[u8]) -> Option<Vec<u8>> {
    let record = memchr::memchr(b'\n', line).map_or(line, |end| &line[..end]);
    let apiwitness_record::Line::Exchange(mut exchange) =
        apiwitness_record::Line::parse(std::str::from_utf8(record).ok()?).ok()?
    else {
        return None;
    };
    Some(stripped_line(&mut exchange))
}

/// The line of `record` once it lets go of its bodies and watch events.
fn stripped_line(record: &mut Exchange) -> Vec<u8> {
    record.drop_bodies();
    let mut line = Vec::with_capacity(LINE_BYTES_BESIDE_BODIES);
    record.write_line(&mut line);
    line
}

/// What a record line holds beside its bodies, give or take: ids, times, the
/// call, the pod.
const LINE_BYTES_BESIDE_BODIES: usize = 1024;

/// Lines taken for a batch: the stripped ones first.
#[derive(Clone)]
pub(crate) struct Taken {
    pub lines: Vec<Vec<u8>>,
    stripped: usize,
}

/// The bounded queue between the recorder and the shipper: at most
/// `capacity` whole records, as many stripped ones, and `max_bytes` of
/// lines in all.
pub struct Queue {
    records: Mutex<Records>,
    pub(crate) drops: Drops,
    capacity: usize,
    max_bytes: usize,
    notify: Notify,
    /// A push wakes the shipper once the queue holds this many records, or
    /// this many bytes of lines: a batch it would send. Until a shipper
    /// says its batch, every push does.
    wake_at_records: AtomicUsize,
    wake_at_bytes: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Queue {
    pub fn new(capacity: usize, max_bytes: usize, metrics: Arc<Metrics>) -> Arc<Queue> {
        Arc::new(Queue {
            records: Mutex::new(Records::default()),
            drops: Drops::default(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            notify: Notify::new(),
            wake_at_records: AtomicUsize::new(1),
            wake_at_bytes: AtomicUsize::new(usize::MAX),
            metrics,
        })
    }

    /// Pushes wake the shipper only once a batch of `records` records or
    /// `bytes` bytes of lines waits; a smaller one waits for the shipper's
    /// own timer. Woken on every push, the shipper's task ran for each
    /// record only to find the batch not full yet.
    fn wake_at(&self, records: usize, bytes: usize) {
        self.wake_at_records
            .store(records.max(1), AtomicOrdering::Relaxed);
        self.wake_at_bytes
            .store(bytes.max(1), AtomicOrdering::Relaxed);
    }

    /// Counts records lost before they could be queued or shipped, for
    /// the metrics and the next drop report.
    pub fn note_drops(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.drops.note(n, SystemTime::now());
        self.metrics.dropped.inc_by(n);
    }

    /// Makes room for `incoming` more bytes and one more whole record:
    /// the oldest whole record is stripped, and when none is left to
    /// strip, the oldest stripped one goes. Returns how many went.
    fn make_room(&self, records: &mut Records, incoming: usize, whole_incoming: usize) -> u64 {
        let mut dropped = 0;
        loop {
            let over_count = records.whole() + whole_incoming > self.capacity;
            let over_bytes = records.len() > 0 && records.bytes + incoming > self.max_bytes;
            if !(over_count || over_bytes) {
                return dropped;
            }
            if records.whole() > 0 && records.stripped < self.capacity {
                let at = records.stripped;
                let oldest_whole = &mut records.lines[at];
                let freed = oldest_whole.bytes();
                match oldest_whole.strip() {
                    Some(let_go) => {
                        // Without bodies, it only moves among the stripped.
                        if let_go {
                            self.metrics.stripped.inc();
                        }
                        records.bytes = records.bytes - freed + oldest_whole.bytes();
                        records.stripped += 1;
                    }
                    None => {
                        // Not a record this queue wrote: it goes.
                        records.lines.remove(at);
                        records.bytes -= freed;
                        dropped += 1;
                    }
                }
                continue;
            }
            let Some(oldest) = records.lines.pop_front() else {
                return dropped;
            };
            records.bytes -= oldest.bytes();
            // Stripped ones go first; a whole one only where none is left
            // (a record larger than the byte bound).
            records.stripped = records.stripped.saturating_sub(1);
            dropped += 1;
        }
    }

    /// Adds a record; older ones are stripped, then dropped, until both
    /// bounds hold.
    pub fn push(&self, mut record: Exchange) {
        // Sized for its bodies up front: grown by doubling from nothing, a
        // 64 KiB body's line was copied nine times, and then once more to
        // give back what doubling left over (which the queue would hold
        // without counting).
        let mut line = Vec::with_capacity(record.body_bytes() + LINE_BYTES_BESIDE_BODIES);
        record.write_line(&mut line);
        line.shrink_to_fit();
        let half_full = self.is_behind();
        let stripped = if !record.has_bodies() {
            Stripped::Same
        } else if half_full {
            Stripped::Made(stripped_line(&mut record))
        } else {
            Stripped::NotMade
        };
        let queued = Queued { line, stripped };
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = self.make_room(&mut records, queued.bytes(), 1);
        records.push_back(queued);
        self.metrics.queue_depth.set(records.len() as i64);
        let batch_waits = records.hold_a_batch(
            self.wake_at_records.load(AtomicOrdering::Relaxed),
            self.wake_at_bytes.load(AtomicOrdering::Relaxed),
        );
        drop(records);
        self.note_drops(dropped);
        if batch_waits {
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Half full, by whole records or by bytes: shipping is not keeping up.
    pub fn is_behind(&self) -> bool {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.whole() >= self.capacity / 2 || records.bytes >= self.max_bytes / 2
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A whole batch is waiting: `max` records, or `max_bytes` of lines.
    fn holds_a_batch(&self, max: usize, max_bytes: usize) -> bool {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hold_a_batch(max, max_bytes)
    }

    /// The oldest records, up to `max` of them and `max_bytes` of lines
    /// (but always at least one).
    fn take(&self, max: usize, max_bytes: usize) -> Taken {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        let mut bytes = 0;
        for queued in records.lines.iter().take(max) {
            if n > 0 && bytes + queued.line.len() > max_bytes {
                break;
            }
            bytes += queued.line.len();
            n += 1;
        }
        let taken: Vec<Queued> = records.lines.drain(..n).collect();
        records.bytes -= taken.iter().map(Queued::bytes).sum::<usize>();
        let lines: Vec<Vec<u8>> = taken.into_iter().map(|q| q.line).collect();
        let stripped = records.stripped.min(n);
        records.stripped -= stripped;
        self.metrics.queue_depth.set(records.len() as i64);
        Taken { lines, stripped }
    }

    /// Puts an unacknowledged batch back at the front, in order. Where
    /// newer records arrived meanwhile and the bounds no longer hold, the
    /// oldest are stripped, then dropped.
    fn put_back(&self, taken: Taken) {
        let taken_stripped = taken.stripped;
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        // Stripped lines first, the batch's before those stripped since.
        let mut taken = taken.lines.into_iter().map(|line| Queued {
            line,
            stripped: Stripped::NotMade,
        });
        let stripped_since = records.stripped;
        let newly_stripped: Vec<Queued> = records.lines.drain(..stripped_since).collect();
        let mut lines: VecDeque<Queued> = taken.by_ref().take(taken_stripped).collect();
        lines.extend(newly_stripped);
        lines.extend(taken);
        lines.append(&mut records.lines);
        records.lines = lines;
        records.bytes = records.lines.iter().map(Queued::bytes).sum();
        records.stripped += taken_stripped;
        let dropped = self.make_room(&mut records, 0, 0);
        self.metrics.queue_depth.set(records.len() as i64);
        drop(records);
        self.note_drops(dropped);
    }
}

#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// The aggregator's ingest URL, e.g. `https://aggregator.apiwitness:8443/ingest`.
    pub url: hyper::Uri,
    pub batch_records: usize,
    /// Bytes of records (their lines) in one batch: what the shipper holds
    /// while it sends.
    pub batch_bytes: usize,
    pub batch_wait: Duration,
    /// A bearer token file (the pod's projected token), read afresh for every
    /// batch because the kubelet rotates it.
    pub token_file: Option<PathBuf>,
    pub pod: PodIdentity,
    pub encoding: ShipEncoding,
    /// zstd's level for a batch when the queue keeps up and batches
    /// compress well; see [`Effort`].
    pub zstd_level: i32,
    /// The format the aggregator reads, shared with the recorder.
    pub format: Arc<AggregatorFormat>,
}

/// How a batch is compressed on its way to the aggregator.
///
/// zstd is the default: gzip's fastest level took half the interceptor's
/// CPU with 64 KiB bodies of base64 noise. On such batches gzip runs at
/// about 200 MB/s and zstd's level 1 at about 900 MB/s, with batches of the
/// same size (`interceptor/benches/record.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShipEncoding {
    Zstd,
    Gzip,
}

impl ShipEncoding {
    fn header(self) -> &'static str {
        match self {
            ShipEncoding::Zstd => "zstd",
            ShipEncoding::Gzip => "gzip",
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long one batch may take, from sending it to its answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Shipper {
    config: ShipConfig,
    queue: Arc<Queue>,
    client: HttpsClient,
    metrics: Arc<Metrics>,
    /// Set once the aggregator refused a zstd batch as unsupported (an
    /// older aggregator): from then on, batches go as gzip.
    gzip_only: std::sync::atomic::AtomicBool,
    /// Set while batches keep more than half their size: then their bytes
    /// are mostly high-entropy text, such as base64 of binary data.
    compressing_poorly: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("the aggregator could not be reached: {0}")]
    Unreachable(String),
    /// The batch went out and no answer came: it may have been stored.
    #[error("the aggregator did not answer: {0}")]
    NoAnswer(String),
    #[error("the aggregator answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("could not read the token file {path}: {error}")]
    Token { path: String, error: std::io::Error },
}

impl ShipError {
    /// Whether the batch may have been stored all the same. An answer of
    /// 5xx may come from a proxy in front of an aggregator that stored it.
    pub fn failure(&self) -> Failure {
        match self {
            ShipError::Unreachable(_) | ShipError::Token { .. } => Failure::NotStored,
            ShipError::Refused { status, .. } if *status < 500 => Failure::NotStored,
            ShipError::Refused { .. } | ShipError::NoAnswer(_) => Failure::AnswerLost,
        }
    }
}

impl Shipper {
    pub fn new(
        config: ShipConfig,
        queue: Arc<Queue>,
        tls: rustls::ClientConfig,
        metrics: Arc<Metrics>,
    ) -> Shipper {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        queue.wake_at(config.batch_records, config.batch_bytes);
        Shipper {
            config,
            queue,
            client,
            metrics,
            gzip_only: std::sync::atomic::AtomicBool::new(false),
            compressing_poorly: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ships until `shutdown` fires, then flushes what is queued until
    /// `flush_deadline`.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>, flush_deadline: Duration) {
        let mut shutdown = shutdown;
        let mut backoff = Backoff::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.holds_a_batch() {
                let wait = tokio::time::sleep(self.config.batch_wait);
                tokio::select! {
                    _ = wait => {}
                    _ = self.wait_for_full_batch() => {}
                    _ = shutdown.changed() => break,
                }
            }
            if self.queue.is_empty() && !self.has_drops() {
                continue;
            }
            match self.ship_one_batch().await {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(error = %e, queued = self.queue.len(), "shipping records failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        self.flush(flush_deadline).await;
    }

    fn holds_a_batch(&self) -> bool {
        self.queue
            .holds_a_batch(self.config.batch_records, self.config.batch_bytes)
    }

    /// Until a batch is full by either bound: large records fill one by
    /// bytes long before they fill it by count.
    async fn wait_for_full_batch(&self) {
        while !self.holds_a_batch() {
            self.queue.notify.notified().await;
        }
    }

    fn has_drops(&self) -> bool {
        self.queue.drops.pending()
    }

    /// Ships what is queued, retrying briefly, until the deadline.
    pub async fn flush(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let mut backoff = Backoff::new();
        while (!self.queue.is_empty() || self.has_drops()) && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ship_one_batch()).await {
                Ok(Ok(_)) => backoff.reset(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "flushing records failed");
                    tokio::time::sleep(
                        backoff
                            .next()
                            .min(until.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                Err(_) => break,
            }
        }
        let left = self.queue.len();
        if left > 0 {
            tracing::warn!(
                records = left,
                "records not shipped before the shutdown deadline"
            );
        }
    }

    /// Sends one batch: a drop report (if any drops happened) and up to
    /// `batch_records` records. On failure everything goes back.
    pub async fn ship_one_batch(&self) -> Result<usize, ShipError> {
        // Judged before the batch leaves the queue.
        let effort = if self.queue.is_behind()
            || self
                .compressing_poorly
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.metrics.batches_compressed_fast.inc();
            Effort::Fast
        } else {
            Effort::Normal
        };
        let taken = self
            .queue
            .take(self.config.batch_records, self.config.batch_bytes);
        let reports = self.queue.drops.take(&self.config.pod);
        let encoding = self.encoding();
        let level = effort.zstd_level(self.config.zstd_level);
        let (taken, reports, body) = encode_aside(taken, reports, encoding, level).await;
        if encoding == ShipEncoding::Zstd
            && let Some(poorly) = Effort::judge(&taken.lines, &body)
        {
            self.compressing_poorly
                .store(poorly, std::sync::atomic::Ordering::Relaxed);
        }
        let mut result = self.send(body, encoding).await;
        let (taken, reports) = if let Err(ShipError::Refused { status: 415, .. }) = &result
            && encoding == ShipEncoding::Zstd
        {
            tracing::warn!("the aggregator does not read zstd batches: shipping gzip from now on");
            self.gzip_only
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let (taken, reports, body) =
                encode_aside(taken, reports, ShipEncoding::Gzip, level).await;
            result = self.send(body, ShipEncoding::Gzip).await;
            (taken, reports)
        } else {
            (taken, reports)
        };
        let shipped = taken.lines.len();
        match result {
            Ok(answer) => {
                self.follow_format(answer.format);
                let (again, refused_records) =
                    self.written_again(&taken.lines, reports.iter().count(), &answer.refused);
                let stored = shipped - again.len() - refused_records;
                self.metrics.shipped.inc_by(stored as u64);
                if !again.is_empty() {
                    self.metrics.lines_written_again.inc_by(again.len() as u64);
                    self.queue.put_back(Taken {
                        lines: again,
                        stripped: 0,
                    });
                }
                Ok(stored)
            }
            Err(e) => {
                self.metrics.ship_failures.inc();
                self.queue.drops.give_back(reports, e.failure());
                self.queue.put_back(taken);
                Err(e)
            }
        }
    }

    fn encoding(&self) -> ShipEncoding {
        if self.gzip_only.load(std::sync::atomic::Ordering::Relaxed) {
            ShipEncoding::Gzip
        } else {
            self.config.encoding
        }
    }

    /// Follows the format an aggregator states in its answer.
    fn follow_format(&self, stated: Option<u32>) {
        if let Some(stated) = stated
            && let Some(before) = self.config.format.stated(stated)
        {
            tracing::info!(
                format = stated,
                before,
                "the aggregator states the record format it reads: records are made for it"
            );
        }
    }

    /// The lines of `lines` that the aggregator could not read, written
    /// again at format 2 where a newer format is why it could not, to be
    /// sent again; and how many of the others it could not read, which
    /// are counted and logged as refused. The answer numbers the batch's
    /// lines from 1: its `reports` drop reports, then each of `lines` with
    /// the lines its bodies travel on.
    fn written_again(
        &self,
        lines: &[Vec<u8>],
        reports: usize,
        refused: &[RefusedLine],
    ) -> (Vec<Vec<u8>>, usize) {
        if refused.is_empty() {
            return (Vec::new(), 0);
        }
        let mut first_lines = Vec::with_capacity(lines.len());
        let mut next = reports + 1;
        for line in lines {
            first_lines.push(next);
            next += 1 + memchr::memchr_iter(b'\n', line).count();
        }
        let mut again = Vec::new();
        let mut given_up = Vec::new();
        let mut refused_records = 0;
        let mut seen = std::collections::BTreeSet::new();
        for refusal in refused {
            // A drop report, or a line the batch did not hold.
            let Some(index) = first_lines
                .partition_point(|first| *first <= refusal.line)
                .checked_sub(1)
                .filter(|_| refusal.line > reports && refusal.line < next)
            else {
                given_up.push(refusal);
                continue;
            };
            // A record refused with its body's line is refused once.
            if !seen.insert(index) {
                continue;
            }
            let line = &lines[index];
            // Format 2 every aggregator reads: it is not why.
            let newer = apiwitness_record::format_of(line)
                .filter(|format| *format > FORMAT_PLAIN && refusal.may_be_its_format());
            if let Some(format) = newer
                && let Some(before) = self.config.format.refused(format)
            {
                tracing::warn!(
                    refused = format,
                    format = self.config.format.get(),
                    before,
                    error = %refusal.error,
                    "the aggregator could not read a line of a newer record format: \
                     records are made for an older one, and the line is sent again at format 2"
                );
            }
            match newer.and_then(|_| written_at_plain_format(line)) {
                Some(plain) => again.push(plain),
                None => {
                    given_up.push(refusal);
                    refused_records += 1;
                }
            }
        }
        if let Some(first) = given_up.first() {
            self.metrics.lines_refused.inc_by(given_up.len() as u64);
            tracing::warn!(
                lines = given_up.len(),
                first_line = first.line,
                first_error = %first.error,
                "the aggregator could not read some lines of a batch, and did not store them"
            );
        }
        (again, refused_records)
    }

    async fn send(&self, body: Bytes, encoding: ShipEncoding) -> Result<Answer, ShipError> {
        let mut request = hyper::Request::post(self.config.url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .header(http::header::CONTENT_ENCODING, encoding.header());
        if let Some(path) = &self.config.token_file {
            let token = std::fs::read_to_string(path).map_err(|error| ShipError::Token {
                path: path.display().to_string(),
                error,
            })?;
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ShipError::Unreachable(e.to_string()))?;
        // A connection that never answers must not stall shipping: the batch
        // goes back to the queue and is retried.
        let response = tokio::time::timeout(SEND_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| ShipError::NoAnswer(format!("no answer within {SEND_TIMEOUT:?}")))?
            .map_err(|e| {
                // Only a connection never made is sure to have carried
                // nothing.
                if e.is_connect() {
                    ShipError::Unreachable(format!("{e:#}"))
                } else {
                    ShipError::NoAnswer(format!("{e:#}"))
                }
            })?;
        let status = response.status();
        let format = response
            .headers()
            .get(apiwitness_record::FORMAT_HEADER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok());
        let text = tokio::time::timeout(SEND_TIMEOUT, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(Answer {
                refused: IngestAnswer::refused(&text),
                format,
            });
        }
        Err(ShipError::Refused {
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
        })
    }
}

/// A batch the aggregator took: the lines it could not read, and the
/// format it states it reads, if it does.
struct Answer {
    refused: Vec<RefusedLine>,
    format: Option<u32>,
}

/// A record's line (with its body lines) written again at format 2, which
/// every aggregator reads: each body that a newer format let go as it came
/// is decoded as the aggregator would have decoded it. `None` for a line
/// that is no record, or whose bodies do not all decode.
fn written_at_plain_format(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let [Ok(apiwitness_record::Line::Exchange(mut exchange))]: [Result<_, _>; 1] =
        apiwitness_record::Line::parse_batch(text).try_into().ok()?
    else {
        return None;
    };
    // The bodies are within the sidecar's body limit already.
    let mut undo_budget = u64::MAX;
    exchange.decode_shipped(&mut undo_budget);
    exchange.format = exchange.lowest_format();
    if exchange.format > FORMAT_PLAIN {
        return None;
    }
    let mut plain = Vec::with_capacity(line.len());
    exchange.write_line(&mut plain);
    Some(plain)
}

/// What the aggregator answers a batch it took: the lines it could not
/// read, each with why.
#[derive(Debug, Default, serde::Deserialize)]
struct IngestAnswer {
    #[serde(default)]
    errors: Vec<RefusedLine>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct RefusedLine {
    line: usize,
    error: String,
}

impl RefusedLine {
    /// Whether a newer format can be why: the line could not be read, or
    /// its format is newer than the aggregator's (not, say, a pod writing
    /// another pod's records).
    fn may_be_its_format(&self) -> bool {
        self.error.starts_with("not a record") || self.error.starts_with("record format")
    }
}

impl IngestAnswer {
    /// The lines an answer names as refused. An answer that is not the
    /// aggregator's JSON (a proxy's page, say) names none.
    fn refused(text: &str) -> Vec<RefusedLine> {
        serde_json::from_str::<IngestAnswer>(text)
            .unwrap_or_default()
            .errors
    }
}

/// A drop report's line, serialized as [`apiwitness_record::Line`] is,
/// without copying the report. (An exchange's line is written by
/// `Exchange::write_line`.)
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LineRef<'a> {
    DropReport(&'a DropReport),
}

/// Compresses a batch on a thread of its own, and gives the batch back with
/// it. At zstd's level 1 a batch of 256 KiB takes about 250 µs: on the
/// proxy's one thread, that held up every exchange in flight.
async fn encode_aside(
    taken: Taken,
    reports: Reports,
    encoding: ShipEncoding,
    zstd_level: i32,
) -> (Taken, Reports, Bytes) {
    let batch = Arc::new((taken, reports));
    let for_encoder = batch.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let (taken, reports) = &*for_encoder;
        encode_batch(&taken.lines, reports, encoding, zstd_level)
    })
    .await;
    // The encoder's share is gone once its task ended, however it ended.
    let (taken, reports) = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
    let body = match encoded {
        Ok(body) => body,
        // No blocking thread to be had (the runtime is going away): here.
        Err(_) => encode_batch(&taken.lines, &reports, encoding, zstd_level),
    };
    (taken, reports, body)
}

/// How hard compression works on a batch.
///
/// The configured level is -1 by default: it leaves literals unencoded,
/// and on the apiserver's JSON it runs at about 2 GB/s for 4.1 times
/// smaller batches, against 0.9 GB/s for 5.3 times at level 1. The
/// interceptor's CPU is its pod's, and batches travel inside the cluster.
/// On 64 KiB of base64 of random bytes, the worst case, level 1 spends
/// 115 µs to take a quarter off, which was a tenth of a proxied request's
/// CPU; level -1 takes 6 µs and leaves it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// The configured level.
    Normal,
    /// At most level -1, for when the queue is falling behind (half full)
    /// or batches compress poorly at a configured level above it. Better
    /// larger batches than records stripped of their bodies to make room.
    Fast,
}

/// Below this many bytes a batch's ratio says little about the next one:
/// a frame's own header and tables weigh on it.
const BYTES_TO_JUDGE_RATIO: usize = 16 * 1024;

impl Effort {
    /// Whether the batch of `lines`, compressed to `body`, says that the next
    /// batch should be compressed fast, or `None` when it is too small to
    /// tell. Batches that keep more than half their size are mostly literals
    /// that do not repeat, and level 1 spends nearly all its time encoding
    /// those: on 64 KiB of base64 of random bytes, 115 µs for a quarter off,
    /// against 6 µs at level -1, which stores them as they are. JSON shrinks
    /// four to ten times at either level, so a fast batch of JSON turns the
    /// next one back to level 1.
    fn judge(lines: &[Vec<u8>], body: &[u8]) -> Option<bool> {
        let raw: usize = lines.iter().map(|l| l.len() + 1).sum();
        (raw >= BYTES_TO_JUDGE_RATIO).then_some(body.len() * 2 > raw)
    }

    fn zstd_level(self, configured: i32) -> i32 {
        match self {
            Effort::Normal => configured,
            Effort::Fast => configured.min(-1),
        }
    }
}

/// One compressor, kept from one batch to the next: making one and its
/// tables took 5 µs a batch. One batch is compressed at a time, on
/// whichever blocking thread; one kept per thread would hold its 1.1 MB
/// (for a 256 KiB batch) on each.
static ZSTD_CONTEXT: Mutex<Option<zstd::zstd_safe::CCtx<'static>>> = Mutex::new(None);

/// A batch as compressed NDJSON: the drop reports first, then the records.
pub fn encode_batch(
    batch: &[Vec<u8>],
    reports: &Reports,
    encoding: ShipEncoding,
    zstd_level: i32,
) -> Bytes {
    // Serializing our own types cannot fail.
    let reports: Vec<Vec<u8>> = reports
        .iter()
        .map(|r| serde_json::to_vec(&LineRef::DropReport(r)).unwrap_or_default())
        .collect();
    let lines = || reports.iter().chain(batch.iter());
    let bytes: usize = lines().map(|l| l.len() + 1).sum();
    // Writing into a Vec cannot fail.
    let compressed = match encoding {
        ShipEncoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes / 4),
                flate2::Compression::fast(),
            );
            write_lines(&mut gz, lines());
            gz.finish().unwrap_or_default()
        }
        ShipEncoding::Zstd => {
            let mut out = Vec::with_capacity(bytes / 4);
            let kept = ZSTD_CONTEXT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let mut context = kept.unwrap_or_else(zstd::zstd_safe::CCtx::create);
            let written = context
                .set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(zstd_level))
                .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))
                .and_then(|_| {
                    let mut z = zstd::stream::write::Encoder::with_context(&mut out, &mut context);
                    // Told the size, zstd sizes its window and tables to the
                    // batch instead of its level's defaults (512 KiB and up).
                    z.set_pledged_src_size(Some(bytes as u64))?;
                    z.include_contentsize(true)?;
                    write_lines(&mut z, lines());
                    z.finish().map(drop)
                });
            *ZSTD_CONTEXT.lock().unwrap_or_else(|e| e.into_inner()) = Some(context);
            if written.is_err() {
                out.clear();
            }
            out
        }
    };
    Bytes::from(compressed)
}

fn write_lines<'a>(out: &mut impl Write, lines: impl Iterator<Item = &'a Vec<u8>>) {
    for line in lines {
        let _ = out.write_all(line);
        let _ = out.write_all(b"\n");
    }
}

struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            current: Duration::from_millis(100),
        }
    }
    fn reset(&mut self) {
        self.current = Duration::from_millis(100);
    }
    /// 100 ms doubling to 10 s, with up to 25% jitter so that many sidecars
    /// do not retry in step.
    fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(Duration::from_secs(10));
        let jitter = (uuid::Uuid::new_v4().as_u128() % 250) as u32;
        base + base * jitter / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(record: &Exchange) -> Vec<u8> {
        let mut line = Vec::new();
        record.write_line(&mut line);
        line
    }

    fn record(n: u32) -> Exchange {
        Exchange {
            id: n.to_string(),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            ..Default::default()
        }
    }

    fn ids(q: &Queue) -> Vec<String> {
        q.records
            .lock()
            .unwrap()
            .lines
            .iter()
            .map(|queued| {
                let record: serde_json::Value = serde_json::from_slice(&queued.line).unwrap();
                record["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// A record whose line is `len` bytes long.
    fn sized(n: u32, len: usize) -> Exchange {
        let mut r = record(n);
        let base = line_of(&r).len();
        r.path.push_str(&"p".repeat(len - base));
        r
    }

    /// A record with a response body and a watch event.
    fn with_bodies(n: u32) -> Exchange {
        let mut r = record(n);
        r.response_body = Some(apiwitness_record::Body {
            content: apiwitness_record::BodyContent::Text(format!("body of {n}")),
            size: 9,
            truncated: false,
            content_encoding: None,
        });
        r.watch = Some(apiwitness_record::WatchEvents {
            events: vec![apiwitness_record::WatchEvent::new(
                "ADDED",
                serde_json::json!({"n": n}),
            )],
            cut: 0,
        });
        r
    }

    #[test]
    fn a_record_is_stripped_of_the_lines_its_bodies_travel_on_too() {
        let mut r = record(1);
        r.response_body = Some(apiwitness_record::Body {
            content: apiwitness_record::BodyContent::NextLine(
                apiwitness_record::NextLine::of(Bytes::from_static(br#"{"a":1}"#)).unwrap(),
            ),
            size: 7,
            truncated: false,
            content_encoding: None,
        });
        let line = line_of(&r);
        assert_eq!(line.split(|b| *b == b'\n').count(), 2);
        let stripped = stripped(&line).unwrap();
        assert!(!stripped.contains(&b'\n'));
        let apiwitness_record::Line::Exchange(back) =
            apiwitness_record::Line::parse(std::str::from_utf8(&stripped).unwrap()).unwrap()
        else {
            panic!("not an exchange");
        };
        let body = back.response_body.unwrap();
        assert!(body.truncated);
        assert_eq!(body.size, 7);
    }

    /// The ids of the stripped records, and of the whole ones, in order.
    fn kept(q: &Queue) -> (Vec<String>, Vec<String>) {
        let records = q.records.lock().unwrap();
        let parsed: Vec<Exchange> = records
            .lines
            .iter()
            .map(|queued| {
                match apiwitness_record::Line::parse(std::str::from_utf8(&queued.line).unwrap())
                    .unwrap()
                {
                    apiwitness_record::Line::Exchange(e) => *e,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        for (i, e) in parsed.iter().enumerate() {
            let body = e.response_body.as_ref().unwrap();
            let events = e.watch.as_ref().unwrap();
            if i < records.stripped {
                assert!(body.truncated && events.events.is_empty() && events.cut == 1);
                assert_eq!(body.size, 9, "the true size stays");
            } else {
                assert!(!body.truncated && events.events.len() == 1);
            }
        }
        let (stripped, whole) = parsed.split_at(records.stripped);
        let ids = |es: &[Exchange]| es.iter().map(|e| e.id.clone()).collect();
        (ids(stripped), ids(whole))
    }

    #[test]
    fn pushes_wake_the_shipper_only_once_a_batch_waits() {
        use futures_util::FutureExt;
        let q = Queue::new(100, usize::MAX, Arc::new(Metrics::new()));
        let woken = |q: &Queue| q.notify.notified().now_or_never().is_some();
        // Before a shipper says its batch, every push wakes it.
        q.push(record(0));
        assert!(woken(&q));
        // Three records a batch.
        q.wake_at(3, usize::MAX);
        q.push(record(1));
        assert!(!woken(&q), "two records: no batch yet");
        q.push(record(2));
        assert!(woken(&q), "three records");
        // Or so many bytes of lines, whatever the count.
        let q = Queue::new(100, usize::MAX, Arc::new(Metrics::new()));
        let line_bytes = {
            q.push(record(0));
            q.records.lock().unwrap().bytes
        };
        assert!(woken(&q));
        q.wake_at(1_000, line_bytes * 2);
        assert!(!woken(&q), "the one it gave is taken");
        q.push(record(1));
        assert!(woken(&q), "two lines' bytes");
    }

    #[test]
    fn a_full_queue_strips_the_oldest_then_drops_and_counts() {
        let q = Queue::new(3, usize::MAX, Arc::new(Metrics::new()));
        for n in 0..5 {
            q.push(with_bodies(n));
        }
        // Past the bound, the oldest keep their call but not their bodies.
        assert_eq!(
            kept(&q),
            (
                vec!["0".into(), "1".into()],
                vec!["2".into(), "3".into(), "4".into()]
            )
        );
        assert_eq!(taken_drops(&q), None);
        for n in 5..9 {
            q.push(with_bodies(n));
        }
        // As many stripped as whole; the oldest stripped ones go.
        assert_eq!(
            kept(&q),
            (
                vec!["3".into(), "4".into(), "5".into()],
                vec!["6".into(), "7".into(), "8".into()]
            )
        );
        assert_eq!(taken_drops(&q), Some(3));
        assert_eq!(q.metrics.stripped.get(), 6);
        assert_eq!(taken_drops(&q), None);
    }

    #[test]
    fn a_failed_batch_goes_back_in_order_within_the_bound() {
        let q = Queue::new(4, usize::MAX, Arc::new(Metrics::new()));
        for n in 0..3 {
            q.push(with_bodies(n));
        }
        let batch = q.take(2, usize::MAX);
        q.push(with_bodies(10));
        q.push(with_bodies(11));
        q.put_back(batch);
        // Room for one of the two whole: the older one is stripped.
        assert_eq!(
            kept(&q),
            (
                vec!["0".into()],
                vec!["1".into(), "2".into(), "10".into(), "11".into()]
            )
        );
        assert_eq!(taken_drops(&q), None);
        // Stripped lines go first, and come back first.
        let batch = q.take(2, usize::MAX);
        assert_eq!(batch.stripped, 1);
        for n in 12..14 {
            q.push(with_bodies(n));
        }
        q.put_back(batch);
        // 2 was stripped to make room for 13, then 1 for the batch's return:
        // stripped records stand in the order they were stripped.
        assert_eq!(
            kept(&q),
            (
                vec!["0".into(), "2".into(), "1".into()],
                vec!["10".into(), "11".into(), "12".into(), "13".into()]
            )
        );
    }

    #[test]
    fn batches_are_bounded_in_bytes_but_never_empty() {
        let q = Queue::new(100, usize::MAX, Arc::new(Metrics::new()));
        for n in 0..5 {
            q.push(sized(n, 1000));
        }
        assert_eq!(q.take(100, 2500).lines.len(), 2);
        assert_eq!(
            q.take(100, 10).lines.len(),
            1,
            "one record larger than the bound still goes"
        );
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_too() {
        let q = Queue::new(100, 3000, Arc::new(Metrics::new()));
        for n in 0..4 {
            q.push(sized(n, 1000));
        }
        assert_eq!(ids(&q), ["1", "2", "3"]);
        // A record larger than the whole bound is still kept, alone.
        q.push(sized(9, 5000));
        assert_eq!(ids(&q), ["9"]);
        assert_eq!(taken_drops(&q), Some(4));
    }

    /// Lines of a batch as the aggregator reads them.
    fn decoded(encoding: &str, body: &[u8]) -> String {
        let mut text = String::new();
        match encoding {
            "gzip" => {
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut text)
                    .unwrap();
            }
            "zstd" => {
                text = String::from_utf8(zstd::stream::decode_all(body).unwrap()).unwrap();
            }
            other => panic!("unexpected encoding {other}"),
        }
        text
    }

    /// A local sink that counts the lines it receives, and answers 415 to
    /// zstd batches when `gzip_only`, as an aggregator older than zstd does.
    async fn sink(gzip_only: bool) -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, usize)>>>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let sink = axum::Router::new().route(
            "/ingest",
            axum::routing::post(
                move |headers: http::HeaderMap, body: axum::body::Bytes| async move {
                    let encoding = headers
                        .get(http::header::CONTENT_ENCODING)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    if gzip_only && encoding != "gzip" {
                        return (
                            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                            "{\"error\":\"no\"}",
                        );
                    }
                    let lines = decoded(&encoding, &body).lines().count();
                    seen.lock().unwrap().push((encoding, lines));
                    (http::StatusCode::OK, "{\"errors\":[]}")
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, sink).await });
        (address, received)
    }

    /// The drops a queue would report next.
    fn taken_drops(q: &Queue) -> Option<u64> {
        q.drops.take(&PodIdentity::default()).new.map(|r| r.dropped)
    }

    /// An aggregator that reads the first batch whole and closes the
    /// connection without an answer (it may have stored it), then answers
    /// 400 to the second and 200 to the rest. Each batch's lines are kept.
    async fn forgetful_sink() -> (
        std::net::SocketAddr,
        Arc<Mutex<Vec<Vec<apiwitness_record::Line>>>>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let batches = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let batches = batches.clone();
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let batches = batches.clone();
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map_err(std::io::Error::other)?
                                .to_bytes();
                            let lines = decoded("zstd", &body)
                                .lines()
                                .map(|l| apiwitness_record::Line::parse(l).unwrap())
                                .collect();
                            let n = {
                                let mut batches = batches.lock().unwrap();
                                batches.push(lines);
                                batches.len()
                            };
                            let status = match n {
                                // An error instead of an answer: hyper closes
                                // the connection.
                                1 => return Err(std::io::Error::other("no answer")),
                                2 => 400,
                                _ => 200,
                            };
                            Ok::<_, std::io::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"{}")))
                                    .unwrap(),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (address, seen)
    }

    fn shipper_to(address: std::net::SocketAddr, batch_bytes: usize, queue: Arc<Queue>) -> Shipper {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Shipper::new(
            ShipConfig {
                url: format!("http://{address}/ingest").parse().unwrap(),
                batch_records: 500,
                batch_bytes,
                batch_wait: Duration::from_secs(600),
                token_file: None,
                pod: PodIdentity::default(),
                encoding: ShipEncoding::Zstd,
                // Above -1, so that the fast level differs from it.
                zstd_level: 1,
                format: Arc::new(AggregatorFormat::new(apiwitness_record::FORMAT_VERSION)),
            },
            queue,
            tls,
            Arc::new(Metrics::new()),
        )
    }

    fn received_lines(received: &Mutex<Vec<(String, usize)>>) -> usize {
        received.lock().unwrap().iter().map(|(_, n)| n).sum()
    }

    #[tokio::test]
    async fn a_drop_report_whose_answer_was_lost_keeps_its_id_and_is_counted_once() {
        let (address, batches) = forgetful_sink().await;
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 1 << 20, queue.clone());
        queue.note_drops(5);
        queue.push(record(1));
        let lost = shipper.ship_one_batch().await.unwrap_err();
        assert_eq!(lost.failure(), Failure::AnswerLost, "{lost}");
        // Drops meanwhile, then a refusal: nothing of that batch was stored.
        queue.note_drops(2);
        let refused = shipper.ship_one_batch().await.unwrap_err();
        assert_eq!(refused.failure(), Failure::NotStored, "{refused}");
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 1);
        assert!(!queue.drops.pending());

        let reports = |batch: &Vec<apiwitness_record::Line>| -> Vec<(String, u64)> {
            batch
                .iter()
                .filter_map(|l| match l {
                    apiwitness_record::Line::DropReport(d) => Some((d.id.clone(), d.dropped)),
                    _ => None,
                })
                .collect()
        };
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 3);
        let first = reports(&batches[0]);
        assert_eq!(first.len(), 1);
        // Sent again under its id: if the first batch was stored, the
        // aggregator counts it once.
        assert_eq!(reports(&batches[1])[0], first[0]);
        assert_eq!(reports(&batches[2])[0], first[0]);
        // The two of the refused batch, surely not stored, under a new id.
        assert_eq!(reports(&batches[1])[1].1, 2);
        assert_eq!(reports(&batches[2])[1].1, 2);
        assert_ne!(reports(&batches[2])[1].0, reports(&batches[1])[1].0);
        assert_eq!(reports(&batches[2]).len(), 2);
        // The record went each time, and is stored once by its id.
        assert!(batches.iter().all(|b| {
            b.iter()
                .any(|l| matches!(l, apiwitness_record::Line::Exchange(e) if e.id == "1"))
        }));
    }

    #[tokio::test]
    async fn a_queue_falling_behind_ships_batches_compressed_fast_and_they_arrive_whole() {
        let (address, received) = sink(false).await;
        let queue = Queue::new(4, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 2500, queue.clone());
        // One record of four: not behind.
        queue.push(sized(0, 1000));
        assert!(!queue.is_behind());
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 1);
        assert_eq!(shipper.metrics.batches_compressed_fast.get(), 0);
        // Three of four: behind, and the batch goes at the fast level.
        for n in 1..4 {
            queue.push(sized(n, 1000));
        }
        assert!(queue.is_behind());
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 2);
        assert_eq!(shipper.metrics.batches_compressed_fast.get(), 1);
        assert_eq!(received_lines(&received), 3);
        assert!(received.lock().unwrap().iter().all(|(e, _)| e == "zstd"));
    }

    /// A record whose response body is `len` bytes of text: base64 of
    /// random bytes when `random`, else one short phrase repeated.
    fn with_text_body(n: u32, len: usize, random: bool) -> Exchange {
        let text = if random {
            let bytes: Vec<u8> = (0..len * 3 / 4 / 16)
                .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
                .collect();
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
        } else {
            "\"kind\":\"ConfigMap\",".repeat(len / 20)
        };
        let mut r = record(n);
        r.response_body = Some(apiwitness_record::Body {
            size: text.len() as u64,
            content: apiwitness_record::BodyContent::Text(text),
            truncated: false,
            content_encoding: None,
        });
        r
    }

    #[tokio::test]
    async fn batches_that_compress_poorly_turn_the_next_ones_fast_until_they_compress_well() {
        let (address, received) = sink(false).await;
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 1 << 20, queue.clone());
        let fast = || shipper.metrics.batches_compressed_fast.get();
        let ship = |n: u32, random: bool| {
            queue.push(with_text_body(n, 32 * 1024, random));
            shipper.ship_one_batch()
        };
        // Nothing known yet: level 1, which keeps most of this batch.
        assert_eq!(ship(0, true).await.unwrap(), 1);
        assert_eq!(fast(), 0);
        assert_eq!(ship(1, true).await.unwrap(), 1);
        assert_eq!(fast(), 1);
        // Judged by the batch before, which was random too.
        assert_eq!(ship(2, false).await.unwrap(), 1);
        assert_eq!(fast(), 2);
        // That one shrank even at the fast level: back to level 1.
        assert_eq!(ship(3, false).await.unwrap(), 1);
        assert_eq!(fast(), 2);
        // Batches too small to tell leave the judgment as it was, either way.
        let ship_small = |n: u32| {
            queue.push(record(n));
            shipper.ship_one_batch()
        };
        assert_eq!(ship_small(4).await.unwrap(), 1);
        assert_eq!(ship_small(5).await.unwrap(), 1);
        assert_eq!(fast(), 2);
        assert_eq!(ship(6, true).await.unwrap(), 1);
        assert_eq!(fast(), 2);
        assert_eq!(ship_small(7).await.unwrap(), 1);
        assert_eq!(ship_small(8).await.unwrap(), 1);
        assert_eq!(fast(), 4);
        assert_eq!(received_lines(&received), 9);
        assert!(received.lock().unwrap().iter().all(|(e, _)| e == "zstd"));
    }

    /// With 64 KiB bodies, a batch is full by bytes long before it is full by
    /// count: such a batch goes at once, not when the batch wait is over.
    #[tokio::test]
    async fn a_batch_full_by_bytes_is_shipped_without_waiting() {
        let (address, received) = sink(false).await;
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 2500, queue.clone());
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(shipper.run(stopped, Duration::from_secs(1)));
        // The shipper's first wait begins with an empty queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for n in 0..6 {
            queue.push(sized(n, 1000));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while received_lines(&received) < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Two batches of two records (a third would pass 2,500 bytes); the
        // last two, less than a batch, wait for the batch wait.
        assert_eq!(received_lines(&received), 4);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(queue.len(), 2);
        assert!(received.lock().unwrap().iter().all(|(e, _)| e == "zstd"));
    }

    #[tokio::test]
    async fn an_aggregator_that_refuses_zstd_gets_gzip_and_loses_nothing() {
        let (address, received) = sink(true).await;
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 1 << 20, queue.clone());
        for n in 0..3 {
            queue.push(record(n));
        }
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 3);
        queue.push(record(4));
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 1);
        assert_eq!(
            *received.lock().unwrap(),
            [("gzip".to_string(), 3), ("gzip".to_string(), 1)]
        );
        assert!(queue.is_empty());
    }

    /// An aggregator that takes every batch and answers `answer`.
    async fn answering_sink(answer: &'static str) -> std::net::SocketAddr {
        let sink = axum::Router::new().route(
            "/ingest",
            axum::routing::post(move || async move { (http::StatusCode::OK, answer) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, sink).await });
        address
    }

    #[tokio::test]
    async fn lines_the_aggregator_could_not_read_are_counted_as_refused() {
        // The aggregator's answer to a batch of three, one of them refused
        // for another reason than its format.
        let address = answering_sink(
            r#"{"stored":2,"drop_reports":0,"errors":[{"line":2,"error":"ns/p may not write the records of ns/q"}]}"#,
        )
        .await;
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 1 << 20, queue.clone());
        for n in 0..3 {
            queue.push(record(n));
        }
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 2);
        assert_eq!(shipper.metrics.lines_refused.get(), 1);
        assert_eq!(shipper.metrics.shipped.get(), 2);
        assert!(queue.is_empty(), "not sent again");

        // Nothing refused, or an answer that is not the aggregator's.
        for answer in [r#"{"stored":1,"errors":[]}"#, "ok", ""] {
            assert!(IngestAnswer::refused(answer).is_empty(), "{answer}");
        }
        assert_eq!(
            IngestAnswer::refused(r#"{"errors":[{"line":7,"error":"not a record"}]}"#),
            [RefusedLine {
                line: 7,
                error: "not a record".into()
            }]
        );
    }

    /// An aggregator of record format 3, older than the format header: it
    /// stores the records of format 3 and below, and cannot read the rest
    /// (a body on its own line is a kind of body it does not know), nor
    /// the lines such bodies travel on. Each record it stores is kept.
    async fn format_3_sink() -> (std::net::SocketAddr, Arc<Mutex<Vec<Exchange>>>) {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let kept = stored.clone();
        let sink = axum::Router::new().route(
            "/ingest",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                let mut errors = Vec::new();
                for (i, line) in decoded("zstd", &body).lines().enumerate() {
                    let record = serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .filter(|r| r["format"].as_u64().is_some_and(|f| f <= 3))
                        .and_then(|r| serde_json::from_value::<Exchange>(r).ok());
                    match record {
                        Some(record) => kept.lock().unwrap().push(record),
                        None => errors.push(serde_json::json!({
                            "line": i + 1,
                            "error": "not a record: unknown variant `next_line`",
                        })),
                    }
                }
                serde_json::json!({"errors": errors}).to_string()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, sink).await });
        (address, stored)
    }

    #[tokio::test]
    async fn a_record_an_older_aggregator_cannot_read_is_sent_again_at_format_2_and_later_ones_made_for_it()
     {
        use apiwitness_record::{Body, BodyContent, FORMAT_GZIP, FORMAT_NEXT_LINE, NextLine};
        let (address, stored) = format_3_sink().await;
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 1 << 20, queue.clone());
        let json = r#"{"kind":"ConfigMap","data":{"f":"yyyy"}}"#;
        let mut apart = record(1);
        apart.response_content_type = Some("application/json".into());
        apart.response_body = Some(Body {
            content: BodyContent::NextLine(
                NextLine::of(Bytes::from_static(json.as_bytes())).unwrap(),
            ),
            size: json.len() as u64 + 1,
            truncated: false,
            content_encoding: None,
        });
        apart.format = apart.lowest_format();
        assert_eq!(apart.format, FORMAT_NEXT_LINE);
        let mut plain = record(2);
        plain.format = plain.lowest_format();
        queue.push(apart);
        queue.push(plain);

        // The record and its body's line refused, the other stored.
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 1);
        assert_eq!(shipper.config.format.get(), FORMAT_GZIP);
        assert_eq!(shipper.metrics.lines_written_again.get(), 1);
        assert_eq!(shipper.metrics.lines_refused.get(), 0);
        assert_eq!(ids(&queue), ["1"]);
        // Sent again at format 2, its body checked here.
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 1);
        assert!(queue.is_empty());
        let stored = stored.lock().unwrap().clone();
        let ids: Vec<_> = stored.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["2", "1"]);
        let again = &stored[1];
        assert_eq!(again.format, FORMAT_PLAIN);
        let body = again.response_body.as_ref().unwrap();
        assert!(matches!(body.content, BodyContent::RawJson(_)), "{body:?}");
        assert_eq!(
            body.content.json().unwrap().into_owned(),
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
        assert_eq!(body.size, json.len() as u64 + 1);
        // Nothing is written again twice: a line of format 2 refused is
        // refused.
        let refused = [RefusedLine {
            line: 1,
            error: "not a record: something else".into(),
        }];
        let mut line = Vec::new();
        again.write_line(&mut line);
        assert_eq!(shipper.written_again(&[line], 0, &refused), (Vec::new(), 1));
        assert_eq!(shipper.metrics.lines_refused.get(), 1);
        // Nor is a line refused for another reason than its format.
        let mut newer = stored[1].clone();
        newer.format = FORMAT_NEXT_LINE;
        let mut line = Vec::new();
        newer.write_line(&mut line);
        let not_the_format = [RefusedLine {
            line: 1,
            error: "pod ns/p may not write records of pod ns/q".into(),
        }];
        assert_eq!(
            shipper.written_again(&[line], 0, &not_the_format),
            (Vec::new(), 1)
        );
        assert_eq!(shipper.metrics.lines_refused.get(), 2);
        assert_eq!(shipper.config.format.get(), FORMAT_GZIP);
    }

    #[tokio::test]
    async fn the_format_an_aggregator_states_is_followed() {
        let sink = axum::Router::new().route(
            "/ingest",
            axum::routing::post(|| async {
                (
                    [(apiwitness_record::FORMAT_HEADER, "3")],
                    r#"{"errors":[]}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, sink).await });
        let queue = Queue::new(1000, usize::MAX, Arc::new(Metrics::new()));
        let shipper = shipper_to(address, 1 << 20, queue.clone());
        queue.push(record(1));
        assert_eq!(shipper.ship_one_batch().await.unwrap(), 1);
        assert_eq!(shipper.config.format.get(), 3);
        assert_eq!(
            shipper.config.format.decoding(),
            crate::decode::Decoding::for_aggregator_format(3)
        );
    }

    #[test]
    fn the_configured_zstd_level_decides_whether_literals_are_encoded() {
        let lines = [line_of(&with_text_body(0, 64 * 1024, true))];
        let raw = lines[0].len() + 1;
        let none = Reports::default();
        let at_level_one = encode_batch(&lines, &none, ShipEncoding::Zstd, 1);
        let at_minus_one = encode_batch(&lines, &none, ShipEncoding::Zstd, -1);
        // base64 spends 6 bits of every 8: Huffman coding takes about a
        // quarter off, and level -1 does not code literals at all.
        assert!(
            at_level_one.len() * 100 < raw * 80,
            "{} of {raw}",
            at_level_one.len()
        );
        assert!(
            at_minus_one.len() * 100 > raw * 95,
            "{} of {raw}",
            at_minus_one.len()
        );
        for bytes in [at_level_one, at_minus_one] {
            assert_eq!(decoded("zstd", &bytes).len(), raw);
        }
        assert_eq!(Effort::Normal.zstd_level(3), 3);
        assert_eq!(Effort::Fast.zstd_level(3), -1);
        assert_eq!(Effort::Fast.zstd_level(-4), -4);
    }

    #[test]
    fn batches_are_compressed_ndjson_with_the_drop_report_first() {
        let now = SystemTime::now();
        for (encoding, name, zstd_level) in [
            (ShipEncoding::Zstd, "zstd", 1),
            (ShipEncoding::Zstd, "zstd", -1),
            (ShipEncoding::Gzip, "gzip", 1),
        ] {
            let drops = Drops::default();
            drops.note(7, now);
            let bytes = encode_batch(
                &[1, 2].map(|n| line_of(&record(n))),
                &drops.take(&PodIdentity::default()),
                encoding,
                zstd_level,
            );
            let text = decoded(name, &bytes);
            let lines: Vec<apiwitness_record::Line> = text
                .lines()
                .map(|l| apiwitness_record::Line::parse(l).unwrap())
                .collect();
            assert!(matches!(&lines[0], apiwitness_record::Line::DropReport(d) if d.dropped == 7));
            assert!(matches!(&lines[2], apiwitness_record::Line::Exchange(e) if e.id == "2"));
            assert_eq!(lines.len(), 3);
        }
    }
}
