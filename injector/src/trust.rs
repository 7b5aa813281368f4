//! Private-CA mode's trust: in each namespace with injected pods, a
//! ConfigMap holding the cluster CA followed by the injector's CA, which the
//! injected pods' app containers read as their `ca.crt`. Only those pods
//! trust certificates that the injector signs. The injector keeps each
//! bundle equal to the namespace's current `kube-root-ca.crt` plus its CA.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;

/// The ConfigMap in every namespace that holds the cluster CA.
pub const CLUSTER_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Ours: the cluster CA plus the injector's CA.
pub const BUNDLE_CONFIGMAP: &str = "apiwitness-ca-bundle";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "apiwitness-injector");

#[derive(Debug, thiserror::Error)]
#[error("the trust bundle of namespace {namespace}: {message}")]
pub struct TrustError {
    pub namespace: String,
    pub message: String,
}

/// The bundle's text: the cluster CA, then ours.
pub fn bundle(cluster_ca: &str, injector_ca: &str) -> String {
    let mut out = cluster_ca.trim_end().to_string();
    out.push('\n');
    out.push_str(injector_ca.trim_end());
    out.push('\n');
    out
}

/// The bundles this injector keeps, with the namespaces already made sure
/// of, so that only a namespace's first injected pod waits for a write.
pub struct Bundles {
    client: kube::Client,
    ca: crate::SharedCa,
    done: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Bundles {
    pub fn new(client: kube::Client, ca: crate::SharedCa) -> Bundles {
        Bundles {
            client,
            ca,
            done: Default::default(),
        }
    }

    fn ca_cert(&self) -> String {
        self.ca.read().map(|c| c.0.clone()).unwrap_or_default()
    }

    /// Makes sure `namespace` has its bundle, before a pod there mounts it.
    pub async fn ensure(&self, namespace: &str) -> Result<(), TrustError> {
        let ca = self.ca_cert();
        if self
            .done
            .lock()
            .ok()
            .and_then(|d| d.get(namespace).cloned())
            .as_deref()
            == Some(ca.as_str())
        {
            return Ok(());
        }
        ensure(&self.client, namespace, &ca).await?;
        if let Ok(mut d) = self.done.lock() {
            d.insert(namespace.to_string(), ca);
        }
        Ok(())
    }

    pub async fn refresh_all(&self) -> Result<usize, TrustError> {
        let ca = self.ca_cert();
        let written = refresh_all(&self.client, &ca).await?;
        if written > 0
            && let Ok(mut d) = self.done.lock()
        {
            d.clear();
        }
        Ok(written)
    }
}

/// Creates or updates the namespace's bundle; true if it was written.
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    injector_ca: &str,
) -> Result<bool, TrustError> {
    let err = |message: String| TrustError {
        namespace: namespace.into(),
        message,
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cluster_ca = api
        .get_opt(CLUSTER_CA_CONFIGMAP)
        .await
        .map_err(|e| err(e.to_string()))?
        .and_then(|c| c.data)
        .and_then(|d| d.get("ca.crt").cloned())
        .ok_or_else(|| {
            err(format!(
                "no {CLUSTER_CA_CONFIGMAP} ConfigMap yet (kube-controller-manager publishes it)"
            ))
        })?;
    let wanted: BTreeMap<String, String> =
        [("ca.crt".to_string(), bundle(&cluster_ca, injector_ca))].into();
    for _ in 0..3 {
        let existing = api
            .get_opt(BUNDLE_CONFIGMAP)
            .await
            .map_err(|e| err(e.to_string()))?;
        let written = match existing {
            Some(current) if current.data.as_ref() == Some(&wanted) => return Ok(false),
            Some(mut current) => {
                current.data = Some(wanted.clone());
                api.replace(BUNDLE_CONFIGMAP, &PostParams::default(), &current)
                    .await
            }
            None => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(BUNDLE_CONFIGMAP.into()),
                        namespace: Some(namespace.into()),
                        labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
                        ..Default::default()
                    },
                    data: Some(wanted.clone()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &map).await
            }
        };
        match written {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Err(err("it kept changing under us".into()))
}

/// Brings every bundle the injector made up to date (a rotated cluster CA,
/// or a new injector CA).
pub async fn refresh_all(client: &kube::Client, injector_ca: &str) -> Result<usize, TrustError> {
    let all: Api<ConfigMap> = Api::all(client.clone());
    let maps = all
        .list(
            &ListParams::default()
                .labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
                .fields(&format!("metadata.name={BUNDLE_CONFIGMAP}")),
        )
        .await
        .map_err(|e| TrustError {
            namespace: "*".into(),
            message: e.to_string(),
        })?;
    let mut written = 0;
    for map in maps {
        if let Some(ns) = map.metadata.namespace
            && ensure(client, &ns, injector_ca).await?
        {
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_the_cluster_ca_then_ours() {
        let b = bundle(
            "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n\n",
            "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----",
        );
        assert_eq!(
            b,
            "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n"
        );
    }
}
