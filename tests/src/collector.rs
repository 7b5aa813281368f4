//! Receives what interceptors ship, as the aggregator's ingest endpoint
//! does: compressed NDJSON batches of record lines, undone by the
//! aggregator's own code. It keeps them for the
//! test to inspect, and can be switched off to play an unreachable aggregator.

use crate::Cluster;
use crate::server::TestServer;
use apiwitness_aggregator::ingest::{Encoding, decompress};
use apiwitness_record::{DropReport, Exchange, Line};
use axum::body::Bytes;
use axum::http::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Received {
    exchanges: Vec<Exchange>,
    drops: Vec<DropReport>,
    batches: usize,
}

pub struct Collector {
    pub url: String,
    received: Arc<Mutex<Received>>,
    available: Arc<AtomicBool>,
    _server: TestServer,
}

impl Collector {
    pub fn start(cluster: &Cluster) -> anyhow::Result<Collector> {
        let received = Arc::new(Mutex::new(Received::default()));
        let available = Arc::new(AtomicBool::new(true));
        let app = {
            let received = received.clone();
            let available = available.clone();
            axum::Router::new().route(
                "/ingest",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                    let received = received.clone();
                    let available = available.clone();
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
                        let mut r = received.lock().unwrap();
                        r.batches += 1;
                        for line in Line::parse_batch(&text) {
                            match line {
                                Ok(Line::Exchange(e)) => r.exchanges.push(*e),
                                Ok(Line::DropReport(d)) => r.drops.push(*d),
                                Err(e) => {
                                    return (StatusCode::BAD_REQUEST, format!("bad line: {e}"));
                                }
                            }
                        }
                        (StatusCode::OK, "{\"errors\":[]}".to_string())
                    }
                }),
            )
        };
        let server = TestServer::start_plain(&format!("{}:0", cluster.node_ip()), app)?;
        Ok(Collector {
            url: format!("http://{}/ingest", server.addr),
            received,
            available,
            _server: server,
        })
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
