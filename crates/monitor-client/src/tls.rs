//! TLS for the clients: the rustls client configuration built once per client from
//! [`TlsSettings`] (its files read, its trust roots parsed), the handshake over TCP, and
//! rustls' errors told as what the user can do about them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{ClientConfig, TlsSettings};

/// The handshake step that TLS is, as errors name it.
pub(crate) const TLS_HANDSHAKE: &str = "TLS handshake";
use crate::error::{Error, Result, TlsFileKind};

/// A client's TLS, ready for any number of connections (reconnections share it, and so
/// rustls' session cache).
pub(crate) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
    /// What the client trusts, for a message about an untrusted certificate.
    trusted: String,
    /// The client certificate presented (mutual TLS), for a message about its refusal.
    client_cert: Option<PathBuf>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("name", &self.name)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

/// The TLS a config asks for, built, or `None` for a plain connection. Reads the files
/// (small, once per client: a blocking read is shorter than a task switch would be).
///
/// # Errors
/// [`Error::TlsFile`] naming the file that is missing or unusable;
/// [`Error::Config`] for settings [`ClientConfig::validate`] would refuse.
pub(crate) fn prepare(cfg: &ClientConfig) -> Result<Option<Arc<Tls>>> {
    if !cfg.uses_tls() {
        return Ok(None);
    }
    let default = TlsSettings::new();
    let settings = cfg.tls.as_ref().unwrap_or(&default);
    let name = cfg.tls_server_name()?;
    let mut roots = RootCertStore::empty();
    for path in &settings.ca_files {
        let certs = read_certs(path, TlsFileKind::Ca)?;
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| Error::TlsFile {
                what: TlsFileKind::Ca,
                path: path.clone(),
                reason: format!("certificate {} cannot be a trust root: {e}", i + 1),
            })?;
        }
    }
    for (i, cert) in settings.roots.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| Error::Config {
            field: "tls.roots",
            reason: format!("certificate {} cannot be a trust root: {e}", i + 1),
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Config {
            field: "tls.ca_files",
            reason: "TLS needs a CA to trust: give a CA file or root certificates".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            field: "tls",
            reason: format!("no TLS version available: {e}"),
        })?
        .with_root_certificates(roots);
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, TlsFileKind::ClientCert)?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::TlsFile {
                what: TlsFileKind::ClientKey,
                path: key.clone(),
                reason: pem_reason(e, "no private key in it (expected PEM: BEGIN PRIVATE KEY)"),
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| Error::TlsFile {
                    what: TlsFileKind::ClientKey,
                    path: key.clone(),
                    reason: format!(
                        "cannot be used with the certificate {}: {e}",
                        cert.display()
                    ),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        // validate() refuses one without the other; said again here for raw callers.
        (Some(_), None) => return Err(half_pair("tls.key_file")),
        (None, Some(_)) => return Err(half_pair("tls.cert_file")),
    };
    Ok(Some(Arc::new(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        name,
        trusted: trusted(settings),
        client_cert: settings.cert_file.clone(),
    })))
}

fn half_pair(field: &'static str) -> Error {
    Error::Config {
        field,
        reason: "a client certificate and its key go together (cert_file and key_file)".into(),
    }
}

/// What `settings` trusts, in words.
fn trusted(settings: &TlsSettings) -> String {
    let mut parts: Vec<String> = settings
        .ca_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    match settings.roots.len() {
        0 => {}
        1 => parts.push("1 root certificate given in code".into()),
        n => parts.push(format!("{n} root certificates given in code")),
    }
    parts.join(", ")
}

/// Every certificate in the PEM file `path`; at least one.
fn read_certs(path: &Path, what: TlsFileKind) -> Result<Vec<CertificateDer<'static>>> {
    let file_error = |reason| Error::TlsFile {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| file_error(pem_reason(e, "")))?;
    if certs.is_empty() {
        return Err(file_error(
            "no certificate in it (expected PEM: BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

/// A PEM reading error in words: `no such file` rather than the OS's sentence.
fn pem_reason(e: pem::Error, none_found: &str) -> String {
    match e {
        pem::Error::Io(e) => io_reason(&e),
        pem::Error::NoItemsFound if !none_found.is_empty() => none_found.to_owned(),
        other => format!("not a usable PEM file: {other}"),
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => format!("cannot read it: {e}"),
    }
}

// Here rather than in `config`, which knows nothing of how TLS is set up.
impl ClientConfig {
    /// Reads the TLS files (CA files, client certificate and key) and builds the TLS
    /// configuration, as a client does when it starts, and drops it: to fail at startup
    /// over a missing file rather than at the first connection of a client started later.
    /// Does nothing without TLS.
    ///
    /// # Errors
    /// As [`ClientConfig::validate`]; [`Error::TlsFile`] naming the file that is missing,
    /// unreadable or unusable.
    pub fn check_tls_files(&self) -> Result<()> {
        self.validate()?;
        prepare(self).map(drop)
    }
}

impl Tls {
    /// The TLS handshake over `tcp`. The caller bounds it in time (`connect_timeout`).
    ///
    /// # Errors
    /// [`Error::Tls`] for what a retry will not fix (certificates, a peer that answers
    /// other than in TLS); [`Error::ClosedDuringHandshake`] or [`Error::Connect`] for a
    /// transport failure during the handshake (retried).
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        address: &str,
    ) -> Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| match self.explain(&e) {
                Some(reason) => Error::Tls {
                    address: address.to_owned(),
                    reason,
                },
                // A server that closes mid-handshake may be restarting, or may not speak
                // TLS (a plaintext port drops a ClientHello as a bad frame): retried, and
                // said as such.
                None if e.kind() == io::ErrorKind::UnexpectedEof => Error::ClosedDuringHandshake {
                    during: TLS_HANDSHAKE,
                },
                None => Error::Connect {
                    address: address.to_owned(),
                    source: e,
                },
            })
    }

    /// What went wrong in TLS terms, if `e` is rustls' error (during the handshake, or on
    /// the first reads after it: in TLS 1.3 a server's refusal of the client's certificate
    /// arrives after the client has finished its handshake).
    pub(crate) fn explain(&self, e: &io::Error) -> Option<String> {
        let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        let name = name_text(&self.name);
        Some(match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => format!(
                    "the server's certificate is not trusted: it is not signed by a CA trusted \
                     here ({})",
                    self.trusted
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not valid for the name `{name}` (set the server \
                     name to one the certificate is for)"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet".into()
                }
                other => format!("the server's certificate is refused: {other:?}"),
            },
            rustls::Error::AlertReceived(alert) => self.alert(*alert),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the server does not speak TLS there (a plaintext port?)".into()
            }
            other => format!("{other}"),
        })
    }

    /// A TLS alert from the server, in words: most are about the client's certificate.
    fn alert(&self, alert: AlertDescription) -> String {
        let about_certificate = matches!(
            alert,
            AlertDescription::CertificateRequired
                | AlertDescription::HandshakeFailure
                | AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
        );
        match (&self.client_cert, about_certificate) {
            (None, true) => format!(
                "the server requires a client certificate (mutual TLS), and none is configured \
                 (the server's alert: {alert:?})"
            ),
            (Some(cert), true) => format!(
                "the server refused the client certificate {} (the server's alert: {alert:?}); \
                 is it signed by a CA the server trusts?",
                cert.display()
            ),
            (_, false) => format!("the server ended the TLS session (alert: {alert:?})"),
        }
    }
}

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}
