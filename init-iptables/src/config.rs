//! Flags, each with an environment variable.

use crate::apply::BackendChoice;
use clap::Parser;
use std::net::SocketAddr;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "apiwitness-init-iptables",
    version,
    about = "Redirects the pod's TCP to the apiserver into the apiwitness interceptor."
)]
pub struct Config {
    /// The apiserver addresses to redirect: its Service address and its
    /// endpoints (comma-separated). Defaults to the pod's
    /// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
    #[arg(long, env = "APIWITNESS_APISERVER", value_delimiter = ',')]
    pub apiserver: Vec<SocketAddr>,

    /// The interceptor's listening port.
    #[arg(long, env = "APIWITNESS_PROXY_PORT", default_value_t = 15443)]
    pub proxy_port: u16,

    /// The interceptor's UID, whose own connections are not redirected.
    #[arg(long, env = "APIWITNESS_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,

    #[arg(
        long,
        env = "APIWITNESS_IPTABLES_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub backend: BackendChoice,

    /// Print the rules that would be loaded, and change nothing.
    #[arg(long, env = "APIWITNESS_DRY_RUN", conflicts_with = "cleanup")]
    pub dry_run: bool,

    /// After applying, prove from inside the pod that the redirect works.
    #[arg(long, env = "APIWITNESS_VERIFY", conflicts_with_all = ["cleanup", "dry_run"])]
    pub verify: bool,

    /// Remove the chain and its hook, in both families.
    #[arg(long, env = "APIWITNESS_CLEANUP")]
    pub cleanup: bool,

    /// Internal: the verification's probe, run as the interceptor's UID.
    #[arg(long, hide = true, requires = "probe_nonce")]
    pub probe_connect: Option<SocketAddr>,

    #[arg(long, hide = true)]
    pub probe_nonce: Option<String>,
}

impl Config {
    /// The addresses to redirect: the flag's, or else the pod's Service env.
    pub fn destinations(&self) -> Result<Vec<SocketAddr>, String> {
        if !self.apiserver.is_empty() {
            return Ok(self.apiserver.clone());
        }
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            "no apiserver address: pass --apiserver (APIWITNESS_APISERVER), or run in a pod that has KUBERNETES_SERVICE_HOST".to_string()
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|e| format!("KUBERNETES_SERVICE_HOST {host:?} is not an IP address: {e}"))?;
        let port: u16 = port
            .parse()
            .map_err(|e| format!("KUBERNETES_SERVICE_PORT {port:?} is not a port: {e}"))?;
        Ok(vec![SocketAddr::new(ip, port)])
    }
}
