//! The connections to the apiserver, pooled: HTTP/1.1 connections each
//! carry one request at a time and wait, idle, for the next; an HTTP/2
//! connection is shared by the requests to its upstream, up to the number
//! of streams the apiserver allows on one (100 by default), and the
//! requests past that open another, as Go's HTTP/2 client does. Without
//! that, a pod whose clients held 100 watches between them would have
//! every other request wait, in the HTTP/2 layer, for a watch to end.
//!
//! hyper-util's pooled `Client` did this before, for about 8,900
//! instructions a request beyond the exchange itself (callgrind, a 1.4 KB
//! GET): it hashes the upstream's authority with SipHash, a byte at a
//! time, to take a connection out of its pool and again to put it back,
//! and races each checkout against a connect future built for the
//! purpose. The proxy has one upstream or a few, so the pools here are
//! short lists searched in order.
//!
//! Kept from that client: a request that an idle connection could not
//! send because the apiserver had closed it (and that therefore never
//! reached it) is sent again on a new connection; a pooled connection is
//! let go [`IDLE_TIMEOUT`] after its last request, and at most
//! [`MAX_IDLE`] are kept for an upstream.
//!
//! Beyond it: a request the apiserver refused without processing it, on
//! an HTTP/2 connection it was closing (a GOAWAY that its stream was past,
//! or REFUSED_STREAM), is sent again too, on a new connection, as Go's
//! HTTP/2 client does. The apiserver closes an HTTP/2 connection that has
//! been idle for 90 s, and with `--goaway-chance` one in every so many
//! requests; the interceptor shares its connections among all of a pod's
//! HTTP/2 clients, so a request racing such a GOAWAY is routine, not rare.
//! And, as Go's client does, a read without a body (GET, HEAD, OPTIONS)
//! whose pooled HTTP/1.1 connection closed before any of its answer came
//! is sent again: the apiserver may have closed it, idle, as it was
//! written. A write is not: it may have been processed.
//!
//! A request's body is kept as it is read to be sent again (`replay.rs`),
//! up to [`crate::replay::REPLAY_LIMIT`]; the refusal of a longer one goes
//! back to the client as REFUSED_STREAM, which tells an HTTP/2 client that
//! it may send it again.

use crate::proxy::{ProxyBody, empty_body};
use crate::read_ahead::ReadAhead;
use crate::replay::{Replay, ReplayBody, replayable};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
// The clock tokio's timers use, so that the expiry task and the ages it
// compares agree (and a test can move both).
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// How long a pooled HTTP/1.1 connection is kept after its last request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The idle HTTP/1.1 connections kept for one upstream.
pub const MAX_IDLE: usize = 64;
/// The largest HTTP/2 frame the apiserver may send the sidecar.
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;
/// A pooled HTTP/1.1 connection's read buffer would grow with the bodies
/// it reads, up to about 400 KiB each; a TLS record holds 16 KiB. With 16
/// connections reading 64 KiB bodies, peak RSS was 17.3 MiB, and 13.7 to
/// 14.5 MiB with this, at the same throughput.
const HTTP1_READ_BUFFER: usize = 16 * 1024;
/// How many times in a row a request the apiserver refused unprocessed is
/// sent again, each time on a new connection.
pub const MAX_RESENDS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {upstream}: {source}")]
    Connect {
        upstream: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {upstream}: {source}")]
    Tls {
        upstream: String,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {upstream}: {source}")]
    Handshake {
        upstream: String,
        source: hyper::Error,
    },
    #[error("request to {upstream}: {source}")]
    Send {
        upstream: String,
        source: hyper::Error,
    },
    #[error("request to {upstream}: the request has no path")]
    NoPath { upstream: String },
    /// The apiserver did not process the request, and it was not sent
    /// again: its body was too long to keep, or it was refused
    /// [`MAX_RESENDS`] times more.
    #[error("request to {upstream}: refused unprocessed by the apiserver ({source})")]
    Refused {
        upstream: String,
        source: hyper::Error,
    },
}

/// A pooled HTTP/1.1 connection: idle, or still reading the response to
/// the request it was last given.
struct Idle {
    upstream: http::uri::Authority,
    sender: http1::SendRequest<ProxyBody>,
    /// When its last request was sent.
    since: Instant,
}

/// A shared HTTP/2 connection.
struct Shared {
    upstream: http::uri::Authority,
    sender: http2::SendRequest<ProxyBody>,
    /// Which connection it is, of those made: its senders cannot tell.
    number: u64,
    streams: Arc<Streams>,
}

/// The streams open on an HTTP/2 connection, and how many its peer allows
/// at once (its SETTINGS_MAX_CONCURRENT_STREAMS, as the connection's task
/// last saw it).
struct Streams {
    open: AtomicUsize,
    allowed: AtomicUsize,
}

impl Streams {
    /// Takes a place for one more stream, if there is one. Called under
    /// the pool's lock, so that two requests cannot take the last place;
    /// places are given back without it.
    fn take(self: &Arc<Self>) -> Option<StreamSlot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.allowed.load(Ordering::Acquire) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot(self.clone()))
    }
}

/// A stream's place on a shared connection, given back when its response
/// ends, or when it is dropped.
struct StreamSlot(Arc<Streams>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Connection {
    Http1(http1::SendRequest<ProxyBody>),
    /// A sender, the number of its connection, and the request's place on
    /// it.
    Http2(http2::SendRequest<ProxyBody>, u64, StreamSlot),
}

/// A response's body from the apiserver, holding its stream's place on a
/// shared HTTP/2 connection until it ends.
pub struct UpstreamBody {
    inner: Incoming,
    slot: Option<StreamSlot>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .field("holds_a_stream", &self.slot.is_some())
            .finish()
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What the pool counts, into the interceptor's metrics.
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    /// Requests sent again after the apiserver refused them unprocessed.
    pub resent: Counter,
    /// HTTP/2 connections open to the apiserver.
    pub http2_connections: Gauge,
}

pub struct Upstreams {
    tls: TlsConnector,
    offers_http2: bool,
    server_name: ServerName<'static>,
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Vec<Shared>>,
    /// A task lets expired connections go (`expire_idle_later`).
    expiring: AtomicBool,
    /// Held while an HTTP/2 connection is made, so that the requests that
    /// find none wait for the one being made instead of each making one.
    connecting: tokio::sync::Mutex<()>,
    metrics: UpstreamMetrics,
    /// HTTP/2 connections made, which numbers them.
    made: AtomicU64,
}

impl Upstreams {
    /// `http2`: offer HTTP/2 to the apiserver (ALPN), for HTTP/2 clients;
    /// else only HTTP/1.1.
    pub fn new(
        mut tls: rustls::ClientConfig,
        server_name: &str,
        http2: bool,
        metrics: UpstreamMetrics,
    ) -> Result<Arc<Upstreams>, String> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("upstream server name {server_name:?}: {e}"))?;
        tls.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Arc::new(Upstreams {
            tls: TlsConnector::from(Arc::new(tls)),
            offers_http2: http2,
            server_name,
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(Vec::new()),
            expiring: AtomicBool::new(false),
            connecting: tokio::sync::Mutex::new(()),
            metrics,
            made: AtomicU64::new(0),
        }))
    }

    /// Sends `request` (its URI absolute, to `upstream`) over a pooled
    /// connection, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        upstream: &http::uri::Authority,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let absolute = request.uri().clone();
        let mut resends = 0;
        let mut replay: Option<Replay> = None;
        loop {
            let (connection, reused) = self.connection_to(upstream).await?;
            let failed = match connection {
                Connection::Http2(mut sender, number, slot) => {
                    // What makes the request again if the apiserver refuses
                    // it: its head, copied before it goes, and its body,
                    // kept as it is read.
                    let head = head_of(&request);
                    if replay.is_none() && !request.body().is_end_stream() {
                        let (parts, body) = request.into_parts();
                        let (body, kept) = replayable(body);
                        replay = Some(kept);
                        request = Request::from_parts(parts, body.boxed());
                    }
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            return Ok(response.map(|inner| UpstreamBody {
                                inner,
                                slot: Some(slot),
                            }));
                        }
                        Err(failed) if failed.message().is_none() => {
                            let error = failed.into_error();
                            if !never_processed(&error) {
                                return Err(UpstreamError::Send {
                                    upstream: upstream.to_string(),
                                    source: error,
                                });
                            }
                            // The connection is going away, even if hyper
                            // has not seen it close yet.
                            self.forget_connection(number);
                            let body = match &replay {
                                None => Some(empty_body()),
                                Some(replay) => replay.again().map(ReplayBody::boxed),
                            };
                            match body {
                                Some(body) if resends < MAX_RESENDS => {
                                    self.count_resend(upstream, &mut resends, &error);
                                    request = head.map(|()| body);
                                    continue;
                                }
                                _ => {
                                    return Err(UpstreamError::Refused {
                                        upstream: upstream.to_string(),
                                        source: error,
                                    });
                                }
                            }
                        }
                        Err(failed) => failed,
                    }
                }
                Connection::Http1(mut sender) => {
                    *request.uri_mut() =
                        origin_form(&absolute).ok_or_else(|| UpstreamError::NoPath {
                            upstream: upstream.to_string(),
                        })?;
                    if !request.headers().contains_key(http::header::HOST)
                        && let Ok(host) = http::HeaderValue::from_str(upstream.as_str())
                    {
                        request.headers_mut().insert(http::header::HOST, host);
                    }
                    // A read without a body, on a pooled connection, is made
                    // again if the connection closes before its answer: the
                    // apiserver may have closed it, idle, as it was written.
                    let again = (reused
                        && resends < MAX_RESENDS
                        && is_safe_to_repeat(request.method())
                        && request.body().is_end_stream())
                    .then(|| head_of(&request));
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            self.check_in(upstream, sender);
                            return Ok(response.map(|inner| UpstreamBody { inner, slot: None }));
                        }
                        Err(failed) if failed.message().is_none() => {
                            let error = failed.into_error();
                            match again {
                                Some(head) if closed_before_the_answer(&error) => {
                                    self.count_resend(upstream, &mut resends, &error);
                                    request = head.map(|()| empty_body());
                                    *request.uri_mut() = absolute.clone();
                                    continue;
                                }
                                _ => {
                                    return Err(UpstreamError::Send {
                                        upstream: upstream.to_string(),
                                        source: error,
                                    });
                                }
                            }
                        }
                        Err(failed) => failed,
                    }
                }
            };
            let mut failed = failed;
            match failed.take_message() {
                // Never sent, on a connection the apiserver had closed
                // while it was idle: again, on another.
                Some(unsent) if reused => {
                    request = unsent;
                    *request.uri_mut() = absolute.clone();
                }
                _ => {
                    return Err(UpstreamError::Send {
                        upstream: upstream.to_string(),
                        source: failed.into_error(),
                    });
                }
            }
        }
    }

    /// A connection to `upstream`, and whether it was pooled.
    async fn connection_to(
        self: &Arc<Self>,
        upstream: &http::uri::Authority,
    ) -> Result<(Connection, bool), UpstreamError> {
        if let Some((sender, number, slot)) = self.shared_to(upstream) {
            return Ok((Connection::Http2(sender, number, slot), true));
        }
        if let Some(sender) = self.idle_to(upstream) {
            return Ok((Connection::Http1(sender), true));
        }
        // A connection whose response was just read is ready only once its
        // task has run, and a client's next request can come first: one
        // turn of the scheduler rather than a new connection, with its TLS
        // handshake and its buffers.
        if self.holds_busy(upstream) {
            tokio::task::yield_now().await;
            if let Some(sender) = self.idle_to(upstream) {
                return Ok((Connection::Http1(sender), true));
            }
        }
        // HTTP/1.1 connections are made side by side; an HTTP/2 connection
        // serves all that it has room for.
        let connecting = match self.offers_http2 {
            true => Some(self.connecting.lock().await),
            false => None,
        };
        // Made while this request waited.
        if let Some((sender, number, slot)) = self.shared_to(upstream) {
            return Ok((Connection::Http2(sender, number, slot), true));
        }
        // Boxed: the TLS handshake's state is large, and inline it would
        // make every request's future as large, which hyper and tokio move
        // about (a 4 KiB copy at each move, half the instructions of an
        // HTTP/2 request).
        let connection = Box::pin(self.connect(upstream)).await?;
        drop(connecting);
        Ok((connection, false))
    }

    /// The first shared connection to `upstream` with room for another
    /// stream, and a place on it; the closed are let go on the way. The
    /// first, so that the others empty and the apiserver closes them once
    /// they have been idle for its timeout.
    fn shared_to(
        &self,
        upstream: &http::uri::Authority,
    ) -> Option<(http2::SendRequest<ProxyBody>, u64, StreamSlot)> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = 0;
        while at < shared.len() {
            let connection = &shared[at];
            if connection.sender.is_closed() {
                shared.remove(at);
                continue;
            }
            if connection.upstream == *upstream
                && let Some(slot) = connection.streams.take()
            {
                return Some((connection.sender.clone(), connection.number, slot));
            }
            at += 1;
        }
        None
    }

    /// Counts a request that goes again after `error`, which the
    /// apiserver did not answer.
    fn count_resend(
        &self,
        upstream: &http::uri::Authority,
        resends: &mut u32,
        error: &hyper::Error,
    ) {
        *resends += 1;
        self.metrics.resent.inc();
        tracing::debug!(%upstream, resends = *resends, %error, "sending a request again");
    }

    /// Lets go of shared connection `number`, open or not: the next
    /// request makes a new one. Its streams still open go on. Not simply
    /// the upstream's: of the requests one GOAWAY refused, the first to be
    /// sent again may already have made the next.
    fn forget_connection(&self, number: u64) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|s| s.number != number);
    }

    /// The most recently used connection to `upstream` that is ready for
    /// another request; the closed and the expired are let go on the way.
    fn idle_to(&self, upstream: &http::uri::Authority) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let_go_of_expired(&mut idle);
        let at = idle
            .iter()
            .rposition(|i| i.upstream == *upstream && i.sender.is_ready())?;
        Some(idle.remove(at).sender)
    }

    /// Whether a pooled connection to `upstream` is still busy.
    fn holds_busy(&self, upstream: &http::uri::Authority) -> bool {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter()
            .any(|i| i.upstream == *upstream && !i.sender.is_closed())
    }

    /// Puts an HTTP/1.1 connection back in the pool as soon as its request
    /// is sent: it is taken again once it is ready, when its response has
    /// been read, and one that is upgraded or closed is let go at the next
    /// look. Put back only once ready, by a task that waited for it, each
    /// request cost a task.
    fn check_in(
        self: &Arc<Self>,
        upstream: &http::uri::Authority,
        sender: http1::SendRequest<ProxyBody>,
    ) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // One task at a time: the list empties whenever every connection is
        // out, and a task started at each of those times, each running as
        // long as connections stay pooled, grew the heap by 3 MB a second.
        if !self.expiring.swap(true, Ordering::AcqRel) {
            self.expire_idle_later();
        }
        let kept = idle.iter().filter(|i| i.upstream == *upstream).count();
        if kept >= MAX_IDLE
            && let Some(oldest) = idle.iter().position(|i| i.upstream == *upstream)
        {
            idle.remove(oldest);
        }
        idle.push(Idle {
            upstream: upstream.clone(),
            sender,
            since: Instant::now(),
        });
    }

    /// Lets the idle connections go once they have been idle for
    /// [`IDLE_TIMEOUT`], even if no request comes to find them so: each
    /// holds a socket, its TLS state and its buffers. Runs while any is
    /// idle.
    fn expire_idle_later(self: &Arc<Self>) {
        let upstreams = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT / 3).await;
                let Some(upstreams) = upstreams.upgrade() else {
                    return;
                };
                let mut idle = upstreams.idle.lock().unwrap_or_else(|e| e.into_inner());
                let_go_of_expired(&mut idle);
                if idle.is_empty() {
                    // Under the lock: the next connection put back starts
                    // another task.
                    upstreams.expiring.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    async fn connect(&self, upstream: &http::uri::Authority) -> Result<Connection, UpstreamError> {
        let name = || upstream.to_string();
        let tcp = TcpStream::connect(upstream.as_str())
            .await
            .map_err(|source| UpstreamError::Connect {
                upstream: name(),
                source,
            })?;
        // Small frames go out at once: with Nagle's algorithm, a frame
        // written while an earlier one is unacknowledged waits for the
        // peer's delayed ACK, which made the HTTP/2 tail 25 to 30 ms.
        tcp.set_nodelay(true)
            .map_err(|source| UpstreamError::Connect {
                upstream: name(),
                source,
            })?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), ReadAhead::new(tcp))
            .await
            .map_err(|source| UpstreamError::Tls {
                upstream: name(),
                source,
            })?;
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let handshake = |source| UpstreamError::Handshake {
            upstream: name(),
            source,
        };
        if http2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // The apiserver writes a GET's object in one piece, and
                // Go's HTTP/2 server sends each DATA frame of it from a
                // goroutine of its own. In frames of the default 16 KiB, a
                // 64 KiB ConfigMap took four; in one, the interceptor spent
                // 65 µs less CPU a request. A frame is read whole before
                // it is passed on, so this bounds the connection's read
                // buffer.
                .max_frame_size(MAX_FRAME_SIZE)
                // A peer that vanishes without a FIN or RST would leave
                // every stream of the shared connection waiting: PINGs
                // find it out and close it. client-go's figures (30 s, and
                // 15 s for the answer): a PING unanswered in time ends
                // every stream on the connection, the watches of all of
                // the pod's clients, so no quicker than they would.
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(15))
                .handshake(io)
                .await
                .map_err(handshake)?;
            // Until the apiserver's SETTINGS say otherwise, what hyper
            // assumes; the request it is made for has its place.
            let streams = Arc::new(Streams {
                open: AtomicUsize::new(1),
                allowed: AtomicUsize::new(100),
            });
            let slot = StreamSlot(streams.clone());
            let allowed = streams.clone();
            let mut connection = connection;
            let open_connections = self.metrics.http2_connections.clone();
            open_connections.inc();
            tokio::spawn(async move {
                // The connection's task is where the apiserver's SETTINGS
                // are read: after each turn, its limit is published.
                let ended = std::future::poll_fn(|cx| {
                    let polled = std::pin::Pin::new(&mut connection).poll(cx);
                    allowed
                        .allowed
                        .store(connection.current_max_send_streams(), Ordering::Release);
                    polled
                })
                .await;
                open_connections.dec();
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            let number = self.made.fetch_add(1, Ordering::Relaxed);
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.retain(|s| !s.sender.is_closed());
            shared.push(Shared {
                upstream: upstream.clone(),
                sender: sender.clone(),
                number,
                streams,
            });
            drop(shared);
            Ok(Connection::Http2(sender, number, slot))
        } else {
            let (sender, connection) = http1::Builder::new()
                .read_buf_exact_size(Some(HTTP1_READ_BUFFER))
                .handshake(io)
                .await
                .map_err(handshake)?;
            tokio::spawn(async move {
                if let Err(e) = connection.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
            Ok(Connection::Http1(sender))
        }
    }
}

/// Whether the apiserver is known not to have processed the request that
/// failed with `error` (RFC 9113, 6.8 and 8.7): its stream was past the
/// last one a GOAWAY let through, or it was opened after that GOAWAY, or
/// the apiserver reset it with REFUSED_STREAM.
fn never_processed(error: &hyper::Error) -> bool {
    let Some(h2) = std::error::Error::source(error).and_then(|e| e.downcast_ref::<h2::Error>())
    else {
        return false;
    };
    h2.is_remote()
        && (h2.is_go_away() || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)))
}

/// The methods Go's client sends again, unasked, when a reused
/// connection closes before their answer (RFC 9110, 9.2.2).
fn is_safe_to_repeat(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// Whether `error` is the connection closing, or being reset, before any
/// of the answer came: a clean close, a reset, or, under TLS, an end of
/// the stream without the TLS close.
fn closed_before_the_answer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        })
}

/// A copy of `request`'s head, to make it again.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head
}

/// Lets go of the pooled connections that are closed, or were last given a
/// request [`IDLE_TIMEOUT`] ago.
fn let_go_of_expired(idle: &mut Vec<Idle>) {
    let now = Instant::now();
    idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT);
}

/// The path and query of `uri` alone, as an HTTP/1.1 request line takes
/// them.
fn origin_form(uri: &Uri) -> Option<Uri> {
    let path_and_query = uri.path_and_query()?.clone();
    Uri::from_parts({
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path_and_query);
        parts
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_origin_form_keeps_the_path_and_query_only() {
        let uri: Uri = "https://10.0.0.1:6443/api/v1/pods?watch=1".parse().unwrap();
        assert_eq!(origin_form(&uri).unwrap(), "/api/v1/pods?watch=1");
    }

    /// A TLS server on loopback that answers every request with its path,
    /// over HTTP/2 or HTTP/1.1 as ALPN decides, and counts its
    /// connections. With `hold`, it closes each connection that long
    /// after it was accepted, as an apiserver closes idle ones, without
    /// saying so in a header.
    async fn server(hold: Option<Duration>) -> (String, rustls::ClientConfig, Arc<AtomicUsize>) {
        listen(&[b"h2", b"http/1.1"], move |tls| async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let path = request.uri().path().to_string();
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::from(
                    path,
                ))))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let serving = builder.serve_connection(TokioIo::new(tls), service);
            match hold {
                Some(hold) => {
                    let _ = tokio::time::timeout(hold, serving).await;
                }
                None => {
                    let _ = serving.await;
                }
            }
        })
        .await
    }

    /// A TLS listener on loopback that offers `alpn`, counts the
    /// connections it accepts, and hands each to `serve` once its
    /// handshake is done.
    async fn listen<F, Serving>(
        alpn: &[&[u8]],
        serve: F,
    ) -> (String, rustls::ClientConfig, Arc<AtomicUsize>)
    where
        F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Serving + Send + Sync + 'static,
        Serving: Future<Output = ()> + Send + 'static,
    {
        let (client, acceptor) = tls_pair(alpn);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let serve = Arc::new(serve);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, serve) = (acceptor.clone(), serve.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls).await;
                    }
                });
            }
        });
        (address, client, accepted)
    }

    /// A client configuration, and an acceptor for `apiserver.test` that
    /// offers `alpn`.
    fn tls_pair(alpn: &[&[u8]]) -> (rustls::ClientConfig, tokio_rustls::TlsAcceptor) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["apiserver.test".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], crate::tls::pkcs8(&key))
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        (client, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// An HTTP/2 server on loopback that resets the first `refuse` streams
    /// it is sent with REFUSED_STREAM, as an apiserver that is going away
    /// does, and answers the others with their path and the size of their
    /// body. Counts its connections.
    async fn refusing_server(refuse: usize) -> (String, rustls::ClientConfig, Arc<AtomicUsize>) {
        let (address, client, accepted, _) = h2_server(refuse, None).await;
        (address, client, accepted)
    }

    /// The HTTP/2 server of [`refusing_server`], allowing `max_streams` at
    /// once on a connection; it answers a request for `/held` only once
    /// `true` is sent on the channel it returns.
    async fn h2_server(
        refuse: usize,
        max_streams: Option<u32>,
    ) -> (
        String,
        rustls::ClientConfig,
        Arc<AtomicUsize>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (release, released) = tokio::sync::watch::channel(false);
        let refused = Arc::new(AtomicUsize::new(0));
        let (address, client, accepted) = listen(&[b"h2"], move |tls| {
            let (refused, released) = (refused.clone(), released.clone());
            async move {
                let mut builder = h2::server::Builder::new();
                if let Some(max) = max_streams {
                    builder.max_concurrent_streams(max);
                }
                let Ok(mut connection) = builder.handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    if refused.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let mut released = released.clone();
                    tokio::spawn(async move {
                        let path = request.uri().path().to_string();
                        if path == "/held" {
                            let _ = released.wait_for(|r| *r).await;
                        }
                        let mut body = request.into_body();
                        let mut size = 0;
                        while let Some(Ok(data)) = body.data().await {
                            size += data.len();
                            let _ = body.flow_control().release_capacity(data.len());
                        }
                        let mut sending = respond.send_response(Response::new(()), false).unwrap();
                        let answer = format!("{path} {size}");
                        sending.send_data(bytes::Bytes::from(answer), true).unwrap();
                    });
                }
            }
        })
        .await;
        (address, client, accepted, release)
    }

    /// An HTTP/1.1 server on loopback that answers the first request on
    /// each connection with its path, and closes the connection on the
    /// second without an answer, as an apiserver closing an idle
    /// connection just as a request comes does. Counts its connections.
    async fn closing_server() -> (String, rustls::ClientConfig, Arc<AtomicUsize>) {
        listen(&[b"http/1.1"], |tls| async move {
            let served = Arc::new(AtomicUsize::new(0));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let first = served.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if !first {
                        return Err("closing");
                    }
                    let path = request.uri().path().to_string();
                    Ok(Response::new(Full::new(bytes::Bytes::from(path))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        })
        .await
    }

    fn get(address: &str, path: &str) -> Request<ProxyBody> {
        Request::get(format!("https://{address}{path}"))
            .body(empty_body())
            .unwrap()
    }

    async fn body_of(response: Response<UpstreamBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// GETs `path` from the server at `address` through `upstreams`: the
    /// response's HTTP version and body (the path, as the server answers).
    async fn fetch(
        upstreams: &Arc<Upstreams>,
        address: &str,
        path: &str,
    ) -> (http::Version, String) {
        let upstream: http::uri::Authority = address.parse().unwrap();
        let response = upstreams.send(&upstream, get(address, path)).await.unwrap();
        (response.version(), body_of(response).await)
    }

    #[tokio::test]
    async fn an_http1_connection_serves_one_request_after_another() {
        let (address, tls, accepted) = server(None).await;
        let upstreams =
            Upstreams::new(tls, "apiserver.test", false, UpstreamMetrics::default()).unwrap();
        for path in ["/a", "/b", "/c"] {
            assert_eq!(
                fetch(&upstreams, &address, path).await,
                (http::Version::HTTP_11, path.to_string())
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn one_http2_connection_carries_requests_at_once() {
        let (address, tls, accepted) = server(None).await;
        let upstreams =
            Upstreams::new(tls, "apiserver.test", true, UpstreamMetrics::default()).unwrap();
        let sent = (0..8).map(|i| {
            let (upstreams, address) = (upstreams.clone(), address.clone());
            tokio::spawn(async move {
                let path = format!("/{i}");
                assert_eq!(
                    fetch(&upstreams, &address, &path).await,
                    (http::Version::HTTP_2, path)
                );
            })
        });
        for request in sent.collect::<Vec<_>>() {
            request.await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_apiserver_closed_while_idle_is_replaced() {
        for http2 in [false, true] {
            let (address, tls, accepted) = server(Some(Duration::from_millis(100))).await;
            let upstreams =
                Upstreams::new(tls, "apiserver.test", http2, UpstreamMetrics::default()).unwrap();
            for round in 1..=3 {
                assert_eq!(fetch(&upstreams, &address, "/again").await.1, "/again");
                // The server closes the connection in the meantime.
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(accepted.load(Ordering::SeqCst), round, "http2: {http2}");
            }
        }
    }

    /// One client in a row takes the only connection out of the pool each
    /// time, so the pool is empty at each check-in: the task that expires
    /// connections must still be one, not one a request.
    #[tokio::test]
    async fn requests_in_a_row_leave_no_tasks_behind() {
        let (address, tls, accepted) = server(None).await;
        let upstreams =
            Upstreams::new(tls, "apiserver.test", false, UpstreamMetrics::default()).unwrap();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        fetch(&upstreams, &address, "/0").await;
        let before = tasks();
        for i in 1..200 {
            let path = format!("/{i}");
            assert_eq!(fetch(&upstreams, &address, &path).await.1, path);
        }
        assert!(tasks() <= before + 1, "{} tasks, {before} before", tasks());
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A connection is let go once it has had no request for the idle
    /// timeout, by the expiry task, which ends with the last connection
    /// and starts again with the next.
    #[tokio::test]
    async fn connections_without_requests_are_let_go() {
        let (address, tls, accepted) = server(None).await;
        let upstreams =
            Upstreams::new(tls, "apiserver.test", false, UpstreamMetrics::default()).unwrap();
        let pooled = || upstreams.idle.lock().unwrap().len();
        for round in 1..=2 {
            fetch(&upstreams, &address, "/").await;
            assert_eq!((pooled(), accepted.load(Ordering::SeqCst)), (1, round));
            assert!(upstreams.expiring.load(Ordering::SeqCst));
            tokio::time::pause();
            tokio::time::advance(IDLE_TIMEOUT / 2).await;
            tokio::task::yield_now().await;
            assert_eq!(pooled(), 1, "kept while younger than the timeout");
            tokio::time::advance(IDLE_TIMEOUT).await;
            tokio::task::yield_now().await;
            assert_eq!(pooled(), 0);
            assert!(!upstreams.expiring.load(Ordering::SeqCst));
            tokio::time::resume();
        }
    }

    #[tokio::test]
    async fn a_request_the_apiserver_refused_unprocessed_is_sent_again_on_a_new_connection() {
        let (address, tls, accepted) = refusing_server(2).await;
        let metrics = UpstreamMetrics::default();
        let resent = metrics.resent.clone();
        let upstreams = Upstreams::new(tls, "apiserver.test", true, metrics).unwrap();
        assert_eq!(
            fetch(&upstreams, &address, "/again").await,
            (http::Version::HTTP_2, "/again 0".to_string())
        );
        assert_eq!(resent.get(), 2);
        // The connection that refused is not taken again.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // The third is kept for what follows.
        fetch(&upstreams, &address, "/next").await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Requests past the streams the server allows on a connection go on
    /// another, and do not wait for the ones before them to end.
    #[tokio::test]
    async fn requests_past_a_connections_stream_limit_open_another() {
        let (address, tls, accepted, release) = h2_server(0, Some(2)).await;
        let metrics = UpstreamMetrics::default();
        let upstreams = Upstreams::new(tls, "apiserver.test", true, metrics.clone()).unwrap();
        // The server's SETTINGS come with the first exchange.
        fetch(&upstreams, &address, "/first").await;
        let held: Vec<_> = (0..3)
            .map(|_| {
                let (upstreams, address) = (upstreams.clone(), address.clone());
                tokio::spawn(async move { fetch(&upstreams, &address, "/held").await })
            })
            .collect();
        let open = || -> usize {
            upstreams
                .shared
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.streams.open.load(Ordering::SeqCst))
                .sum()
        };
        for _ in 0..500 {
            if open() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(open(), 3, "the held requests are sent");
        let quick = tokio::time::timeout(
            Duration::from_secs(10),
            fetch(&upstreams, &address, "/quick"),
        )
        .await
        .expect("a request beside the held ones is answered");
        assert_eq!(quick.1, "/quick 0");
        // Two on the first connection, the third held and the quick one
        // on the second.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.http2_connections.get(), 2);
        release.send(true).unwrap();
        for request in held {
            assert_eq!(request.await.unwrap().1, "/held 0");
        }
        // Their places are given back: the first connection takes the next.
        fetch(&upstreams, &address, "/after").await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(open(), 0);
    }

    /// A read on a pooled HTTP/1.1 connection that closes before its answer
    /// is sent again on a new one; a write is not, for it may have been
    /// processed.
    #[tokio::test]
    async fn a_read_whose_pooled_connection_closed_before_the_answer_is_sent_again() {
        let (address, tls, accepted) = closing_server().await;
        let metrics = UpstreamMetrics::default();
        let upstreams = Upstreams::new(tls, "apiserver.test", false, metrics.clone()).unwrap();
        assert_eq!(fetch(&upstreams, &address, "/a").await.1, "/a");
        assert_eq!(fetch(&upstreams, &address, "/b").await.1, "/b");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.resent.get(), 1);

        let upstream: http::uri::Authority = address.parse().unwrap();
        let post = Request::post(format!("https://{address}/c"))
            .body(
                Full::new(bytes::Bytes::from_static(b"{}"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
        let error = upstreams.send(&upstream, post).await.unwrap_err();
        assert!(matches!(error, UpstreamError::Send { .. }), "{error}");
        assert_eq!(metrics.resent.get(), 1);
    }

    #[tokio::test]
    async fn a_request_refused_too_often_is_a_refusal() {
        let (address, tls, _) = refusing_server(1 + MAX_RESENDS as usize).await;
        let metrics = UpstreamMetrics::default();
        let resent = metrics.resent.clone();
        let upstreams = Upstreams::new(tls, "apiserver.test", true, metrics).unwrap();
        let upstream: http::uri::Authority = address.parse().unwrap();
        let error = upstreams
            .send(&upstream, get(&address, "/"))
            .await
            .unwrap_err();
        assert!(matches!(error, UpstreamError::Refused { .. }), "{error}");
        assert_eq!(resent.get(), u64::from(MAX_RESENDS));
    }

    /// A write refused is sent again with its body whole; one too long to
    /// keep is a refusal, for the client to send again.
    #[tokio::test]
    async fn a_body_is_sent_again_up_to_the_replay_limit() {
        let post = |address: &str, body: bytes::Bytes| {
            Request::post(format!("https://{address}/write"))
                .body(Full::new(body).map_err(|never| match never {}).boxed())
                .unwrap()
        };
        let (address, tls, accepted) = refusing_server(1).await;
        let upstreams =
            Upstreams::new(tls, "apiserver.test", true, UpstreamMetrics::default()).unwrap();
        let upstream: http::uri::Authority = address.parse().unwrap();
        let body = bytes::Bytes::from(vec![b'x'; 100_000]);
        let response = upstreams
            .send(&upstream, post(&address, body))
            .await
            .unwrap();
        assert_eq!(body_of(response).await, "/write 100000");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        let (address, tls, _) = refusing_server(1).await;
        let upstreams =
            Upstreams::new(tls, "apiserver.test", true, UpstreamMetrics::default()).unwrap();
        let upstream: http::uri::Authority = address.parse().unwrap();
        let too_long = bytes::Bytes::from(vec![b'x'; crate::replay::REPLAY_LIMIT + 1]);
        let error = upstreams
            .send(&upstream, post(&address, too_long.clone()))
            .await
            .unwrap_err();
        assert!(matches!(error, UpstreamError::Refused { .. }), "{error}");
        // Sent again by the client, it goes through.
        let response = upstreams
            .send(&upstream, post(&address, too_long))
            .await
            .unwrap();
        assert_eq!(
            body_of(response).await,
            format!("/write {}", crate::replay::REPLAY_LIMIT + 1)
        );
    }

    #[tokio::test]
    async fn an_upstream_that_does_not_listen_is_an_error_that_names_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let upstreams =
            Upstreams::new(tls, "apiserver.test", true, UpstreamMetrics::default()).unwrap();
        let error = upstreams
            .send(&address.parse().unwrap(), get(&address, "/"))
            .await
            .unwrap_err();
        assert!(matches!(error, UpstreamError::Connect { .. }), "{error}");
        assert!(error.to_string().contains(&address), "{error}");
    }
}
