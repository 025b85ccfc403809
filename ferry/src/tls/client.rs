//! The client's TLS configuration: trust roots, client certificate, server name, resumption.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, version};
use tokio::io::{AsyncRead, AsyncWrite};

use super::TlsError;
use super::pem::{self, PemSource};

/// TLS sessions a client remembers per configuration for resumption.
const SESSION_CACHE_SIZE: usize = 256;

/// A client's TLS settings, built once per channel and shared by all its connections.
///
/// - **Trust**: the operating system's root certificates by default (read once per process with
///   `rustls-native-certs`), or only the CA given with
///   [`ca_file`](ClientTlsConfigBuilder::ca_file)/[`ca_pem`](ClientTlsConfigBuilder::ca_pem).
///   `rustls-native-certs` was chosen over `rustls-platform-verifier` so that system roots and a
///   custom CA go through the same webpki verifier on every platform, with the same errors, and
///   so the dependency tree stays small; the cost is no OS-specific checks (such as revocation
///   through the macOS or Windows verifier).
/// - **mTLS**: a client certificate and key with
///   [`identity_files`](ClientTlsConfigBuilder::identity_files).
/// - **Server name**: the host of the target is the name sent in SNI and checked against the
///   server's certificate, unless [`server_name`](ClientTlsConfigBuilder::server_name) overrides
///   it (to dial an IP address but verify a DNS name, say).
/// - **Session resumption**: every connector made from one `ClientTlsConfig` shares one in-memory
///   session cache, so a reconnect to the same server resumes the session (an abbreviated
///   handshake: no certificate exchange or verification). Keep one `ClientTlsConfig` per channel,
///   not one per connection, to benefit.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use ferry::tls::{ClientTlsConfig, ALPN_H2};
/// let tls = ClientTlsConfig::builder().ca_file("ca.pem").server_name("calc.internal").build()?;
/// let tcp = tokio::net::TcpStream::connect("10.0.0.7:8443").await?;
/// let stream = tls.connect(tcp, "10.0.0.7", &[ALPN_H2]).await?; // verified as calc.internal
/// # let _ = stream; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientTlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    /// Without ALPN; the per-ALPN configurations are clones sharing its session cache.
    base: ClientConfig,
    server_name: Option<ServerName<'static>>,
    by_alpn: Mutex<HashMap<Vec<Vec<u8>>, Arc<ClientConfig>>>,
}

/// Builds a [`ClientTlsConfig`]; nothing is read until [`build`](ClientTlsConfigBuilder::build).
#[derive(Clone, Debug, Default)]
pub struct ClientTlsConfigBuilder {
    ca: Option<PemSource>,
    identity: Option<(PemSource, PemSource)>,
    server_name: Option<String>,
}

impl ClientTlsConfig {
    /// Starts a configuration that trusts the system's roots and presents no certificate.
    pub fn builder() -> ClientTlsConfigBuilder {
        ClientTlsConfigBuilder::default()
    }

    /// A configuration that trusts the system's roots and presents no certificate.
    pub fn system() -> Result<ClientTlsConfig, TlsError> {
        ClientTlsConfig::builder().build()
    }

    /// A connector offering these ALPN ids, in order (`&[ALPN_FERRY]` for `ferrys://`,
    /// `&[ALPN_H2]` for `grpcs://`, `&[ALPN_H2, ALPN_HTTP1]` for `https://`).
    ///
    /// The rustls configuration per ALPN list is made once and cached; all share one session
    /// cache.
    pub fn connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.rustls_config(alpn))
    }

    /// The rustls configuration for connections offering these ALPN ids.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let key: Vec<Vec<u8>> = alpn.iter().map(|id| id.to_vec()).collect();
        let mut cache = self
            .inner
            .by_alpn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .entry(key)
            .or_insert_with_key(|key| {
                let mut config = self.inner.base.clone();
                config.alpn_protocols = key.clone();
                Arc::new(config)
            })
            .clone()
    }

    /// The name to send in SNI and verify the certificate against when dialing `host`: the
    /// configured override, else `host` itself (a DNS name or an IP address, brackets allowed).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.inner.server_name {
            return Ok(name.clone());
        }
        parse_server_name(host)
    }

    /// Performs the TLS handshake over `io` (usually a connected `TcpStream`) for `host`.
    ///
    /// Errors are `std::io::Error`s whose message is rustls' (for example "invalid peer
    /// certificate: Expired" or "... NotValidForName").
    pub async fn connect<IO>(
        &self,
        io: IO,
        host: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self
            .server_name(host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector(alpn).connect(name, io).await
    }
}

impl std::fmt::Debug for ClientTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsConfig")
            .field("server_name", &self.inner.server_name)
            .field(
                "client_auth",
                &self.inner.base.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl ClientTlsConfigBuilder {
    /// Trusts only the CA certificates in this PEM file, instead of the system's roots.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> ClientTlsConfigBuilder {
        self.ca = Some(PemSource::File(path.as_ref().to_path_buf()));
        self
    }

    /// Trusts only the CA certificates in these PEM bytes, instead of the system's roots.
    pub fn ca_pem(mut self, pem: &[u8]) -> ClientTlsConfigBuilder {
        self.ca = Some(PemSource::Bytes(Arc::from(pem)));
        self
    }

    /// Presents the certificate chain and key in these PEM files when the server asks (mTLS).
    pub fn identity_files(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> ClientTlsConfigBuilder {
        self.identity = Some((
            PemSource::File(cert.as_ref().to_path_buf()),
            PemSource::File(key.as_ref().to_path_buf()),
        ));
        self
    }

    /// Presents the certificate chain and key in these PEM bytes when the server asks (mTLS).
    pub fn identity_pem(mut self, cert: &[u8], key: &[u8]) -> ClientTlsConfigBuilder {
        self.identity = Some((
            PemSource::Bytes(Arc::from(cert)),
            PemSource::Bytes(Arc::from(key)),
        ));
        self
    }

    /// Sends this name in SNI and verifies the server's certificate against it, whatever host
    /// is dialed.
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTlsConfigBuilder {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the files and builds the configuration.
    pub fn build(self) -> Result<ClientTlsConfig, TlsError> {
        let roots = match &self.ca {
            Some(source) => {
                let (pem, name) = source.read()?;
                Arc::new(pem::root_store(&pem, &name)?)
            }
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut base = match &self.identity {
            Some((cert, key)) => {
                let (cert_pem, cert_name) = cert.read()?;
                let (key_pem, key_name) = key.read()?;
                builder
                    .with_client_auth_cert(
                        pem::certificates(&cert_pem, &cert_name)?,
                        pem::private_key(&key_pem, &key_name)?,
                    )
                    .map_err(TlsError::KeyPair)?
            }
            None => builder.with_no_client_auth(),
        };
        // Explicit, though it is rustls' default: one in-memory cache, shared by every per-ALPN
        // clone of `base` (clones share the `Arc`'d store).
        base.resumption = Resumption::in_memory_sessions(SESSION_CACHE_SIZE);
        let server_name = self
            .server_name
            .as_deref()
            .map(parse_server_name)
            .transpose()?;
        Ok(ClientTlsConfig {
            inner: Arc::new(Inner {
                base,
                server_name,
                by_alpn: Mutex::new(HashMap::new()),
            }),
        })
    }
}

fn parse_server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// The system's trust roots, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!("skipping part of the system certificate store: {error}");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!("ignored {ignored} unparsable system root certificates");
            }
            (added > 0).then(|| Arc::new(roots))
        })
        .clone()
        .ok_or(TlsError::NoRoots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(parse_server_name("calc.internal").is_ok());
        assert!(matches!(
            parse_server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            parse_server_name("[::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(parse_server_name("not a name").is_err());
    }
}
