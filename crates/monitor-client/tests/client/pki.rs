//! Certificates made for the tests (rcgen): a CA, a server certificate for localhost and
//! 127.0.0.1, client certificates signed by that CA or by another, and servers with a TLS
//! listener. Nothing is checked in: every run makes its own keys, in its own temporary
//! directory. (monitor-cli's tests include this file too.)

#![allow(dead_code)] // each test crate uses part of it

use std::path::{Path, PathBuf};

use monitor_client::config::CertificateDer;
use monitor_server::Config;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority of the tests.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// PEM files of a certificate and its key.
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Writes the CA's certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// The CA's certificate in DER form, as a program would hold it.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, dir: &Path, common_name: &str) -> Pem {
        self.leaf(
            dir,
            common_name,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
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
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "monitor-client-{tag}-{}-{}",
            std::process::id(),
            monitor_client::config::random_uuid(b't')
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a TLS test needs: a CA whose certificate is in `ca_file`, and a config tweak that
/// makes the server's first listener TLS with a certificate that CA signed (mutual TLS
/// with that CA as the client CA when `mutual`).
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub ca_file: PathBuf,
    server: Pem,
}

impl Pki {
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

    /// A file in this test's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
