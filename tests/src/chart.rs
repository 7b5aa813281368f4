//! The Helm chart on the local control plane: a release installed with the
//! real helm, and its Deployments played by local processes. A stand-in runs
//! the workspace's binary in a network-namespace pod that carries a token of
//! the Deployment's ServiceAccount, bound to a Pod the real controllers made
//! for that Deployment, with the env of the Deployment's container; the
//! chart's Service is routed to it. So the chart's RBAC, env and Services
//! are what the binary really runs with.

use crate::{Cluster, CommandOutput, NetnsPod, repo_root, wait_until, workspace_binary};
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The helm binary, built once per test binary (hack/tools/build-chart-tools.sh).
pub fn helm() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| {
            CommandOutput::run(&mut Command::new(
                repo_root().join("hack/tools/build-chart-tools.sh"),
            ))
            .and_then(|o| o.ok("build-chart-tools.sh"))
            .map(|o| PathBuf::from(o.stdout.trim()))
            .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    dir.join("helm")
}

/// An installed release, uninstalled when dropped.
pub struct Release {
    pub name: String,
    pub namespace: String,
    cluster: &'static Cluster,
}

impl Release {
    pub fn install(
        cluster: &'static Cluster,
        name: &str,
        namespace: &str,
        sets: &[(&str, &str)],
    ) -> anyhow::Result<Release> {
        let release = Release {
            name: name.into(),
            namespace: namespace.into(),
            cluster,
        };
        release.helm("install", sets, &["--create-namespace"])?;
        Ok(release)
    }

    /// `helm upgrade --reuse-values` with more values.
    pub fn upgrade(&self, sets: &[(&str, &str)]) -> anyhow::Result<()> {
        self.helm("upgrade", sets, &["--reuse-values"])
    }

    fn helm(&self, verb: &str, sets: &[(&str, &str)], extra: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(helm());
        cmd.args([verb, &self.name])
            .arg(repo_root().join("charts/apiwitness"))
            .args([
                "--namespace",
                &self.namespace,
                "--kubeconfig",
                self.cluster.kubeconfig(),
            ])
            .args(["--wait=false", "--timeout", "60s"])
            .args(extra);
        for (k, v) in sets {
            cmd.args(["--set", &format!("{k}={v}")]);
        }
        CommandOutput::run(&mut cmd)?.ok(&format!("helm {verb}"))?;
        Ok(())
    }

    /// The name the chart gives a part: `<release>-apiwitness-<part>`.
    pub fn part(&self, part: &str) -> String {
        let full = if self.name.contains("apiwitness") {
            self.name.clone()
        } else {
            format!("{}-apiwitness", self.name)
        };
        format!(
            "{}-{part}",
            full.chars()
                .take(50)
                .collect::<String>()
                .trim_end_matches('-')
        )
    }

    pub fn service_ip(&self, part: &str) -> anyhow::Result<String> {
        let ip = self.cluster.kubectl_ok(&[
            "get",
            "service",
            &self.part(part),
            "-n",
            &self.namespace,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        Ok(ip.trim().to_string())
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new(helm())
            .args([
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--kubeconfig",
                self.cluster.kubeconfig(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A chart Deployment played by a local process.
pub struct StandIn {
    pub pod: NetnsPod,
    pub pod_name: String,
    namespace: String,
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl StandIn {
    /// Runs `binary` for the Deployment `deployment` of `release`, with its
    /// container's env (`overrides` replace or add variables), and routes the
    /// Deployment's Service to it. `ready_path` on `admin_port` must answer.
    pub fn start(
        release: &Release,
        part: &str,
        binary: &str,
        overrides: &[(&str, &str)],
        args: &[&str],
        admin_port: u16,
    ) -> anyhow::Result<StandIn> {
        let cluster = release.cluster;
        let ns = &release.namespace;
        let deployment_name = release.part(part);
        let deployment = cluster.kubectl_json(&[
            "get",
            "deployment",
            &deployment_name,
            "-n",
            ns,
            "-o",
            "json",
        ])?;
        let selector = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("no selector")?
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let real_pod = wait_until(
            &format!("a Pod of {deployment_name}"),
            Duration::from_secs(60),
            || {
                let pods = cluster
                    .kubectl_json(&["get", "pods", "-n", ns, "-l", &selector, "-o", "json"])
                    .ok()?;
                pods["items"].as_array()?.first().cloned()
            },
        )?;
        let pod_name = real_pod["metadata"]["name"]
            .as_str()
            .context("pod name")?
            .to_string();
        let spec = &deployment["spec"]["template"]["spec"];
        let serviceaccount = spec["serviceAccountName"]
            .as_str()
            .context("no serviceAccountName")?;
        let container = &spec["containers"][0];
        let uid = container["securityContext"]["runAsUser"]
            .as_u64()
            .or(spec["securityContext"]["runAsUser"].as_u64());

        let local_name: String = format!("{}-{part}", ns).chars().take(42).collect();
        let pod = NetnsPod::add(
            cluster,
            local_name.trim_end_matches('-'),
            ns,
            serviceaccount,
            &["--bind-pod", &pod_name],
        )?;
        let mut env: Vec<(String, String)> = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) => field(&real_pod, path)?,
                _ => bail!("env {name} of {deployment_name}: only values and fieldRefs are played"),
            };
            env.push((name, value));
        }
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }

        let bin = workspace_binary(binary);
        let mut command = vec![bin.to_str().context("binary path")?];
        command.extend_from_slice(args);
        let (child, log_path) = pod.spawn(&env, uid, &command, &format!("standin-{local_name}"))?;
        let mut this = StandIn {
            pod,
            pod_name,
            namespace: ns.to_string(),
            child: Some(child),
            log_path,
        };
        let ip = this.pod.ip()?;
        let ready = wait_until(
            &format!("{binary}'s readiness"),
            Duration::from_secs(60),
            || {
                if let Some(Ok(Some(status))) = this.child.as_mut().map(Child::try_wait) {
                    return Some(Err(anyhow::anyhow!("{binary} exited: {status}")));
                }
                let out = CommandOutput::run(Command::new("curl").args([
                    "-sf",
                    "--max-time",
                    "2",
                    &format!("http://{ip}:{admin_port}/readyz"),
                ]))
                .ok()?;
                out.success.then_some(Ok(()))
            },
        );
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => return Err(e.context(format!("{binary} log:\n{}", this.log()))),
        }
        mark_running(cluster, ns, &this.pod_name, &ip)?;
        // Each port of the Service reaches its target port, as kube-proxy would.
        let service =
            cluster.kubectl_json(&["get", "service", &deployment_name, "-n", ns, "-o", "json"])?;
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let number = port["port"].as_u64().context("a Service port")? as u16;
            let target = match &port["targetPort"] {
                Value::Number(n) => n.as_u64(),
                Value::String(name) => container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == name.as_str())
                    .and_then(|p| p["containerPort"].as_u64()),
                _ => Some(u64::from(number)),
            }
            .context("a Service port without a target")?;
            cluster.serve_port(
                &format!("{ns}/{deployment_name}"),
                &format!("{ip}:{target}"),
                number,
            )?;
        }
        Ok(this)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Kept where a test failed, for the reading.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
        // The kubelet's last part: a bound pod whose containers are gone is
        // removed at once, or its namespace could never finish deleting.
        let _ = self.pod.cluster().kubectl(&[
            "delete",
            "pod",
            &self.pod_name,
            "-n",
            &self.namespace,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
    }
}

/// What the kubelet would report once the containers run: the Pod is
/// Running and Ready at the address that plays it, so the endpoint
/// controllers put that address behind its Services (kube-apiserver checks an
/// APIService's endpoints before it proxies).
pub fn mark_running(cluster: &Cluster, namespace: &str, pod: &str, ip: &str) -> anyhow::Result<()> {
    // The scheduler's part: bind it to the machine's Node.
    let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": cluster.var("APIWITNESS_NODE_NAME")}});
    let bound = cluster.kubectl_stdin(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{namespace}/pods/{pod}/binding"),
        ],
        &binding,
    );
    if let Err(e) = bound
        && !format!("{e:#}").contains("already assigned")
    {
        return Err(e);
    }
    let now = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()?;
    let now = String::from_utf8_lossy(&now.stdout).trim().to_string();
    let condition =
        |t: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now});
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
    }});
    cluster.kubectl_ok(&[
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        &status.to_string(),
    ])?;
    Ok(())
}

/// A downward-API field of a Pod object, as the kubelet resolves it.
fn field(pod: &Value, path: &str) -> anyhow::Result<String> {
    let pointer = match path {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "metadata.uid" => "/metadata/uid",
        "spec.serviceAccountName" => "/spec/serviceAccountName",
        "spec.nodeName" => "/spec/nodeName",
        other => bail!("fieldRef {other} is not played"),
    };
    // An unscheduled pod has no node: the kubelet would give "".
    Ok(pod
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
}
