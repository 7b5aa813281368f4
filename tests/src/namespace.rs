use crate::Cluster;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace that belongs to one test, deleted when it is dropped.
pub struct TestNamespace {
    pub name: String,
    cluster: &'static Cluster,
}

impl TestNamespace {
    /// A fresh namespace named after `prefix`, unique in this run and across
    /// runs against the same cluster.
    pub fn new(cluster: &'static Cluster, prefix: &str) -> TestNamespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut prefix: String = prefix.chars().take(40).collect();
        prefix.make_ascii_lowercase();
        let name = format!(
            "{prefix}-{:x}{:x}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            nanos % 0xfffff
        );
        cluster
            .kubectl_ok(&["create", "namespace", &name])
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e:#}"));
        TestNamespace { name, cluster }
    }
}

impl TestNamespace {
    /// A fresh namespace with ServiceAccount `app`, bound to the `admin`
    /// ClusterRole there: what an ordinary workload may do in its namespace.
    pub fn with_app(cluster: &'static Cluster, prefix: &str) -> TestNamespace {
        let ns = TestNamespace::new(cluster, prefix);
        let n = ns.name.as_str();
        let sa = format!("--serviceaccount={n}:app");
        for args in [
            vec!["create", "serviceaccount", "app", "-n", n],
            vec![
                "create",
                "rolebinding",
                "app-admin",
                "-n",
                n,
                "--clusterrole=admin",
                &sa,
            ],
        ] {
            cluster
                .kubectl_ok(&args)
                .unwrap_or_else(|e| panic!("setting up namespace {n}: {e:#}"));
        }
        ns
    }
}

impl TestNamespace {
    /// ServiceAccount `reader`, which may `get` the given resources (as
    /// `kubectl create role --resource` takes them) in this namespace.
    pub fn add_reader(&self, resources: &str) {
        let n = self.name.as_str();
        let subject = format!("--serviceaccount={n}:reader");
        let resource = format!("--resource={resources}");
        for args in [
            vec!["create", "serviceaccount", "reader", "-n", n],
            vec!["create", "role", "reader", "-n", n, "--verb=get", &resource],
            vec![
                "create",
                "rolebinding",
                "reader",
                "-n",
                n,
                "--role=reader",
                &subject,
            ],
        ] {
            self.cluster
                .kubectl_ok(&args)
                .unwrap_or_else(|e| panic!("setting up the reader of {n}: {e:#}"));
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}
