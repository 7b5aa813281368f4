//! The certify endpoint: an interceptor sends its CSR with its pod's
//! projected token, and gets back a serving certificate for the apiserver's
//! names, signed through a real CertificateSigningRequest object.
//!
//! Every check is made before anything is signed: the token names a live,
//! injected pod; the CSR names that pod and asks for exactly the apiserver's
//! names. In cluster-CA mode the injector approves the CSR under the
//! `kubernetes.io/kubelet-serving` signer, and kube-controller-manager signs
//! it with the cluster CA that every pod already trusts.

use crate::settings::SignerMode;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PatchParams, PostParams};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The signer of private-CA mode, which the injector itself serves.
pub const PRIVATE_SIGNER: &str = "apiwitness.io/interceptor";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the apiserver: {0}")]
    Upstream(String),
    #[error(
        "the CertificateSigningRequest {0} was not signed within {1:?}: is kube-controller-manager's csrsigning controller running?"
    )]
    NotSigned(String, Duration),
}

/// The names a CSR must ask for: those of the `kubernetes` Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNames {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl ExpectedNames {
    pub fn new(cluster_domain: &str, service_ip: IpAddr) -> ExpectedNames {
        ExpectedNames {
            dns: [
                "kubernetes".to_string(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                format!("kubernetes.default.svc.{cluster_domain}"),
            ]
            .into(),
            ips: [service_ip, IpAddr::from([127, 0, 0, 1])].into(),
        }
    }
}

/// What a CSR says, as far as the checks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrContent {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    pub other_names: usize,
}

pub fn parse_csr(pem: &str) -> Result<CsrContent, CertifyError> {
    let bad = |m: String| {
        CertifyError::BadRequest(format!("the csr is not a PEM certificate request: {m}"))
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(bad(format!("its PEM label is {:?}", pem.label)));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| bad(e.to_string()))?;
    let subject = &csr.certification_request_info.subject;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue| a.as_str().unwrap_or("").to_string();
    let mut content = CsrContent {
        common_name: subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default(),
        organizations: subject.iter_organization().map(text).collect(),
        dns: BTreeSet::new(),
        ips: BTreeSet::new(),
        other_names: 0,
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => {
                        content.dns.insert(d.to_string());
                    }
                    GeneralName::IPAddress(bytes) => match ip_from(bytes) {
                        Some(ip) => {
                            content.ips.insert(ip);
                        }
                        None => content.other_names += 1,
                    },
                    _ => content.other_names += 1,
                }
            }
        }
    }
    Ok(content)
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Checks a CSR against the pod it must be for and the names it may ask for.
pub fn check_csr(
    csr: &CsrContent,
    namespace: &str,
    pod: &str,
    expected: &ExpectedNames,
) -> Result<(), CertifyError> {
    let cn = format!("system:node:apiwitness:{namespace}/{pod}");
    if csr.common_name != cn {
        return Err(CertifyError::Forbidden(format!(
            "the CSR's common name is {:?}; the token's pod may only ask for {cn:?}",
            csr.common_name
        )));
    }
    if csr.organizations != ["system:nodes"] {
        return Err(CertifyError::BadRequest(format!(
            "the CSR's organization must be exactly system:nodes, not {:?}",
            csr.organizations
        )));
    }
    if csr.other_names > 0 || csr.dns != expected.dns || csr.ips != expected.ips {
        return Err(CertifyError::Forbidden(format!(
            "the CSR must name exactly the apiserver's names {:?} and {:?}; it asks for {:?} and {:?}{}",
            expected.dns,
            expected.ips,
            csr.dns,
            csr.ips,
            if csr.other_names > 0 {
                " and other kinds of names"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// The pod a projected token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
}

pub struct Certifier {
    pub client: kube::Client,
    pub audience: String,
    pub expected: ExpectedNames,
    pub lifetime: Duration,
    pub sign_timeout: Duration,
    pub signer: SignerMode,
    /// The injector's CA (certificate and key PEM), which signs in
    /// private-CA mode; kept current by the refresh loop.
    pub private_ca: Arc<RwLock<(String, String)>>,
}

impl Certifier {
    pub async fn certify(&self, token: &str, csr_pem: &str) -> Result<String, CertifyError> {
        let csr = parse_csr(csr_pem)?;
        let pod = self.authenticate(token).await?;
        check_csr(&csr, &pod.namespace, &pod.name, &self.expected)?;
        self.check_pod(&pod).await?;
        self.sign(&pod, csr_pem).await
    }

    async fn authenticate(&self, token: &str) -> Result<BoundPod, CertifyError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| CertifyError::Upstream(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                return Err(CertifyError::Unauthenticated(format!(
                    "the token is not valid for audience {:?}{}",
                    self.audience,
                    status.error.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
        };
        let username = user.username.unwrap_or_default();
        let mut parts = username
            .strip_prefix("system:serviceaccount:")
            .unwrap_or("")
            .splitn(2, ':');
        let (Some(namespace), Some(sa)) = (parts.next(), parts.next()) else {
            return Err(CertifyError::Forbidden(format!(
                "{username} is not a ServiceAccount: only an injected pod's token may ask for a certificate"
            )));
        };
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let (Some(name), Some(uid)) = (first(POD_NAME_EXTRA), first(POD_UID_EXTRA)) else {
            return Err(CertifyError::Forbidden(
                "the token is not bound to a pod: send the pod's projected ServiceAccount token"
                    .into(),
            ));
        };
        Ok(BoundPod {
            namespace: namespace.into(),
            name,
            uid,
            service_account: sa.into(),
        })
    }

    async fn check_pod(&self, bound: &BoundPod) -> Result<(), CertifyError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &bound.namespace);
        let pod = pods
            .get_opt(&bound.name)
            .await
            .map_err(|e| CertifyError::Upstream(format!("reading pod: {e}")))?
            .ok_or_else(|| {
                CertifyError::Forbidden(format!(
                    "pod {}/{} does not exist",
                    bound.namespace, bound.name
                ))
            })?;
        if pod.metadata.uid.as_deref() != Some(&bound.uid) {
            return Err(CertifyError::Forbidden(format!(
                "the token was issued to an earlier pod {}/{}",
                bound.namespace, bound.name
            )));
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return Err(CertifyError::Forbidden(format!(
                "pod {}/{} is terminating",
                bound.namespace, bound.name
            )));
        }
        let injected = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::inject::STATUS))
            .is_some_and(|v| v == "injected");
        if !injected {
            return Err(CertifyError::Forbidden(format!(
                "pod {}/{} was not injected by apiwitness",
                bound.namespace, bound.name
            )));
        }
        Ok(())
    }

    async fn sign(&self, pod: &BoundPod, csr_pem: &str) -> Result<String, CertifyError> {
        let csrs: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        let object = CertificateSigningRequest {
            metadata: ObjectMeta {
                generate_name: Some(
                    format!("apiwitness-{}-{}-", pod.namespace, pod.name)
                        .chars()
                        .take(200)
                        .collect(),
                ),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "apiwitness-injector".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(csr_pem.as_bytes().to_vec()),
                signer_name: match self.signer {
                    SignerMode::ClusterCa => KUBELET_SERVING.into(),
                    SignerMode::PrivateCa => PRIVATE_SIGNER.into(),
                },
                usages: Some(vec!["digital signature".into(), "server auth".into()]),
                expiration_seconds: Some(self.lifetime.as_secs().max(600) as i32),
                ..Default::default()
            },
            status: None,
        };
        let created = csrs
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| {
                CertifyError::Upstream(format!("creating the CertificateSigningRequest: {e}"))
            })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let result = self.approve_and_wait(&csrs, &name, pod).await;
        // A signed or refused CSR has served its purpose either way.
        let _ = csrs.delete(&name, &DeleteParams::default()).await;
        result
    }

    async fn approve_and_wait(
        &self,
        csrs: &Api<CertificateSigningRequest>,
        name: &str,
        pod: &BoundPod,
    ) -> Result<String, CertifyError> {
        let approval = CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    reason: Some("ApiwitnessInjectedPod".into()),
                    message: Some(format!(
                        "pod {}/{} (uid {}) is injected, and asked for exactly the apiserver's names",
                        pod.namespace, pod.name, pod.uid
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        csrs.patch_approval(
            name,
            &PatchParams::default(),
            &kube::api::Patch::Merge(&approval),
        )
        .await
        .map_err(|e| CertifyError::Upstream(format!("approving {name}: {e}")))?;
        if self.signer == SignerMode::PrivateCa {
            self.sign_privately(csrs, name).await?;
        }
        let deadline = tokio::time::Instant::now() + self.sign_timeout;
        loop {
            let current = csrs
                .get(name)
                .await
                .map_err(|e| CertifyError::Upstream(format!("reading {name}: {e}")))?;
            let status = current.status.unwrap_or_default();
            if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                return String::from_utf8(cert.0).map_err(|_| {
                    CertifyError::Upstream(format!("{name}'s certificate is not PEM text"))
                });
            }
            if let Some(failed) = status
                .conditions
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "Failed" || c.type_ == "Denied")
            {
                return Err(CertifyError::Upstream(format!(
                    "{name} was {}: {}",
                    failed.type_.to_lowercase(),
                    failed.message.clone().unwrap_or_default()
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CertifyError::NotSigned(name.into(), self.sign_timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Certifier {
    /// Private-CA mode: the injector is the signer. It signs the approved
    /// request with its CA and writes the certificate into the object's
    /// status, as any signer does.
    async fn sign_privately(
        &self,
        csrs: &Api<CertificateSigningRequest>,
        name: &str,
    ) -> Result<(), CertifyError> {
        let current = csrs
            .get(name)
            .await
            .map_err(|e| CertifyError::Upstream(format!("reading {name}: {e}")))?;
        let request = String::from_utf8(current.spec.request.0.clone())
            .map_err(|_| CertifyError::BadRequest("the CSR is not PEM text".into()))?;
        let (ca_cert, ca_key) = self
            .private_ca
            .read()
            .map(|c| c.clone())
            .map_err(|_| CertifyError::Upstream("the CA lock is poisoned".into()))?;
        let certificate = sign_with_ca(&request, &ca_cert, &ca_key, self.lifetime)?;
        let status = CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: Some(ByteString(certificate.into_bytes())),
                ..Default::default()
            }),
            ..Default::default()
        };
        csrs.patch_status(
            name,
            &PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .map_err(|e| CertifyError::Upstream(format!("writing {name}'s certificate: {e}")))?;
        Ok(())
    }
}

/// A server certificate for the CSR's key and names, signed by the CA.
pub fn sign_with_ca(
    csr_pem: &str,
    ca_cert: &str,
    ca_key: &str,
    lifetime: Duration,
) -> Result<String, CertifyError> {
    let failed = |e: rcgen::Error| CertifyError::Upstream(format!("signing: {e}"));
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CertifyError::BadRequest(format!("the CSR: {e}")))?;
    let now = std::time::SystemTime::now();
    csr.params.not_before = (now - Duration::from_secs(300)).into();
    csr.params.not_after = (now + lifetime).into();
    csr.params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    csr.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    csr.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let key = rcgen::KeyPair::from_pem(ca_key).map_err(failed)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert, key).map_err(failed)?;
    Ok(csr.signed_by(&issuer).map_err(failed)?.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn csr(cn: &str, dns: &[&str], ips: &[&str]) -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    const NAMES: [&str; 4] = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];

    fn expected() -> ExpectedNames {
        ExpectedNames::new("cluster.local", "10.96.0.1".parse().unwrap())
    }

    #[test]
    fn the_interceptors_csr_passes() {
        let pem = csr(
            "system:node:apiwitness:shop/web-1",
            &NAMES,
            &["10.96.0.1", "127.0.0.1"],
        );
        let content = parse_csr(&pem).unwrap();
        check_csr(&content, "shop", "web-1", &expected()).unwrap();
    }

    #[test]
    fn another_pods_name_is_refused() {
        let pem = csr(
            "system:node:apiwitness:shop/web-2",
            &NAMES,
            &["10.96.0.1", "127.0.0.1"],
        );
        let err = check_csr(&parse_csr(&pem).unwrap(), "shop", "web-1", &expected()).unwrap_err();
        assert!(matches!(err, CertifyError::Forbidden(_)), "{err}");
    }

    #[test]
    fn an_extra_name_is_refused() {
        let mut names = NAMES.to_vec();
        names.push("bank.example.com");
        let pem = csr(
            "system:node:apiwitness:shop/web-1",
            &names,
            &["10.96.0.1", "127.0.0.1"],
        );
        let err = check_csr(&parse_csr(&pem).unwrap(), "shop", "web-1", &expected()).unwrap_err();
        assert!(err.to_string().contains("bank.example.com"), "{err}");
        let pem = csr("system:node:apiwitness:shop/web-1", &NAMES, &["10.96.0.1"]);
        assert!(check_csr(&parse_csr(&pem).unwrap(), "shop", "web-1", &expected()).is_err());
    }

    #[test]
    fn the_private_ca_signs_a_server_certificate_for_the_csrs_names() {
        let (ca_cert, ca_key) = apiwitness_selfcert::new_ca().unwrap();
        let pem = csr(
            "system:node:apiwitness:shop/web-1",
            &NAMES,
            &["10.96.0.1", "127.0.0.1"],
        );
        let cert = sign_with_ca(&pem, &ca_cert, &ca_key, Duration::from_secs(600)).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let x509 = parsed.parse_x509().unwrap();
        let sans = x509.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 6);
        assert!(
            x509.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        let life = x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp();
        assert_eq!(life, 900);
    }

    #[test]
    fn garbage_is_a_bad_request() {
        assert!(matches!(
            parse_csr("hello"),
            Err(CertifyError::BadRequest(_))
        ));
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()])
            .unwrap()
            .cert
            .pem();
        let err = parse_csr(&cert).unwrap_err();
        assert!(err.to_string().contains("PEM label"), "{err}");
    }
}
