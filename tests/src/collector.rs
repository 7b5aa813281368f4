//! Receives what interceptors ship, as the aggregator's ingest endpoint
//! does: compressed NDJSON batches of record lines, undone by the
//! aggregator's own code. It keeps them for the
//! test to inspect, and can be switched off to play an unreachable aggregator,
//! or made to read only older record formats, to play an older aggregator.

use crate::Cluster;
use crate::server::TestServer;
use apiwitness_aggregator::ingest::{Encoding, decompress};
use apiwitness_record::{BodyContent, DropReport, Exchange, FORMAT_VERSION, Line};
use axum::body::Bytes;
use axum::http::StatusCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Received {
    exchanges: Vec<Exchange>,
    drops: Vec<DropReport>,
    batches: usize,
    /// Lines refused, as an older aggregator refuses them.
    refused: usize,
}

pub struct Collector {
    pub url: String,
    received: Arc<Mutex<Received>>,
    available: Arc<AtomicBool>,
    newest_format: Arc<AtomicU32>,
    _server: TestServer,
}

impl Collector {
    pub fn start(cluster: &Cluster) -> anyhow::Result<Collector> {
        let received = Arc::new(Mutex::new(Received::default()));
        let available = Arc::new(AtomicBool::new(true));
        let newest_format = Arc::new(AtomicU32::new(FORMAT_VERSION));
        let app = {
            let received = received.clone();
            let available = available.clone();
            let newest_format = newest_format.clone();
            axum::Router::new().route(
                "/ingest",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                    let received = received.clone();
                    let available = available.clone();
                    let newest = newest_format.load(Ordering::SeqCst);
                    async move {
                        if !available.load(Ordering::SeqCst) {
                            return (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "down for the test".to_string(),
                            );
                        }
                        let encoding = headers
                            .get(axum::http::header::CONTENT_ENCODING)
                            .and_then(|v| v.to_str().ok());
                        let text = match Encoding::of_header(encoding)
                            .and_then(|e| decompress(&body, e))
                        {
                            Ok(text) => text,
                            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
                        };
                        let (text, errors) = older_reader(&text, newest);
                        let mut r = received.lock().unwrap();
                        r.batches += 1;
                        r.refused += errors.len();
                        for line in Line::parse_batch(&text) {
                            match line {
                                Ok(Line::Exchange(e)) => r.exchanges.push(*e),
                                Ok(Line::DropReport(d)) => r.drops.push(*d),
                                Err(e) => {
                                    return (StatusCode::BAD_REQUEST, format!("bad line: {e}"));
                                }
                            }
                        }
                        let answer = serde_json::json!({ "errors": errors });
                        (StatusCode::OK, answer.to_string())
                    }
                }),
            )
        };
        let server = TestServer::start_plain(&format!("{}:0", cluster.node_ip()), app)?;
        Ok(Collector {
            url: format!("http://{}/ingest", server.addr),
            received,
            available,
            newest_format,
            _server: server,
        })
    }

    /// From now on, read only lines of record formats up to `format`, and
    /// refuse the others (and the lines their bodies travel on) as an
    /// aggregator of that format, older than the format header, refuses
    /// them: one line at a time, in an answer of 200.
    pub fn read_formats_up_to(&self, format: u32) {
        self.newest_format.store(format, Ordering::SeqCst);
    }

    /// The lines refused so far.
    pub fn refused(&self) -> usize {
        self.received.lock().unwrap().refused
    }

    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.received.lock().unwrap().exchanges.clone()
    }

    pub fn drops(&self) -> Vec<DropReport> {
        self.received.lock().unwrap().drops.clone()
    }
}

/// The batch `text` less the lines an aggregator that reads formats up to
/// `newest` cannot read: a record of a newer format, and then each line
/// after it that one of its bodies travels on, which such an aggregator
/// reads as a line of its own. Gives the rest, and an error for each line
/// left out, numbered from 1 as the aggregator numbers them.
fn older_reader(text: &str, newest: u32) -> (String, Vec<serde_json::Value>) {
    let mut kept = String::with_capacity(text.len());
    let mut errors = Vec::new();
    // The record's own line, and its body lines, still to refuse.
    let mut body_lines_refused = 0;
    for (i, line) in text.lines().enumerate() {
        if body_lines_refused == 0
            && let Ok(Line::Exchange(e)) = Line::parse(line)
            && e.format > newest
        {
            let body_lines = [&e.request_body, &e.response_body]
                .into_iter()
                .flatten()
                .filter(|b| matches!(b.content, BodyContent::NextLine(_)))
                .count();
            body_lines_refused = 1 + body_lines;
        }
        if body_lines_refused > 0 {
            body_lines_refused -= 1;
            errors.push(serde_json::json!({
                "line": i + 1,
                "error": format!("not a record: the reader of format {newest} cannot read it"),
            }));
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, errors)
}
