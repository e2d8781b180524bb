//! TLS with rustls, both ways: termination on listeners (the server configuration a
//! listener's certificate makes) and `https://` upstreams (the client configuration of a
//! cluster). Handshakes run on the worker that owns the connection, in the task that needs
//! it, so a slow peer delays no one else.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustygate_config::{ListenerTls, UpstreamProtocol, UpstreamTls};
use rustygate_filter_api::ConnectionTls;
use x509_parser::extensions::GeneralName;

use crate::tcp::Tcp;

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
    /// A CA file held a certificate rustls cannot use as a trust anchor.
    #[error("ca certificates {path}: {reason}")]
    Anchor {
        /// The CA file.
        path: String,
        /// rustls's reason.
        reason: String,
    },
    /// `server_name` is not a DNS name or an IP address.
    #[error("server name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
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

/// The certificate chain and key in two PEM files.
fn chain_and_key(
    chain_path: &str,
    key_path: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
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
    Ok((chain, key))
}

/// The trust anchors in a PEM file of CA certificates.
fn ca_roots(path: &str) -> Result<rustls::RootCertStore, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("ca certificates", path, e))?;
    if certs.is_empty() {
        return Err(pem_error("ca certificates", path, pem::Error::NoItemsFound));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::Anchor {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The server configuration for `tls` (paths as given: the loader has made them absolute).
/// ALPN offers `h2` first, so HTTP/2 clients get HTTP/2. With `client_ca_certificates`,
/// clients are asked for a certificate verified against those authorities.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain_path, key_path) = (&tls.certificate_chain, &tls.private_key);
    let (chain, key) = chain_and_key(chain_path, key_path)?;
    let refused = |e: rustls::Error| TlsError::Refused {
        chain: chain_path.clone(),
        key: key_path.clone(),
        reason: e.to_string(),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused)?;
    let builder = match &tls.client_ca_certificates {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca_roots(path)?),
                provider(),
            );
            let verifier = if tls.require_client_certificate.unwrap_or(true) {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsError::Anchor {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = if tls.sni.is_empty() {
        builder.with_single_cert(chain, key).map_err(refused)?
    } else {
        let provider = provider();
        let default =
            Arc::new(rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(refused)?);
        let mut resolver = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        };
        for sni in &tls.sni {
            let (chain, key) = chain_and_key(&sni.certificate_chain, &sni.private_key)?;
            let certified = Arc::new(
                rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                    TlsError::Refused {
                        chain: sni.certificate_chain.clone(),
                        key: sni.private_key.clone(),
                        reason: e.to_string(),
                    }
                })?,
            );
            for name in &sni.server_names {
                let name = name.to_ascii_lowercase();
                let table = match name.strip_prefix("*.") {
                    Some(parent) => resolver.wildcard.entry(parent.to_owned()),
                    None => resolver.exact.entry(name),
                };
                table.or_insert_with(|| certified.clone());
            }
        }
        builder.with_cert_resolver(Arc::new(resolver))
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Picks a listener's certificate by the server name the client asked for: an exact name,
/// then a wildcard for its parent domain, then the listener's default certificate.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<rustls::sign::CertifiedKey>>,
    /// By the domain under the wildcard (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<rustls::sign::CertifiedKey>>,
    default: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let found = self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        Some(found.unwrap_or(&self.default).clone())
    }
}

/// What a finished server handshake settled, for filters.
pub(crate) fn settled(session: &rustls::ServerConnection) -> ConnectionTls {
    use sha2::Digest;
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLSv1.3",
    };
    let leaf = session.peer_certificates().and_then(|c| c.first());
    let peer_certificate_sha256 = leaf.map(|leaf| {
        sha2::Sha256::digest(leaf.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    let mut tls = ConnectionTls {
        version,
        server_name: session.server_name().map(str::to_owned),
        peer_certificate_sha256,
        peer_subject: None,
        peer_uri_sans: Vec::new(),
        peer_dns_sans: Vec::new(),
    };
    // rustls has verified the chain; what is read here only describes it.
    if let Some(Ok((_, cert))) = leaf.map(|l| x509_parser::parse_x509_certificate(l.as_ref())) {
        tls.peer_subject = Some(rfc2253(cert.subject()));
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => tls.peer_uri_sans.push((*u).to_owned()),
                    GeneralName::DNSName(d) => tls.peer_dns_sans.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
    }
    tls
}

/// A distinguished name as RFC 2253 writes it (and Envoy, through OpenSSL, prints it): the
/// last RDN first, `,` between RDNs, `+` within one, special characters escaped.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::oid_registry::*;
    let mut out = String::new();
    for (n, rdn) in name
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if n > 0 {
            out.push(',');
        }
        for (a, attr) in rdn.iter().enumerate() {
            if a > 0 {
                out.push('+');
            }
            let oid = attr.attr_type();
            let short = [
                (&OID_X509_COMMON_NAME, "CN"),
                (&OID_X509_COUNTRY_NAME, "C"),
                (&OID_X509_LOCALITY_NAME, "L"),
                (&OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
                (&OID_X509_ORGANIZATION_NAME, "O"),
                (&OID_X509_ORGANIZATIONAL_UNIT, "OU"),
                (&OID_X509_STREET_ADDRESS, "STREET"),
                (&OID_DOMAIN_COMPONENT, "DC"),
                (&OID_PKCS9_EMAIL_ADDRESS, "emailAddress"),
            ]
            .into_iter()
            .find(|(o, _)| *o == oid)
            .map(|(_, s)| s.to_owned());
            out.push_str(&short.unwrap_or_else(|| oid.to_id_string()));
            out.push('=');
            match attr.as_str() {
                Ok(value) => {
                    let last = value.chars().count().saturating_sub(1);
                    for (i, c) in value.chars().enumerate() {
                        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
                            || (i == 0 && (c == '#' || c == ' '))
                            || (i == last && c == ' ');
                        if special {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
                // Not a string type: RFC 2253's `#` and the value's DER in hex.
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().as_bytes() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// The acceptor of `listener`, if it terminates TLS.
pub(crate) fn acceptor(
    listener: &rustygate_config::Listener,
) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    listener
        .tls
        .as_ref()
        .map(|t| server_config(t).map(tokio_rustls::TlsAcceptor::from))
        .transpose()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS to the `https://` endpoints of one cluster: whom to trust, which name to ask for, and
/// the ALPN protocol of the cluster's HTTP version.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    /// Tells these settings' pooled connections from others to the same endpoint.
    pool_id: u64,
    /// Sent and verified instead of each endpoint's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The client side for a cluster with `settings` (`None`: Mozilla's roots, endpoint host
    /// names) speaking `protocol`. `pool_id` (non-zero) must differ between any two clusters
    /// and configuration generations: connections are pooled under it.
    pub fn new(
        settings: Option<&UpstreamTls>,
        protocol: UpstreamProtocol,
        pool_id: u64,
    ) -> Result<Self, TlsError> {
        let roots = match settings.and_then(|s| s.ca_certificates.as_deref()) {
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Some(path) => ca_roots(path)?,
        };
        let server_name = settings
            .and_then(|s| s.server_name.as_deref())
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|_| TlsError::ServerName(name.to_owned()))
            })
            .transpose()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring provides TLS 1.2 and 1.3")
            .with_root_certificates(roots);
        let client_cert =
            settings.and_then(|s| Some((s.certificate_chain.as_ref()?, s.private_key.as_ref()?)));
        let mut config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((chain_path, key_path)) => {
                let (chain, key) = chain_and_key(chain_path, key_path)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Refused {
                        chain: chain_path.clone(),
                        key: key_path.clone(),
                        reason: e.to_string(),
                    })?
            }
        };
        config.alpn_protocols = vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }];
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            pool_id,
            server_name,
        })
    }

    /// See [`ClientTls::new`].
    pub(crate) fn pool_id(&self) -> u64 {
        self.pool_id
    }

    /// Runs the handshake on `tcp`, to the endpoint at `authority` (`host:port`).
    pub(crate) async fn connect(
        &self,
        authority: &str,
        tcp: Tcp,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<Tcp>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = rustygate_config::authority_host(authority);
                ServerName::try_from(host.to_owned()).map_err(|_| {
                    std::io::Error::other(format!("{host:?} is not a DNS name or an IP address"))
                })?
            }
        };
        self.connector.connect(name, tcp).await
    }
}
