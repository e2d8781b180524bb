//! TLS termination on listeners: the rustls server configuration a listener's certificate
//! makes. The handshake itself runs on the worker that accepted the connection, in the
//! connection's own task, so a slow client delays no one else.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustygate_config::ListenerTls;

/// Why a listener's certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or not PEM.
    #[error("{what} {path}: {reason}")]
    File {
        /// "certificate chain" or "private key".
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say).
    #[error("certificate {chain} with key {key}: {reason}")]
    Refused {
        /// The certificate chain file.
        chain: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        reason: String,
    },
}

fn pem_error(what: &'static str, path: &str, e: pem::Error) -> TlsError {
    let reason = match e {
        pem::Error::Io(io) => io.to_string(),
        pem::Error::NoItemsFound => format!("no PEM {what} in the file"),
        other => format!("not a valid PEM file ({other:?})"),
    };
    TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    }
}

/// The server configuration for `tls` (paths as given: the loader has made them absolute).
/// ALPN offers `h2` first, so HTTP/2 clients get HTTP/2.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain_path, key_path) = (&tls.certificate_chain, &tls.private_key);
    let chain = CertificateDer::pem_file_iter(chain_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("certificate chain", chain_path, e))?;
    if chain.is_empty() {
        return Err(pem_error(
            "certificate chain",
            chain_path,
            pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| pem_error("private key", key_path, e))?;
    let refused = |e: rustls::Error| TlsError::Refused {
        chain: chain_path.clone(),
        key: key_path.clone(),
        reason: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(refused)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(refused)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
