//! The real aggregator binary, run as a local process for a test: live spec
//! from the test cluster, its own SQLite file, reached on the node address so
//! that pods can ship to it.

use crate::{Cluster, CommandOutput, wait_until, workspace_binary};
use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where an aggregator keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// The local PostgreSQL (`hack/postgres up`, once per test binary): the URL
/// of its `postgres` database.
fn postgres_base_url() -> anyhow::Result<String> {
    static URL: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        CommandOutput::run(Command::new(crate::repo_root().join("hack/postgres")).arg("up"))
            .and_then(|o| o.ok("hack/postgres up"))
            .map(|o| o.stdout.trim().to_string())
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A database a test made for its aggregator: dropped with it, so that runs
/// do not pile up databases (each run's names are new).
struct OwnDatabase {
    base_url: String,
    name: String,
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        // FORCE: a replica the test left running still holds connections.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = CommandOutput::run(Command::new("psql").args([&self.base_url, "-qc", &sql]))
            .and_then(|o| o.ok("psql"))
        {
            eprintln!("dropping the test database {}: {e:#}", self.name);
        }
    }
}

/// A fresh database for one aggregator, and its URL.
fn postgres_database(name: &str) -> anyhow::Result<(String, OwnDatabase)> {
    let base = postgres_base_url()?;
    let db: String = format!("apiwitness_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        CommandOutput::run(Command::new("psql").args([&base, "-qc", &sql]))?.ok("psql")?;
    }
    let url = format!("{}/{db}", base.rsplit_once('/').context("a URL")?.0);
    Ok((
        url,
        OwnDatabase {
            base_url: base,
            name: db,
        },
    ))
}

pub struct Aggregator {
    pub url: String,
    /// Serve with --insecure-no-auth (one test checks the flag); otherwise
    /// every request needs a token the apiserver accepts.
    pub insecure: bool,
    /// A SQLite file or a PostgreSQL URL.
    pub db: String,
    pub log_path: PathBuf,
    /// `--retention` and `--retention-records` at the next spawn. Tests post
    /// records with fixed timestamps, so by default nothing is removed.
    pub retention: (String, u64),
    child: Option<Child>,
    addr: String,
    /// Its own directory: the log, and the SQLite store if it has one.
    /// Removed when it is dropped, unless a test failed, which may want
    /// the log.
    dir: PathBuf,
    /// Dropped after the process is stopped (`Drop` runs before fields drop).
    _database: Option<OwnDatabase>,
}

/// A curl header file holding `Authorization: Bearer <token>`, readable by
/// root only, so the token appears in no process list.
pub fn write_auth_header(token: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!(
        "apiwitness-auth-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(
        &mut file,
        format!("Authorization: Bearer {token}\n").as_bytes(),
    )?;
    Ok(path)
}

/// A token of a ServiceAccount that may read everything (ClusterRole view).
pub fn reader_token(cluster: &Cluster) -> anyhow::Result<String> {
    let _ = cluster.kubectl(&[
        "create",
        "serviceaccount",
        "apiwitness-e2e-reader",
        "-n",
        "default",
    ]);
    let _ = cluster.kubectl(&[
        "create",
        "clusterrolebinding",
        "apiwitness-e2e-reader",
        "--clusterrole=view",
        "--serviceaccount=default:apiwitness-e2e-reader",
    ]);
    token_of(cluster, "default", "apiwitness-e2e-reader")
}

/// A TokenRequest token of `namespace/serviceaccount`.
pub fn token_of(
    cluster: &Cluster,
    namespace: &str,
    serviceaccount: &str,
) -> anyhow::Result<String> {
    Ok(cluster
        .kubectl_ok(&[
            "create",
            "token",
            serviceaccount,
            "-n",
            namespace,
            "--duration=1h",
        ])?
        .trim()
        .to_string())
}

fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl Aggregator {
    /// Starts an aggregator with a fresh store, authentication on.
    pub fn start(cluster: &Cluster, name: &str) -> anyhow::Result<Aggregator> {
        Aggregator::start_with(cluster, name, false)
    }

    /// Starts one with --insecure-no-auth.
    pub fn start_insecure(cluster: &Cluster, name: &str) -> anyhow::Result<Aggregator> {
        Aggregator::start_with(cluster, name, true)
    }

    /// Starts one on the given kind of store, authentication on.
    pub fn start_on(cluster: &Cluster, name: &str, store: StoreKind) -> anyhow::Result<Aggregator> {
        Aggregator::start_full(cluster, name, false, store)
    }

    fn start_with(cluster: &Cluster, name: &str, insecure: bool) -> anyhow::Result<Aggregator> {
        Aggregator::start_full(cluster, name, insecure, StoreKind::Sqlite)
    }

    fn start_full(
        cluster: &Cluster,
        name: &str,
        insecure: bool,
        store: StoreKind,
    ) -> anyhow::Result<Aggregator> {
        let (db, database) = match store {
            StoreKind::Sqlite => (None, None),
            StoreKind::Postgres => {
                let (url, database) = postgres_database(name)?;
                (Some(url), Some(database))
            }
        };
        let mut aggregator = Aggregator::launch(cluster, name, insecure, db)?;
        aggregator._database = database;
        Ok(aggregator)
    }

    /// Another aggregator on the same store (a PostgreSQL URL): a replica.
    pub fn replica(&self, cluster: &Cluster, name: &str) -> anyhow::Result<Aggregator> {
        Aggregator::launch(cluster, name, self.insecure, Some(self.db.clone()))
    }

    /// A process with a directory of its own, on `db` or a new SQLite file there.
    fn launch(
        cluster: &Cluster,
        name: &str,
        insecure: bool,
        db: Option<String>,
    ) -> anyhow::Result<Aggregator> {
        let dir = std::env::temp_dir().join(format!(
            "apiwitness-aggregator-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let addr = format!("{}:{}", cluster.node_ip(), free_port(cluster.node_ip())?);
        let mut aggregator = Aggregator {
            url: format!("http://{addr}"),
            insecure,
            db: db.unwrap_or_else(|| dir.join("apiwitness.db").display().to_string()),
            log_path: dir.join("aggregator.log"),
            retention: ("0s".into(), 0),
            child: None,
            addr,
            dir,
            _database: None,
        };
        aggregator.spawn(cluster)?;
        Ok(aggregator)
    }

    /// (Re)starts the process on the same store and address.
    pub fn spawn(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(workspace_binary("apiwitness-aggregator"))
            .args(["--db", &self.db])
            .args([
                "--listen",
                &self.addr,
                "--spec",
                "live",
                "--spec-refresh",
                "1s",
                "--retention",
                &self.retention.0,
                "--retention-records",
                &self.retention.1.to_string(),
            ])
            .args(if self.insecure {
                &["--insecure-no-auth"][..]
            } else {
                &[]
            })
            .arg("--conformance-dir")
            .arg(crate::repo_root().join("../shared/k8s-openapi/v1.35"))
            .env("KUBECONFIG", cluster.kubeconfig())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the aggregator")?;
        self.child = Some(child);
        let url = format!("{}/readyz", self.url);
        wait_until("the aggregator's /readyz", Duration::from_secs(60), || {
            CommandOutput::run(Command::new("curl").args(["-sf", &url]))
                .ok()
                .filter(|o| o.success)
        })
        .with_context(|| format!("aggregator log:\n{}", self.log()))?;
        Ok(())
    }

    pub fn ingest_url(&self) -> String {
        format!("{}/ingest", self.url)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GET a path with a bearer token; the body as JSON, or the status and
    /// body as the error.
    pub fn get_json(&self, path: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let (code, body) = self.get(path, token)?;
        anyhow::ensure!(code == 200, "GET {path}: {code} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    pub fn get_text(&self, path: &str, token: Option<&str>) -> anyhow::Result<String> {
        let (code, body) = self.get(path, token)?;
        anyhow::ensure!(code == 200, "GET {path}: {code} {body}");
        Ok(body)
    }

    /// GET a path: the status and the body. The token goes in a header file,
    /// never on a command line.
    pub fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}"]);
        let header_file = token.map(write_auth_header).transpose()?;
        if let Some(file) = &header_file {
            cmd.arg("-H").arg(format!("@{}", file.display()));
        }
        let out = CommandOutput::run(cmd.arg(format!("{}{path}", self.url)));
        if let Some(file) = header_file {
            let _ = std::fs::remove_file(file);
        }
        let out = out?.ok("curl")?;
        let (body, code) = out.stdout.rsplit_once('\n').context("no status")?;
        Ok((code.parse()?, body.to_string()))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
