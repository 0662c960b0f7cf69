//! A certificate authority of a test's own (rcgen): its certificate and the
//! certificates it issues written as PEM files, and a server's TLS settings
//! with them. For the tests of the connectors that speak TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority of the test's own, its certificate in
/// `{dir}/ca.pem`.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        TestCa {
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, a server's or (with
    /// `client`) a client's, in `{dir}/{stem}.pem` and its key in
    /// `{dir}/{stem}-key.pem`.
    pub fn issue(&self, stem: &str, client: bool) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose};
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let paths = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}-key.pem")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    }

    /// A server's TLS settings with a certificate of this CA; with
    /// `mutual`, a client certificate of this CA is required.
    pub fn server(&self, mutual: bool) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.issue("server", false);
        let builder = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.issuer.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                super::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = super::certificates("tls_cert", &cert).unwrap();
        let key = super::private_key("tls_key", &key).unwrap();
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }
}
