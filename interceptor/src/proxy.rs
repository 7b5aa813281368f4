//! The proxy: each client request goes to the apiserver over a pooled TLS
//! connection (HTTP/2 where the client and the apiserver speak it), and both
//! bodies stream through a capture. Upgrades (exec, attach, port-forward) are
//! spliced through over HTTP/1.1, their request and status recorded.
//!
//! Headers pass unchanged, except the hop-by-hop ones that no proxy may
//! forward. The Authorization header reaches the apiserver and nothing else.

use crate::capture::{Capture, CaptureBody, CaptureMode, Limits, SharedCapture};
use crate::coalesce::Coalesce;
use crate::metrics::Metrics;
use crate::recorder::{RawExchange, RecorderHandle};
use crate::upstream::{UpstreamError, Upstreams};
use apiwitness_record::{ApiRequest, Verb};
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A body with nothing in it.
pub fn empty_body() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the apiserver at {upstream} could not be reached: {reason}")]
    Upstream { upstream: String, reason: String },
    /// The apiserver refused the request without processing it. Its
    /// source is a REFUSED_STREAM, which hyper finds and resets the
    /// client's stream with: an HTTP/2 client then knows it may send the
    /// request again, where any other error would end it.
    #[error("the apiserver at {upstream} refused the request unprocessed: {reason}")]
    Refused {
        upstream: String,
        reason: String,
        source: h2::Error,
    },
    #[error("bad request target: {0}")]
    Target(String),
}

/// Where a connection's requests go (`host:port`): as text for logs and
/// errors, and as the authority of each request's URI upstream.
#[derive(Clone)]
pub struct Target {
    pub name: Arc<str>,
    authority: http::uri::Authority,
}

impl Target {
    pub fn new(name: &str) -> Result<Target, ProxyError> {
        let authority = name
            .parse()
            .map_err(|e| ProxyError::Target(format!("{name}: {e}")))?;
        Ok(Target {
            name: Arc::from(name),
            authority,
        })
    }
}

pub struct Proxy {
    /// For clients that speak HTTP/2: HTTP/2 where the apiserver offers it.
    client: Arc<Upstreams>,
    /// For HTTP/1.1 clients, and upgrades (which only HTTP/1.1 carries).
    http1_client: Arc<Upstreams>,
    recorder: RecorderHandle,
    limits: Limits,
    /// How long a response's first bytes may wait to be joined (--coalesce-wait).
    coalesce_wait: Duration,
    metrics: Arc<Metrics>,
}

const KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: header::HeaderName = header::HeaderName::from_static("proxy-connection");

/// The headers that are hop-by-hop whatever Connection says.
static HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Hop-by-hop headers (RFC 9110 7.6.1), plus those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if keep_upgrade {
        return;
    }
    // Most messages carry none, and most of the rest only `Connection:
    // keep-alive`: one look at the names they carry says which to remove.
    // Each removal hashes its name, and those of absent names, with the
    // names Connection lists made into strings, were a percent and a half
    // of the proxy's CPU where the upstream said keep-alive.
    let mut present = 0u8;
    let mut te = false;
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << at;
        } else if name == header::TE {
            te = true;
        }
    }
    if present == 0 && !te {
        return;
    }
    if present & 1 != 0 {
        let named: Vec<header::HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Removed below in any case, and most often the only one named.
            .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|s| header::HeaderName::from_bytes(s.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << at) != 0 {
            headers.remove(name);
        }
    }
    if te
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn capture_mode_for(content_encoding: Option<&str>) -> CaptureMode {
    match content_encoding {
        Some(e) if e.eq_ignore_ascii_case("gzip") => CaptureMode::Gzip,
        _ => CaptureMode::Plain,
    }
}

/// What is known of an exchange before its response body ends.
#[derive(Clone)]
struct Pending {
    started_at: SystemTime,
    started: Instant,
    method: String,
    path: String,
    query: String,
    user_agent: Option<String>,
    request_content_type: Option<String>,
    request_body: SharedCapture,
    /// The request as the apiserver reads it, if it is one of its API's.
    request: Option<ApiRequest>,
    watch: bool,
    /// For a watch: the id of its first part, which stands for it.
    watch_id: Option<Arc<str>>,
}

impl Pending {
    fn finish(
        self,
        status: u16,
        response: Option<ResponseHead>,
        upgrade: Option<String>,
        error: Option<String>,
    ) -> RawExchange {
        let (response_content_type, response_content_encoding, response_body) = match response {
            Some(head) => (head.content_type, head.content_encoding, Some(head.body)),
            None => (None, None, None),
        };
        RawExchange {
            started_at: self.started_at,
            duration: self.started.elapsed(),
            method: self.method,
            path: self.path,
            query: self.query,
            status,
            user_agent: self.user_agent,
            request_content_type: self.request_content_type,
            response_content_type,
            response_content_encoding,
            request_body: self.request_body,
            response_body,
            request: self.request,
            watch: self.watch,
            watch_id: self.watch_id,
            upgrade,
            error,
        }
    }
}

/// An open watch, which ships its events in parts while it runs: when it
/// holds enough for one, and at least every `watch_part_wait`.
struct WatchParts {
    pending: Pending,
    status: u16,
    content_type: Option<String>,
    content_encoding: Option<String>,
    capture: SharedCapture,
    recorder: RecorderHandle,
}

impl WatchParts {
    /// Ships what the watch has kept since its previous part. False once the
    /// watch has ended: its last part is shipped when its body ends.
    fn ship(&self) -> bool {
        let Some(part) = Capture::take_part(&self.capture) else {
            return !Capture::is_finished(&self.capture);
        };
        let index = part.part.map_or(0, |p| p.index);
        let head = ResponseHead {
            content_type: self.content_type.clone(),
            content_encoding: self.content_encoding.clone(),
            body: Capture::finished(part),
        };
        let raw = self
            .pending
            .clone()
            .finish(self.status, Some(head), None, None);
        if !self.recorder.record_part(raw) {
            // Its events are lost (and counted), but not its place: the
            // next part takes its index, so that a watch whose first part
            // was dropped is still counted, once.
            Capture::give_back_part(&self.capture, index);
        }
        true
    }

    /// Ships a part every `wait` while the watch is open; ends with it.
    fn tick(self: Arc<Self>, wait: std::time::Duration) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(wait);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if !self.ship() {
                    break;
                }
            }
        });
    }
}

/// What a record keeps of a response's head, and its captured body.
struct ResponseHead {
    content_type: Option<String>,
    content_encoding: Option<String>,
    body: SharedCapture,
}

impl ResponseHead {
    fn of(headers: &HeaderMap, body: SharedCapture) -> ResponseHead {
        ResponseHead {
            content_type: header_string(headers, header::CONTENT_TYPE),
            content_encoding: header_string(headers, header::CONTENT_ENCODING),
            body,
        }
    }
}

impl Proxy {
    pub fn new(
        upstream_tls: rustls::ClientConfig,
        upstream_server_name: &str,
        upstream_http2: bool,
        recorder: RecorderHandle,
        limits: Limits,
        coalesce_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, String> {
        Ok(Proxy {
            client: Upstreams::new(
                upstream_tls.clone(),
                upstream_server_name,
                upstream_http2,
                metrics.upstream.clone(),
            )?,
            http1_client: Upstreams::new(
                upstream_tls,
                upstream_server_name,
                false,
                metrics.upstream.clone(),
            )?,
            recorder,
            limits,
            coalesce_wait,
            metrics,
        })
    }

    /// Forwards one request to `upstream` (`host:port`) and returns the
    /// apiserver's response, streaming. An unreachable apiserver is an error,
    /// which aborts the client's request as a failed dial would.
    pub async fn handle(
        self: Arc<Self>,
        upstream: Target,
        mut request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let request_content_type = header_string(request.headers(), header::CONTENT_TYPE);
        let parsed = ApiRequest::parse(
            request.method().as_str(),
            &path,
            &query,
            request_content_type.as_deref(),
        )
        .ok();
        let watch = parsed.as_ref().is_some_and(|p| p.verb == Verb::Watch);
        let is_upgrade = request.headers().contains_key(header::UPGRADE);

        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut request));

        let request_body = Capture::new(
            capture_mode_for(
                request
                    .headers()
                    .get(header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok()),
            ),
            self.limits,
        );
        let pending = Pending {
            started_at,
            started,
            method: request.method().to_string(),
            path,
            query,
            user_agent: header_string(request.headers(), header::USER_AGENT),
            request_content_type,
            request_body: request_body.clone(),
            request: parsed,
            watch,
            watch_id: watch.then(|| Arc::from(uuid::Uuid::now_v7().to_string())),
        };

        let (mut parts, body) = request.into_parts();
        // An HTTP/1.1 client's requests reach the apiserver over HTTP/1.1, as
        // they would without the sidecar: one at a time per connection,
        // never multiplexed behind another client's streams.
        let http1 = is_upgrade || parts.version != Version::HTTP_2;
        // The same path and query, now to the upstream: taken over as they
        // are, where text formatted and parsed anew cost two allocations.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(http::uri::Scheme::HTTPS);
        uri.authority = Some(upstream.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = hyper::Uri::from_parts(uri).map_err(|e| ProxyError::Target(format!("{e}")))?;
        // The pooled client speaks whichever version the apiserver chose.
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, is_upgrade);
        // A request body is joined only with what has already arrived: a
        // client that streams one is not kept waiting.
        let body =
            CaptureBody::new(Coalesce::new(body, Duration::ZERO), request_body, None).boxed();
        let upstream_request = Request::from_parts(parts, body);

        let sent = if http1 {
            self.http1_client
                .send(&upstream.authority, upstream_request)
                .await
        } else {
            self.client
                .send(&upstream.authority, upstream_request)
                .await
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                self.metrics.upstream_errors.inc();
                let reason = format!("{e:#}");
                tracing::warn!(upstream = %upstream.name, error = %reason, "apiserver unreachable");
                self.recorder
                    .record(pending.finish(0, None, None, Some(reason.clone())));
                let upstream = upstream.name.to_string();
                return Err(match e {
                    UpstreamError::Refused { .. } => ProxyError::Refused {
                        upstream,
                        reason,
                        source: h2::Error::from(h2::Reason::REFUSED_STREAM),
                    },
                    _ => ProxyError::Upstream { upstream, reason },
                });
            }
        };
        let status = response.status();

        if status == StatusCode::SWITCHING_PROTOCOLS {
            let protocol = header_string(response.headers(), header::UPGRADE).unwrap_or_default();
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(async move {
                    match tokio::join!(client_upgrade, upstream_upgrade) {
                        (Ok(client), Ok(server)) => {
                            let mut client = hyper_util::rt::TokioIo::new(client);
                            let mut server = hyper_util::rt::TokioIo::new(server);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        (c, s) => {
                            tracing::warn!(client = ?c.err(), upstream = ?s.err(), "upgrade failed")
                        }
                    }
                });
            }
            let head = ResponseHead::of(
                response.headers(),
                Capture::new(CaptureMode::Plain, self.limits),
            );
            self.recorder
                .record(pending.finish(status.as_u16(), Some(head), Some(protocol), None));
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, empty_body()));
        }

        let (mut parts, body) = response.into_parts();
        // Only what the record keeps of the headers, not a copy of them all.
        let content_type = header_string(&parts.headers, header::CONTENT_TYPE);
        let content_encoding = header_string(&parts.headers, header::CONTENT_ENCODING);
        let mode = if watch && status.is_success() {
            if content_type
                .as_deref()
                .is_some_and(|c| c.contains("protobuf"))
            {
                CaptureMode::WatchProtobuf
            } else {
                CaptureMode::WatchJson
            }
        } else {
            capture_mode_for(content_encoding.as_deref())
        };
        let capture = Capture::new(mode, self.limits);
        let watch_parts =
            matches!(mode, CaptureMode::WatchJson | CaptureMode::WatchProtobuf).then(|| {
                Arc::new(WatchParts {
                    pending: pending.clone(),
                    status: status.as_u16(),
                    content_type: content_type.clone(),
                    content_encoding: content_encoding.clone(),
                    capture: capture.clone(),
                    recorder: self.recorder.clone(),
                })
            });
        let recorder = self.recorder.clone();
        let head = ResponseHead {
            content_type,
            content_encoding,
            body: capture.clone(),
        };
        let on_end = Box::new(move || {
            recorder.record(pending.finish(status.as_u16(), Some(head), None, None));
        });
        strip_hop_by_hop(&mut parts.headers, false);
        // A watch's events go on as they come.
        let wait = if watch_parts.is_some() {
            Duration::ZERO
        } else {
            self.coalesce_wait
        };
        let mut body = CaptureBody::new(Coalesce::new(body, wait), capture, Some(on_end));
        // The apiserver's HTTP/2 server writes a response's HEADERS and its
        // DATA as two TLS records; handed on as they came, they cost the
        // client's connection two records and two writes (2.6 writes a
        // request against 1.7, a 1 KiB GET). Where the head announces a
        // length, whose bytes follow it at once, the head waits for the
        // first of them and goes out with them. A body of no length (a
        // watch, a log being followed) may be long in coming: its head goes
        // at once. A client that leaves meanwhile drops the body, which
        // records the exchange.
        if watch_parts.is_none() && announces_a_length(&parts.headers) {
            body.inner_mut().hold_first().await;
        }
        if let Some(watch_parts) = watch_parts {
            watch_parts.clone().tick(self.limits.watch_part_wait);
            body = body.with_parts(Box::new(move || {
                watch_parts.ship();
            }));
        }
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// Whether a head announces a body of some bytes.
fn announces_a_length(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|length| length > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The HTTP/2 client of a request the apiserver refused unprocessed is
    /// told so with REFUSED_STREAM, which lets it send the request again;
    /// any other failure resets with INTERNAL_ERROR. hyper finds the
    /// reason in the error's sources.
    #[tokio::test]
    async fn a_refusal_resets_the_clients_stream_with_refused_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let upstream = "apiserver".to_string();
                let reason = "refused".to_string();
                Err::<Response<ProxyBody>, _>(if request.uri().path() == "/refused" {
                    ProxyError::Refused {
                        upstream,
                        reason,
                        source: h2::Error::from(h2::Reason::REFUSED_STREAM),
                    }
                } else {
                    ProxyError::Upstream { upstream, reason }
                })
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        for (path, reason) in [
            ("/refused", h2::Reason::REFUSED_STREAM),
            ("/unreachable", h2::Reason::INTERNAL_ERROR),
        ] {
            let mut client = client.clone().ready().await.unwrap();
            let request = Request::get(format!("http://{address}{path}"))
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let error = response.await.unwrap_err();
            assert_eq!(error.reason(), Some(reason), "{path}: {error}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Keep-Alive, X-Hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("user-agent", HeaderValue::from_static("kubectl"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["authorization", "user-agent"]);

        let mut up = HeaderMap::new();
        up.insert("connection", HeaderValue::from_static("Upgrade"));
        up.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up.len(), 2, "an upgrade keeps what makes it one");

        // Each alone, without a Connection header naming it.
        for name in [
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("accept", HeaderValue::from_static("application/json"));
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"], "{name}");
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut trailers, false);
        assert_eq!(trailers.len(), 1, "te: trailers is end to end");
    }

    #[test]
    fn only_a_head_with_a_length_waits_for_bytes() {
        let with = |length: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
            announces_a_length(&headers)
        };
        assert!(with("1024"));
        assert!(!with("0"));
        assert!(!with("ten"));
        assert!(
            !announces_a_length(&HeaderMap::new()),
            "a watch, a log followed"
        );
    }
}
