//! Certificates made for the tests with rcgen: a CA, server certificates for localhost and
//! 127.0.0.1, client certificates signed by that CA or by another, servers with a TLS
//! listener, and a TLS connector that trusts the CA. Nothing is checked in: every run
//! makes its own keys, in its own temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use monitor_server::Config;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// A certificate authority of the tests.
#[derive(Debug)]
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// PEM files of a certificate and its key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA, `name` as its common name.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Writes the CA's certificate to `dir/<file>`, and returns that path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// The CA's certificate in DER form, as a program would hold it.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and 127.0.0.1, with `common_name` as its
    /// subject, in `dir/<common_name>.crt` and `.key`.
    pub fn server(&self, dir: &Path, common_name: &str) -> Pem {
        self.leaf(
            dir,
            common_name,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate, with `common_name` as its subject, in
    /// `dir/<common_name>.crt` and `.key`.
    pub fn client(&self, dir: &Path, common_name: &str) -> Pem {
        self.leaf(
            dir,
            common_name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn leaf(
        &self,
        dir: &Path,
        common_name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Pem {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pem = Pem {
            cert: dir.join(format!("{common_name}.crt")),
            key: dir.join(format!("{common_name}.key")),
        };
        std::fs::write(&pem.cert, cert.pem()).unwrap();
        std::fs::write(&pem.key, key.serialize_pem()).unwrap();
        pem
    }
}

/// A temporary directory for one test's files, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory `monitor-<tag>-<pid>-<random>` in the system's temporary
    /// directory.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "monitor-{tag}-{}-{}",
            std::process::id(),
            random_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A number that differs from one call to the next (std's randomly keyed hasher), so
/// that tests in one process never share a directory.
fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// What a TLS test needs: a CA whose certificate is in `ca_file`, and a config tweak that
/// makes the server's first listener TLS with a certificate that CA signed (mutual TLS
/// with that CA as the client CA when `mutual`).
#[derive(Debug)]
pub struct Pki {
    /// The test's directory, where every file below is.
    pub dir: TempDir,
    /// The CA.
    pub ca: Ca,
    /// The CA's certificate, as a PEM file.
    pub ca_file: PathBuf,
    server: Pem,
}

impl Pki {
    /// A CA and a server certificate for localhost, in a new [`TempDir`] named by `tag`.
    pub fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = Ca::new("monitor test CA");
        let ca_file = ca.write(dir.path(), "ca.crt");
        let server = ca.server(dir.path(), "server");
        Pki {
            dir,
            ca,
            ca_file,
            server,
        }
    }

    /// Makes `config`'s first listener TLS (mutual TLS if `mutual`).
    pub fn tls_listener(&self, config: &mut Config, mutual: bool) {
        let l = &mut config.listeners[0];
        l.tls_cert = Some(self.server.cert.clone());
        l.tls_key = Some(self.server.key.clone());
        if mutual {
            l.tls_client_ca = Some(self.ca_file.clone());
        }
    }

    /// A client certificate signed by this CA.
    pub fn client(&self, name: &str) -> Pem {
        self.ca.client(self.dir.path(), name)
    }

    /// A file in this test's directory (not created).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A TLS connector that trusts the CA certificates in the PEM file `ca`, presenting
/// `client`'s certificate if given.
pub fn connector(ca: &Path, client: Option<&Pem>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_file_iter(&pem.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&pem.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    TlsConnector::from(Arc::new(config))
}

/// The name the servers' certificates are for: `localhost`.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}
