//! The real aggregator binary, run as a local process for a test: live spec
//! from the test cluster, its own SQLite file, reached on the node address so
//! that pods can ship to it.

use crate::{Cluster, CommandOutput, wait_until, workspace_binary};
use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Aggregator {
    pub url: String,
    pub db: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    addr: String,
}

fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl Aggregator {
    /// Starts an aggregator with a fresh store.
    pub fn start(cluster: &Cluster, name: &str) -> anyhow::Result<Aggregator> {
        let dir = std::env::temp_dir().join(format!(
            "apiwitness-aggregator-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let addr = format!("{}:{}", cluster.node_ip(), free_port(cluster.node_ip())?);
        let mut aggregator = Aggregator {
            url: format!("http://{addr}"),
            db: dir.join("apiwitness.db"),
            log_path: dir.join("aggregator.log"),
            child: None,
            addr,
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
            .args(["--db", self.db.to_str().context("db path")?])
            .args([
                "--listen",
                &self.addr,
                "--spec",
                "live",
                "--spec-refresh",
                "1s",
                "--insecure-no-auth",
            ])
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

    /// GET a path; the body as JSON, or the status and body as the error.
    pub fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let out = CommandOutput::run(Command::new("curl").args([
            "-sS",
            "-w",
            "\n%{http_code}",
            &format!("{}{path}", self.url),
        ]))?
        .ok("curl")?;
        let (body, code) = out.stdout.rsplit_once('\n').context("no status")?;
        anyhow::ensure!(code == "200", "GET {path}: {code} {body}");
        Ok(serde_json::from_str(body)?)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(
            CommandOutput::run(
                Command::new("curl").args(["-sSf", &format!("{}{path}", self.url)]),
            )?
            .ok("curl")?
            .stdout,
        )
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
    }
}
