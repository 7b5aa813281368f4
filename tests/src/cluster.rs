use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The repository's root: the tests call its `hack/` scripts.
pub fn repo_root() -> PathBuf {
    Path::new(&apiwitness_runtime::manifest_dir!())
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

/// What a command printed, and how it ended.
#[derive(Debug)]
pub struct CommandOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn run(command: &mut Command) -> anyhow::Result<CommandOutput> {
        let out = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start {command:?}"))?;
        Ok(CommandOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `command` with `input` on its standard input.
    pub fn run_with_input(command: &mut Command, input: &[u8]) -> anyhow::Result<CommandOutput> {
        use std::io::Write;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {command:?}"))?;
        child.stdin.take().context("stdin")?.write_all(input)?;
        let out = child.wait_with_output()?;
        Ok(CommandOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Fails with both streams when the command failed.
    pub fn ok(self, what: &str) -> anyhow::Result<CommandOutput> {
        if !self.success {
            bail!(
                "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// One local control plane, as `hack/cluster env` describes it.
#[derive(Debug)]
pub struct Cluster {
    pub index: u8,
    env: BTreeMap<String, String>,
}

impl Cluster {
    /// The cluster the whole test run shares (index 0): brought up on first
    /// use unless it is up already, and left running for the next run.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let out =
                CommandOutput::run(Command::new(repo_root().join("hack/cluster")).arg("ensure"))
                    .and_then(|o| o.ok("hack/cluster ensure"))
                    .unwrap_or_else(|e| {
                        panic!("the local control plane could not be started: {e:#}")
                    });
            let _ = out;
            Cluster::describe(0).unwrap_or_else(|e| panic!("{e:#}"))
        })
    }

    /// Reads `hack/cluster env` of cluster `index`.
    pub fn describe(index: u8) -> anyhow::Result<Cluster> {
        let out = CommandOutput::run(
            Command::new(repo_root().join("hack/cluster"))
                .arg("env")
                .env("APIWITNESS_CLUSTER_INDEX", index.to_string()),
        )?
        .ok("hack/cluster env")?;
        let env = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Cluster { index, env })
    }

    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("hack/cluster env has no {key}"))
    }

    pub fn kubeconfig(&self) -> &str {
        self.var("KUBECONFIG")
    }

    pub fn node_ip(&self) -> &str {
        self.var("APIWITNESS_NODE_IP")
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        Path::new(self.var("APIWITNESS_BIN_DIR")).join(name)
    }

    /// A `hack/<script>` command aimed at this cluster.
    pub fn hack(&self, script: &str) -> Command {
        let mut cmd = Command::new(repo_root().join("hack").join(script));
        cmd.env("APIWITNESS_CLUSTER_INDEX", self.index.to_string());
        cmd
    }

    /// kubectl as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        CommandOutput::run(
            Command::new(self.bin("kubectl"))
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(args),
        )
    }

    /// kubectl as the cluster admin, failing unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(self
            .kubectl(args)?
            .ok(&format!("kubectl {}", args.join(" ")))?
            .stdout)
    }

    /// `kubectl ... -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl_ok(&all)?;
        serde_json::from_str(&out).context("kubectl printed no JSON")
    }

    /// `kubectl apply -f -` (or create/replace) with a JSON manifest.
    pub fn kubectl_stdin(
        &self,
        args: &[&str],
        input: &serde_json::Value,
    ) -> anyhow::Result<String> {
        let out = CommandOutput::run_with_input(
            Command::new(self.bin("kubectl"))
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(args)
                .args(["-f", "-"]),
            input.to_string().as_bytes(),
        )?;
        if !out.success {
            bail!("kubectl {} failed: {}", args.join(" "), out.stderr);
        }
        Ok(out.stdout)
    }

    /// Makes `namespace/service`'s ClusterIP reach `target` (`addr:port`).
    pub fn serve(&self, service: &str, target: &str) -> anyhow::Result<()> {
        CommandOutput::run(self.hack("cluster").args(["serve", service, target]))?
            .ok("hack/cluster serve")?;
        Ok(())
    }

    /// Makes one port of `namespace/service` reach `target` (`addr:port`),
    /// leaving its other ports as they are.
    pub fn serve_port(&self, service: &str, target: &str, port: u16) -> anyhow::Result<()> {
        CommandOutput::run(self.hack("cluster").args([
            "serve",
            service,
            target,
            &port.to_string(),
        ]))?
        .ok("hack/cluster serve")?;
        Ok(())
    }

    pub fn unserve(&self, service: &str) -> anyhow::Result<()> {
        CommandOutput::run(self.hack("cluster").args(["unserve", service]))?
            .ok("hack/cluster unserve")?;
        Ok(())
    }
}
