//! Requests that kube-apiserver proxies to the aggregated API carry the
//! user's identity in headers (`X-Remote-User`, `X-Remote-Group`,
//! `X-Remote-Extra-*`), and are trusted only on a connection whose client
//! certificate the front-proxy CA signed, for one of the allowed names. What
//! those are comes from kube-system/extension-apiserver-authentication, as
//! for any extension apiserver.

use crate::auth::Caller;
use axum::http::HeaderMap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontProxy {
    pub client_ca_pem: String,
    /// Empty: any name the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the front-proxy configuration (kube-system/extension-apiserver-authentication): {0}")]
pub struct FrontProxyError(pub String);

fn list(data: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    data.get(key)
        .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
        .unwrap_or_default()
}

impl FrontProxy {
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<FrontProxy, FrontProxyError> {
        let client_ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|c| !c.is_empty())
            .cloned()
            .ok_or_else(|| FrontProxyError("no requestheader-client-ca-file: start kube-apiserver with --requestheader-client-ca-file".into()))?;
        let or = |v: Vec<String>, d: &str| if v.is_empty() { vec![d.to_string()] } else { v };
        Ok(FrontProxy {
            client_ca_pem,
            allowed_names: list(data, "requestheader-allowed-names"),
            username_headers: or(
                list(data, "requestheader-username-headers"),
                "X-Remote-User",
            ),
            uid_headers: list(data, "requestheader-uid-headers"),
            group_headers: or(list(data, "requestheader-group-headers"), "X-Remote-Group"),
            extra_prefixes: or(
                list(data, "requestheader-extra-headers-prefix"),
                "X-Remote-Extra-",
            ),
        })
    }

    pub async fn load(client: &kube::Client) -> Result<FrontProxy, FrontProxyError> {
        let map = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get("extension-apiserver-authentication")
            .await
            .map_err(|e| FrontProxyError(e.to_string()))?;
        FrontProxy::from_data(&map.data.unwrap_or_default())
    }

    /// Whether a verified client certificate's common name may proxy.
    pub fn allows(&self, common_name: &str) -> bool {
        self.allowed_names.is_empty() || self.allowed_names.iter().any(|n| n == common_name)
    }

    /// The user the apiserver says it proxies for.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let first = |names: &[String]| {
            names.iter().find_map(|n| {
                headers
                    .get(n.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
        };
        let username = first(&self.username_headers).filter(|u| !u.is_empty())?;
        let groups = self
            .group_headers
            .iter()
            .flat_map(|n| headers.get_all(n.as_str()).iter())
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            for prefix in &self.extra_prefixes {
                let Some(key) = strip_prefix_ignore_case(name.as_str(), prefix) else {
                    continue;
                };
                let key = percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .to_lowercase();
                if let Ok(v) = value.to_str() {
                    extra.entry(key).or_default().push(v.to_string());
                }
            }
        }
        Some(Caller {
            username,
            uid: first(&self.uid_headers).unwrap_or_default(),
            groups,
            extra,
        })
    }

    /// The TLS client verifier: certificates of the front-proxy CA only.
    pub fn client_verifier(
        &self,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, FrontProxyError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.client_ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| FrontProxyError(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| FrontProxyError(e.to_string()))?;
        }
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| FrontProxyError(e.to_string()))
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    (name.len() > prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &name[prefix.len()..])
}

/// The common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> FrontProxy {
        let data: BTreeMap<String, String> = [
            ("requestheader-client-ca-file", "PEM"),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        FrontProxy::from_data(&data).unwrap()
    }

    #[test]
    fn identity_comes_from_the_configured_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", "alice".parse().unwrap());
        h.append("x-remote-group", "dev".parse().unwrap());
        h.append("x-remote-group", "system:authenticated".parse().unwrap());
        h.insert("x-remote-extra-scopes%2Fwrite", "yes".parse().unwrap());
        let c = proxy().caller(&h).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.groups, ["dev", "system:authenticated"]);
        assert_eq!(c.extra.get("scopes/write"), Some(&vec!["yes".to_string()]));
        assert!(proxy().caller(&HeaderMap::new()).is_none());
    }

    #[test]
    fn only_allowed_names_may_proxy() {
        assert!(proxy().allows("front-proxy-client"));
        assert!(!proxy().allows("someone-else"));
        assert!(
            FrontProxy {
                allowed_names: vec![],
                ..proxy()
            }
            .allows("anyone")
        );
        assert!(FrontProxy::from_data(&BTreeMap::new()).is_err());
    }
}
