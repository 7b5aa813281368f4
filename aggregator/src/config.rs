//! Configuration: flags, each with an environment variable.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

pub use apiwitness_runtime::LogFormat;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "apiwitness-aggregator",
    version,
    about = "Collects interceptor records; serves API coverage."
)]
pub struct Config {
    /// The store: a SQLite file (created if missing), or a PostgreSQL URL
    /// (`postgres://user:password@host/db`) that several aggregators share.
    #[arg(
        long,
        env = "APIWITNESS_DB",
        default_value = "apiwitness.db",
        global = true
    )]
    pub db: String,

    /// Where the OpenAPI spec comes from: `live` (the apiserver, with this
    /// process's kubeconfig or in-cluster credentials) or a directory holding
    /// `v3/*.json` and/or `swagger.json`.
    #[arg(long, env = "APIWITNESS_SPEC", default_value = "live", global = true)]
    pub spec: String,

    /// The conformance lists (`ineligible_endpoints.json`,
    /// `pending_eligible_endpoints.yaml`); without them nothing is marked ineligible.
    #[arg(long, env = "APIWITNESS_CONFORMANCE_DIR", global = true)]
    pub conformance_dir: Option<PathBuf>,

    #[arg(
        long,
        env = "APIWITNESS_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[arg(long, env = "APIWITNESS_LOG", default_value = "info", global = true)]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "APIWITNESS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// How often the live spec is checked for changes (CRDs, APIServices).
    #[arg(long, env = "APIWITNESS_SPEC_REFRESH", value_parser = humantime::parse_duration, default_value = "10s")]
    pub spec_refresh: std::time::Duration,

    /// The audiences a writer's token must carry (TokenReview); the
    /// apiserver's own when empty.
    #[arg(long, env = "APIWITNESS_TOKEN_AUDIENCES", value_delimiter = ',')]
    pub token_audiences: Vec<String>,

    /// Serve without authentication or authorization: for local use only.
    #[arg(long, env = "APIWITNESS_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,

    /// Also serve provenance as the aggregated API provenance.apiwitness.io,
    /// over TLS on this address, for kube-apiserver to proxy to.
    #[arg(long, env = "APIWITNESS_AGGREGATED_API_LISTEN")]
    pub aggregated_api_listen: Option<SocketAddr>,

    /// The aggregator's namespace, where its TLS Secret is kept.
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// The aggregator's Service: its names go into the serving certificate.
    #[arg(
        long,
        env = "APIWITNESS_SERVICE_NAME",
        default_value = "apiwitness-aggregator"
    )]
    pub service_name: String,

    /// The Secret that keeps the aggregated API's CA and serving certificate.
    #[arg(
        long,
        env = "APIWITNESS_TLS_SECRET",
        default_value = "apiwitness-aggregator-tls"
    )]
    pub tls_secret: String,

    /// The APIService whose caBundle is kept equal to that CA.
    #[arg(
        long,
        env = "APIWITNESS_APISERVICE",
        default_value = "v1.provenance.apiwitness.io"
    )]
    pub apiservice: String,

    #[arg(
        long,
        env = "APIWITNESS_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Raw records older than this are removed (the coverage aggregates,
    /// field counts and provenance versions stay); 0 keeps them forever.
    #[arg(long, env = "APIWITNESS_RETENTION", value_parser = humantime::parse_duration, default_value = "30days")]
    pub retention: std::time::Duration,

    /// At most this many raw records are kept, the oldest going first; 0
    /// sets no bound.
    #[arg(long, env = "APIWITNESS_RETENTION_RECORDS", default_value_t = 0)]
    pub retention_records: u64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve ingest and reports (the default).
    Serve,
    /// Import an audit log file (one audit.k8s.io/v1 Event per line).
    ImportAudit {
        /// The log file.
        file: std::path::PathBuf,
    },
    /// Print a coverage report from the store, as the HTTP API would.
    Report {
        #[arg(long)]
        pod: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        workload: Option<String>,
        #[arg(long)]
        user_agent: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: crate::report::Format,
    },
}
