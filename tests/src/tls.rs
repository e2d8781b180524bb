//! Certificates and a client for the TLS listener tests: a certificate authority made afresh
//! for each test, a server certificate it signs for `localhost` and 127.0.0.1 (written as the
//! PEM files a listener is configured with), and a real TLS client (rustls) that trusts only
//! that authority and speaks whichever HTTP version ALPN settled on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use crate::client::Seen;
use crate::scratch::Scratch;

/// A test PKI in a directory of its own.
pub struct Pki {
    /// Holds the PEM files.
    pub dir: PathBuf,
    _files: Scratch,
    /// The server's certificate chain (`listeners[].tls.certificate_chain`).
    pub chain: PathBuf,
    /// The server's private key (`listeners[].tls.private_key`).
    pub key: PathBuf,
    /// The authority's certificate, for clients (`curl --cacert`).
    pub ca: PathBuf,
    /// A client certificate the authority signed (CN `client`), and its key: for mutual TLS.
    pub client_chain: PathBuf,
    pub client_key: PathBuf,
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

/// The client certificate's URI subject alternative name (a SPIFFE ID).
pub const CLIENT_URI_SAN: &str = "spiffe://rustygate.test/ns/tests/sa/client";
/// Its DNS subject alternative names, in certificate order.
pub const CLIENT_DNS_SANS: [&str; 2] = ["client.rustygate.test", "client"];
/// Its subject as RFC 2253 (and Envoy, through OpenSSL) prints it: last RDN first. rcgen
/// writes CN before O, so O comes first here (`openssl x509 -nameopt RFC2253` agrees).
pub const CLIENT_SUBJECT: &str = "O=RustyGate Tests,CN=client";

impl Pki {
    /// A new authority and server certificate under a directory named after `test`.
    pub fn new(test: &str) -> Pki {
        Pki::for_names(test, &["localhost", "127.0.0.1"])
    }

    /// [`Pki::new`] with a server certificate for `names` (DNS names, wildcards, IPs).
    pub fn for_names(test: &str, names: &[&str]) -> Pki {
        let files = Scratch::new(&format!("tls-{test}"));
        let dir = files.path().to_path_buf();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "RustyGate test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "RustyGate Tests");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "client");
        client_params.subject_alt_names = vec![
            SanType::URI(CLIENT_URI_SAN.try_into().unwrap()),
            SanType::DnsName(CLIENT_DNS_SANS[0].try_into().unwrap()),
            SanType::DnsName(CLIENT_DNS_SANS[1].try_into().unwrap()),
        ];
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
        let pki = Pki {
            chain: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: dir.join("ca.pem"),
            client_chain: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            ca_der: CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            dir,
            _files: files,
        };
        std::fs::write(&pki.chain, &pki.cert_pem).unwrap();
        std::fs::write(&pki.key, &pki.key_pem).unwrap();
        std::fs::write(&pki.client_chain, &pki.client_cert_pem).unwrap();
        std::fs::write(&pki.client_key, &pki.client_key_pem).unwrap();
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        pki
    }

    /// The `tls:` block of a listener using this certificate.
    pub fn listener_yaml(&self) -> String {
        format!(
            "{{ certificate_chain: {}, private_key: {} }}",
            self.chain.display(),
            self.key.display()
        )
    }

    /// A server configuration with this certificate, offering HTTP/2 and HTTP/1.1 by ALPN: for
    /// `https://` upstreams.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// [`Pki::server_config`] that requires a client certificate signed by `clients`.
    pub fn server_config_requiring(&self, clients: &Pki) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(clients.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client configuration that trusts only this authority and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client(alpn, None)
    }

    /// [`Pki::client_config`] presenting the client certificate `from` signed.
    pub fn client_config_with_cert(&self, from: &Pki) -> Arc<rustls::ClientConfig> {
        self.client(&[b"http/1.1"], Some(from))
    }

    fn client(&self, alpn: &[&[u8]], cert_from: Option<&Pki>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match cert_from {
            None => builder.with_no_client_auth(),
            Some(p) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(p.client_cert_pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(p.client_key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Lower-case hex SHA-256 of the client certificate (Envoy's
    /// `connection.sha256_peer_certificate_digest`).
    pub fn client_cert_sha256(&self) -> String {
        let der = CertificateDer::from_pem_slice(self.client_cert_pem.as_bytes()).unwrap();
        crate::upstream::sha256_hex(der.as_ref())
    }
}

/// What a TLS client saw: the protocol ALPN chose (`None`: none offered or agreed) and the
/// response.
pub struct TlsSeen {
    /// The ALPN protocol of the connection.
    pub alpn: Option<Vec<u8>>,
    /// HTTP version of the response.
    pub version: http::Version,
    /// The response.
    pub seen: Seen,
}

/// GETs `https://localhost<path>` from `addr` over a TLS connection made with `config`
/// (HTTP/2 when ALPN agreed on `h2`, else HTTP/1.1).
pub async fn get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<TlsSeen, String> {
    get_as(addr, config, "localhost", path).await
}

/// [`get`], asking for (SNI) and verifying `server_name` instead of `localhost`.
pub async fn get_as(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    path: &str,
) -> Result<TlsSeen, String> {
    get_with(addr, config, server_name, path, &[]).await
}

/// [`get_as`] with `headers` on the request.
pub async fn get_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<TlsSeen, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(server_name.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let mut request = Request::get(format!("https://localhost:{}{path}", addr.port()));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::<Bytes>::default()).unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        parts
            .headers
            .insert(http::header::HOST, "localhost".parse().unwrap());
        sender.send_request(Request::from_parts(parts, body)).await
    }
    .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(TlsSeen {
        alpn,
        version: parts.version,
        seen: Seen {
            status: parts.status,
            headers: parts.headers,
            body,
        },
    })
}
