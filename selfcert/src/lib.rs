//! A service's own TLS on Kubernetes: a CA and a serving certificate that it
//! makes itself and keeps in a Secret (so that replicas and restarts share
//! them), the caBundle of whatever calls it (a MutatingWebhookConfiguration,
//! an APIService) kept equal to that CA, and a resolver that serves a
//! rotated certificate without a restart. Nothing is generated at chart
//! render time. The injector and the aggregator both use it.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating: {0}")]
    Generate(String),
    #[error("the Secret {0} holds no usable {1}")]
    BadSecret(String, &'static str),
    #[error("the apiserver: {0}")]
    Api(String),
}

/// The four PEM documents kept in the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// What the serving certificate must name: the Service's DNS names, and any
/// addresses it is reached by.
#[derive(Debug, Clone)]
pub struct ServingNames {
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// The names of `namespace/service`: its DNS names, and its ClusterIP
    /// once it has one.
    pub async fn of_service(
        client: &kube::Client,
        namespace: &str,
        service: &str,
        cluster_domain: &str,
    ) -> Result<ServingNames, CertError> {
        let found = Api::<Service>::namespaced(client.clone(), namespace)
            .get_opt(service)
            .await
            .map_err(|e| CertError::Api(format!("reading Service {namespace}/{service}: {e}")))?;
        let ip = found
            .and_then(|s| s.spec)
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse().ok());
        Ok(ServingNames {
            service: service.into(),
            namespace: namespace.into(),
            cluster_domain: cluster_domain.into(),
            ips: ip.into_iter().collect(),
        })
    }

    pub fn dns(&self) -> Vec<String> {
        let (s, n) = (&self.service, &self.namespace);
        vec![
            s.clone(),
            format!("{s}.{n}"),
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.{}", self.cluster_domain),
        ]
    }
}

fn gen_err(e: impl std::fmt::Display) -> CertError {
    CertError::Generate(e.to_string())
}

pub fn new_ca() -> Result<(String, String), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "apiwitness-injector-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
    params.not_after = (SystemTime::now() + CA_LIFETIME).into();
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate signed by the CA in `ca_cert`/`ca_key`.
pub fn new_serving(
    ca_cert: &str,
    ca_key: &str,
    names: &ServingNames,
    lifetime: Duration,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).map_err(gen_err)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::new(names.dns()).map_err(gen_err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}.svc", names.service, names.namespace),
    );
    for ip in &names.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = (SystemTime::now() - Duration::from_secs(300)).into();
    params.not_after = (SystemTime::now() + lifetime).into();
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The validity window of a PEM certificate.
pub fn validity(cert_pem: &str) -> Option<(SystemTime, SystemTime)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let to = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Some((
        to(cert.validity().not_before),
        to(cert.validity().not_after),
    ))
}

/// Whether the serving certificate must be replaced: past two thirds of its
/// life, or not naming what it must.
pub fn needs_renewal(bundle: &Bundle, names: &ServingNames, now: SystemTime) -> bool {
    let Some((from, until)) = validity(&bundle.cert) else {
        return true;
    };
    let life = until.duration_since(from).unwrap_or_default();
    if now + life / 3 >= until {
        return true;
    }
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(bundle.cert.as_bytes()) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return true;
    };
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for n in &san.value.general_names {
        match n {
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()))
            }
            _ => {}
        }
    }
    names.dns().iter().any(|d| !dns.contains(d)) || names.ips.iter().any(|ip| !ips.contains(ip))
}

impl Bundle {
    fn from_secret(secret: &Secret, name: &str) -> Result<Bundle, CertError> {
        let data = secret.data.clone().unwrap_or_default();
        let get = |k: &'static str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| CertError::BadSecret(name.into(), k))
        };
        Ok(Bundle {
            ca_cert: get("ca.crt")?,
            ca_key: get("ca.key")?,
            cert: get("tls.crt")?,
            key: get("tls.key")?,
        })
    }

    fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            ("ca.crt", &self.ca_cert),
            ("ca.key", &self.ca_key),
            ("tls.crt", &self.cert),
            ("tls.key", &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }

    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let certs = rustls_pemfile::certs(&mut self.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(gen_err)?;
        let key = rustls_pemfile::private_key(&mut self.key.as_bytes())
            .map_err(gen_err)?
            .ok_or_else(|| gen_err("no private key"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(gen_err)?;
        Ok(Arc::new(CertifiedKey::new(certs, signing)))
    }
}

/// Reads the Secret, creating or renewing what is missing or old, and
/// returns what it then holds. Replicas race safely: the loser of a create or
/// an update re-reads the winner's.
pub async fn ensure_bundle(
    client: &kube::Client,
    namespace: &str,
    secret_name: &str,
    names: &ServingNames,
    lifetime: Duration,
) -> Result<Bundle, CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let existing = secrets
            .get_opt(secret_name)
            .await
            .map_err(|e| CertError::Api(e.to_string()))?;
        let current = existing
            .as_ref()
            .map(|s| Bundle::from_secret(s, secret_name));
        let (ca_cert, ca_key) = match &current {
            Some(Ok(b)) if !needs_renewal(b, names, SystemTime::now()) => return Ok(b.clone()),
            Some(Ok(b)) => (b.ca_cert.clone(), b.ca_key.clone()),
            _ => new_ca()?,
        };
        let (cert, key) = new_serving(&ca_cert, &ca_key, names, lifetime)?;
        let bundle = Bundle {
            ca_cert,
            ca_key,
            cert,
            key,
        };
        let mut secret = existing.clone().unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.into()),
                namespace: Some(namespace.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "apiwitness-injector".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        });
        secret.data = Some(bundle.to_data());
        let written = if existing.is_some() {
            secrets
                .replace(secret_name, &PostParams::default(), &secret)
                .await
        } else {
            secrets.create(&PostParams::default(), &secret).await
        };
        match written {
            Ok(_) => return Ok(bundle),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => {
                return Err(CertError::Api(format!(
                    "writing Secret {namespace}/{secret_name}: {e}"
                )));
            }
        }
    }
    Err(CertError::Api(format!(
        "Secret {namespace}/{secret_name} kept changing under us"
    )))
}

/// One refresh: what the Secret holds now, created or renewed as needed.
/// When it differs from `current` (a renewal, another replica's rotation, a
/// deleted Secret), the resolver serves it from then on, and it is returned.
pub async fn renew(
    client: &kube::Client,
    namespace: &str,
    secret_name: &str,
    names: &ServingNames,
    lifetime: Duration,
    current: &Bundle,
    resolver: &Resolver,
) -> Result<Option<Bundle>, CertError> {
    let bundle = ensure_bundle(client, namespace, secret_name, names, lifetime).await?;
    if &bundle == current {
        return Ok(None);
    }
    resolver.set(bundle.certified_key()?);
    Ok(Some(bundle))
}

/// Sets the caBundle of an APIService to `ca_pem`; true if it changed.
pub async fn patch_apiservice_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<bool, CertError> {
    let api: Api<APIService> = Api::all(client.clone());
    for _ in 0..5 {
        let Some(mut service) = api
            .get_opt(name)
            .await
            .map_err(|e| CertError::Api(e.to_string()))?
        else {
            return Err(CertError::Api(format!("no APIService {name}")));
        };
        let wanted = ByteString(ca_pem.as_bytes().to_vec());
        let Some(spec) = service.spec.as_mut() else {
            return Err(CertError::Api(format!("APIService {name} has no spec")));
        };
        if spec.ca_bundle.as_ref() == Some(&wanted) {
            return Ok(false);
        }
        spec.ca_bundle = Some(wanted);
        match api.replace(name, &PostParams::default(), &service).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(CertError::Api(format!("patching {name}: {e}"))),
        }
    }
    Err(CertError::Api(format!("{name} kept changing under us")))
}

/// Sets the caBundle of every webhook of the configuration to `ca_pem`.
pub async fn patch_ca_bundle(
    client: &kube::Client,
    config_name: &str,
    ca_pem: &str,
) -> Result<bool, CertError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for _ in 0..5 {
        let Some(mut config) = api
            .get_opt(config_name)
            .await
            .map_err(|e| CertError::Api(e.to_string()))?
        else {
            return Err(CertError::Api(format!(
                "no MutatingWebhookConfiguration {config_name}"
            )));
        };
        let wanted = ByteString(ca_pem.as_bytes().to_vec());
        let mut changed = false;
        for hook in config.webhooks.iter_mut().flatten() {
            if hook.client_config.ca_bundle.as_ref() != Some(&wanted) {
                hook.client_config.ca_bundle = Some(wanted.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        match api
            .replace(config_name, &PostParams::default(), &config)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(CertError::Api(format!("patching {config_name}: {e}"))),
        }
    }
    Err(CertError::Api(format!(
        "{config_name} kept changing under us"
    )))
}

/// Serves whatever certificate was stored last.
#[derive(Debug, Default)]
pub struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Resolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(key);
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ServingNames {
        ServingNames {
            service: "apiwitness-injector".into(),
            namespace: "apiwitness".into(),
            cluster_domain: "cluster.local".into(),
            ips: vec!["10.96.0.20".parse().unwrap()],
        }
    }

    #[test]
    fn a_fresh_bundle_verifies_and_needs_no_renewal() {
        let (ca_cert, ca_key) = new_ca().unwrap();
        let (cert, key) =
            new_serving(&ca_cert, &ca_key, &names(), Duration::from_secs(3600)).unwrap();
        let bundle = Bundle {
            ca_cert,
            ca_key,
            cert,
            key,
        };
        assert!(!needs_renewal(&bundle, &names(), SystemTime::now()));
        bundle.certified_key().unwrap();
        // Past two thirds of its life it is renewed.
        assert!(needs_renewal(
            &bundle,
            &names(),
            SystemTime::now() + Duration::from_secs(2500)
        ));
        // A new address for the Service: renewed to name it.
        let mut moved = names();
        moved.ips = vec!["10.96.0.21".parse().unwrap()];
        assert!(needs_renewal(&bundle, &moved, SystemTime::now()));
    }

    #[test]
    fn the_serving_certificate_chains_to_the_ca() {
        use rustls::client::danger::ServerCertVerifier;
        let (ca_cert, ca_key) = new_ca().unwrap();
        let (cert, _) =
            new_serving(&ca_cert, &ca_key, &names(), Duration::from_secs(3600)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_cert.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let name =
            rustls::pki_types::ServerName::try_from("apiwitness-injector.apiwitness.svc").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }
}
