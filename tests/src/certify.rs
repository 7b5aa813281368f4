//! A stand-in for the injector's certify endpoint, until the injector exists:
//! it takes the interceptor's CSR exactly as the injector will
//! (`POST {"csr": PEM}` → `{"certificate": PEM}`), and has it signed for real:
//!
//! - `ClusterCa`: as a Kubernetes CertificateSigningRequest with the
//!   `kubernetes.io/kubelet-serving` signer, approved here and signed by the
//!   real kube-controller-manager with the cluster CA;
//! - `TestCa`: by a CA of the test's own, with a lifetime the test chooses
//!   (the controller-manager's minimum is ten minutes, too long to watch a
//!   rotation in a test).

use crate::server::TestServer;
use crate::tls::TestCa;
use crate::{Cluster, wait_until};
use axum::Json;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub enum Signer {
    ClusterCa,
    TestCa { ca: Arc<TestCa>, lifetime: Duration },
}

pub struct CertifyStandIn {
    pub url: String,
    issued: Arc<AtomicUsize>,
    _server: TestServer,
}

impl CertifyStandIn {
    pub fn start(cluster: &'static Cluster, signer: Signer) -> anyhow::Result<CertifyStandIn> {
        let issued = Arc::new(AtomicUsize::new(0));
        let signer = Arc::new(signer);
        let app = {
            let issued = issued.clone();
            axum::Router::new().route(
                "/certify",
                axum::routing::post(move |Json(request): Json<Value>| {
                    let issued = issued.clone();
                    let signer = signer.clone();
                    async move {
                        let Some(csr) = request["csr"].as_str().map(str::to_string) else {
                            return (StatusCode::BAD_REQUEST, Json(json!({"error": "no csr"})));
                        };
                        let signed = tokio::task::spawn_blocking(move || match &*signer {
                            Signer::ClusterCa => sign_with_cluster_ca(cluster, &csr),
                            Signer::TestCa { ca, lifetime } => ca.sign_csr(&csr, *lifetime),
                        })
                        .await;
                        match signed {
                            Ok(Ok(certificate)) => {
                                issued.fetch_add(1, Ordering::SeqCst);
                                (StatusCode::OK, Json(json!({ "certificate": certificate })))
                            }
                            Ok(Err(e)) => (
                                StatusCode::FORBIDDEN,
                                Json(json!({"error": format!("{e:#}")})),
                            ),
                            Err(e) => (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                Json(json!({"error": e.to_string()})),
                            ),
                        }
                    }
                }),
            )
        };
        let server = TestServer::start_plain(&format!("{}:0", cluster.node_ip()), app)?;
        Ok(CertifyStandIn {
            url: format!("http://{}/certify", server.addr),
            issued,
            _server: server,
        })
    }

    /// How many certificates were issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

fn sign_with_cluster_ca(cluster: &Cluster, csr_pem: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let name = format!(
        "apiwitness-test-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    // Raw API paths throughout: a kubectl command that names a kind first
    // reads discovery, which stalls while other tests' CRDs come and go.
    let base = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    // Each step's time goes to stderr, and a CSR left unsigned is shown
    // whole: what a slow signing under load needs to be understood.
    let started = std::time::Instant::now();
    let mut steps = Vec::new();
    cluster.kubectl_stdin(
        &["create", "--raw", base],
        &json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "signerName": "kubernetes.io/kubelet-serving",
                "request": b64.encode(csr_pem),
                "usages": ["digital signature", "server auth"],
                "expirationSeconds": 3600
            }
        }),
    )?;
    steps.push(("created", started.elapsed()));
    let result = (|| {
        let mut csr: serde_json::Value = serde_json::from_str(&cluster.kubectl_ok(&[
            "get",
            "--raw",
            &format!("{base}/{name}"),
        ])?)?;
        steps.push(("read", started.elapsed()));
        csr["status"]["conditions"] = json!([{"type": "Approved", "status": "True",
            "reason": "ApiwitnessTest", "message": "approved by the test's certify stand-in"}]);
        cluster.kubectl_stdin(
            &["replace", "--raw", &format!("{base}/{name}/approval")],
            &csr,
        )?;
        steps.push(("approved", started.elapsed()));
        let mut last = serde_json::Value::Null;
        let cert = wait_until("the CSR to be signed", Duration::from_secs(30), || {
            let out = cluster
                .kubectl_ok(&["get", "--raw", &format!("{base}/{name}")])
                .ok()?;
            last = serde_json::from_str(&out).ok()?;
            last["status"]["certificate"].as_str().map(str::to_string)
        })
        .map_err(|e| anyhow::anyhow!("{e:#}; the CSR's status: {}", last["status"]))?;
        steps.push(("signed", started.elapsed()));
        Ok(String::from_utf8(b64.decode(cert)?)?)
    })();
    // The name holds when it was asked for (nanoseconds since the epoch).
    eprintln!(
        "certify stand-in: {name}: {} {steps:?}",
        if result.is_ok() {
            "signed"
        } else {
            "NOT signed"
        }
    );
    let _ = cluster.kubectl(&["delete", "--raw", &format!("{base}/{name}")]);
    result
}
