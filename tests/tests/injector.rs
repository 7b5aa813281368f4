//! The user's path to apiwitness on the real control plane: `helm install`
//! the chart, annotate a Deployment, and the real controllers make Pods that
//! carry init-iptables and the native sidecar; the injected pod's own
//! init-iptables and interceptor, run from that Pod's spec, get a
//! certificate through the injector's certify endpoint and a real CSR, and
//! its traffic reaches the aggregator. Skips leave Events; bad requests get
//! clear answers; removing the annotation rolls the sidecar back.

use apiwitness_e2e::chart::{Release, StandIn};
use apiwitness_e2e::postgres_crd::{ensure_postgres_crd, grant_postgres_admin};
use apiwitness_e2e::{
    Cluster, CommandOutput, NetnsPod, TestNamespace, wait_until, workspace_binary,
};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const INTERCEPTOR: &str = "apiwitness-interceptor";
const INIT_IPTABLES: &str = "apiwitness-init-iptables";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// kubectl as a ServiceAccount, through a kubeconfig file that holds its
/// token (never a command line).
fn kubectl_as(cluster: &Cluster, namespace: &str, sa: &str, args: &[&str]) -> CommandOutput {
    use std::os::unix::fs::OpenOptionsExt;
    let token = cluster
        .kubectl_ok(&["create", "token", sa, "-n", namespace])
        .unwrap();
    let path = format!("{}/kubeconfig-{sa}", tempfile_dir());
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: {}, certificate-authority: {}}}}}]\nusers: [{{name: u, user: {{token: {}}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
        cluster.var("APIWITNESS_APISERVER"),
        cluster.var("APIWITNESS_CLUSTER_CA"),
        token.trim()
    );
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, config.as_bytes()).unwrap();
    let out = CommandOutput::run(
        Command::new(cluster.bin("kubectl"))
            .args(["--kubeconfig", &path])
            .args(args),
    )
    .unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

/// A token of `app` for the apiwitness audience, bound to `pod` if given.
fn apiwitness_token(cluster: &Cluster, namespace: &str, pod: Option<&str>) -> String {
    let mut args = vec![
        "create",
        "token",
        "app",
        "-n",
        namespace,
        "--audience",
        "apiwitness",
    ];
    if let Some(pod) = pod {
        args.extend(["--bound-object-kind", "Pod", "--bound-object-name", pod]);
    }
    cluster.kubectl_ok(&args).unwrap().trim().to_string()
}

fn init_container_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The newest Pod of a label selector.
fn newest_pod(cluster: &Cluster, namespace: &str, selector: &str) -> Option<Value> {
    let pods = cluster
        .kubectl_json(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "json",
        ])
        .ok()?;
    pods["items"].as_array()?.last().cloned()
}

/// A container's env as the kubelet would give it, for a Pod object.
fn resolved_env(pod: &Value, container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some(path) => {
                    let pointer = format!("/{}", path.replace('.', "/"));
                    pod.pointer(&pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                }
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            (name, value)
        })
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn events_about(cluster: &Cluster, namespace: &str, name: &str) -> Vec<String> {
    let events = cluster
        .kubectl_json(&["get", "events", "-n", namespace, "-o", "json"])
        .unwrap();
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == "ApiwitnessSkipped")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A CSR as the interceptor makes one, for `namespace/pod`.
fn csr_for(namespace: &str, pod: &str, service_ip: &str) -> String {
    let dir = tempfile_dir();
    let out = CommandOutput::run(Command::new("openssl").args([
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", &format!("{dir}/key.pem"),
        "-subj", &format!("/O=system:nodes/CN=system:node:apiwitness:{namespace}\\/{pod}"),
        "-addext", &format!("subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:{service_ip},IP:127.0.0.1"),
        "-out", &format!("{dir}/csr.pem"),
    ]))
    .unwrap();
    assert!(out.success, "{out:?}");
    std::fs::read_to_string(format!("{dir}/csr.pem")).unwrap()
}

/// This thread's scratch directory (CSRs, request bodies, CA files, the
/// aggregator stand-in's database), which lives as long as the test
/// process. In the system's temporary directory, which the stand-ins'
/// users can reach; cleared by the next run's first use, so runs leave at
/// most one set behind.
fn tempfile_dir() -> String {
    static CLEARED: std::sync::Once = std::sync::Once::new();
    let root = std::env::temp_dir().join("apiwitness-injector-test");
    CLEARED.call_once(|| {
        let _ = std::fs::remove_dir_all(&root);
    });
    let thread: String = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let dir = root.join(format!("{}-{thread}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_str().unwrap().to_string()
}

struct Injector {
    /// The Service's DNS name, which the certificate names.
    host: String,
    ip: String,
    ca_file: String,
}

impl Injector {
    fn trust(&self, ca_pem: &str) {
        std::fs::write(&self.ca_file, ca_pem).unwrap();
    }

    /// POSTs to the injector over TLS, verified against `ca_file`, by its
    /// Service's DNS name (resolved to the stand-in here).
    fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let host = &self.host;
        let body_file = format!("{}/body.json", tempfile_dir());
        std::fs::write(&body_file, body).unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "30", "--cacert", &self.ca_file])
            .args(["--resolve", &format!("{host}:8443:{}", self.ip)])
            .args([
                "-H",
                "Content-Type: application/json",
                "-w",
                "\n%{http_code}",
            ])
            .args(["--data-binary", &format!("@{body_file}")]);
        // A token goes in a header file, never on a command line.
        let header_file = token.map(|t| apiwitness_e2e::aggregator::write_auth_header(t).unwrap());
        if let Some(file) = &header_file {
            cmd.arg("-H").arg(format!("@{}", file.display()));
        }
        cmd.arg(format!("https://{host}:8443{path}"));
        let out = CommandOutput::run(&mut cmd).unwrap();
        if let Some(file) = header_file {
            let _ = std::fs::remove_file(file);
        }
        let (body, code) = out
            .stdout
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", out.stdout.trim()));
        (
            code.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::String(body.into())),
        )
    }
}

/// The chart installed, with its injector and aggregator played by local
/// processes. Tests that install it run one at a time: two injectors would
/// both mutate the same annotated pods.
/// Fields drop in this order: the release first (its APIService and webhook
/// configuration go while their backends still answer; an APIService whose
/// backend is gone stalls discovery for every client and controller), then
/// the stand-ins, then the namespace.
struct Installed {
    release: Release,
    aggregator: StandIn,
    injector: StandIn,
    client: Injector,
    _system: TestNamespace,
    _serial: std::sync::MutexGuard<'static, ()>,
}

fn install(cluster: &'static Cluster, values: &[(&str, &str)]) -> Installed {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let system = TestNamespace::new(cluster, "awsys");
    let release = Release::install(cluster, &system.name, &system.name, values)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Pods reach the certify endpoint and the aggregator by their Services'
    // addresses here: this control plane has no cluster DNS.
    let injector_service = release.service_ip("injector").unwrap();
    let aggregator_service = release.service_ip("aggregator").unwrap();
    release
        .upgrade(&[
            (
                "injector.certifyUrl",
                &format!("https://{injector_service}:443/certify"),
            ),
            (
                "injector.aggregatorUrl",
                &format!("http://{aggregator_service}:8080/ingest"),
            ),
        ])
        .unwrap();
    let db_dir = tempfile_dir();
    Command::new("chmod")
        .args(["0777", &db_dir])
        .status()
        .unwrap();
    let db = format!("{db_dir}/apiwitness.db");
    let aggregator = StandIn::start(
        &release,
        "aggregator",
        "apiwitness-aggregator",
        &[("APIWITNESS_DB", &db)],
        &["serve"],
        8080,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let injector = StandIn::start(&release, "injector", "apiwitness-injector", &[], &[], 9090)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = Injector {
        host: format!("{}.{}.svc", release.part("injector"), release.namespace),
        ip: injector.pod.ip().unwrap(),
        ca_file: format!("{}/injector-ca.pem", tempfile_dir()),
    };
    client.trust(&current_ca(cluster, &release));
    Installed {
        _system: system,
        release,
        aggregator,
        injector,
        client,
        _serial: serial,
    }
}

/// The CA the injector keeps in its Secret (PEM).
fn current_ca(cluster: &Cluster, release: &Release) -> String {
    stored_ca(cluster, release).expect("the injector's Secret with its CA")
}

/// The injector's CA, if its Secret exists (it is deleted to rotate it).
fn stored_ca(cluster: &Cluster, release: &Release) -> Option<String> {
    let secret = cluster
        .kubectl_json(&[
            "get",
            "secret",
            &format!("{}-tls", release.part("injector")),
            "-n",
            &release.namespace,
            "-o",
            "json",
        ])
        .ok()?;
    Some(decode_b64(secret["data"]["ca.crt"].as_str()?))
}

fn decode_b64(text: &str) -> String {
    CommandOutput::run_with_input(Command::new("base64").arg("-d"), text.as_bytes())
        .unwrap()
        .stdout
}

/// An injected Pod object played in a network namespace: its token
/// (audience apiwitness, bound to it), then its init-iptables and its
/// interceptor, each with the env the injector gave it. `ca` replaces the
/// ca.crt that the app containers read (private-CA mode's bundle).
struct PlayedPod {
    pod: NetnsPod,
    sidecar: std::process::Child,
    sidecar_log: std::path::PathBuf,
}

impl PlayedPod {
    fn start(
        cluster: &'static Cluster,
        injected: &Value,
        ca: Option<&str>,
        injector_log: &dyn Fn() -> String,
    ) -> PlayedPod {
        let namespace = injected["metadata"]["namespace"].as_str().unwrap();
        let pod_name = injected["metadata"]["name"].as_str().unwrap();
        let issuer = format!("https://kubernetes.default.svc.{}", "cluster.local");
        let local: String = format!(
            "{namespace}-{}",
            &pod_name[pod_name.len().saturating_sub(5)..]
        )
        .chars()
        .take(42)
        .collect();
        let mut extra = vec![
            "--bind-pod",
            pod_name,
            "--audience",
            "apiwitness",
            "--audience",
            &issuer,
        ];
        if let Some(ca) = ca {
            extra.extend(["--ca", ca]);
        }
        let sa = injected["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let pod = NetnsPod::add(cluster, &local, namespace, sa, &extra).unwrap();
        let init_bin = workspace_binary("apiwitness-init-iptables");
        let (mut init_child, init_log) = pod
            .spawn(
                &resolved_env(injected, container(injected, INIT_IPTABLES)),
                None,
                &[init_bin.to_str().unwrap()],
                &format!("{local}-init"),
            )
            .unwrap();
        assert!(
            init_child.wait().unwrap().success(),
            "{}",
            std::fs::read_to_string(&init_log).unwrap_or_default()
        );
        let _ = std::fs::remove_file(&init_log);

        let mut env = resolved_env(injected, container(injected, INTERCEPTOR));
        // hack/pod mounts one token and one CA at the ServiceAccount path;
        // the Pod's projected volumes hold the same token (it carries the
        // apiwitness audience), and the sidecar's own CA is the cluster CA.
        // A copy the sidecar's UID may read (the cluster's PKI directory is root's).
        let cluster_ca = format!("{}/cluster-ca.pem", tempfile_dir());
        std::fs::copy(cluster.var("APIWITNESS_CLUSTER_CA"), &cluster_ca).unwrap();
        for (k, v) in &mut env {
            match k.as_str() {
                "APIWITNESS_TOKEN_FILE" => *v = format!("{SA_DIR}/token"),
                "APIWITNESS_UPSTREAM_CA_FILE" => {
                    *v = if ca.is_some() {
                        cluster_ca.clone()
                    } else {
                        format!("{SA_DIR}/ca.crt")
                    }
                }
                _ => {}
            }
        }
        let interceptor_bin = workspace_binary("apiwitness-interceptor");
        let (mut sidecar, sidecar_log) = pod
            .spawn(
                &env,
                Some(2102),
                &[interceptor_bin.to_str().unwrap()],
                &format!("{local}-interceptor"),
            )
            .unwrap();
        let pod_ip = pod.ip().unwrap();
        let ready = wait_until(
            "the injected interceptor's /readyz",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = sidecar.try_wait() {
                    return Some(Err(status));
                }
                let out = CommandOutput::run(Command::new("curl").args([
                    "-sf",
                    "--max-time",
                    "2",
                    &format!("http://{pod_ip}:15090/readyz"),
                ]))
                .ok()?;
                out.success.then_some(Ok(()))
            },
        );
        let played = PlayedPod {
            pod,
            sidecar,
            sidecar_log,
        };
        assert!(
            matches!(ready, Ok(Ok(()))),
            "{ready:?}\ninterceptor:\n{}\ninjector:\n{}",
            played.log(),
            injector_log()
        );
        played
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.sidecar_log).unwrap_or_default()
    }

    /// SIGTERM, as the kubelet stops a sidecar: the interceptor flushes its
    /// queue to the aggregator before it exits.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.sidecar.id().to_string()])
            .status();
        let stopped = wait_until(
            "the interceptor to flush and exit",
            Duration::from_secs(30),
            || self.sidecar.try_wait().ok().flatten(),
        );
        assert!(stopped.is_ok_and(|s| s.success()), "{}", self.log());
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let _ = self.sidecar.kill();
        let _ = self.sidecar.wait();
        // Kept where a test failed, for the reading.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.sidecar_log);
        }
    }
}

#[test]
fn helm_install_then_annotate_inject_certify_skip_and_roll_back() {
    let cluster = Cluster::shared();
    let installed = install(cluster, &[]);
    let (release, aggregator, injector, client) = (
        &installed.release,
        &installed.aggregator,
        &installed.injector,
        &installed.client,
    );
    let injector_log = || injector.log();

    // The injector made its CA, kept it in a Secret, and put it in the
    // webhook configuration, which is set the way the chart promises.
    let webhook_name = release.part("injector");
    let config = cluster
        .kubectl_json(&[
            "get",
            "mutatingwebhookconfiguration",
            &webhook_name,
            "-o",
            "json",
        ])
        .unwrap();
    let secret = cluster
        .kubectl_json(&[
            "get",
            "secret",
            &format!("{webhook_name}-tls"),
            "-n",
            &release.namespace,
            "-o",
            "json",
        ])
        .unwrap();
    let ca_b64 = secret["data"]["ca.crt"].as_str().unwrap();
    for hook in config["webhooks"].as_array().unwrap() {
        assert_eq!(
            hook["clientConfig"]["caBundle"].as_str(),
            Some(ca_b64),
            "{}",
            injector_log()
        );
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
        assert!(
            hook["matchConditions"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        );
        let excluded = hook["namespaceSelector"]["matchExpressions"].to_string();
        assert!(
            excluded.contains("kube-system") && excluded.contains(&release.namespace),
            "{excluded}"
        );
    }

    // A workload, not opted in yet.
    let app = TestNamespace::with_app(cluster, "awapp");
    let a = app.name.as_str();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": a},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "serviceAccountName": "app",
                    "initContainers": [{"name": "setup", "image": "busybox:1.36", "command": ["true"]}],
                    "containers": [{"name": "web", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
                },
            },
        },
    });
    cluster.kubectl_stdin(&["apply"], &deployment).unwrap();
    let first = wait_until("the first pod of web", Duration::from_secs(60), || {
        newest_pod(cluster, a, "app=web")
    })
    .unwrap();
    assert_eq!(init_container_names(&first), ["setup"]);

    // Annotate it: the webhook copies the opt-in into the template, the
    // Deployment rolls, and the new Pod carries both containers, ours first.
    cluster
        .kubectl_ok(&[
            "annotate",
            "deployment",
            "web",
            "-n",
            a,
            "apiwitness.io/inject=true",
        ])
        .unwrap();
    let injected = wait_until("an injected pod of web", Duration::from_secs(60), || {
        newest_pod(cluster, a, "app=web").filter(|p| init_container_names(p).len() == 3)
    })
    .unwrap_or_else(|e| panic!("{e:#}\ninjector log:\n{}", injector_log()));
    assert_eq!(
        init_container_names(&injected),
        [INIT_IPTABLES, INTERCEPTOR, "setup"]
    );
    assert_eq!(
        injected["metadata"]["annotations"]["apiwitness.io/status"],
        "injected"
    );
    let sidecar = container(&injected, INTERCEPTOR);
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sidecar["securityContext"]["runAsUser"], 2102);
    let init = container(&injected, INIT_IPTABLES);
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let template = cluster
        .kubectl_json(&["get", "deployment", "web", "-n", a, "-o", "json"])
        .unwrap();
    assert_eq!(
        template["spec"]["template"]["metadata"]["annotations"]["apiwitness.io/inject-inherited"],
        "true"
    );

    let pod_name = injected["metadata"]["name"].as_str().unwrap().to_string();
    let mut played = PlayedPod::start(cluster, &injected, None, &injector_log);
    let pod = &played.pod;
    let pod_ip = pod.ip().unwrap();
    let sidecar_log = played.sidecar_log.clone();
    let sidecar_text = || std::fs::read_to_string(&sidecar_log).unwrap_or_default();

    // The app, unmodified, through the interceptor: its TLS verifies against
    // the ca.crt it trusts, because the cluster CA signed the certificate.
    let kubectl = cluster.bin("kubectl");
    let listed = pod
        .exec(
            &[],
            &[kubectl.to_str().unwrap(), "get", "configmaps", "-o", "name"],
        )
        .unwrap();
    assert!(
        listed.success,
        "{listed:?}\ninterceptor:\n{}",
        sidecar_text()
    );
    assert!(
        listed.stdout.contains("configmap/kube-root-ca.crt"),
        "{}",
        listed.stdout
    );
    let metrics = CommandOutput::run(
        Command::new("curl").args(["-s", &format!("http://{pod_ip}:15090/metrics")]),
    )
    .unwrap();
    assert!(
        metrics.stdout.contains("apiwitness_interceptor_exchanges"),
        "{}",
        metrics.stdout
    );
    let issued = CommandOutput::run(
        Command::new("curl").args(["-s", &format!("http://{}:9090/metrics", client.ip)]),
    )
    .unwrap();
    assert!(
        issued
            .stdout
            .contains(r#"apiwitness_injector_certificates_total{result="issued"} 1"#),
        "{}",
        issued.stdout
    );
    // No CSR object is left behind.
    let csrs = cluster.kubectl_ok(&["get", "csr", "-o", "name"]).unwrap();
    assert!(
        !csrs.contains(&format!("apiwitness-{a}-{pod_name}")),
        "{csrs}"
    );

    // A custom resource written through the interceptor: its history is
    // read below through the aggregated API.
    ensure_postgres_crd(cluster);
    grant_postgres_admin(cluster, a, "app");
    let client25 = json!({"apiVersion": "postgrescontroller.kubeplus/v1", "kind": "Postgres",
        "metadata": {"name": "client25"}, "spec": {"replicas": 1, "image": "postgres:15"}});
    let created = CommandOutput::run_with_input(
        &mut pod.exec_command(&[], &[kubectl.to_str().unwrap(), "create", "-f", "-"]),
        client25.to_string().as_bytes(),
    )
    .unwrap();
    assert!(created.success, "{created:?}");
    let patched = pod
        .exec(
            &[],
            &[
                kubectl.to_str().unwrap(),
                "patch",
                "postgres",
                "client25",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"replicas":2}}"#,
            ],
        )
        .unwrap();
    assert!(patched.success, "{patched:?}");

    played.stop();

    // Its records reach the aggregator through the chart's Service, and the
    // coverage of the pod shows the call (a reader's token, audience apiwitness).
    let reader = apiwitness_token(cluster, a, None);
    let aggregator_ip = aggregator.pod.ip().unwrap();
    // The token goes in a header file, never on a command line.
    let header_file = apiwitness_e2e::aggregator::write_auth_header(reader.trim()).unwrap();
    let coverage = wait_until("the pod's coverage", Duration::from_secs(30), || {
        let out = CommandOutput::run(Command::new("curl").args([
            "-s",
            "-H",
            &format!("@{}", header_file.display()),
            &format!("http://{aggregator_ip}:8080/coverage/{a}/{pod_name}?format=text"),
        ]))
        .ok()?;
        out.stdout
            .contains("listCoreV1NamespacedConfigMap")
            .then_some(out.stdout)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\naggregator:\n{}\ninterceptor:\n{}",
            aggregator.log(),
            sidecar_text()
        )
    });
    let _ = std::fs::remove_file(&header_file);
    assert!(coverage.contains(&format!("{a}/{pod_name}")), "{coverage}");
    drop(played);

    // Provenance through the aggregated API: kube-apiserver authenticates the
    // user and proxies to the aggregator's Service with its front-proxy
    // certificate.
    wait_until(
        "the APIService to be available",
        Duration::from_secs(60),
        || {
            cluster
                .kubectl_ok(&[
                    "get",
                    "apiservice",
                    "v1.provenance.apiwitness.io",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
                ])
                .ok()
                .filter(|s| s.trim() == "True")
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}\naggregator:\n{}",
            cluster
                .kubectl_ok(&[
                    "get",
                    "apiservice",
                    "v1.provenance.apiwitness.io",
                    "-o",
                    "jsonpath={.status}"
                ])
                .unwrap_or_default(),
            cluster
                .kubectl_ok(&["get", "endpointslices", "-A", "-o", "wide"])
                .unwrap_or_default(),
            aggregator.log()
        )
    });
    let base = format!("/apis/provenance.apiwitness.io/v1/namespaces/{a}/postgreses/client25");
    let versions = wait_until(
        "client25's versions through kubectl get --raw",
        Duration::from_secs(60),
        || {
            let out = cluster
                .kubectl(&["get", "--raw", &format!("{base}/versions")])
                .ok()?;
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            (v["versions"].as_array()?.len() == 2).then_some(v)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{:?}\naggregator:\n{}",
            cluster.kubectl(&["get", "--raw", &format!("{base}/versions")]),
            aggregator.log()
        )
    });
    let verbs: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["verb"].as_str().unwrap())
        .collect();
    assert_eq!(verbs, ["create", "patch"]);
    let diff: Value = serde_json::from_str(
        &cluster
            .kubectl_ok(&[
                "get",
                "--raw",
                &format!("{base}/diff?start=1&end=2&field=spec.replicas"),
            ])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        diff["changes"],
        json!([{"path": "spec.replicas", "before": 1, "after": 2}])
    );
    let bisect: Value = serde_json::from_str(
        &cluster
            .kubectl_ok(&[
                "get",
                "--raw",
                &format!("{base}/bisect?field=spec.replicas&value=2"),
            ])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(bisect["first"]["ordinal"], 2);
    // A viewer may ask the aggregated API, but may not get Postgres objects:
    // the aggregator refuses. A user with no role at all: the apiserver refuses.
    cluster
        .kubectl_ok(&["create", "serviceaccount", "viewer", "-n", a])
        .unwrap();
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "viewer",
            "-n",
            a,
            "--clusterrole=view",
            &format!("--serviceaccount={a}:viewer"),
        ])
        .unwrap();
    cluster
        .kubectl_ok(&["create", "serviceaccount", "nobody", "-n", a])
        .unwrap();
    for (sa, expected) in [
        (
            "viewer",
            "may not get postgreses.postgrescontroller.kubeplus",
        ),
        ("nobody", "forbidden"),
    ] {
        let out = wait_until(&format!("{sa}'s refusal"), Duration::from_secs(20), || {
            let out = kubectl_as(
                cluster,
                a,
                sa,
                &["get", "--raw", &format!("{base}/versions")],
            );
            (!out.success && out.stderr.contains(expected)).then_some(out)
        });
        assert!(
            out.is_ok(),
            "{sa}: {:?}",
            kubectl_as(
                cluster,
                a,
                sa,
                &["get", "--raw", &format!("{base}/versions")]
            )
        );
        assert!(out.unwrap().stderr.contains("Forbidden") || sa == "nobody");
    }

    // The certify endpoint refuses what it must.
    let csr = csr_for(
        a,
        &pod_name,
        cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP"),
    );
    let body = json!({"csr": csr}).to_string();
    let (status, answer) = client.post("/certify", Some("not-a-token"), &body);
    assert_eq!(status, 401, "{answer}");
    // A real token of the same ServiceAccount, but bound to no pod.
    let unbound = apiwitness_token(cluster, a, None);
    let (status, answer) = client.post("/certify", Some(unbound.trim()), &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not bound to a pod"),
        "{answer}"
    );
    // A token bound to a pod that apiwitness did not inject.
    cluster
        .kubectl_stdin(
            &["apply"],
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": a},
                "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "busybox:1.36"}]}})
            ,
        )
        .unwrap();
    let foreign = apiwitness_token(cluster, a, Some("plain"));
    let plain_csr =
        json!({"csr": csr_for(a, "plain", cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP"))})
            .to_string();
    let (status, answer) = client.post("/certify", Some(foreign.trim()), &plain_csr);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("was not injected"),
        "{answer}"
    );
    // The injected pod's own token, asking for another pod's name.
    let own = apiwitness_token(cluster, a, Some(&pod_name));
    let (status, answer) = client.post("/certify", Some(own.trim()), &plain_csr);
    assert_eq!(status, 403, "{answer}");
    // A malformed request body and a malformed AdmissionReview: a clear 400.
    let (status, answer) = client.post("/certify", Some(own.trim()), "{\"certificate\": 1}");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = client.post("/mutate", None, r#"{"apiVersion": "v1", "kind": "Pod"}"#);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("AdmissionReview"),
        "{answer}"
    );

    // Skips: a hostNetwork pod that opted in, and a pod that opted out of a
    // namespace that opted in, are left alone, each with an Event.
    cluster
        .kubectl_ok(&["label", "namespace", a, "apiwitness.io/inject=true"])
        .unwrap();
    for (name, annotation, host_network) in
        [("host-agent", "true", true), ("opted-out", "false", false)]
    {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": a, "annotations": {"apiwitness.io/inject": annotation}},
            "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "image": "busybox:1.36"}]}});
        cluster.kubectl_stdin(&["apply"], &pod).unwrap();
        let created = cluster
            .kubectl_json(&["get", "pod", name, "-n", a, "-o", "json"])
            .unwrap();
        assert!(
            init_container_names(&created).is_empty(),
            "{name} was injected"
        );
        let events = wait_until(
            &format!("the Event about {name}"),
            Duration::from_secs(20),
            || Some(events_about(cluster, a, name)).filter(|e| !e.is_empty()),
        )
        .unwrap_or_else(|e| panic!("{e:#}\ninjector:\n{}", injector_log()));
        let expected = if host_network {
            "HostNetwork"
        } else {
            "OptedOut"
        };
        assert!(events[0].contains(expected), "{events:?}");
    }
    // In that namespace, a pod that says nothing is injected by the label.
    let labelled = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "by-label", "namespace": a},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    cluster.kubectl_stdin(&["apply"], &labelled).unwrap();
    let by_label = cluster
        .kubectl_json(&["get", "pod", "by-label", "-n", a, "-o", "json"])
        .unwrap();
    assert_eq!(
        init_container_names(&by_label),
        [INIT_IPTABLES, INTERCEPTOR]
    );
    cluster
        .kubectl_ok(&["label", "namespace", a, "apiwitness.io/inject-"])
        .unwrap();

    // Removing the annotation rolls the Deployment back to pods without us.
    cluster
        .kubectl_ok(&[
            "annotate",
            "deployment",
            "web",
            "-n",
            a,
            "apiwitness.io/inject-",
        ])
        .unwrap();
    let rolled_back = wait_until(
        "a pod of web without the sidecar",
        Duration::from_secs(60),
        || {
            newest_pod(cluster, a, "app=web").filter(|p| {
                p["metadata"]["name"] != injected["metadata"]["name"]
                    && init_container_names(p) == ["setup"]
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\ninjector:\n{}", injector_log()));
    assert!(
        rolled_back["metadata"]["annotations"]
            .get("apiwitness.io/status")
            .is_none()
    );
    let template = cluster
        .kubectl_json(&["get", "deployment", "web", "-n", a, "-o", "json"])
        .unwrap();
    let annotations = &template["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations.get("apiwitness.io/inject").is_none()
            && annotations.get("apiwitness.io/inject-inherited").is_none(),
        "{annotations}"
    );
}

#[test]
fn private_ca_signs_for_injected_pods_only_and_a_rotated_ca_is_served_without_restart() {
    let cluster = Cluster::shared();
    let installed = install(
        cluster,
        &[
            ("injector.signer", "private-ca"),
            ("injector.refreshInterval", "1s"),
        ],
    );
    let (release, injector, client) = (&installed.release, &installed.injector, &installed.client);
    let injector_log = || injector.log();
    let app = TestNamespace::with_app(cluster, "awpriv");
    let a = app.name.as_str();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": a, "annotations": {"apiwitness.io/inject": "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"serviceAccountName": "app", "containers": [{"name": "web", "image": "busybox:1.36"}]},
            },
        },
    });
    cluster.kubectl_stdin(&["apply"], &deployment).unwrap();
    let injected = wait_until("an injected pod of web", Duration::from_secs(60), || {
        newest_pod(cluster, a, "app=web").filter(|p| init_container_names(p).len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\ninjector log:\n{}", injector_log()));

    // The app containers' ca.crt comes from the namespace's bundle: the
    // cluster CA, then the injector's.
    let api_access = injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap();
    assert!(
        api_access.to_string().contains("\"apiwitness-ca-bundle\""),
        "{api_access}"
    );
    let bundle_of = || {
        cluster
            .kubectl_json(&[
                "get",
                "configmap",
                "apiwitness-ca-bundle",
                "-n",
                a,
                "-o",
                "json",
            ])
            .ok()
            .and_then(|c| c["data"]["ca.crt"].as_str().map(str::to_string))
    };
    let bundle = bundle_of().expect("the trust bundle ConfigMap");
    let cluster_ca = std::fs::read_to_string(cluster.var("APIWITNESS_CLUSTER_CA")).unwrap();
    let injector_ca = current_ca(cluster, release);
    assert!(bundle.starts_with(cluster_ca.trim_end()), "{bundle}");
    assert!(bundle.contains(injector_ca.trim_end()), "{bundle}");
    let bundle_file = format!("{}/bundle.pem", tempfile_dir());
    std::fs::write(&bundle_file, &bundle).unwrap();

    let played = PlayedPod::start(cluster, &injected, Some(&bundle_file), &injector_log);
    let kubectl = cluster.bin("kubectl");
    let listed = played
        .pod
        .exec(
            &[],
            &[kubectl.to_str().unwrap(), "get", "configmaps", "-o", "name"],
        )
        .unwrap();
    assert!(listed.success, "{listed:?}\ninterceptor:\n{}", played.log());
    assert!(
        listed.stdout.contains("configmap/apiwitness-ca-bundle"),
        "{}",
        listed.stdout
    );
    // The certificate the app is served chains to the injector's CA only:
    // a client that trusts just the cluster CA (any pod not injected) refuses it.
    let service = cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP");
    let verify = |ca: &str| {
        played
            .pod
            .exec(&[], &["sh", "-c", &format!(
                "openssl s_client -connect {service}:443 -servername kubernetes.default.svc -CAfile {ca} -verify_return_error -showcerts </dev/null 2>&1"
            )])
            .unwrap()
    };
    let with_bundle = verify(&bundle_file);
    assert!(with_bundle.success, "{with_bundle:?}");
    assert!(!verify(cluster.var("APIWITNESS_CLUSTER_CA")).success);
    let csrs = cluster.kubectl_ok(&["get", "csr", "-o", "name"]).unwrap();
    assert!(!csrs.contains(&format!("apiwitness-{a}-")), "{csrs}");
    drop(played);

    // Rotation without a restart: the Secret goes; the injector makes a new
    // CA and certificate, serves them, and puts the CA in the caBundle and in
    // the namespace's trust bundle.
    cluster
        .kubectl_ok(&[
            "delete",
            "secret",
            &format!("{}-tls", release.part("injector")),
            "-n",
            &release.namespace,
        ])
        .unwrap();
    let rotated = wait_until("a new injector CA", Duration::from_secs(30), || {
        let ca = stored_ca(cluster, release)?;
        (ca != injector_ca).then_some(ca)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", injector_log()));
    client.trust(&rotated);
    let (status, _) = wait_until(
        "the new certificate to be served",
        Duration::from_secs(30),
        || Some(client.post("/mutate", None, "{}")).filter(|(status, _)| *status == 400),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", injector_log()));
    assert_eq!(status, 400);
    wait_until("the caBundle to follow", Duration::from_secs(30), || {
        let config = cluster
            .kubectl_json(&[
                "get",
                "mutatingwebhookconfiguration",
                &release.part("injector"),
                "-o",
                "json",
            ])
            .ok()?;
        config["webhooks"]
            .as_array()?
            .iter()
            .all(|h| {
                h["clientConfig"]["caBundle"]
                    .as_str()
                    .map(decode_b64)
                    .as_deref()
                    == Some(rotated.as_str())
            })
            .then_some(())
    })
    .unwrap();
    wait_until(
        "the trust bundle to follow",
        Duration::from_secs(30),
        || {
            bundle_of()
                .filter(|b| b.contains(rotated.trim_end()) && !b.contains(injector_ca.trim_end()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", injector_log()));
    assert!(injector_log().contains("serving certificate reloaded"));
}
