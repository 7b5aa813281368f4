//! Tees a body into a bounded capture while it streams through.
//!
//! The proxied bytes are never held back: each frame is copied (up to the
//! limit) and passed on in the same poll. What the capture keeps is bounded:
//! a plain body up to `limit` bytes, a gzip body up to `limit` bytes once
//! decompressed (its true size is still counted), and a watch stream as a
//! bounded number of bounded events.

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// How to read the bytes of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    Plain,
    Gzip,
    /// Newline-delimited JSON events.
    WatchJson,
    /// 4-byte big-endian length-prefixed protobuf frames.
    WatchProtobuf,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes kept of a plain (or decompressed) body.
    pub body: usize,
    /// Bytes kept of one watch event; a larger one is counted as cut.
    pub watch_event: usize,
    /// Watch events in one record: a watch that holds this many ships them
    /// as a part. Events past it (or past `body` bytes of them) before the
    /// part is taken are counted as cut.
    pub watch_events: usize,
    /// Bytes of events that make a watch ship a part (at most `body`).
    pub watch_part_bytes: usize,
    /// A watch ships the events it holds at least this often, however few.
    pub watch_part_wait: std::time::Duration,
}

/// What a finished capture holds.
#[derive(Debug, Default)]
pub struct Captured {
    /// The kept bytes of the body (decompressed for gzip).
    pub bytes: Bytes,
    /// A gzip body's bytes as they came, where it was whole, undone without
    /// error, and no larger than the limit undone.
    pub compressed: Option<Bytes>,
    /// The size of the whole body, decompressed.
    pub size: u64,
    pub truncated: bool,
    /// For watch modes: the kept events, each one frame or line.
    pub events: Vec<Bytes>,
    pub events_cut: u64,
    /// The stream failed, or was abandoned before its end.
    pub error: Option<String>,
    /// The body reached its end.
    pub complete: bool,
    /// The bytes could not be decompressed.
    pub decode_error: Option<String>,
    /// For a watch shipped in parts: which part this is.
    pub part: Option<PartOf>,
}

/// Which part of a watch a capture holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOf {
    /// 0 for the first part.
    pub index: u32,
    /// The watch has ended.
    pub last: bool,
}

/// Counts every byte written, keeps the first `limit`.
struct BoundedSink {
    kept: BytesMut,
    limit: usize,
    size: u64,
}

impl BoundedSink {
    /// Keeps nothing more, and lets go of what it kept; it goes on counting.
    fn let_go(&mut self) {
        self.kept = BytesMut::new();
        self.limit = 0;
    }
}

impl Write for BoundedSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.size += data.len() as u64;
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Reader {
    Plain(BoundedSink),
    Gzip(Box<GzipReader>),
    Watch(WatchSplitter),
}

/// Undoes a gzip body into its sink, and keeps a copy of its bytes as they
/// came while the body undone fits the limit: such a body may be shipped
/// as it came (`decode::body`), a seventh or less of its size for the
/// apiserver's JSON.
struct GzipReader {
    decoder: flate2::write::GzDecoder<BoundedSink>,
    compressed: Option<BytesMut>,
}

impl GzipReader {
    fn new(sink: BoundedSink) -> GzipReader {
        GzipReader {
            decoder: flate2::write::GzDecoder::new(sink),
            compressed: Some(BytesMut::new()),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.decoder.write_all(data)?;
        let sink = self.decoder.get_ref();
        if sink.size > sink.limit as u64 {
            self.compressed = None;
        }
        if let Some(compressed) = &mut self.compressed {
            compressed.extend_from_slice(data);
        }
        Ok(())
    }

    fn sink(&mut self) -> &mut BoundedSink {
        self.decoder.get_mut()
    }
}

/// The capture of one body, shared between the body wrapper that fills it and
/// whoever builds the record.
pub struct Capture {
    reader: Option<Reader>,
    result: Captured,
    /// Parts of a watch taken while it runs.
    parts_taken: u32,
}

pub type SharedCapture = Arc<Mutex<Capture>>;

impl Capture {
    pub fn new(mode: CaptureMode, limits: Limits) -> SharedCapture {
        let sink = || BoundedSink {
            kept: BytesMut::new(),
            limit: limits.body,
            size: 0,
        };
        let reader = match mode {
            CaptureMode::Plain => Reader::Plain(sink()),
            CaptureMode::Gzip => Reader::Gzip(Box::new(GzipReader::new(sink()))),
            CaptureMode::WatchJson => Reader::Watch(WatchSplitter::new(false, limits)),
            CaptureMode::WatchProtobuf => Reader::Watch(WatchSplitter::new(true, limits)),
        };
        Arc::new(Mutex::new(Capture {
            reader: Some(reader),
            result: Captured::default(),
            parts_taken: 0,
        }))
    }

    /// A capture that is already finished, holding `result`.
    pub fn finished(result: Captured) -> SharedCapture {
        Arc::new(Mutex::new(Capture {
            reader: None,
            result,
            parts_taken: 0,
        }))
    }

    /// An open watch holds enough for a part: its event count limit, or its
    /// part's bytes of events.
    fn part_due(&self) -> bool {
        match &self.reader {
            Some(Reader::Watch(s)) => {
                s.events.len() >= s.limits.watch_events
                    || s.held >= s.limits.watch_part_bytes.min(s.limits.body)
            }
            _ => false,
        }
    }

    /// Takes what an open watch has kept since its previous part, as its
    /// next part. `None` once the watch has ended, or when nothing came.
    pub fn take_part(shared: &SharedCapture) -> Option<Captured> {
        let mut capture = shared.lock().unwrap_or_else(|e| e.into_inner());
        let index = capture.parts_taken;
        let Some(Reader::Watch(splitter)) = &mut capture.reader else {
            return None;
        };
        if splitter.events.is_empty() && splitter.cut == 0 {
            return None;
        }
        let (events, cut, size) = splitter.take_part();
        capture.parts_taken += 1;
        Some(Captured {
            size,
            truncated: cut > 0,
            events,
            events_cut: cut,
            part: Some(PartOf { index, last: false }),
            ..Captured::default()
        })
    }

    /// Part `index` was taken but never shipped: the next part is numbered
    /// `index` again, unless a later part was taken since.
    pub fn give_back_part(shared: &SharedCapture, index: u32) {
        let mut capture = shared.lock().unwrap_or_else(|e| e.into_inner());
        if capture.parts_taken == index + 1 {
            capture.parts_taken = index;
        }
    }

    /// The watch has ended (or was never one).
    pub fn is_finished(shared: &SharedCapture) -> bool {
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reader
            .is_none()
    }

    /// Makes room, on a plain body's first bytes, for as much of it as will
    /// be kept: `coming` is those bytes and what the body says is still to
    /// come. Grown by doubling instead, a 65 KB body was copied three times
    /// over and held in 128 KiB.
    fn reserve_for(&mut self, coming: u64) {
        if let Some(Reader::Plain(sink)) = &mut self.reader
            && sink.kept.is_empty()
        {
            let keep = coming.min(sink.limit as u64) as usize;
            sink.kept.reserve(keep);
        }
    }

    fn feed(&mut self, data: &[u8]) {
        match &mut self.reader {
            Some(Reader::Plain(sink)) => {
                let _ = sink.write(data);
            }
            Some(Reader::Gzip(reader)) => {
                if self.result.decode_error.is_none()
                    && let Err(e) = reader.write(data)
                {
                    self.result.decode_error = Some(format!("gzip: {e}"));
                }
            }
            Some(Reader::Watch(splitter)) => splitter.feed(data),
            None => {}
        }
    }

    /// Closes the capture; the first call wins.
    fn finish(&mut self, complete: bool, error: Option<String>) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        let result = &mut self.result;
        result.complete = complete;
        result.error = error;
        match reader {
            Reader::Plain(sink) => {
                result.truncated = sink.size > sink.kept.len() as u64;
                result.size = sink.size;
                result.bytes = sink.kept.freeze();
            }
            Reader::Gzip(mut reader) => {
                if result.decode_error.is_none()
                    && complete
                    && let Err(e) = reader.decoder.try_finish()
                {
                    result.decode_error = Some(format!("gzip: {e}"));
                }
                let sink = reader.sink();
                result.truncated = sink.size > sink.kept.len() as u64;
                result.size = sink.size;
                result.bytes = std::mem::take(&mut sink.kept).freeze();
                let whole = complete && !result.truncated && result.decode_error.is_none();
                result.compressed = reader
                    .compressed
                    .take()
                    .filter(|_| whole)
                    .map(BytesMut::freeze);
            }
            Reader::Watch(mut splitter) => {
                let partial = u64::from(splitter.pending_is_partial());
                let (events, cut, size) = splitter.take_part();
                result.size = size;
                result.events_cut = cut + partial;
                result.events = events;
                result.truncated = result.events_cut > 0;
                result.part = (self.parts_taken > 0).then_some(PartOf {
                    index: self.parts_taken,
                    last: true,
                });
            }
        }
    }

    /// The bytes of body and events a capture holds.
    pub fn held_bytes(shared: &SharedCapture) -> usize {
        let capture = shared.lock().unwrap_or_else(|e| e.into_inner());
        let result = &capture.result;
        let finished = result.bytes.len()
            + result.compressed.as_ref().map_or(0, Bytes::len)
            + result.events.iter().map(Bytes::len).sum::<usize>();
        finished
            + match &capture.reader {
                Some(Reader::Plain(sink)) => sink.kept.len(),
                Some(Reader::Gzip(reader)) => {
                    reader.decoder.get_ref().kept.len()
                        + reader.compressed.as_ref().map_or(0, BytesMut::len)
                }
                Some(Reader::Watch(splitter)) => splitter.held + splitter.pending.len(),
                None => 0,
            }
    }

    /// Lets go of the bytes and events kept, and keeps the sizes, so that
    /// the record still says how large the body was (marked truncated): for
    /// an exchange that the recorder has no room for.
    pub fn let_go_of_kept(shared: &SharedCapture) {
        let mut capture = shared.lock().unwrap_or_else(|e| e.into_inner());
        match &mut capture.reader {
            Some(Reader::Plain(sink)) => sink.let_go(),
            Some(Reader::Gzip(reader)) => {
                reader.sink().let_go();
                reader.compressed = None;
            }
            Some(Reader::Watch(splitter)) => {
                splitter.cut += splitter.events.len() as u64;
                splitter.events.clear();
                splitter.held = 0;
            }
            None => {}
        }
        let result = &mut capture.result;
        result.compressed = None;
        if !result.bytes.is_empty() {
            result.bytes = Bytes::new();
            result.truncated = true;
        }
        if !result.events.is_empty() {
            result.events_cut += result.events.len() as u64;
            result.events.clear();
            result.truncated = true;
        }
    }

    /// Takes the result of a finished capture. A capture still open (its body
    /// was never polled to the end nor dropped) is closed as incomplete.
    pub fn take(shared: &SharedCapture) -> Captured {
        let mut capture = shared.lock().unwrap_or_else(|e| e.into_inner());
        capture.finish(false, None);
        std::mem::take(&mut capture.result)
    }
}

/// Splits a watch stream into events as the bytes arrive.
struct WatchSplitter {
    protobuf: bool,
    limits: Limits,
    pending: BytesMut,
    /// The current event is over the per-event limit: skip to its end.
    skipping: bool,
    /// For protobuf: the length of the frame being read, once its prefix is in.
    frame_len: Option<usize>,
    /// Bytes of an over-limit protobuf frame still to skip.
    skip_left: usize,
    events: Vec<Bytes>,
    /// Bytes of `events`.
    held: usize,
    cut: u64,
    size: u64,
    /// `size` when the current part began.
    part_began_at: u64,
}

impl WatchSplitter {
    fn new(protobuf: bool, limits: Limits) -> WatchSplitter {
        WatchSplitter {
            protobuf,
            limits,
            pending: BytesMut::new(),
            skipping: false,
            frame_len: None,
            skip_left: 0,
            events: Vec::new(),
            held: 0,
            cut: 0,
            size: 0,
            part_began_at: 0,
        }
    }

    fn keep(&mut self, event: Bytes) {
        if self.events.len() < self.limits.watch_events {
            self.held += event.len();
            self.events.push(event);
        } else {
            self.cut += 1;
        }
    }

    /// The events, the count cut and the bytes of the stream since the
    /// previous part.
    fn take_part(&mut self) -> (Vec<Bytes>, u64, u64) {
        self.held = 0;
        let size = self.size - self.part_began_at;
        self.part_began_at = self.size;
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.cut),
            size,
        )
    }

    fn pending_is_partial(&self) -> bool {
        !self.pending.is_empty() || self.skipping || self.skip_left > 0
    }

    fn feed(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if self.protobuf {
            self.feed_frames(data)
        } else {
            self.feed_lines(data)
        }
    }

    fn feed_lines(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    if self.skipping {
                        self.skipping = false;
                        self.cut += 1;
                    } else if self.pending.len() + end > self.limits.watch_event {
                        self.pending.clear();
                        self.cut += 1;
                    } else {
                        self.pending.extend_from_slice(&data[..end]);
                        let event = self.pending.split().freeze();
                        if !event.iter().all(u8::is_ascii_whitespace) {
                            self.keep(event);
                        }
                    }
                    data = &data[end + 1..];
                }
                None => {
                    if !self.skipping {
                        if self.pending.len() + data.len() > self.limits.watch_event {
                            self.pending.clear();
                            self.skipping = true;
                        } else {
                            self.pending.extend_from_slice(data);
                        }
                    }
                    data = &[];
                }
            }
        }
    }

    fn feed_frames(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip_left > 0 {
                let n = self.skip_left.min(data.len());
                self.skip_left -= n;
                data = &data[n..];
                if self.skip_left == 0 {
                    self.cut += 1;
                }
                continue;
            }
            match self.frame_len {
                None => {
                    let need = 4 - self.pending.len();
                    let n = need.min(data.len());
                    self.pending.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.pending.len() == 4 {
                        let len = self.pending.get_u32() as usize;
                        self.pending.clear();
                        if len > self.limits.watch_event {
                            self.skip_left = len;
                            if len == 0 {
                                self.cut += 1;
                            }
                        } else {
                            self.frame_len = Some(len);
                        }
                    }
                }
                Some(len) => {
                    let n = (len - self.pending.len()).min(data.len());
                    self.pending.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.pending.len() == len {
                        let frame = self.pending.split().freeze();
                        self.frame_len = None;
                        self.keep(frame);
                    }
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A body that copies what passes through it into a [`Capture`], and calls
    /// `on_end` once, when the body ends, fails, or is dropped.
    pub struct CaptureBody<B> {
        #[pin]
        inner: B,
        capture: SharedCapture,
        on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
        // A watch that holds enough for a part ships it (`Capture::take_part`).
        on_part: Option<Box<dyn Fn() + Send + Sync>>,
    }

    impl<B> PinnedDrop for CaptureBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Ok(mut capture) = this.capture.lock() {
                capture.finish(false, Some("the body was abandoned before its end".into()));
            }
            if let Some(on_end) = this.on_end.take() {
                on_end();
            }
        }
    }
}

impl<B: Body> CaptureBody<B> {
    /// The body it copies from, before any of it was read.
    pub fn inner_mut(&mut self) -> &mut B
    where
        B: Unpin,
    {
        &mut self.inner
    }

    pub fn new(
        inner: B,
        capture: SharedCapture,
        on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> CaptureBody<B> {
        // A body known to be empty (HEAD, 204, a GET without a body) may never
        // be polled: it is complete from the start.
        if inner.is_end_stream() {
            let mut c = capture.lock().unwrap_or_else(|e| e.into_inner());
            c.finish(true, None);
        }
        CaptureBody {
            inner,
            capture,
            on_end,
            on_part: None,
        }
    }

    /// Calls `on_part` whenever the watch this body streams holds enough
    /// for a part.
    pub fn with_parts(mut self, on_part: Box<dyn Fn() + Send + Sync>) -> CaptureBody<B> {
        self.on_part = Some(on_part);
        self
    }
}

impl<B> Body for CaptureBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let mut capture = this.capture.lock().unwrap_or_else(|e| e.into_inner());
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // Asked after the frame was taken: what is left after it.
                    capture.reserve_for(data.len() as u64 + this.inner.size_hint().lower());
                    capture.feed(data);
                }
                // The last frame: a server that trusts is_end_stream() will not
                // poll again, so the capture is complete now.
                if this.inner.is_end_stream() {
                    capture.finish(true, None);
                    true
                } else {
                    false
                }
            }
            Poll::Ready(Some(Err(e))) => {
                capture.finish(false, Some(e.to_string()));
                true
            }
            Poll::Ready(None) => {
                capture.finish(true, None);
                true
            }
            Poll::Pending => false,
        };
        let part_due = !ended && capture.part_due();
        drop(capture);
        if ended && let Some(on_end) = this.on_end.take() {
            on_end();
        }
        if part_due && let Some(on_part) = this.on_part.as_ref() {
            on_part();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    const LIMITS: Limits = Limits {
        body: 8,
        watch_event: 16,
        watch_events: 2,
        watch_part_bytes: usize::MAX,
        watch_part_wait: std::time::Duration::from_secs(60),
    };

    /// A body that yields `chunks`, one frame each.
    fn body_of(
        chunks: Vec<&'static [u8]>,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        StreamBody::new(futures_util::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c)))
        })))
    }

    async fn run(
        mode: CaptureMode,
        chunks: Vec<&'static [u8]>,
        limits: Limits,
    ) -> (Bytes, Captured) {
        let capture = Capture::new(mode, limits);
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ended2 = ended.clone();
        let body = CaptureBody::new(
            body_of(chunks),
            capture.clone(),
            Some(Box::new(move || {
                ended2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
        );
        let passed = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            ended.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "on_end runs once"
        );
        (passed, Capture::take(&capture))
    }

    #[tokio::test]
    async fn passes_everything_and_keeps_up_to_the_limit() {
        let (passed, got) = run(CaptureMode::Plain, vec![b"hello ", b"world"], LIMITS).await;
        assert_eq!(&passed[..], b"hello world");
        assert_eq!(&got.bytes[..], b"hello wo");
        assert_eq!((got.size, got.truncated, got.complete), (11, true, true));
    }

    /// Frames of a body that says how much of it is still to come, as
    /// hyper's bodies with a Content-Length do.
    struct SizedBody(std::collections::VecDeque<Bytes>);

    impl Body for SizedBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
        }
    }

    #[tokio::test]
    async fn a_body_of_known_size_is_kept_in_one_buffer_of_what_will_be_kept() {
        for (frames, limit, room) in [(5, 1024, 500), (50, 1024, 1024)] {
            let capture = Capture::new(
                CaptureMode::Plain,
                Limits {
                    body: limit,
                    ..LIMITS
                },
            );
            let chunks = (0..frames).map(|_| Bytes::from(vec![b'x'; 100])).collect();
            let mut body = CaptureBody::new(SizedBody(chunks), capture.clone(), None);
            body.frame().await.unwrap().unwrap();
            let capacity = match &capture.lock().unwrap().reader {
                Some(Reader::Plain(sink)) => sink.kept.capacity(),
                _ => unreachable!("a plain capture"),
            };
            assert!(
                (room..room + 64).contains(&capacity),
                "{capacity} for {room}"
            );
            while body.frame().await.is_some() {}
            let got = Capture::take(&capture);
            assert_eq!(got.bytes.len(), room);
            assert_eq!((got.size, got.complete), (frames as u64 * 100, true));
        }
    }

    #[tokio::test]
    async fn gzip_is_undone_and_its_true_size_counted() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"kind\":\"List\"}").unwrap();
        let gz: &'static [u8] = Box::leak(enc.finish().unwrap().into_boxed_slice());
        let (a, b) = gz.split_at(5);
        let limits = Limits {
            body: 1024,
            ..LIMITS
        };
        let (passed, got) = run(CaptureMode::Gzip, vec![a, b], limits).await;
        assert_eq!(&passed[..], gz, "the compressed bytes pass unchanged");
        assert_eq!(&got.bytes[..], b"{\"kind\":\"List\"}");
        assert_eq!((got.size, got.truncated), (15, false));
        assert!(got.decode_error.is_none());
        assert_eq!(got.compressed.as_deref(), Some(gz), "kept as it came too");

        let (_, broken) = run(CaptureMode::Gzip, vec![b"not gzip at all"], limits).await;
        assert!(broken.decode_error.is_some());
        assert!(broken.compressed.is_none());
    }

    #[tokio::test]
    async fn a_gzip_body_is_kept_as_it_came_only_while_it_fits_the_limit_undone() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[b'a'; 2000]).unwrap();
        let gz: &'static [u8] = Box::leak(enc.finish().unwrap().into_boxed_slice());
        for (limit, kept) in [(2000, true), (1999, false)] {
            let limits = Limits {
                body: limit,
                ..LIMITS
            };
            let (_, got) = run(CaptureMode::Gzip, gz.chunks(7).collect(), limits).await;
            assert_eq!(got.size, 2000);
            assert_eq!(got.compressed.is_some(), kept, "limit {limit}");
            assert_eq!(got.truncated, !kept);
        }
        // Cut short: the stream never ended.
        let limits = Limits {
            body: 4096,
            ..LIMITS
        };
        let (_, cut) = run(CaptureMode::Gzip, vec![&gz[..gz.len() - 4]], limits).await;
        assert!(cut.compressed.is_none());
    }

    #[tokio::test]
    async fn a_large_gzip_body_in_many_chunks_is_decoded_whole() {
        let original: Vec<u8> = (0..200_000u32)
            .map(|i| b"{\"abcdefgh\":1},"[(i % 15) as usize])
            .collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&original).unwrap();
        let gz: &'static [u8] = Box::leak(enc.finish().unwrap().into_boxed_slice());
        let chunks: Vec<&'static [u8]> = gz.chunks(1000).collect();
        let limits = Limits {
            body: 1 << 20,
            ..LIMITS
        };
        let (_, got) = run(CaptureMode::Gzip, chunks, limits).await;
        assert!(got.decode_error.is_none(), "{:?}", got.decode_error);
        assert_eq!(got.size, original.len() as u64);
        assert_eq!(&got.bytes[..], &original[..]);
    }

    #[tokio::test]
    async fn json_watch_events_split_across_chunks_with_limits() {
        let (_, got) = run(
            CaptureMode::WatchJson,
            vec![
                b"{\"a\":1}\n{\"b\"",
                b":2}\n{\"this one is too long\":1}\n{\"c\":3}\n",
            ],
            LIMITS,
        )
        .await;
        assert_eq!(
            got.events,
            vec![
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"{\"b\":2}")
            ]
        );
        // One over the per-event size, one over the count.
        assert_eq!(got.events_cut, 2);
    }

    /// A JSON watch of `chunks`, its capture, and the parts taken from it
    /// as each comes due.
    #[allow(clippy::type_complexity)]
    fn watch_taking_parts(
        chunks: Vec<&'static [u8]>,
        limits: Limits,
    ) -> (
        CaptureBody<impl Body<Data = Bytes, Error = std::convert::Infallible>>,
        SharedCapture,
        Arc<Mutex<Vec<Captured>>>,
    ) {
        let capture = Capture::new(CaptureMode::WatchJson, limits);
        let parts = Arc::new(Mutex::new(Vec::new()));
        let (taker, taken) = (capture.clone(), parts.clone());
        let body = CaptureBody::new(body_of(chunks), capture.clone(), None).with_parts(Box::new(
            move || {
                let part = Capture::take_part(&taker).expect("a part is due");
                taken.lock().unwrap().push(part);
            },
        ));
        (body, capture, parts)
    }

    #[tokio::test]
    async fn a_watch_ships_a_part_once_it_holds_its_part_bytes_well_below_its_limits() {
        // Room for 100 events and a KiB of them, but a part every 16 bytes.
        let limits = Limits {
            body: 1024,
            watch_event: 64,
            watch_events: 100,
            watch_part_bytes: 16,
            ..LIMITS
        };
        let chunks: Vec<&'static [u8]> = vec![b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n", b"{\"d\":4}\n"];
        let (body, capture, parts) = watch_taking_parts(chunks, limits);
        body.collect().await.unwrap();
        // Two events of 7 bytes are under 16; the third makes a part. The
        // fourth waits for the watch's end.
        let sizes: Vec<usize> = parts
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.events.len())
            .collect();
        assert_eq!(sizes, [3]);
        assert_eq!(Capture::take(&capture).events.len(), 1);
    }

    #[tokio::test]
    async fn a_watch_is_taken_in_parts_by_count_and_bytes_and_ends_with_its_last() {
        // Parts of two events, or of 20 bytes of events, whichever first.
        let limits = Limits {
            body: 20,
            watch_event: 64,
            watch_events: 2,
            ..LIMITS
        };
        let chunks: Vec<&'static [u8]> = vec![
            b"{\"a\":1}\n{\"b\":2}\n",
            b"{\"c\":3}\n",
            b"{\"a long event, 22 b\"}\n",
            b"{\"d\":4}\n{\"e\"",
            b":5}\n",
        ];
        let (body, capture, parts) = watch_taking_parts(chunks, limits);
        assert!(!Capture::is_finished(&capture));
        let passed = body.collect().await.unwrap().to_bytes();
        assert_eq!(passed.len(), 63, "every byte passes");
        assert!(Capture::is_finished(&capture));
        // Nothing is taken from a finished watch but its last part.
        assert!(Capture::take_part(&capture).is_none());
        let last = Capture::take(&capture);

        let parts = std::mem::take(&mut *parts.lock().unwrap());
        let events = |c: &Captured| -> Vec<String> {
            c.events
                .iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect()
        };
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert_eq!(events(&parts[0]), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(
            parts[0].part,
            Some(PartOf {
                index: 0,
                last: false
            })
        );
        // Two events again, the second alone over 20 bytes.
        assert_eq!(events(&parts[1]), ["{\"c\":3}", "{\"a long event, 22 b\"}"]);
        // An event split across chunks is whole in its part.
        assert_eq!(events(&parts[2]), ["{\"d\":4}", "{\"e\":5}"]);
        let indices: Vec<u32> = parts
            .iter()
            .filter_map(|p| p.part.map(|p| p.index))
            .collect();
        assert_eq!(indices, [0, 1, 2]);
        // The last part carries how the watch ended, with what came after
        // the part before: here nothing.
        assert_eq!(
            last.part,
            Some(PartOf {
                index: 3,
                last: true
            })
        );
        assert!(last.events.is_empty() && last.complete && !parts[0].complete);
        // Each part counts the bytes since the one before.
        let sizes: Vec<u64> = parts.iter().chain([&last]).map(|c| c.size).collect();
        assert_eq!(sizes, [16, 31, 16, 0]);
    }

    #[test]
    fn letting_go_of_what_was_kept_keeps_the_sizes() {
        // An open body: what came and what comes still counts.
        let open = Capture::new(CaptureMode::Plain, LIMITS);
        open.lock().unwrap().feed(b"hello ");
        Capture::let_go_of_kept(&open);
        open.lock().unwrap().feed(b"world");
        assert_eq!(Capture::held_bytes(&open), 0);
        let got = Capture::take(&open);
        assert_eq!((got.bytes.len(), got.size, got.truncated), (0, 11, true));
        // A watch part: its events become the count cut.
        let part = Capture::finished(Captured {
            events: vec![Bytes::from_static(b"{\"a\":1}"); 3],
            events_cut: 1,
            size: 27,
            part: Some(PartOf {
                index: 4,
                last: true,
            }),
            ..Captured::default()
        });
        Capture::let_go_of_kept(&part);
        let got = Capture::take(&part);
        assert_eq!((got.events.len(), got.events_cut, got.size), (0, 4, 27));
        assert_eq!(got.part.map(|p| (p.index, p.last)), Some((4, true)));
    }

    #[test]
    fn a_part_given_back_lends_its_index_to_the_next() {
        let capture = Capture::new(CaptureMode::WatchJson, LIMITS);
        let feed = |data: &[u8]| capture.lock().unwrap().feed(data);
        feed(b"{\"a\":1}\n");
        let first = Capture::take_part(&capture).unwrap();
        assert_eq!(first.part.map(|p| p.index), Some(0));
        // Dropped on the way to the recorder.
        Capture::give_back_part(&capture, 0);
        feed(b"{\"b\":2}\n");
        let next = Capture::take_part(&capture).unwrap();
        assert_eq!(next.part.map(|p| p.index), Some(0));
        feed(b"{\"c\":3}\n");
        assert_eq!(
            Capture::take_part(&capture).unwrap().part.map(|p| p.index),
            Some(1)
        );
        // Too late for part 0: part 1 was taken since.
        Capture::give_back_part(&capture, 0);
        let last = Capture::take(&capture);
        assert_eq!(last.part.map(|p| p.index), Some(2));
    }

    #[tokio::test]
    async fn a_watch_that_ends_before_any_part_is_one_record() {
        let (_, got) = run(CaptureMode::WatchJson, vec![b"{\"a\":1}\n"], LIMITS).await;
        assert_eq!((got.events.len(), got.part), (1, None));
    }

    #[tokio::test]
    async fn protobuf_watch_frames_by_length_prefix() {
        let frame = |payload: &[u8]| -> Vec<u8> {
            let mut v = (payload.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(payload);
            v
        };
        let mut stream = frame(b"one");
        stream.extend(frame(&[7u8; 40]));
        stream.extend(frame(b"two"));
        let stream: &'static [u8] = Box::leak(stream.into_boxed_slice());
        let (first, rest) = stream.split_at(2);
        let (_, got) = run(CaptureMode::WatchProtobuf, vec![first, rest], LIMITS).await;
        assert_eq!(
            got.events,
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        assert_eq!(got.events_cut, 1);
    }

    #[test]
    fn a_dropped_body_closes_its_capture_as_incomplete() {
        let capture = Capture::new(CaptureMode::Plain, LIMITS);
        let never_ends = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::convert::Infallible>,
        >());
        drop(CaptureBody::new(never_ends, capture.clone(), None));
        let got = Capture::take(&capture);
        assert!(!got.complete);
        assert!(got.error.is_some());
    }

    #[test]
    fn a_known_empty_body_is_complete_without_being_polled() {
        let capture = Capture::new(CaptureMode::Plain, LIMITS);
        drop(CaptureBody::new(
            http_body_util::Empty::<Bytes>::new(),
            capture.clone(),
            None,
        ));
        let got = Capture::take(&capture);
        assert!(got.complete && got.error.is_none());
        assert_eq!(got.size, 0);
    }
}
