//! init-iptables in a pod's network namespace: apply, prove, rerun, clean
//! up, on both iptables backends and on IPv6, and the clear failures when the
//! container lacks capabilities or the interceptor's port is taken.

use apiwitness_e2e::{Cluster, CommandOutput, NetnsPod, TestNamespace, workspace_binary};
use std::process::Command;

const PORT: &str = "15443";
const UID: &str = "2102";

fn init_iptables() -> String {
    workspace_binary("apiwitness-init-iptables")
        .to_str()
        .unwrap()
        .to_string()
}

fn apiserver_addrs(cluster: &Cluster) -> String {
    format!(
        "{}:443,{}",
        cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP"),
        cluster
            .var("APIWITNESS_APISERVER")
            .trim_start_matches("https://")
    )
}

fn run_in(pod: &NetnsPod, args: &[&str]) -> CommandOutput {
    let bin = init_iptables();
    let mut command = vec![bin.as_str()];
    command.extend_from_slice(args);
    pod.exec(&[], &command).unwrap()
}

fn saved_nat(pod: &NetnsPod, tool: &str) -> String {
    pod.exec(&[], &[tool, "-t", "nat"]).unwrap().stdout
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.lines().filter(|l| l.trim() == needle).count()
}

#[test]
fn apply_verify_rerun_and_cleanup_in_a_pod() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "initipt");
    let pod = NetnsPod::add(cluster, &format!("{}-p", ns.name), &ns.name, "app", &[]).unwrap();
    let addrs = apiserver_addrs(cluster);
    let kubectl = cluster.bin("kubectl");
    let kubectl = kubectl.to_str().unwrap();

    // A dry run prints the rules and touches nothing.
    let dry = run_in(&pod, &["--apiserver", &addrs, "--dry-run"]);
    assert!(dry.success, "{dry:?}");
    assert!(
        dry.stdout.contains("-j REDIRECT --to-ports 15443"),
        "{}",
        dry.stdout
    );
    assert!(!saved_nat(&pod, "iptables-save").contains("APIWITNESS_OUTPUT"));

    // Before: kubectl reaches the apiserver directly.
    assert!(
        pod.exec(&[], &[kubectl, "get", "configmaps"])
            .unwrap()
            .success
    );

    let applied = run_in(&pod, &["--apiserver", &addrs, "--verify"]);
    assert!(applied.success, "{applied:?}");
    assert!(
        applied
            .stdout
            .contains("reach the interceptor with their original destination"),
        "{}",
        applied.stdout
    );
    let saved = saved_nat(&pod, "iptables-save");
    assert_eq!(
        count(&saved, "-A OUTPUT -p tcp -j APIWITNESS_OUTPUT"),
        1,
        "{saved}"
    );

    // With no interceptor listening, the app's connection is refused: it went
    // to the interceptor's port, not to the apiserver.
    let refused = pod
        .exec(&[], &[kubectl, "get", "configmaps", "--request-timeout=5s"])
        .unwrap();
    assert!(!refused.success);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);

    // A rerun replaces the chain: still one hook, the same rules, now with
    // only the Service address.
    let service_only = format!("{}:443", cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP"));
    let rerun = run_in(&pod, &["--apiserver", &service_only, "--verify"]);
    assert!(rerun.success, "{rerun:?}");
    let saved = saved_nat(&pod, "iptables-save");
    assert_eq!(
        count(&saved, "-A OUTPUT -p tcp -j APIWITNESS_OUTPUT"),
        1,
        "{saved}"
    );
    assert_eq!(saved.matches("REDIRECT").count(), 1, "{saved}");

    // The default destination is the pod's own KUBERNETES_SERVICE_HOST/PORT.
    let from_env = run_in(&pod, &["--verify"]);
    assert!(from_env.success, "{from_env:?}");
    assert!(
        from_env.stdout.contains(&service_only),
        "{}",
        from_env.stdout
    );

    let cleaned = run_in(&pod, &["--cleanup"]);
    assert!(cleaned.success, "{cleaned:?}");
    assert!(
        cleaned
            .stdout
            .contains("IPv4: removed the apiwitness chain"),
        "{}",
        cleaned.stdout
    );
    assert!(!saved_nat(&pod, "iptables-save").contains("APIWITNESS"));
    assert!(
        pod.exec(&[], &[kubectl, "get", "configmaps"])
            .unwrap()
            .success
    );
    let again = run_in(&pod, &["--cleanup"]);
    assert!(
        again.success && again.stdout.contains("nothing to remove"),
        "{again:?}"
    );
}

#[test]
fn the_interceptors_uid_bypasses_the_redirect() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "initipt-uid");
    let pod = NetnsPod::add(cluster, &format!("{}-p", ns.name), &ns.name, "app", &[]).unwrap();
    let applied = run_in(
        &pod,
        &[
            "--apiserver",
            &apiserver_addrs(cluster),
            "--proxy-uid",
            UID,
            "--proxy-port",
            PORT,
            "--verify",
        ],
    );
    assert!(applied.success, "{applied:?}");
    // As the interceptor's UID, a TLS client reaches the real apiserver
    // (anything but a refused connection: an HTTP status came back).
    let direct = version_status_as(&pod, cluster, UID);
    assert!(direct.trim() != "000" && !direct.is_empty(), "{direct:?}");
    // As any other UID, the same call is refused: nothing listens on the
    // interceptor's port yet.
    let redirected = version_status_as(&pod, cluster, "1000");
    assert_eq!(redirected.trim(), "000", "{redirected:?}");
}

/// The HTTP status of `GET /version` on the kubernetes Service, dialled as
/// `uid` from inside the pod ("000": no HTTP answer at all).
fn version_status_as(pod: &NetnsPod, cluster: &Cluster, uid: &str) -> String {
    let url = format!(
        "https://{}/version",
        cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP")
    );
    let command = [
        "setpriv",
        "--reuid",
        uid,
        "--regid",
        uid,
        "--clear-groups",
        "curl",
        "-sk",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ];
    pod.exec(&[], &command).unwrap().stdout
}

#[test]
fn the_legacy_backend_works_the_same() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "initipt-legacy");
    let pod = NetnsPod::add(cluster, &format!("{}-p", ns.name), &ns.name, "app", &[]).unwrap();
    let addrs = apiserver_addrs(cluster);
    let applied = run_in(
        &pod,
        &["--apiserver", &addrs, "--backend", "legacy", "--verify"],
    );
    assert!(applied.success, "{applied:?}");
    assert!(
        applied.stdout.contains("legacy backend"),
        "{}",
        applied.stdout
    );
    let legacy = saved_nat(&pod, "iptables-legacy-save");
    assert_eq!(
        count(&legacy, "-A OUTPUT -p tcp -j APIWITNESS_OUTPUT"),
        1,
        "{legacy}"
    );
    // Auto detection now follows the backend that holds the rules.
    let rerun = run_in(&pod, &["--apiserver", &addrs, "--verify"]);
    assert!(rerun.stdout.contains("legacy backend"), "{rerun:?}");
    let cleaned = run_in(&pod, &["--cleanup", "--backend", "legacy"]);
    assert!(cleaned.success, "{cleaned:?}");
    assert!(!saved_nat(&pod, "iptables-legacy-save").contains("APIWITNESS"));
}

#[test]
fn missing_capabilities_and_a_taken_port_fail_clearly() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "initipt-fail");
    let pod = NetnsPod::add(cluster, &format!("{}-p", ns.name), &ns.name, "app", &[]).unwrap();
    let bin = init_iptables();

    // As a container whose securityContext dropped ALL.
    let no_caps = pod
        .exec(
            &[],
            &["setpriv", "--inh-caps=-all", "--bounding-set=-all", &bin],
        )
        .unwrap();
    assert_eq!(no_caps.code, Some(3), "{no_caps:?}");
    assert!(
        no_caps
            .stderr
            .contains("lacks the NET_ADMIN and NET_RAW capabilities"),
        "{}",
        no_caps.stderr
    );

    let bad = pod
        .exec(&[], &[&bin, "--apiserver", "not-an-address"])
        .unwrap();
    assert_eq!(bad.code, Some(2), "{bad:?}");

    // Something already holds the interceptor's port: the verification says so.
    let holder = Command::new("ip")
        .args(["netns", "exec", &pod.netns().unwrap(), "python3", "-c"])
        .arg(format!(
            "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',{PORT}))\ns.listen()\nprint('up',flush=True)\ntime.sleep(60)"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = KillOnDrop(holder);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let taken = run_in(
        &pod,
        &["--apiserver", &apiserver_addrs(cluster), "--verify"],
    );
    assert_eq!(taken.code, Some(6), "{taken:?}");
    assert!(
        taken
            .stderr
            .contains("cannot listen on the interceptor's port 15443"),
        "{}",
        taken.stderr
    );
}

#[test]
fn ipv6_destinations_are_redirected_with_ip6tables() {
    // A network namespace of this test's own, with an IPv6 route.
    let netns = format!("apiwitness-v6-{}", std::process::id());
    let _guard = NetnsGuard::create(&netns);
    let ip = |args: &[&str]| {
        let out = CommandOutput::run(Command::new("ip").args(["-n", &netns]).args(args)).unwrap();
        assert!(out.success, "ip {args:?}: {out:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", "v6a", "type", "veth", "peer", "name", "v6b"]);
    ip(&["addr", "add", "fd00:aa::2/64", "dev", "v6a", "nodad"]);
    ip(&["link", "set", "v6a", "up"]);
    ip(&["link", "set", "v6b", "up"]);
    ip(&["addr", "add", "10.252.0.2/24", "dev", "v6a"]);
    ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:aa::1",
        "dev",
        "v6a",
        "onlink",
    ]);
    ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.252.0.1",
        "dev",
        "v6a",
        "onlink",
    ]);

    let bin = init_iptables();
    let run = |args: &[&str]| {
        CommandOutput::run(
            Command::new("ip")
                .args(["netns", "exec", &netns, &bin])
                .args(args),
        )
        .unwrap()
    };
    let applied = run(&[
        "--apiserver",
        "[fd00:10:96::1]:443,10.96.0.1:443",
        "--verify",
    ]);
    assert!(applied.success, "{applied:?}");
    assert!(
        applied
            .stdout
            .contains("IPv6: redirecting [fd00:10:96::1]:443"),
        "{}",
        applied.stdout
    );
    assert!(
        applied
            .stdout
            .contains("10.96.0.1:443, [fd00:10:96::1]:443 reach"),
        "{}",
        applied.stdout
    );
    let saved = CommandOutput::run(Command::new("ip").args([
        "netns",
        "exec",
        &netns,
        "ip6tables-save",
        "-t",
        "nat",
    ]))
    .unwrap();
    assert!(
        saved.stdout.contains("-d fd00:10:96::1/128"),
        "{}",
        saved.stdout
    );
    let cleaned = run(&["--cleanup"]);
    assert!(
        cleaned
            .stdout
            .contains("IPv6: removed the apiwitness chain"),
        "{cleaned:?}"
    );
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct NetnsGuard(String);
impl NetnsGuard {
    fn create(name: &str) -> NetnsGuard {
        let out = CommandOutput::run(Command::new("ip").args(["netns", "add", name])).unwrap();
        assert!(out.success, "{out:?}");
        NetnsGuard(name.to_string())
    }
}
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}
