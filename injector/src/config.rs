//! Flags, each with an environment variable; the chart sets the variables.

use crate::settings::{InjectSettings, Mode, Resources, SignerMode};
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

pub use apiwitness_runtime::LogFormat;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "apiwitness-injector",
    version,
    about = "Adds the apiwitness interceptor to opted-in pods, and certifies interceptors."
)]
pub struct Config {
    /// Where the webhook and the certify endpoint listen (TLS).
    #[arg(long, env = "APIWITNESS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Where /healthz, /readyz and /metrics listen (plain HTTP).
    #[arg(long, env = "APIWITNESS_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,

    /// The injector's own namespace, where its Secret is kept.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,

    /// The injector's Service: its names go into the serving certificate.
    #[arg(
        long,
        env = "APIWITNESS_SERVICE_NAME",
        default_value = "apiwitness-injector"
    )]
    pub service_name: String,

    /// The Secret that keeps the injector's CA and serving certificate.
    #[arg(
        long,
        env = "APIWITNESS_TLS_SECRET",
        default_value = "apiwitness-injector-tls"
    )]
    pub tls_secret: String,

    /// The MutatingWebhookConfiguration whose caBundle is kept equal to the
    /// injector's CA; empty to leave it alone.
    #[arg(
        long,
        env = "APIWITNESS_WEBHOOK_CONFIG",
        default_value = "apiwitness-injector"
    )]
    pub webhook_config: String,

    #[arg(long, env = "APIWITNESS_SERVING_CERT_LIFETIME", value_parser = humantime::parse_duration, default_value = "30days")]
    pub serving_cert_lifetime: Duration,

    #[arg(
        long,
        env = "APIWITNESS_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    #[arg(long, env = "APIWITNESS_INTERCEPTOR_IMAGE")]
    pub interceptor_image: String,

    #[arg(long, env = "APIWITNESS_INIT_IPTABLES_IMAGE")]
    pub init_iptables_image: String,

    #[arg(
        long,
        env = "APIWITNESS_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub image_pull_policy: String,

    /// How app traffic reaches the sidecar, unless a pod's apiwitness.io/mode says otherwise.
    #[arg(long, env = "APIWITNESS_MODE", value_enum, default_value = "iptables")]
    pub mode: Mode,

    /// The aggregator's ingest URL, as the pods reach it.
    #[arg(long, env = "APIWITNESS_AGGREGATOR_URL")]
    pub aggregator_url: String,

    /// The certify URL, as the pods reach it (default: the injector's
    /// Service, https://<service>.<namespace>.svc/certify).
    #[arg(long, env = "APIWITNESS_CERTIFY_URL")]
    pub certify_url: Option<String>,

    /// Who signs the interceptors' certificates: the cluster CA (through the
    /// kubelet-serving signer), or the injector's own CA.
    #[arg(
        long,
        env = "APIWITNESS_SIGNER",
        value_enum,
        default_value = "cluster-ca"
    )]
    pub signer: SignerMode,

    /// How often the Secret, the caBundle, the trust bundles and the
    /// apiserver's endpoints are looked at again.
    #[arg(long, env = "APIWITNESS_REFRESH_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub refresh_interval: Duration,

    /// The lifetime of the interceptors' certificates (at least 10 minutes,
    /// the controller-manager's floor).
    #[arg(long, env = "APIWITNESS_CERT_LIFETIME", value_parser = humantime::parse_duration, default_value = "1h")]
    pub cert_lifetime: Duration,

    /// The audience of the sidecar's projected token.
    #[arg(long, env = "APIWITNESS_TOKEN_AUDIENCE", default_value = "apiwitness")]
    pub token_audience: String,

    #[arg(long, env = "APIWITNESS_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: i64,

    #[arg(long, env = "APIWITNESS_PROXY_PORT", default_value_t = 15443)]
    pub proxy_port: u16,

    #[arg(long, env = "APIWITNESS_PROXY_ADMIN_PORT", default_value_t = 15090)]
    pub proxy_admin_port: u16,

    #[arg(long, env = "APIWITNESS_BODY_LIMIT", default_value_t = 1 << 20)]
    pub body_limit: u64,

    #[arg(long, env = "APIWITNESS_PROXY_LOG", default_value = "info")]
    pub proxy_log: String,

    #[arg(long, env = "APIWITNESS_PROXY_CPU_REQUEST", default_value = "10m")]
    pub proxy_cpu_request: String,

    #[arg(long, env = "APIWITNESS_PROXY_MEMORY_REQUEST", default_value = "32Mi")]
    pub proxy_memory_request: String,

    #[arg(long, env = "APIWITNESS_PROXY_CPU_LIMIT")]
    pub proxy_cpu_limit: Option<String>,

    #[arg(long, env = "APIWITNESS_PROXY_MEMORY_LIMIT", default_value = "128Mi")]
    pub proxy_memory_limit: String,

    #[arg(long, env = "APIWITNESS_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    #[arg(long, env = "APIWITNESS_LOG", default_value = "info")]
    pub log: String,

    #[arg(
        long,
        env = "APIWITNESS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--cert-lifetime must be at least 10m (kube-controller-manager's minimum), got {0:?}")]
    CertLifetime(Duration),
    #[error("--aggregator-url must be an http(s) URL, got {0:?}")]
    AggregatorUrl(String),
    #[error("--namespace (POD_NAMESPACE) must not be empty")]
    Namespace,
}

impl Config {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.cert_lifetime < Duration::from_secs(600) {
            return Err(ConfigError::CertLifetime(self.cert_lifetime));
        }
        if !(self.aggregator_url.starts_with("http://")
            || self.aggregator_url.starts_with("https://"))
        {
            return Err(ConfigError::AggregatorUrl(self.aggregator_url.clone()));
        }
        if self.namespace.is_empty() {
            return Err(ConfigError::Namespace);
        }
        Ok(())
    }

    pub fn certify_url(&self) -> String {
        self.certify_url.clone().unwrap_or_else(|| {
            format!(
                "https://{}.{}.svc:443/certify",
                self.service_name, self.namespace
            )
        })
    }

    /// The injection settings, given what was learnt from the cluster.
    pub fn settings(
        &self,
        certify_ca_pem: String,
        apiserver_service: SocketAddr,
        apiserver_endpoints: Vec<SocketAddr>,
        native_sidecars: bool,
    ) -> InjectSettings {
        InjectSettings {
            interceptor_image: self.interceptor_image.clone(),
            init_iptables_image: self.init_iptables_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            mode: self.mode,
            aggregator_url: self.aggregator_url.clone(),
            certify_url: self.certify_url(),
            certify_ca_pem,
            apiserver_service,
            apiserver_endpoints,
            proxy_uid: self.proxy_uid,
            proxy_port: self.proxy_port,
            admin_port: self.proxy_admin_port,
            body_limit: self.body_limit,
            log_level: self.proxy_log.clone(),
            resources: Resources {
                cpu_request: self.proxy_cpu_request.clone(),
                memory_request: self.proxy_memory_request.clone(),
                cpu_limit: self.proxy_cpu_limit.clone(),
                memory_limit: self.proxy_memory_limit.clone(),
            },
            token_audience: self.token_audience.clone(),
            native_sidecars,
            signer: self.signer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(overrides: &[(&str, &str)]) -> Config {
        let mut flags = vec![
            ("--namespace", "apiwitness"),
            ("--interceptor-image", "i"),
            ("--init-iptables-image", "j"),
            ("--aggregator-url", "http://agg:8080"),
        ];
        for (flag, value) in overrides {
            flags.retain(|(f, _)| f != flag);
            flags.push((flag, value));
        }
        let args =
            std::iter::once("apiwitness-injector").chain(flags.iter().flat_map(|(f, v)| [*f, *v]));
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn defaults_check_and_name_the_service() {
        let c = parse(&[]);
        c.check().unwrap();
        assert_eq!(
            c.certify_url(),
            "https://apiwitness-injector.apiwitness.svc:443/certify"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(&[("--cert-lifetime", "5m")]).check().unwrap_err();
        assert!(err.to_string().contains("at least 10m"), "{err}");
        let err = parse(&[("--aggregator-url", "agg:8080")])
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("http(s) URL"), "{err}");
    }
}
