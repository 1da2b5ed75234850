//! TLS, one stack for everything: rustls with the ring provider. Clients (the webhook, OTLP
//! span export over HTTP and gRPC) trust the system's roots plus `[tls] ca_file`, and present
//! `[tls] client_cert`/`client_key` when set (mTLS). The daemon's own ports speak https when
//! `[server] tls_cert`/`tls_key` (and `[otlp] grpc_tls_cert`/`grpc_tls_key`) are set; their
//! certificate is re-read on reload, and a bad file keeps the running one.
//!
//! Every problem names the file and what is wrong with it: not PEM, no certificate, no key, a
//! key that does not belong to the certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `[tls]`: what clients trust beyond the system's roots, and the certificate they present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A listener's certificate chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "'{path}' holds no PEM certificate (a file with -----BEGIN CERTIFICATE----- blocks is expected): {why}"
    )]
    NoCertificate { path: PathBuf, why: String },
    #[error(
        "'{path}' holds no PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted, is expected): {why}"
    )]
    NoKey { path: PathBuf, why: String },
    #[error("the key in '{key}' does not belong to the certificate in '{cert}': {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("the certificate in '{path}' {why}")]
    OutOfDate { path: PathBuf, why: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order (a leaf then its intermediates, or CAs).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_of(path, &read(path)?)
}

/// The certificates of PEM text read from `path`.
fn certs_of(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let no = |why: String| TlsError::NoCertificate {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no(e.to_string()))?;
    if certs.is_empty() {
        return Err(no("none found".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Refuses a certificate outside its validity dates at `now` (seconds since the epoch).
fn check_dates(path: &Path, der: &[u8], now: i64) -> Result<(), TlsError> {
    let out_of_date = |why: String| TlsError::OutOfDate {
        path: path.to_path_buf(),
        why,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| out_of_date(format!("cannot be read as X.509: {e}")))?;
    let validity = cert.validity();
    let date = |t: &x509_parser::time::ASN1Time| {
        jiff::Timestamp::from_second(t.timestamp())
            .map_or_else(|_| t.to_string(), |t| t.to_string())
    };
    if validity.not_after.timestamp() < now {
        return Err(out_of_date(format!(
            "expired on {}: renew it (the file is re-read on reload)",
            date(&validity.not_after)
        )));
    }
    if validity.not_before.timestamp() > now {
        return Err(out_of_date(format!(
            "is not valid before {}: check the clock or the certificate",
            date(&validity.not_before)
        )));
    }
    Ok(())
}

/// A chain and its key, checked to belong together and the leaf to be valid now.
pub fn certified_key(files: &ServerFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&files.cert)?;
    check_dates(
        &files.cert,
        chain[0].as_ref(),
        jiff::Timestamp::now().as_second(),
    )?;
    let key = read_key(&files.key)?;
    let mismatch = |why: String| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why,
    };
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(certified)
}

/// What clients trust and present, loaded once.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<Vec<CertificateDer<'static>>>,
    /// The CA file's PEM, for tonic (which takes PEM).
    ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and key, PEM (checked to belong together at load).
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("client_cert", &self.identity_pem.is_some())
            .finish()
    }
}

impl ClientTls {
    /// The system's roots (Debian: `/etc/ssl/certs`; `SSL_CERT_FILE`/`SSL_CERT_DIR` respected)
    /// plus the CA file, and the client identity.
    pub fn load(files: &ClientFiles) -> Result<ClientTls, TlsError> {
        let mut roots = rustls_native_certs::load_native_certs().certs;
        let ca_pem = match &files.ca_file {
            Some(path) => {
                let pem = read(path)?;
                roots.extend(certs_of(path, &pem)?);
                Some(pem)
            }
            None => None,
        };
        let identity_pem = match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(key)) => {
                certified_key(&ServerFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })?;
                Some((read(cert)?, read(key)?))
            }
            _ => None,
        };
        Ok(ClientTls {
            roots: Arc::new(roots),
            ca_pem,
            identity_pem,
        })
    }

    /// The CA file's PEM, for clients that take PEM (tonic, Redis).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// The client certificate chain and key, PEM.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity_pem
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice()))
    }

    /// Makes ring the process's default rustls provider, for a library that asks for the
    /// default (the Redis client). Idempotent.
    pub fn install_default_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// An HTTP client (webhook, OTLP/HTTP) that speaks https with these roots.
    pub fn http_agent(&self, timeout: std::time::Duration) -> ureq::Agent {
        let roots: Vec<ureq::tls::Certificate<'static>> = self
            .roots
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider())
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        if let Some((cert, key)) = &self.identity_pem {
            let chain: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(cert)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if let Ok(key) = ureq::tls::PrivateKey::from_pem(key) {
                tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
            }
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// A rustls client config with these roots and identity, offering `alpn` (the proxy's
    /// upstream client: `h2` and `http/1.1`).
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        // A system bundle may hold a certificate rustls cannot parse; the rest still count.
        roots.add_parsable_certificates(self.roots.iter().cloned());
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &self.identity_pem {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::Setup(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| TlsError::Setup(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Setup(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// tonic's TLS settings for a gRPC client of `domain`.
    pub fn grpc(&self, domain: &str) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .with_native_roots()
            .domain_name(domain);
        if let Some(pem) = &self.ca_pem {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &self.identity_pem {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        config
    }
}

/// The certificate a listener presents, swapped on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A listener's TLS: its acceptor, and the files it re-reads on reload.
#[derive(Clone)]
pub struct ServerTls {
    files: ServerFiles,
    current: Arc<Current>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl ServerTls {
    /// Loads the files; `alpn` lists the protocols offered (`http/1.1`, or `h2` for gRPC).
    pub fn load(files: &ServerFiles, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
        let current = Arc::new(Current(RwLock::new(Arc::new(certified_key(files)?))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            files: files.clone(),
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Re-reads the files; on any problem the running certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.files)?);
        *self
            .current
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

/// A connection a listener accepted: as it came, or after the TLS handshake.
pub enum MaybeTls {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl MaybeTls {
    /// Wraps an accepted connection: the handshake, when the listener has TLS, must finish
    /// within `deadline` (a client that opens and sends nothing keeps no slot).
    pub async fn accept(
        stream: tokio::net::TcpStream,
        tls: Option<&ServerTls>,
        deadline: std::time::Duration,
    ) -> std::io::Result<MaybeTls> {
        match tls {
            None => Ok(MaybeTls::Plain(stream)),
            Some(tls) => {
                match tokio::time::timeout(deadline, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => Ok(MaybeTls::Tls(Box::new(stream))),
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake did not finish within the header deadline",
                    )),
                }
            }
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &tokio::net::TcpStream {
        match self {
            MaybeTls::Plain(stream) => stream,
            MaybeTls::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl tokio::io::AsyncRead for MaybeTls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for MaybeTls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().expect("dir");
        let junk = write(dir.path(), "junk.pem", "not a certificate\n");
        let problem = read_certs(&junk).expect_err("junk").to_string();
        assert!(
            problem.contains("junk.pem") && problem.contains("no PEM certificate"),
            "{problem}"
        );
        let problem = read_key(&junk).expect_err("junk").to_string();
        assert!(problem.contains("no PEM private key"), "{problem}");
        let missing = dir.path().join("missing.pem");
        assert!(
            read_certs(&missing)
                .expect_err("missing")
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_and_a_reload_keeps_the_running_one() {
        let dir = tempfile::tempdir().expect("dir");
        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("one");
        let two = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("two");
        let files = ServerFiles {
            cert: write(dir.path(), "cert.pem", &one.cert.pem()),
            key: write(dir.path(), "key.pem", &one.signing_key.serialize_pem()),
        };
        let tls = ServerTls::load(&files, &[b"http/1.1"]).expect("a matching pair");
        write(dir.path(), "key.pem", &two.signing_key.serialize_pem());
        let problem = tls.reload().expect_err("mismatch").to_string();
        assert!(
            problem.contains("does not belong to the certificate") && problem.contains("cert.pem"),
            "{problem}"
        );
        write(dir.path(), "cert.pem", &two.cert.pem());
        tls.reload().expect("the new pair");
    }
}
