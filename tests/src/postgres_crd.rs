//! The custom resource of kubeprovenance's own example, a Postgres database
//! (`hack/demo.d/postgres-crd.yaml`, which the demo uses too), for the tests
//! that write a custom resource.

use crate::{Cluster, repo_root, wait_until};
use std::time::Duration;

/// Applies the CRD (several tests may at once) and waits until it is served.
pub fn ensure_postgres_crd(cluster: &Cluster) {
    let crd = repo_root().join("hack/demo.d/postgres-crd.yaml");
    let apply = || cluster.kubectl_ok(&["apply", "-f", crd.to_str().expect("a UTF-8 path")]);
    // Two tests applying it at once: one creates it, the other's create
    // meets AlreadyExists, and its second apply finds it.
    if let Err(first) = apply() {
        assert!(
            format!("{first:#}").contains("AlreadyExists"),
            "applying the Postgres CRD: {first:#}"
        );
        apply().unwrap_or_else(|e| panic!("applying the Postgres CRD: {e:#}"));
    }
    wait_until(
        "the Postgres CRD to be served",
        Duration::from_secs(30),
        || {
            cluster
                .kubectl(&["get", "--raw", "/apis/postgrescontroller.kubeplus/v1"])
                .ok()
                .filter(|o| o.success)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Lets `serviceaccount` manage Postgres objects, status included, in `namespace`.
pub fn grant_postgres_admin(cluster: &Cluster, namespace: &str, serviceaccount: &str) {
    let binding = format!("{serviceaccount}-postgres");
    let subject = format!("--serviceaccount={namespace}:{serviceaccount}");
    let _ = cluster.kubectl(&[
        "create",
        "role",
        "postgres-admin",
        "-n",
        namespace,
        "--verb=*",
        "--resource=postgreses.postgrescontroller.kubeplus,postgreses.postgrescontroller.kubeplus/status",
    ]);
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            &binding,
            "-n",
            namespace,
            "--role=postgres-admin",
            &subject,
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Where the tests that write a Postgres object through an interceptor
/// start: the CRD served; a namespace whose `app` may manage Postgres
/// objects, with a `reader` that may get `readable` and a `nobody` that may
/// get nothing; an aggregator on `store`; and a certify stand-in signing
/// with the cluster CA.
pub struct CrdScenario {
    pub cluster: &'static Cluster,
    pub ns: crate::TestNamespace,
    pub aggregator: crate::aggregator::Aggregator,
    pub certify: crate::certify::CertifyStandIn,
}

impl CrdScenario {
    pub fn start(prefix: &str, store: crate::aggregator::StoreKind, readable: &str) -> CrdScenario {
        let cluster = Cluster::shared();
        ensure_postgres_crd(cluster);
        let ns = crate::TestNamespace::with_app(cluster, prefix);
        let n = ns.name.as_str();
        ns.add_reader(readable);
        cluster
            .kubectl_ok(&["create", "serviceaccount", "nobody", "-n", n])
            .unwrap();
        grant_postgres_admin(cluster, n, "app");
        let aggregator = crate::aggregator::Aggregator::start_on(cluster, n, store).unwrap();
        let certify =
            crate::certify::CertifyStandIn::start(cluster, crate::certify::Signer::ClusterCa)
                .unwrap();
        CrdScenario {
            cluster,
            ns,
            aggregator,
            certify,
        }
    }
}
