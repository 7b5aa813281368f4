//! The two TLS sides of the interceptor.
//!
//! Toward the client it serves a certificate for the apiserver's names. The
//! key is ECDSA P-256, made in memory and never written anywhere; the
//! certificate comes from a CertificateSigningRequest (through the injector's
//! certify endpoint) or from files. A resolver swaps certificates as they
//! rotate, so rotation drops no connection.
//!
//! Toward the apiserver it verifies the real cluster CA, which is mounted for
//! the sidecar only, read again as it changes (`trust.rs`), and sends SNI
//! `kubernetes.default.svc`.

use crate::trust::{self, CaFile, TrustMetrics};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("the key is not usable: {0}")]
    Key(String),
    #[error("the certificate is not usable: {0}")]
    Certificate(String),
    #[error("certify request to {url} failed: {reason}")]
    Certify { url: String, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// The names a client may dial the apiserver by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiserverNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ApiserverNames {
    pub fn new(
        cluster_domain: &str,
        service_ip: Option<IpAddr>,
        extra: &[String],
    ) -> ApiserverNames {
        let mut dns: Vec<String> = [
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!("kubernetes.default.svc.{cluster_domain}"),
        ]
        .into();
        let mut ips: Vec<IpAddr> = service_ip.into_iter().collect();
        ips.push(IpAddr::from([127, 0, 0, 1]));
        for name in extra {
            match name.parse::<IpAddr>() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) if !dns.contains(name) => dns.push(name.clone()),
                Err(_) => {}
            }
        }
        ApiserverNames { dns, ips }
    }
}

/// A serving certificate ready for rustls, with its validity.
#[derive(Debug, Clone)]
pub struct ServingCert {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl ServingCert {
    /// From a PEM chain (leaf first) and a PKCS#8 key.
    pub fn from_pem(
        chain_pem: &[u8],
        key: PrivateKeyDer<'static>,
        source: &str,
    ) -> Result<ServingCert, TlsError> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &chain_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Certificate(format!("{source}: {e}")))?;
        let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
            path: source.to_string(),
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| TlsError::Certificate(format!("{source}: {e}")))?;
        let validity = parsed.validity();
        let at = |ts: i64| UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
        let (not_before, not_after) = (
            at(validity.not_before.timestamp()),
            at(validity.not_after.timestamp()),
        );
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| TlsError::Key(e.to_string()))?;
        Ok(ServingCert {
            key: Arc::new(CertifiedKey::new(chain, signing_key)),
            not_before,
            not_after,
        })
    }

    pub fn from_files(cert: &Path, key: &Path) -> Result<ServingCert, TlsError> {
        let chain = read(cert)?;
        let key_pem = read(key)?;
        let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| TlsError::Key(e.to_string()))?
            .ok_or_else(|| TlsError::NoKey {
                path: key.display().to_string(),
            })?;
        ServingCert::from_pem(&chain, key_der, &cert.display().to_string())
    }

    /// When to renew: `fraction` of the way through the validity.
    pub fn renew_at(&self, fraction: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime.mul_f64(fraction.clamp(0.05, 0.95))
    }
}

/// A fresh in-memory key and a PEM CSR for the apiserver's names.
///
/// The subject is what the `kubernetes.io/kubelet-serving` signer accepts
/// (`O=system:nodes`, `CN=system:node:...`), so that the injector can have the
/// cluster CA sign it in cluster-CA mode; the usages are server auth only.
pub fn new_key_and_csr(
    names: &ApiserverNames,
    identity: &str,
) -> Result<(KeyPair, String), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("system:node:apiwitness:{identity}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    for dns in &names.dns {
        params.subject_alt_names.push(SanType::DnsName(
            dns.clone()
                .try_into()
                .map_err(|e| TlsError::Key(format!("{dns}: {e}")))?,
        ));
    }
    for ip in &names.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    Ok((key, csr))
}

pub fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// Where serving certificates come from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    Certify(Box<CertifyClient>),
}

impl CertSource {
    pub async fn obtain(&self) -> Result<ServingCert, TlsError> {
        match self {
            CertSource::Files { cert, key } => ServingCert::from_files(cert, key),
            CertSource::Certify(client) => client.certify().await,
        }
    }
}

/// The client of the injector's certify endpoint: `POST {"csr": PEM}` with the
/// pod's projected token as bearer, answered by `{"certificate": PEM chain}`.
#[derive(Debug, Clone)]
pub struct CertifyClient {
    pub url: hyper::Uri,
    pub token_file: PathBuf,
    pub tls: rustls::ClientConfig,
    pub names: ApiserverNames,
    pub identity: String,
}

impl CertifyClient {
    pub async fn certify(&self) -> Result<ServingCert, TlsError> {
        let fail = |reason: String| TlsError::Certify {
            url: self.url.to_string(),
            reason,
        };
        let (key, csr) = new_key_and_csr(&self.names, &self.identity)?;
        let token = std::fs::read_to_string(&self.token_file).map_err(|error| TlsError::Read {
            path: self.token_file.display().to_string(),
            error,
        })?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
        let request = hyper::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            )
            .body(Full::new(Bytes::from(
                serde_json::json!({ "csr": csr }).to_string(),
            )))
            .map_err(|e| fail(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
            .await
            .map_err(|_| fail("no answer within 30s".into()))?
            .map_err(|e| fail(format!("{e:#}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| fail(format!("{status}: {}", String::from_utf8_lossy(&body))))?;
        if !status.is_success() {
            return Err(fail(format!(
                "{status}: {}",
                answer["error"].as_str().unwrap_or(&answer.to_string())
            )));
        }
        let chain = answer["certificate"]
            .as_str()
            .ok_or_else(|| fail("the answer has no \"certificate\"".into()))?;
        ServingCert::from_pem(chain.as_bytes(), pkcs8(&key), self.url.to_string().as_str())
    }
}

/// Serves whatever certificate is current; rotation swaps it under running
/// listeners.
#[derive(Debug, Default)]
pub struct RotatingResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl RotatingResolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for RotatingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// The server config for clients: ALPN h2 and http/1.1, and the cipher
/// suite the apiserver would choose.
pub fn server_config(resolver: Arc<RotatingResolver>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(server_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(config)
}

/// The crypto provider toward clients, its suites in the order Go's
/// TLS server prefers them where the CPU has AES instructions: AES-128-GCM,
/// then ChaCha20-Poly1305, then AES-256-GCM. Go's server (the apiserver)
/// chooses by its own order, so a client gets the suite it would get
/// talking to the apiserver directly; most clients (OpenSSL's, rustls's)
/// list AES-256-GCM first, and with it came SHA-384, whose key schedule
/// was a tenth of the CPU of a new connection (1 KiB request, perf).
fn server_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| go_server_rank(suite.suite()));
    provider
}

/// Where a suite stands in Go's server order (lower first); the sort is
/// stable, so TLS 1.3 suites stay ahead of TLS 1.2 ones.
fn go_server_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        S::TLS13_AES_256_GCM_SHA384 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 4,
        _ => 5,
    }
}

/// A client config that trusts exactly the CAs in `ca_file` (PEM), read
/// again as it changes ([`CaFile`]).
pub fn client_config(
    ca_file: &Path,
    metrics: &TrustMetrics,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trust = CaFile::load(ca_file, provider.clone(), trust::REFRESH, metrics.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(trust)
        .with_no_client_auth();
    // A resumed session shows no certificate: one from before a CA left the
    // file would pass by it. Connections are pooled, so few are new.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A client config that trusts the CAs in `pem`; `source` names where the
/// PEM came from, for errors.
pub fn client_config_from_pem(pem: &[u8], source: &str) -> Result<rustls::ClientConfig, TlsError> {
    let roots = roots_of(pem, source)?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The CAs in `pem`, which must hold at least one; `source` names where
/// the PEM came from, for errors.
pub(crate) fn roots_of(pem: &[u8], source: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| TlsError::Certificate(format!("{source}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Certificate(format!("{source}: {e}")))?;
        any = true;
    }
    if !any {
        return Err(TlsError::NoCertificate {
            path: source.to_string(),
        });
    }
    Ok(roots)
}

/// Keeps the resolver loaded: obtains a certificate, then renews it at
/// `fraction` of its lifetime (files are re-read every 30 s, so a rotated
/// Secret mount is picked up). Failures retry with backoff while the current
/// certificate keeps serving.
pub async fn keep_certified(
    source: CertSource,
    resolver: Arc<RotatingResolver>,
    fraction: f64,
    metrics: Arc<crate::metrics::Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut retry = Duration::from_millis(500);
    loop {
        let wait = match source.obtain().await {
            Ok(cert) => {
                retry = Duration::from_millis(500);
                let expiry = cert
                    .not_after
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                metrics.certificate_expiry.set(expiry);
                let renew = cert.renew_at(fraction);
                resolver.set(cert.key);
                tracing::info!(
                    not_after = %humantime::format_rfc3339_seconds(cert.not_after),
                    renew_at = %humantime::format_rfc3339_seconds(renew),
                    "serving certificate loaded"
                );
                let until_renew = renew.duration_since(SystemTime::now()).unwrap_or_default();
                match source {
                    CertSource::Files { .. } => until_renew.min(Duration::from_secs(30)),
                    CertSource::Certify(_) => until_renew.max(Duration::from_secs(1)),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "could not obtain a serving certificate");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_apiserver_and_extras_once() {
        let names = ApiserverNames::new(
            "cluster.local",
            Some("10.96.0.1".parse().unwrap()),
            &[
                "10.96.0.1".into(),
                "api.example.com".into(),
                "kubernetes".into(),
            ],
        );
        assert_eq!(
            names.dns,
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "api.example.com"
            ]
        );
        assert_eq!(
            names.ips,
            [
                "10.96.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_self_issued_certificate_loads_and_renews_at_the_fraction() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["kubernetes.default.svc".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 11);
        let cert = params.self_signed(&key).unwrap();
        let serving = ServingCert::from_pem(cert.pem().as_bytes(), pkcs8(&key), "test").unwrap();
        let ten_days = Duration::from_secs(10 * 86400);
        assert_eq!(
            serving
                .not_after
                .duration_since(serving.not_before)
                .unwrap(),
            ten_days
        );
        assert_eq!(
            serving.renew_at(0.7),
            serving.not_before + ten_days.mul_f64(0.7)
        );
    }

    /// The suite a client with `suites` (its order) gets from the
    /// interceptor's server config, over an in-memory handshake.
    fn negotiated_suite(suites: &[rustls::CipherSuite]) -> rustls::CipherSuite {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["kubernetes.default.svc".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let serving = ServingCert::from_pem(cert.pem().as_bytes(), pkcs8(&key), "test").unwrap();
        let resolver = Arc::new(RotatingResolver::default());
        resolver.set(serving.key);
        let server_config = Arc::new(server_config(resolver).unwrap());

        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = suites
            .iter()
            .map(|wanted| {
                *provider
                    .cipher_suites
                    .iter()
                    .find(|s| s.suite() == *wanted)
                    .unwrap()
            })
            .collect();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            "kubernetes.default.svc".try_into().unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut &bytes[..]).unwrap();
            server.process_new_packets().unwrap();
            bytes.clear();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut &bytes[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking(), "the handshake did not end");
        let suite = client.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(server.negotiated_cipher_suite().unwrap().suite(), suite);
        suite
    }

    #[test]
    fn clients_get_the_suite_the_apiserver_would_choose() {
        use rustls::CipherSuite as S;
        // OpenSSL's and rustls's clients list AES-256-GCM first; Go's
        // server, and so the interceptor, answers with AES-128-GCM.
        let aes_256_first = [
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS13_AES_128_GCM_SHA256,
        ];
        assert_eq!(
            negotiated_suite(&aes_256_first),
            S::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            negotiated_suite(&[
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256
            ]),
            S::TLS13_CHACHA20_POLY1305_SHA256
        );
        // A client that offers one suite gets it.
        assert_eq!(
            negotiated_suite(&[S::TLS13_AES_256_GCM_SHA384]),
            S::TLS13_AES_256_GCM_SHA384
        );
    }

    #[test]
    fn csr_carries_the_names_and_the_kubelet_serving_subject() {
        let names = ApiserverNames::new("cluster.local", Some("10.96.0.1".parse().unwrap()), &[]);
        let (_key, csr) = new_key_and_csr(&names, "ns/pod").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let sans = &params.params.subject_alt_names;
        assert!(sans.contains(&SanType::IpAddress("10.96.0.1".parse().unwrap())));
        assert_eq!(sans.len(), names.dns.len() + names.ips.len());
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let err = ServingCert::from_files(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.crt");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            client_config(&empty, &TrustMetrics::default()),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
