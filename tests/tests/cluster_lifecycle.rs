//! `hack/cluster` on clusters of their own (indexes 7 to 9), beside the shared
//! one: `down` leaves nothing behind, and bad usage fails clearly.

use apiwitness_e2e::{Cluster, CommandOutput, repo_root};
use std::process::Command;

fn hack_cluster(index: u8, args: &[&str]) -> CommandOutput {
    let shared_bins = Cluster::shared().var("APIWITNESS_BIN_DIR").to_string();
    CommandOutput::run(
        Command::new(repo_root().join("hack/cluster"))
            .args(args)
            .env("APIWITNESS_CLUSTER_INDEX", index.to_string())
            .env("APIWITNESS_BIN_DIR", shared_bins),
    )
    .unwrap()
}

fn run(cmd: &str, args: &[&str]) -> String {
    CommandOutput::run(Command::new(cmd).args(args))
        .unwrap()
        .stdout
}

/// Every trace a cluster can leave on the machine, by its index.
fn traces(index: u8) -> Vec<String> {
    let state = repo_root().join(format!(".cache/cluster/{index}"));
    let state = state.to_str().unwrap();
    let mut found = Vec::new();
    for line in run("ps", &["-eo", "pid,args"]).lines() {
        if line.contains(state) && !line.contains("ps -eo") {
            found.push(format!("process: {line}"));
        }
    }
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        if line.contains(state) {
            found.push(format!("mount: {line}"));
        }
    }
    for line in run("ip", &["netns", "list"]).lines() {
        if line.starts_with(&format!("aw{index}-")) {
            found.push(format!("netns: {line}"));
        }
    }
    for line in run("ip", &["-o", "link", "show"]).lines() {
        if line.contains(&format!("aw{index}br")) || line.contains(&format!("aw{index}h")) {
            found.push(format!("link: {line}"));
        }
    }
    for line in run("iptables-save", &["-t", "nat"]).lines() {
        if line.contains(&format!("AW{index}-"))
            || line.contains(&format!("apiwitness-cluster-{index}"))
        {
            found.push(format!("iptables: {line}"));
        }
    }
    let service_net = format!("10.96.{}.0/20", u32::from(index) * 16);
    for line in run("ip", &["route", "show"]).lines() {
        if line.starts_with(&service_net) || line.contains(&format!("10.250.{index}.")) {
            found.push(format!("route: {line}"));
        }
    }
    found
}

#[test]
fn down_leaves_no_process_mount_namespace_interface_route_or_rule() {
    const INDEX: u8 = 7;
    let _ = hack_cluster(INDEX, &["down"]);
    // `ensure` starts it, as the test harness does.
    let up = hack_cluster(INDEX, &["ensure"]);
    assert!(up.success, "ensure: {}\n{}", up.stdout, up.stderr);

    // A second up is refused, clearly, and the first cluster is untouched.
    let again = hack_cluster(INDEX, &["up"]);
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert!(again.stderr.contains("already up"), "{}", again.stderr);
    assert!(hack_cluster(INDEX, &["status"]).success);
    // A second ensure answers at once: the daemons the first one started do
    // not hold its lock (bounded here, since the lock's own wait is 600 s).
    let shared_bins = Cluster::shared().var("APIWITNESS_BIN_DIR").to_string();
    let second = CommandOutput::run(
        Command::new("timeout")
            .arg("60")
            .arg(repo_root().join("hack/cluster"))
            .arg("ensure")
            .env("APIWITNESS_CLUSTER_INDEX", INDEX.to_string())
            .env("APIWITNESS_BIN_DIR", shared_bins),
    )
    .unwrap();
    assert!(
        second.success && second.stdout.contains("up already"),
        "second ensure: {:?} {}\n{}",
        second.code,
        second.stdout,
        second.stderr
    );

    // With a pod and a served Service, so that down has everything to undo.
    let cluster = Cluster::describe(INDEX).unwrap();
    let pod = CommandOutput::run(cluster.hack("pod").args(["add", "leftover"])).unwrap();
    assert!(pod.success, "{}", pod.stderr);
    let before = traces(INDEX);
    for kind in [
        "process:",
        "mount:",
        "netns:",
        "link:",
        "iptables:",
        "route:",
    ] {
        assert!(
            before.iter().any(|t| t.starts_with(kind)),
            "a running cluster shows a {kind} trace, or the check below proves nothing: {before:#?}"
        );
    }

    let down = hack_cluster(INDEX, &["down"]);
    assert!(down.success, "down: {}", down.stderr);
    let after = traces(INDEX);
    assert!(after.is_empty(), "left behind after down: {after:#?}");
    assert!(!hack_cluster(INDEX, &["status"]).success);
    // down is idempotent.
    assert!(hack_cluster(INDEX, &["down"]).success);
}

#[test]
fn a_taken_port_is_named_and_fails_the_up() {
    const INDEX: u8 = 8;
    let _ = hack_cluster(INDEX, &["down"]);
    let etcd_port = 2379 + 100 * u16::from(INDEX);
    let _holder = std::net::TcpListener::bind(("127.0.0.1", etcd_port)).unwrap();
    let up = hack_cluster(INDEX, &["up"]);
    assert_eq!(up.code, Some(4), "{}\n{}", up.stdout, up.stderr);
    assert!(
        up.stderr
            .contains(&format!("port {etcd_port} is already in use")),
        "{}",
        up.stderr
    );
    assert!(
        traces(INDEX).is_empty(),
        "a failed up must not leave traces: {:#?}",
        traces(INDEX)
    );
}

#[test]
fn missing_tools_are_named() {
    let no_sbin = CommandOutput::run(
        Command::new(repo_root().join("hack/cluster"))
            .arg("up")
            .env("APIWITNESS_CLUSTER_INDEX", "9")
            .env("PATH", "/usr/bin:/bin"),
    )
    .unwrap();
    assert_eq!(no_sbin.code, Some(127), "{}", no_sbin.stderr);
    assert!(
        no_sbin.stderr.contains("missing tool(s):"),
        "{}",
        no_sbin.stderr
    );
    assert!(no_sbin.stderr.contains("iptables"), "{}", no_sbin.stderr);

    let empty = std::env::temp_dir().join(format!("apiwitness-empty-bin-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let no_bins = CommandOutput::run(
        Command::new(repo_root().join("hack/cluster"))
            .arg("up")
            .env("APIWITNESS_CLUSTER_INDEX", "9")
            .env("APIWITNESS_BIN_DIR", &empty),
    )
    .unwrap();
    let _ = std::fs::remove_dir(&empty);
    assert_eq!(no_bins.code, Some(127), "{}", no_bins.stderr);
    assert!(
        no_bins.stderr.contains("missing tool:"),
        "{}",
        no_bins.stderr
    );
    assert!(traces(9).is_empty(), "{:#?}", traces(9));
}

#[test]
fn unknown_commands_print_usage() {
    let out = hack_cluster(9, &["sideways"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("hack/cluster up"), "{}", out.stderr);
}
