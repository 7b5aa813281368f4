//! Configuration: flags, each with an environment variable, checked before
//! anything starts.

use clap::{Parser, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Accept connections that iptables redirected here, and forward each to
    /// its original destination.
    Transparent,
    /// Accept connections made to the interceptor itself (the app's
    /// KUBERNETES_SERVICE_HOST points here), and forward to --upstream.
    Explicit,
}

pub use apiwitness_runtime::LogFormat;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "apiwitness-interceptor",
    version,
    about = "Records every exchange between its pod and the Kubernetes apiserver."
)]
pub struct Config {
    #[arg(
        long,
        env = "APIWITNESS_MODE",
        value_enum,
        default_value = "transparent"
    )]
    pub mode: Mode,

    /// Addresses to accept clients on (comma-separated).
    #[arg(
        long,
        env = "APIWITNESS_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:15443"
    )]
    pub listen: Vec<SocketAddr>,

    /// The apiserver to forward to in explicit mode, e.g. https://10.96.0.1:443.
    #[arg(long, env = "APIWITNESS_UPSTREAM")]
    pub upstream: Option<hyper::Uri>,

    /// The cluster CA that verifies the apiserver.
    #[arg(
        long,
        env = "APIWITNESS_UPSTREAM_CA_FILE",
        default_value = "/var/run/secrets/apiwitness.io/upstream/ca.crt"
    )]
    pub upstream_ca_file: PathBuf,

    /// The name the apiserver's certificate is verified against (and the SNI sent).
    #[arg(
        long,
        env = "APIWITNESS_UPSTREAM_SERVER_NAME",
        default_value = "kubernetes.default.svc"
    )]
    pub upstream_server_name: String,

    /// Offer HTTP/2 to the apiserver for clients that speak HTTP/2 (as
    /// client-go does): their requests then share one pooled connection.
    /// An HTTP/1.1 client's requests always go over pooled HTTP/1.1
    /// connections, as they would without the sidecar.
    #[arg(long, env = "APIWITNESS_UPSTREAM_HTTP2", default_value_t = true, action = clap::ArgAction::Set)]
    pub upstream_http2: bool,

    /// A serving certificate file (PEM chain), instead of --certify-url.
    #[arg(long, env = "APIWITNESS_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    #[arg(long, env = "APIWITNESS_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// The injector's certify endpoint, which has the CSR signed.
    #[arg(long, env = "APIWITNESS_CERTIFY_URL", conflicts_with = "tls_cert_file")]
    pub certify_url: Option<hyper::Uri>,

    /// The CA that verifies the certify endpoint (default: --upstream-ca-file).
    #[arg(long, env = "APIWITNESS_CERTIFY_CA_FILE")]
    pub certify_ca_file: Option<PathBuf>,

    /// The same CA as PEM text, as the injector passes it inline (it is
    /// public, and needs no volume).
    #[arg(
        long,
        env = "APIWITNESS_CERTIFY_CA_PEM",
        conflicts_with = "certify_ca_file"
    )]
    pub certify_ca_pem: Option<String>,

    /// The pod's projected ServiceAccount token (audience apiwitness), sent to
    /// the certify endpoint and to the aggregator.
    #[arg(
        long,
        env = "APIWITNESS_TOKEN_FILE",
        default_value = "/var/run/secrets/apiwitness.io/token/token"
    )]
    pub token_file: PathBuf,

    /// Renew the certificate this far through its lifetime.
    #[arg(long, env = "APIWITNESS_CERT_RENEW_FRACTION", default_value_t = 0.7)]
    pub cert_renew_fraction: f64,

    #[arg(
        long,
        env = "APIWITNESS_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// The kubernetes Service IP, a SAN of the serving certificate.
    #[arg(long, env = "KUBERNETES_SERVICE_HOST")]
    pub service_ip: Option<IpAddr>,

    /// More names or IPs for the serving certificate (comma-separated).
    #[arg(long, env = "APIWITNESS_EXTRA_SANS", value_delimiter = ',')]
    pub extra_sans: Vec<String>,

    /// The aggregator's ingest URL. Without it, records are counted but not shipped.
    #[arg(long, env = "APIWITNESS_AGGREGATOR_URL")]
    pub aggregator_url: Option<hyper::Uri>,

    /// The CA that verifies an https aggregator (default: --upstream-ca-file).
    #[arg(long, env = "APIWITNESS_AGGREGATOR_CA_FILE")]
    pub aggregator_ca_file: Option<PathBuf>,

    /// Bytes kept of each request and response body.
    #[arg(long, env = "APIWITNESS_BODY_LIMIT", default_value_t = 1 << 20)]
    pub body_limit: usize,

    /// Bytes kept of one watch event.
    #[arg(long, env = "APIWITNESS_WATCH_EVENT_LIMIT", default_value_t = 256 << 10)]
    pub watch_event_limit: usize,

    /// Watch events in one record. A watch stays open for minutes or hours,
    /// so it is shipped in parts: one when it holds this many events or
    /// --watch-part-bytes bytes of them, or when --watch-part-wait has passed.
    #[arg(long, env = "APIWITNESS_WATCH_EVENTS", default_value_t = 1_000)]
    pub watch_events: usize,

    /// Bytes of events that make a watch ship a part. What every open watch
    /// holds is up to this much: with a part only every 1,000 events or
    /// 10 s, 16 busy watches held 30 MiB between them.
    #[arg(long, env = "APIWITNESS_WATCH_PART_BYTES", default_value_t = 64 << 10)]
    pub watch_part_bytes: usize,

    /// The longest a watch's events wait before they are shipped.
    #[arg(long, env = "APIWITNESS_WATCH_PART_WAIT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub watch_part_wait: Duration,

    /// How long the first bytes of a response may wait for more before they
    /// are written to the client, to be written as one TLS record of
    /// 16 KiB: the apiserver sends a list 4 KiB at a time. A response ends
    /// without waiting, and a watch's events never wait. 0 writes what has
    /// arrived at once.
    #[arg(long, env = "APIWITNESS_COALESCE_WAIT", value_parser = humantime::parse_duration, default_value = "10ms")]
    pub coalesce_wait: Duration,

    /// The newest record format the aggregator reads, until it says
    /// otherwise: an aggregator states its format in every answer to a
    /// batch, and the sidecar follows it; one too old to state it is taken
    /// to read formats below a line it could not read. Below this
    /// sidecar's own, bodies that newer formats let the aggregator decode
    /// are decoded here instead: below 4, every JSON body is checked here
    /// rather than sent unchecked on a line of its own; below 3, every
    /// gzip body is undone, and every protobuf body decoded, here. Set it
    /// for an aggregator older than the format header, to spare the lines
    /// it would refuse and have sent again.
    #[arg(
        long,
        env = "APIWITNESS_AGGREGATOR_FORMAT",
        default_value_t = apiwitness_record::FORMAT_VERSION,
        value_parser = clap::value_parser!(u32).range(
            i64::from(apiwitness_record::FORMAT_PLAIN)..=i64::from(apiwitness_record::FORMAT_VERSION)
        )
    )]
    pub aggregator_format: u32,

    /// More JSON Pointers to redact in every body (comma-separated).
    #[arg(long, env = "APIWITNESS_REDACT_PATHS", value_delimiter = ',')]
    pub redact_paths: Vec<String>,

    /// Bytes of bodies waiting for the recorder (which decodes, redacts and
    /// queues them); past it, new exchanges go to it without their bodies.
    #[arg(long, env = "APIWITNESS_RECORDER_BYTES", default_value_t = 4 << 20)]
    pub recorder_bytes: usize,

    /// Whole records held while the aggregator is unreachable; past it the
    /// oldest are stripped of their bodies (as many again are kept so), and
    /// then dropped.
    #[arg(long, env = "APIWITNESS_QUEUE_CAPACITY", default_value_t = 10_000)]
    pub queue_capacity: usize,

    /// Bytes of records (their NDJSON lines) held in the queue; past it the
    /// oldest records are stripped of their bodies, and then dropped.
    #[arg(long, env = "APIWITNESS_QUEUE_BYTES", default_value_t = 16 << 20)]
    pub queue_bytes: usize,

    #[arg(long, env = "APIWITNESS_BATCH_RECORDS", default_value_t = 500)]
    pub batch_records: usize,

    /// Bytes of records (their NDJSON lines) in one batch. The shipper holds
    /// a batch and its compressed copy while it sends.
    #[arg(long, env = "APIWITNESS_BATCH_BYTES", default_value_t = 256 << 10)]
    pub batch_bytes: usize,

    /// How batches are compressed: zstd, or gzip for an aggregator that does
    /// not read zstd (the shipper also turns to gzip by itself when the
    /// aggregator answers 415 to zstd).
    #[arg(
        long,
        env = "APIWITNESS_SHIP_ENCODING",
        value_enum,
        default_value = "zstd"
    )]
    pub ship_encoding: crate::ship::ShipEncoding,

    /// zstd's level for batches: -1 (the default) leaves literals
    /// uncoded and is about twice as fast as 1, for batches about a
    /// quarter larger; up to 19 for an aggregator at the end of a slow
    /// link. Batches go at -1 or below whenever the queue falls behind.
    #[arg(
        long,
        env = "APIWITNESS_SHIP_ZSTD_LEVEL",
        default_value_t = -1,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-7..=19)
    )]
    pub ship_zstd_level: i32,

    #[arg(long, env = "APIWITNESS_BATCH_WAIT", value_parser = humantime::parse_duration, default_value = "1s")]
    pub batch_wait: Duration,

    /// On SIGTERM: time for in-flight exchanges, then for the queue to flush.
    #[arg(long, env = "APIWITNESS_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    /// /healthz, /readyz and /metrics.
    #[arg(long, env = "APIWITNESS_ADMIN_ADDR", default_value = "0.0.0.0:15090")]
    pub admin_addr: SocketAddr,

    #[arg(
        long,
        env = "APIWITNESS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// A tracing filter, e.g. `info` or `apiwitness_interceptor=debug`.
    #[arg(long, env = "APIWITNESS_LOG", default_value = "info")]
    pub log: String,

    /// Threads that serve connections. A sidecar shares its pod's CPU with
    /// the application, and on a node whose apiserver is busy every
    /// wake-up between threads costs: one thread spends about a seventh
    /// less CPU per proxied request than two (docs/benchmarks.md). One
    /// thread runs tokio's current-thread scheduler.
    #[arg(long, env = "APIWITNESS_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "POD_UID", default_value = "")]
    pub pod_uid: String,
    #[arg(long, env = "POD_SERVICE_ACCOUNT", default_value = "")]
    pub pod_service_account: String,
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    /// The kind of the pod's owning workload, e.g. Deployment.
    #[arg(long, env = "APIWITNESS_WORKLOAD_KIND", default_value = "")]
    pub workload_kind: String,
    #[arg(long, env = "APIWITNESS_WORKLOAD_NAME", default_value = "")]
    pub workload_name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--mode explicit needs --upstream (APIWITNESS_UPSTREAM), the apiserver's URL")]
    ExplicitWithoutUpstream,
    #[error("--upstream {0} must be an https:// URL with a host")]
    BadUpstream(String),
    #[error(
        "no serving certificate source: give --certify-url, or --tls-cert-file with --tls-key-file"
    )]
    NoCertSource,
    #[error("--cert-renew-fraction must be between 0.05 and 0.95, got {0}")]
    RenewFraction(String),
    #[error("--listen needs at least one address")]
    NoListen,
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--aggregator-url {0} must be an http:// or https:// URL with a host")]
    BadAggregator(String),
}

impl Config {
    /// The checks clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        if self.mode == Mode::Explicit {
            let upstream = self
                .upstream
                .as_ref()
                .ok_or(ConfigError::ExplicitWithoutUpstream)?;
            if upstream.scheme_str() != Some("https") || upstream.host().is_none() {
                return Err(ConfigError::BadUpstream(upstream.to_string()));
            }
        }
        if self.certify_url.is_none() && self.tls_cert_file.is_none() {
            return Err(ConfigError::NoCertSource);
        }
        if !(0.05..=0.95).contains(&self.cert_renew_fraction) {
            return Err(ConfigError::RenewFraction(
                self.cert_renew_fraction.to_string(),
            ));
        }
        if let Some(url) = &self.aggregator_url
            && (!matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none())
        {
            return Err(ConfigError::BadAggregator(url.to_string()));
        }
        for (name, value) in [
            ("queue-capacity", self.queue_capacity),
            ("batch-records", self.batch_records),
            ("batch-bytes", self.batch_bytes),
            ("recorder-bytes", self.recorder_bytes),
            ("worker-threads", self.worker_threads),
            ("watch-events", self.watch_events),
            ("watch-part-bytes", self.watch_part_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.watch_part_wait.is_zero() {
            return Err(ConfigError::Zero("watch-part-wait"));
        }
        Ok(())
    }

    pub fn pod_identity(&self) -> apiwitness_record::PodIdentity {
        apiwitness_record::PodIdentity {
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
            uid: self.pod_uid.clone(),
            service_account: self.pod_service_account.clone(),
            node: self.node_name.clone(),
            workload: (!self.workload_kind.is_empty() && !self.workload_name.is_empty()).then(
                || apiwitness_record::WorkloadRef {
                    kind: self.workload_kind.clone(),
                    name: self.workload_name.clone(),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["apiwitness-interceptor"];
        all.extend_from_slice(args);
        Config::try_parse_from(all)
    }

    #[test]
    fn explicit_mode_needs_an_https_upstream() {
        let c = parse(&[
            "--mode",
            "explicit",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
        ])
        .unwrap();
        assert_eq!(c.validate(), Err(ConfigError::ExplicitWithoutUpstream));
        let c = parse(&[
            "--mode",
            "explicit",
            "--upstream",
            "http://x",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
        ])
        .unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::BadUpstream(_))));
        let c = parse(&[
            "--mode",
            "explicit",
            "--upstream",
            "https://10.96.0.1:443",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
        ])
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn a_certificate_source_is_required_and_files_come_in_pairs() {
        assert_eq!(
            parse(&[]).unwrap().validate(),
            Err(ConfigError::NoCertSource)
        );
        assert!(parse(&["--tls-cert-file", "c"]).is_err());
        assert!(
            parse(&[
                "--certify-url",
                "https://i/certify",
                "--tls-cert-file",
                "c",
                "--tls-key-file",
                "k"
            ])
            .is_err()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(&["--body-limit", "lots"]).unwrap_err().to_string();
        assert!(err.contains("--body-limit"), "{err}");
        let c = parse(&[
            "--certify-url",
            "https://i/c",
            "--cert-renew-fraction",
            "1.5",
        ])
        .unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::RenewFraction(_))));
        let c = parse(&["--certify-url", "https://i/c", "--queue-capacity", "0"]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Zero("queue-capacity")));
    }

    #[test]
    fn the_aggregator_format_decides_what_the_sidecar_decodes() {
        use crate::decode::{DecodedIn::*, Decoding};
        let decoding = |args: &[&str]| {
            parse(args).map(|c| Decoding::for_aggregator_format(c.aggregator_format))
        };
        assert_eq!(
            decoding(&[]).unwrap(),
            Decoding::for_aggregator_format(apiwitness_record::FORMAT_VERSION)
        );
        let everything_there = Decoding {
            protobuf: Aggregator,
            gzip: Aggregator,
            json: Aggregator,
        };
        assert_eq!(decoding(&[]).unwrap(), everything_there);
        let json_here = Decoding {
            json: Interceptor,
            ..everything_there
        };
        assert_eq!(decoding(&["--aggregator-format", "3"]).unwrap(), json_here);
        let everything_here = Decoding {
            protobuf: Interceptor,
            gzip: Interceptor,
            json: Interceptor,
        };
        assert_eq!(
            decoding(&["--aggregator-format", "2"]).unwrap(),
            everything_here
        );
        let newer = (apiwitness_record::FORMAT_VERSION + 1).to_string();
        for bad in ["1", &newer, "four"] {
            let err = parse(&["--aggregator-format", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--aggregator-format"), "{bad}: {err}");
        }
    }
}
