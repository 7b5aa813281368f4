//! What the injector learns from the cluster: where the apiserver is (its
//! Service address and endpoints, for the redirect rules), and whether
//! native sidecars exist.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DiscoveryError(String);

fn api_err(what: &str) -> impl Fn(kube::Error) -> DiscoveryError + '_ {
    move |e| DiscoveryError(format!("{what}: {e}"))
}

/// The `kubernetes` Service's address, and its endpoints' addresses.
pub async fn apiserver_addresses(
    client: &kube::Client,
) -> Result<(SocketAddr, Vec<SocketAddr>), DiscoveryError> {
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .map_err(api_err("reading Service default/kubernetes"))?;
    let spec = service.spec.unwrap_or_default();
    let ip: IpAddr = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| DiscoveryError("Service default/kubernetes has no ClusterIP".into()))?;
    let port = spec
        .ports
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .map_or(443, |p| p.port as u16);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .map_err(api_err("listing the kubernetes EndpointSlices"))?;
    let mut endpoints = Vec::new();
    for slice in slices {
        let ports: Vec<u16> = slice
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.port.map(|p| p as u16))
            .collect();
        for endpoint in slice.endpoints {
            for addr in endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
            {
                for port in &ports {
                    let a = SocketAddr::new(addr, *port);
                    if !endpoints.contains(&a) {
                        endpoints.push(a);
                    }
                }
            }
        }
    }
    endpoints.sort();
    Ok((SocketAddr::new(ip, port), endpoints))
}

/// Native sidecars came in Kubernetes 1.29 (on by default from 1.29).
pub async fn has_native_sidecars(client: &kube::Client) -> Result<bool, DiscoveryError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(api_err("reading /version"))?;
    Ok(native_sidecars_in(&info.major, &info.minor))
}

pub fn native_sidecars_in(major: &str, minor: &str) -> bool {
    let num = |s: &str| s.trim_end_matches('+').parse::<u32>().unwrap_or(0);
    (num(major), num(minor)) >= (1, 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_from_1_29() {
        assert!(native_sidecars_in("1", "35"));
        assert!(native_sidecars_in("1", "29+"));
        assert!(!native_sidecars_in("1", "28"));
        assert!(native_sidecars_in("2", "0"));
    }
}
