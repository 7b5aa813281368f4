//! Certificates for tests that play a webhook or an aggregated API: the
//! apiserver calls them, so they must serve real TLS for their Service's DNS
//! name, signed by a CA the test hands to the apiserver.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// A throwaway certificate authority.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key.
pub struct ServingCert {
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    pub fn new(common_name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `dns_names`.
    pub fn serving_cert(&self, dns_names: &[&str]) -> anyhow::Result<ServingCert> {
        let mut params =
            CertificateParams::new(dns_names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, dns_names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCert {
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

impl TestCa {
    /// Signs a PEM CSR as a server certificate valid for `lifetime`.
    pub fn sign_csr(&self, csr_pem: &str, lifetime: std::time::Duration) -> anyhow::Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = std::time::SystemTime::now();
        csr.params.not_before = (now - std::time::Duration::from_secs(1)).into();
        csr.params.not_after = (now + lifetime).into();
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(csr.signed_by(&self.issuer)?.pem())
    }
}
