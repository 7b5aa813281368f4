//! The CAs a client of the interceptor trusts, read from a PEM file that
//! may change while it runs.
//!
//! The apiserver's CA reaches the sidecar as the `ca.crt` of a projected
//! ServiceAccount volume, which the kubelet rewrites when the cluster's
//! `kube-root-ca.crt` changes. During a rotation of the apiserver's serving
//! CA that file first holds both CAs, and later only the new one. Read once
//! at start, as it used to be, the sidecar would refuse the apiserver as
//! soon as the apiserver served a certificate of the new CA, and every
//! request of the pod would fail until the pod was restarted; client-go
//! itself has reloaded its CA file since v0.36 (`ClientsAllowCARotation`).
//!
//! [`CaFile`] checks the file again when a handshake is made and the last
//! reading is older than its refresh interval, and at once (at most once a
//! second) when a server's certificate chains to none of the CAs it holds:
//! the first handshake after the apiserver's switch reads the new CA,
//! rather than failing for up to the interval. Connections already made
//! stay as they are, as client-go's do: the server proved itself to the
//! CAs trusted when they were made.

use crate::tls::TlsError;
use prometheus_client::metrics::counter::Counter;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How old a reading of the file may be before a handshake reads it
/// again. The kubelet updates projected volumes about once a minute.
pub const REFRESH: Duration = Duration::from_secs(30);

/// How often a failed verification may read the file again: a server
/// whose CA is in no version of the file must not make every handshake
/// read it.
const REREAD_ON_FAILURE: Duration = Duration::from_secs(1);

/// What [`CaFile`] counts, into the interceptor's metrics.
#[derive(Clone, Debug, Default)]
pub struct TrustMetrics {
    /// Times a CA file was found changed and its new CAs taken.
    pub changes: Counter,
    /// Times a CA file could not be read, or held no usable CA: the CAs
    /// read before stay trusted.
    pub failures: Counter,
}

/// The CAs of one PEM file, read again when it changes.
pub struct CaFile {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    refresh: Duration,
    current: RwLock<Reading>,
    last_failure_reread: Mutex<Option<Instant>>,
    metrics: TrustMetrics,
}

/// One reading of the file: its bytes, and a verifier of their CAs.
struct Reading {
    pem: Vec<u8>,
    verifier: Arc<WebPkiServerVerifier>,
    read_at: Instant,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFile").field("path", &self.path).finish()
    }
}

impl CaFile {
    /// Reads `path`, which must hold at least one PEM certificate.
    pub fn load(
        path: &Path,
        provider: Arc<CryptoProvider>,
        refresh: Duration,
        metrics: TrustMetrics,
    ) -> Result<Arc<CaFile>, TlsError> {
        let pem = read(path)?;
        let verifier = verifier_of(&pem, path, &provider)?;
        Ok(Arc::new(CaFile {
            path: path.to_path_buf(),
            provider,
            refresh,
            current: RwLock::new(Reading {
                pem,
                verifier,
                read_at: Instant::now(),
            }),
            last_failure_reread: Mutex::new(None),
            metrics,
        }))
    }

    /// The verifier of the CAs the file holds, read again first if the
    /// reading is older than the refresh interval.
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        {
            let reading = self.current.read().unwrap_or_else(|e| e.into_inner());
            if reading.read_at.elapsed() < self.refresh {
                return reading.verifier.clone();
            }
        }
        self.reread();
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .verifier
            .clone()
    }

    /// Reads the file again; takes its CAs if they changed and are
    /// usable. Whether they were taken. A small file on a local volume:
    /// read in place, during the handshake that needs it.
    pub fn reread(&self) -> bool {
        let fresh = read(&self.path).and_then(|pem| {
            let same = self.current.read().unwrap_or_else(|e| e.into_inner()).pem == pem;
            if same {
                return Ok(None);
            }
            let verifier = verifier_of(&pem, &self.path, &self.provider)?;
            Ok(Some((pem, verifier)))
        });
        let mut reading = self.current.write().unwrap_or_else(|e| e.into_inner());
        reading.read_at = Instant::now();
        match fresh {
            Ok(None) => false,
            Ok(Some((pem, verifier))) => {
                reading.pem = pem;
                reading.verifier = verifier;
                self.metrics.changes.inc();
                tracing::info!(path = %self.path.display(), "the CA file changed: its new CAs are trusted");
                true
            }
            Err(error) => {
                self.metrics.failures.inc();
                tracing::warn!(%error, "the CA file could not be read again: the CAs read before stay trusted");
                false
            }
        }
    }

    /// After a server's certificate failed to verify: reads the file again
    /// unless a failure did so within [`REREAD_ON_FAILURE`]. Whether new
    /// CAs were taken, so that the certificate is worth verifying again.
    fn reread_after_failure(&self) -> bool {
        {
            let mut last = self
                .last_failure_reread
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < REREAD_ON_FAILURE) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.reread()
    }
}

impl ServerCertVerifier for CaFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |verifier: Arc<WebPkiServerVerifier>| {
            verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        match verify(self.verifier()) {
            Err(rustls::Error::InvalidCertificate(_)) if self.reread_after_failure() => {
                verify(self.verifier())
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// A verifier of the CAs in `pem`, which must hold at least one.
fn verifier_of(
    pem: &[u8],
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let source = path.display().to_string();
    let roots = crate::tls::roots_of(pem, &source)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Certificate(format!("{source}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::PrivateKeyDer;

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server config with a certificate for `kubernetes.default.svc`
    /// that `ca` signed.
    fn server_of(ca: &Ca) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["kubernetes.default.svc".to_string()])
            .unwrap()
            .signed_by(&key, &ca.issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap(),
        )
    }

    /// A handshake in memory between a client that trusts `trust` and
    /// `server`: the client's error, if any.
    fn handshake(trust: &Arc<CaFile>, server: &Arc<rustls::ServerConfig>) -> Result<(), String> {
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(trust.clone())
        .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            "kubernetes.default.svc".try_into().unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server.clone()).unwrap();
        for _ in 0..10 {
            if !client.is_handshaking() {
                return Ok(());
            }
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut &bytes[..]).unwrap();
            // The server's own errors follow from the client's.
            let _ = server.process_new_packets();
            bytes.clear();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut &bytes[..]).unwrap();
            client.process_new_packets().map_err(|e| e.to_string())?;
        }
        Err("the handshake did not end".into())
    }

    /// Replaces the file at once, as the kubelet swaps a projected
    /// volume's files: never half written.
    fn replace(path: &Path, pem: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, pem).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    fn trust(path: &Path, refresh: Duration) -> (Arc<CaFile>, TrustMetrics) {
        let metrics = TrustMetrics::default();
        let trust = CaFile::load(
            path,
            Arc::new(rustls::crypto::ring::default_provider()),
            refresh,
            metrics.clone(),
        )
        .unwrap();
        (trust, metrics)
    }

    #[test]
    fn a_server_of_a_new_ca_is_trusted_as_soon_as_the_file_holds_it() {
        let (old, new) = (ca("old"), ca("new"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, &old.pem).unwrap();
        // A refresh interval no test waits for: the failure reads the file.
        let (trust, metrics) = trust(&path, Duration::from_secs(3600));
        assert_eq!(handshake(&trust, &server_of(&old)), Ok(()));
        let refused = handshake(&trust, &server_of(&new)).unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{refused}");

        // The rotation begins: the file holds both CAs.
        replace(&path, &format!("{}{}", old.pem, new.pem));
        std::thread::sleep(REREAD_ON_FAILURE);
        assert_eq!(handshake(&trust, &server_of(&new)), Ok(()));
        assert_eq!(handshake(&trust, &server_of(&old)), Ok(()));
        assert_eq!(metrics.changes.get(), 1);
        assert_eq!(metrics.failures.get(), 0);
    }

    #[test]
    fn failures_read_the_file_at_most_once_a_second() {
        let (old, new) = (ca("old"), ca("new"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, &old.pem).unwrap();
        let (trust, metrics) = trust(&path, Duration::from_secs(3600));
        assert!(handshake(&trust, &server_of(&new)).is_err());
        // Within the second, the new CA is not read yet.
        replace(&path, &new.pem);
        assert!(handshake(&trust, &server_of(&new)).is_err());
        assert_eq!(metrics.changes.get(), 0);
        std::thread::sleep(REREAD_ON_FAILURE);
        assert_eq!(handshake(&trust, &server_of(&new)), Ok(()));
        assert_eq!(metrics.changes.get(), 1);
    }

    #[test]
    fn a_ca_taken_out_of_the_file_is_no_longer_trusted_after_the_refresh() {
        let (old, new) = (ca("old"), ca("new"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, format!("{}{}", old.pem, new.pem)).unwrap();
        let (trust, metrics) = trust(&path, Duration::from_millis(50));
        assert_eq!(handshake(&trust, &server_of(&old)), Ok(()));
        // The rotation ends: only the new CA is left.
        replace(&path, &new.pem);
        std::thread::sleep(Duration::from_millis(60));
        let refused = handshake(&trust, &server_of(&old)).unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        assert_eq!(handshake(&trust, &server_of(&new)), Ok(()));
        assert_eq!(metrics.changes.get(), 1);
    }

    #[test]
    fn a_file_without_a_ca_leaves_the_cas_read_before_trusted() {
        let old = ca("old");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, &old.pem).unwrap();
        let (trust, metrics) = trust(&path, Duration::from_millis(50));
        for broken in ["", "-----BEGIN CERTIFICATE-----\nnot base64\n"] {
            replace(&path, broken);
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(handshake(&trust, &server_of(&old)), Ok(()));
        }
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(handshake(&trust, &server_of(&old)), Ok(()));
        assert_eq!(metrics.failures.get(), 3);
        assert_eq!(metrics.changes.get(), 0);
    }

    #[test]
    fn a_missing_or_empty_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let missing = CaFile::load(&path, provider.clone(), REFRESH, TrustMetrics::default());
        assert!(matches!(missing, Err(TlsError::Read { .. })));
        std::fs::write(&path, "").unwrap();
        let empty = CaFile::load(&path, provider, REFRESH, TrustMetrics::default());
        assert!(matches!(empty, Err(TlsError::NoCertificate { .. })));
    }
}
