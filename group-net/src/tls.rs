//! TLS with rustls (ring provider; no OpenSSL): the listeners' certificate, reloadable while the server
//! runs, and the Rust client's trust settings. One stream type, [`Stream`], carries a connection with or
//! without TLS, so the transports are written once.
//!
//! Certificates and keys are PEM files (`tls.cert`: the chain, leaf first; `tls.key`: PKCS#8, PKCS#1 or
//! SEC1). [`crate::Server::reload_tls`] reads them again (`group-server` does on SIGHUP): connections accepted
//! after it use the new certificate, open ones keep theirs, and a bad file leaves the old one in use.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS could not be set up: which file, and what was wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        problem: String,
    },
    /// rustls refused the certificate and key together (the key does not match, say).
    #[error("TLS: {0}")]
    Rustls(String),
    /// The server name for a client is not a valid DNS name or IP address.
    #[error("TLS server name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The listeners' TLS: the files it came from and the acceptor made of them.
pub(crate) struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Loads `cert` and `key`.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            acceptor: RwLock::new(acceptor(cert, key)?),
        })
    }

    /// Reads the files again; on error the certificate in use stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.cert, &self.key)?;
        if let Ok(mut current) = self.acceptor.write() {
            *current = fresh;
        }
        Ok(())
    }

    /// The acceptor for the next connection.
    pub(crate) fn acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor.read().ok().map(|a| a.clone())
    }

    /// The server side of the handshake over `tcp`, within [`HANDSHAKE_TIMEOUT`]; `None` (logged at
    /// debug: a peer can cause it at will) if it fails.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Option<Stream> {
        let acceptor = self.acceptor()?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Stream::accept(&acceptor, tcp)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How a Rust client checks the server's certificate: the name to expect, and whom to trust.
#[derive(Clone)]
pub struct ClientTls {
    name: ServerName<'static>,
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("name", &self.name)
            .finish()
    }
}

impl ClientTls {
    /// Trusts the certificate authorities of the PEM file `ca` (for a private CA or a self-signed
    /// certificate) and expects the server to be `server_name` (a DNS name or an IP address).
    pub fn with_ca_file(server_name: &str, ca: &Path) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|e| file_error(ca, e))?;
        }
        ClientTls::with_roots(server_name, roots)
    }

    /// Trusts the certificate authorities given as PEM text.
    pub fn with_ca_pem(server_name: &str, ca_pem: &[u8]) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| TlsError::Rustls(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Rustls(
                "no CERTIFICATE block in the CA text".into(),
            ));
        }
        ClientTls::with_roots(server_name, roots)
    }

    /// Trusts the public web's certificate authorities (Mozilla's list, built in), as a browser does.
    pub fn with_public_roots(server_name: &str) -> Result<ClientTls, TlsError> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        ClientTls::with_roots(server_name, roots)
    }

    fn with_roots(server_name: &str, roots: rustls::RootCertStore) -> Result<ClientTls, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> String {
        self.name.to_str().into_owned()
    }

    /// Runs the TLS handshake over `tcp`.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> io::Result<Stream> {
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

/// Mutual TLS for mesh links: each node presents its certificate, and accepts only a peer whose
/// certificate the cluster's CA signed and which names `server_name` (one name every node's certificate
/// carries, since nodes dial each other by IP address). It encrypts mesh traffic; `mesh.secret`'s proofs
/// still run inside it.
#[derive(Clone)]
pub(crate) struct MeshTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl MeshTls {
    /// Loads this node's `cert` and `key` and the cluster's `ca`.
    pub(crate) fn load(
        cert: &Path,
        key: &Path,
        ca: &Path,
        server_name: &str,
    ) -> Result<MeshTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for authority in certificates(ca)? {
            roots.add(authority).map_err(|e| file_error(ca, e))?;
        }
        let roots = Arc::new(roots);
        let chain = certificates(cert)?;
        let private = || PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e));
        let rustls_error = |e: rustls::Error| TlsError::Rustls(e.to_string());
        let peers =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_client_cert_verifier(peers)
            .with_single_cert(chain.clone(), private()?)
            .map_err(rustls_error)?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private()?)
            .map_err(rustls_error)?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        Ok(MeshTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            name,
        })
    }

    /// The dialling side's handshake.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> io::Result<Stream> {
        let tls = self.connector.connect(self.name.clone(), tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }

    /// The accepting side's handshake.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        Stream::accept(&self.acceptor, tcp).await
    }
}

/// A connection with or without TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The server side of TLS over `tcp`.
    pub(crate) async fn accept(acceptor: &TlsAcceptor, tcp: TcpStream) -> io::Result<Stream> {
        let tls = acceptor.accept(tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
