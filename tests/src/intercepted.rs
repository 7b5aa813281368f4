//! A pod with the interceptor in it, as the injector will make one: the
//! redirect rules init-iptables writes, and the interceptor running as its own
//! UID, with the pod's token and the cluster CA. Application commands then run
//! in the pod unmodified, and their traffic goes through the interceptor.

use crate::certify::{CertifyStandIn, Signer};
use crate::collector::Collector;
use crate::{Cluster, CommandOutput, NetnsPod, TestNamespace, wait_until, workspace_binary};
use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// The sidecar's UID, as the injector will set it (runAsUser).
pub const INTERCEPTOR_UID: u32 = 2102;
pub const INTERCEPTOR_PORT: u16 = 15443;
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub struct InterceptorOptions<'a> {
    pub certify_url: &'a str,
    pub aggregator_url: Option<&'a str>,
    /// Defaults to the cluster CA the pod receives.
    pub upstream_ca_file: Option<String>,
    /// Explicit mode: no redirect rules; the interceptor forwards to this URL.
    pub explicit_upstream: Option<String>,
    pub extra_args: Vec<String>,
}

impl<'a> InterceptorOptions<'a> {
    /// Certified at `certify_url`, shipping to `aggregator_url`, otherwise
    /// as the injector would run it.
    pub fn shipping_to(certify_url: &'a str, aggregator_url: &'a str) -> InterceptorOptions<'a> {
        InterceptorOptions {
            certify_url,
            aggregator_url: Some(aggregator_url),
            upstream_ca_file: None,
            explicit_upstream: None,
            extra_args: vec![],
        }
    }
}

pub struct InterceptedPod {
    pub pod: NetnsPod,
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl InterceptedPod {
    pub fn start(
        cluster: &'static Cluster,
        name: &str,
        namespace: &str,
        serviceaccount: &str,
        pod_args: &[&str],
        options: InterceptorOptions<'_>,
    ) -> anyhow::Result<InterceptedPod> {
        let pod = NetnsPod::add(cluster, name, namespace, serviceaccount, pod_args)?;
        if options.explicit_upstream.is_none() {
            redirect_to_interceptor(&pod, cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP"))?;
        }

        let binary = workspace_binary("apiwitness-interceptor");
        let mut args: Vec<String> = vec![
            "--certify-url".into(),
            options.certify_url.into(),
            "--token-file".into(),
            format!("{SA_DIR}/token"),
            "--upstream-ca-file".into(),
            options
                .upstream_ca_file
                .unwrap_or_else(|| format!("{SA_DIR}/ca.crt")),
            "--listen".into(),
            format!("0.0.0.0:{INTERCEPTOR_PORT}"),
            "--admin-addr".into(),
            "127.0.0.1:15090".into(),
            "--batch-wait".into(),
            "200ms".into(),
        ];
        if let Some(upstream) = options.explicit_upstream {
            args.extend([
                "--mode".into(),
                "explicit".into(),
                "--upstream".into(),
                upstream,
            ]);
        }
        if let Some(url) = options.aggregator_url {
            args.extend(["--aggregator-url".into(), url.into()]);
        }
        args.extend(options.extra_args);
        let env: Vec<(String, String)> = [
            ("POD_NAMESPACE", namespace),
            ("POD_NAME", name),
            ("POD_SERVICE_ACCOUNT", serviceaccount),
            ("APIWITNESS_LOG", "info,apiwitness_interceptor=debug"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut command = vec![binary.to_str().context("binary path")?];
        command.extend(args.iter().map(String::as_str));
        let (child, log_path) = pod
            .spawn(
                &env,
                Some(u64::from(INTERCEPTOR_UID)),
                &command,
                &format!("interceptor-{name}"),
            )
            .context("starting the interceptor")?;
        let mut this = InterceptedPod {
            pod,
            child: Some(child),
            log_path,
        };
        let ready = wait_until("the interceptor's /readyz", Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = this.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow::anyhow!("the interceptor exited: {status}")));
            }
            let out = this
                .pod
                .exec(&[], &["curl", "-sf", "http://127.0.0.1:15090/readyz"])
                .ok()?;
            out.success.then_some(Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(this),
            Ok(Err(e)) | Err(e) => Err(e.context(format!("interceptor log:\n{}", this.log()))),
        }
    }

    /// The pod `<namespace>-p` of ServiceAccount `app`: the workload pod of
    /// most tests.
    pub fn start_app(
        cluster: &'static Cluster,
        namespace: &str,
        options: InterceptorOptions<'_>,
    ) -> InterceptedPod {
        InterceptedPod::start(
            cluster,
            &format!("{namespace}-p"),
            namespace,
            "app",
            &[],
            options,
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn exec(&self, command: &[&str]) -> anyhow::Result<CommandOutput> {
        self.pod.exec(&[], command)
    }

    /// Watches the namespace's ConfigMaps with `kubectl` (its path) for
    /// `seconds`, printing each one's name as it arrives. The watch is
    /// stopped from outside: kubectl ignores its in-cluster config when
    /// given --request-timeout.
    pub fn watch_configmaps(&self, kubectl: &str, seconds: u32) -> anyhow::Result<CommandOutput> {
        self.exec(&[
            "timeout",
            &seconds.to_string(),
            kubectl,
            "get",
            "configmaps",
            "--watch-only",
            "-o",
            "name",
        ])
    }

    /// Runs `command` with `input` on its standard input.
    pub fn exec_stdin(&self, command: &[&str], input: &str) -> anyhow::Result<CommandOutput> {
        CommandOutput::run_with_input(&mut self.pod.exec_command(&[], command), input.as_bytes())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value of the interceptor's metric `name` (a series without
    /// labels), from its admin port.
    pub fn metric(&self, name: &str) -> f64 {
        let out = self
            .exec(&["curl", "-sf", "http://127.0.0.1:15090/metrics"])
            .unwrap();
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics:\n{}", out.stdout))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The interceptor's peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM")
    }

    /// SIGTERM, then wait for the interceptor to flush and exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = wait_until(
            "the interceptor to exit after SIGTERM",
            Duration::from_secs(30),
            || child.try_wait().ok().flatten(),
        );
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for InterceptedPod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Kept where a test failed, for the reading.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// An intercepted pod `<namespace>-p` of ServiceAccount `app` in a
/// namespace of its own, certified by the cluster CA and shipping to a
/// collector. Its fields drop in order: the pod first, the namespace last.
pub struct AppPod {
    pub pod: InterceptedPod,
    _certify: CertifyStandIn,
    pub collector: Collector,
    pub ns: TestNamespace,
}

impl AppPod {
    /// Starts one in a namespace named after `label`, with `configure`
    /// applied to the interceptor's options.
    pub fn start(
        cluster: &'static Cluster,
        label: &str,
        configure: impl FnOnce(&mut InterceptorOptions<'_>),
    ) -> AppPod {
        let ns = TestNamespace::with_app(cluster, label);
        let collector = Collector::start(cluster).unwrap();
        let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
        let mut options = InterceptorOptions::shipping_to(&certify.url, &collector.url);
        configure(&mut options);
        let n = &ns.name;
        let pod = InterceptedPod::start(cluster, &format!("{n}-p"), n, "app", &[], options)
            .unwrap_or_else(|e| panic!("{e:#}"));
        AppPod {
            pod,
            _certify: certify,
            collector,
            ns,
        }
    }
}

/// Runs the real init-iptables in the pod, as the injected init container
/// does: the pod's TCP to the apiserver's Service and to its endpoint goes to
/// the interceptor, except the interceptor's own; then it proves that.
pub fn redirect_to_interceptor(pod: &NetnsPod, service_ip: &str) -> anyhow::Result<()> {
    let endpoint = pod
        .cluster()
        .var("APIWITNESS_APISERVER")
        .trim_start_matches("https://")
        .to_string();
    let out = pod.exec(
        &[],
        &[
            workspace_binary("apiwitness-init-iptables")
                .to_str()
                .context("binary path")?,
            "--apiserver",
            &format!("{service_ip}:443,{endpoint}"),
            "--proxy-port",
            &INTERCEPTOR_PORT.to_string(),
            "--proxy-uid",
            &INTERCEPTOR_UID.to_string(),
            "--verify",
        ],
    )?;
    anyhow::ensure!(out.success, "init-iptables: {}{}", out.stdout, out.stderr);
    Ok(())
}
