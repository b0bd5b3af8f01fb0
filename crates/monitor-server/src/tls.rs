//! TLS listeners (rustls, no OpenSSL): the acceptor built from a listener's PEM files,
//! and swapped whole when SIGHUP re-reads them, so that new connections get the new
//! certificate while existing ones keep theirs. A bad new certificate is refused and the
//! old acceptor kept.
//!
//! The handshake itself runs in each connection's own task, cut off at
//! `tls_handshake_timeout_secs`, never in the accept loop (rumqttd's `server/tls.rs` is the
//! anchor for building the config).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ListenerConfig;

/// Why a listener's TLS configuration cannot be used; names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {path}: {source}")]
    Pem {
        /// Which file: "certificate", "private key", "client CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reader's error.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{what} {path}: no certificate in it")]
    Empty {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificates or the key (a key that does not match, say).
    #[error("listener {listener}: {source}")]
    Rustls {
        /// The listener.
        listener: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client CAs cannot verify client certificates.
    #[error("listener {listener}: client CA {path}: {reason}")]
    ClientCa {
        /// The listener.
        listener: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The rustls server configuration of a TLS listener, read from its files now.
///
/// # Errors
/// [`TlsError`] naming the file or the listener at fault.
pub fn server_config(listener: &ListenerConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&listener.tls_cert, &listener.tls_key) else {
        return Err(TlsError::Rustls {
            listener: listener.name.clone(),
            source: rustls::Error::General("not a TLS listener".into()),
        });
    };
    let chain = certificates("certificate", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            listener: listener.name.clone(),
            source,
        })?;
    let builder = match &listener.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client CA", ca)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    listener: listener.name.clone(),
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    listener: listener.name.clone(),
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            listener: listener.name.clone(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// A listener's current acceptor. The accept loop hands each new connection the acceptor
/// of the moment; a reload replaces it.
pub struct ReloadableAcceptor {
    current: RwLock<TlsAcceptor>,
    /// Whether clients must present a certificate.
    pub mutual: bool,
}

impl std::fmt::Debug for ReloadableAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableAcceptor")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ReloadableAcceptor {
    /// An acceptor for `listener`, from its files.
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn new(listener: &ListenerConfig) -> Result<ReloadableAcceptor, TlsError> {
        Ok(ReloadableAcceptor {
            current: RwLock::new(TlsAcceptor::from(server_config(listener)?)),
            mutual: listener.tls_client_ca.is_some(),
        })
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the listener's files again; on success new connections use them.
    ///
    /// # Errors
    /// As [`server_config`]; the acceptor in use is kept then.
    pub fn reload(&self, listener: &ListenerConfig) -> Result<(), TlsError> {
        let fresh = TlsAcceptor::from(server_config(listener)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}
