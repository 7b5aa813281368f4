//! What the injector puts into a pod, before per-pod annotations override it.

use std::net::SocketAddr;

/// How the app's traffic reaches the interceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// init-iptables redirects the pod's TCP to the apiserver (needs
    /// NET_ADMIN and NET_RAW in the init container).
    Iptables,
    /// No redirect: the app containers' KUBERNETES_SERVICE_HOST and
    /// KUBERNETES_SERVICE_PORT point at the sidecar, for clusters whose Pod
    /// Security forbids NET_ADMIN.
    Env,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "iptables" => Some(Mode::Iptables),
            "env" => Some(Mode::Env),
            _ => None,
        }
    }
}

/// Who signs the interceptors' certificates, and so what the apps trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignerMode {
    /// `kubernetes.io/kubelet-serving`: kube-controller-manager signs with
    /// the cluster CA, which every pod already trusts. Nothing in the app
    /// containers changes.
    ClusterCa,
    /// `apiwitness.io/interceptor`: the injector signs with its own CA, and
    /// only injected pods trust it, through a per-namespace bundle of the
    /// cluster CA plus that CA. For clusters whose CA signs nothing for us.
    PrivateCa,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: Option<String>,
    pub memory_limit: String,
}

#[derive(Debug, Clone)]
pub struct InjectSettings {
    pub interceptor_image: String,
    pub init_iptables_image: String,
    pub image_pull_policy: String,
    pub mode: Mode,
    pub aggregator_url: String,
    pub certify_url: String,
    /// The injector's CA, which the interceptor verifies the certify
    /// endpoint with (public, so it travels inline in the pod spec).
    pub certify_ca_pem: String,
    /// The apiserver's Service address, and its endpoints.
    pub apiserver_service: SocketAddr,
    pub apiserver_endpoints: Vec<SocketAddr>,
    pub proxy_uid: i64,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub body_limit: u64,
    pub log_level: String,
    pub resources: Resources,
    /// The audience of the projected token the sidecar proves itself with.
    pub token_audience: String,
    /// The apiserver supports native sidecars (Kubernetes 1.29 and later).
    pub native_sidecars: bool,
    pub signer: SignerMode,
}

impl InjectSettings {
    /// Settings for tests: what the chart's defaults amount to.
    pub fn example() -> InjectSettings {
        InjectSettings {
            interceptor_image: "ghcr.io/apiwitness/interceptor:0.1.0".into(),
            init_iptables_image: "ghcr.io/apiwitness/init-iptables:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            mode: Mode::Iptables,
            aggregator_url: "http://apiwitness-aggregator.apiwitness.svc:8080".into(),
            certify_url: "https://apiwitness-injector.apiwitness.svc:443/certify".into(),
            certify_ca_pem: "-----BEGIN CERTIFICATE-----\nEXAMPLE\n-----END CERTIFICATE-----\n"
                .into(),
            apiserver_service: "10.96.0.1:443".parse().expect("literal"),
            apiserver_endpoints: vec!["172.18.0.2:6443".parse().expect("literal")],
            proxy_uid: 2102,
            proxy_port: 15443,
            admin_port: 15090,
            body_limit: 1 << 20,
            log_level: "info".into(),
            resources: Resources {
                cpu_request: "10m".into(),
                memory_request: "32Mi".into(),
                cpu_limit: None,
                memory_limit: "128Mi".into(),
            },
            token_audience: "apiwitness".into(),
            native_sidecars: true,
            signer: SignerMode::ClusterCa,
        }
    }
}
