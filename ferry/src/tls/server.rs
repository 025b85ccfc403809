//! The server's TLS configuration: certificate, optional client CA, ALPN, live reload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

use super::pem::{self, PemSource};
use super::{SERVER_ALPN, TlsError};
use crate::file_watch;

/// How many TLS sessions a server remembers for resumption (about 200 bytes each).
const SESSION_CACHE_SIZE: usize = 4096;

/// A server's TLS settings: its certificate and key, an optional CA for client certificates
/// (mTLS), the ALPN ids it offers, and whether plaintext is still accepted on the same port.
///
/// Certificates loaded from files are **reloaded when the files change**: every
/// [`reload_interval`](ServerTlsConfig::reload_interval) (10 s by default) the files' modification
/// time, size and content hash are compared with the last look, and on a change the new
/// certificate and key are loaded and checked to belong together. New handshakes get the new
/// certificate; open connections keep theirs and go on working. A new file that cannot be used
/// (half-written, key and certificate out of step, unparsable) keeps the old certificate and logs
/// a warning; the next change is tried again. [`reload`](ServerTlsConfig::reload) does the same at
/// once, for a server that reloads on `SIGHUP`.
///
/// The polling task starts the first time the configuration is used
/// ([`acceptor`](ServerTlsConfig::acceptor) or [`rustls_config`](ServerTlsConfig::rustls_config))
/// inside a tokio runtime, and stops when the last clone of the configuration is dropped.
///
/// Cloning is cheap and every clone shares the live certificate.
///
/// ```no_run
/// # fn demo() -> Result<(), ferry::tls::TlsError> {
/// use std::time::Duration;
/// let tls = ferry::tls::ServerTlsConfig::from_pem_files("/etc/ferry/tls.crt", "/etc/ferry/tls.key")?
///     .client_ca_file("/etc/ferry/clients-ca.pem")? // mTLS: clients must present a certificate
///     .reload_interval(Some(Duration::from_secs(30)))
///     .allow_plaintext(false);
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerTlsConfig {
    shared: Arc<Shared>,
}

struct Shared {
    provider: Arc<CryptoProvider>,
    cert: PemSource,
    key: PemSource,
    resolver: Arc<ReloadingCert>,
    state: Mutex<State>,
    config: ArcSwap<ServerConfig>,
    watching: AtomicBool,
}

struct State {
    client_ca: Option<(PemSource, Arc<RootCertStore>)>,
    /// `None`: required exactly when a client CA is set.
    require_client_cert: Option<bool>,
    allow_plaintext: bool,
    alpn: Vec<Vec<u8>>,
    reload_interval: Option<Duration>,
    cert_fingerprint: Option<u64>,
    ca_fingerprint: Option<u64>,
}

/// The certificate rustls presents on each new handshake, swapped atomically on reload.
#[derive(Debug)]
struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    /// Set when the configuration cannot be served safely (client certificates required but no
    /// CA to check them against): every handshake is refused rather than let clients in unchecked.
    refuse: AtomicBool,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.refuse.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ServerTlsConfig {
    /// The certificate chain (leaf first) and private key in these PEM files, watched for changes.
    ///
    /// The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC); the chain should include intermediates.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTlsConfig, TlsError> {
        ServerTlsConfig::new(
            PemSource::File(cert.as_ref().to_path_buf()),
            PemSource::File(key.as_ref().to_path_buf()),
        )
    }

    /// The certificate chain and private key from PEM bytes; never reloaded.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerTlsConfig, TlsError> {
        ServerTlsConfig::new(
            PemSource::Bytes(Arc::from(cert_pem)),
            PemSource::Bytes(Arc::from(key_pem)),
        )
    }

    fn new(cert: PemSource, key: PemSource) -> Result<ServerTlsConfig, TlsError> {
        let provider = provider();
        let certified = load_certified_key(&cert, &key, &provider)?;
        let cert_fingerprint = fingerprint_of(&[&cert, &key]);
        let resolver = Arc::new(ReloadingCert {
            current: ArcSwap::from_pointee(certified),
            refuse: AtomicBool::new(false),
        });
        let state = State {
            client_ca: None,
            require_client_cert: None,
            allow_plaintext: false,
            alpn: SERVER_ALPN.iter().map(|id| id.to_vec()).collect(),
            reload_interval: Some(file_watch::DEFAULT_RELOAD_INTERVAL),
            cert_fingerprint,
            ca_fingerprint: None,
        };
        let config = build_config(&provider, &state, &resolver)?;
        Ok(ServerTlsConfig {
            shared: Arc::new(Shared {
                provider,
                cert,
                key,
                resolver,
                state: Mutex::new(state),
                config: ArcSwap::from_pointee(config),
                watching: AtomicBool::new(false),
            }),
        })
    }

    /// Verifies client certificates against the CA certificates in this PEM file (watched for
    /// changes like the server certificate). Client certificates become required unless
    /// [`require_client_cert(false)`](ServerTlsConfig::require_client_cert) makes them optional.
    pub fn client_ca_file(self, path: impl AsRef<Path>) -> Result<ServerTlsConfig, TlsError> {
        self.set_client_ca(PemSource::File(path.as_ref().to_path_buf()))
    }

    /// Verifies client certificates against the CA certificates in these PEM bytes.
    pub fn client_ca_pem(self, pem: &[u8]) -> Result<ServerTlsConfig, TlsError> {
        self.set_client_ca(PemSource::Bytes(Arc::from(pem)))
    }

    fn set_client_ca(self, source: PemSource) -> Result<ServerTlsConfig, TlsError> {
        let roots = load_roots(&source)?;
        {
            let mut state = lock(&self.shared.state);
            state.ca_fingerprint = fingerprint_of(&[&source]);
            state.client_ca = Some((source, Arc::new(roots)));
        }
        self.rebuild()?;
        Ok(self)
    }

    /// Whether a client must present a certificate signed by the client CA.
    ///
    /// Defaults to `true` once a client CA is set. With `false`, a certificate is asked for and
    /// verified when sent, and clients without one are let through (the authentication layer can
    /// still refuse them per method). Requiring client certificates without a client CA refuses
    /// every handshake (and logs why) rather than let clients in unchecked.
    pub fn require_client_cert(self, required: bool) -> ServerTlsConfig {
        lock(&self.shared.state).require_client_cert = Some(required);
        self.rebuild_or_warn();
        self
    }

    /// Whether plaintext connections are still served on the TLS port (default `false`).
    ///
    /// The server reads it with [`is_plaintext_allowed`](ServerTlsConfig::is_plaintext_allowed)
    /// when it sniffs a connection; see [`is_tls_handshake`](super::is_tls_handshake).
    pub fn allow_plaintext(self, allowed: bool) -> ServerTlsConfig {
        lock(&self.shared.state).allow_plaintext = allowed;
        self
    }

    /// Replaces the ALPN ids offered, in order of preference (default [`SERVER_ALPN`]).
    pub fn alpn_protocols(self, protocols: &[&[u8]]) -> ServerTlsConfig {
        lock(&self.shared.state).alpn = protocols.iter().map(|id| id.to_vec()).collect();
        self.rebuild_or_warn();
        self
    }

    /// How often the certificate, key and client CA files are checked for changes (default 10 s);
    /// `None` turns polling off, leaving [`reload`](ServerTlsConfig::reload).
    pub fn reload_interval(self, interval: Option<Duration>) -> ServerTlsConfig {
        lock(&self.shared.state).reload_interval = interval.filter(|d| !d.is_zero());
        self
    }

    /// Whether plaintext connections may be served on the same port.
    pub fn is_plaintext_allowed(&self) -> bool {
        lock(&self.shared.state).allow_plaintext
    }

    /// Whether clients must present a verified certificate.
    pub fn is_client_cert_required(&self) -> bool {
        let state = lock(&self.shared.state);
        state
            .require_client_cert
            .unwrap_or(state.client_ca.is_some())
    }

    /// The rustls configuration for new connections.
    ///
    /// Certificate reloads reach every configuration ever returned; a client-CA reload builds a
    /// new one (with a fresh session cache, so sessions verified under the old CA cannot be
    /// resumed), so take it per accepted connection (an `Arc` clone) rather than once.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        self.watch();
        self.shared.config.load_full()
    }

    /// A tokio-rustls acceptor over [`rustls_config`](ServerTlsConfig::rustls_config); take one
    /// per accepted connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.rustls_config())
    }

    /// Rereads the certificate, key and client CA files now (for `SIGHUP`).
    ///
    /// On error nothing changes: the old certificate and CA stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified =
            load_certified_key(&self.shared.cert, &self.shared.key, &self.shared.provider)?;
        let ca = {
            let state = lock(&self.shared.state);
            state.client_ca.as_ref().map(|(source, _)| source.clone())
        };
        let roots = ca.as_ref().map(load_roots).transpose()?;
        self.shared.resolver.current.store(Arc::new(certified));
        {
            let mut state = lock(&self.shared.state);
            state.cert_fingerprint = fingerprint_of(&[&self.shared.cert, &self.shared.key]);
            if let (Some((source, current)), Some(roots)) = (state.client_ca.as_mut(), roots) {
                *current = Arc::new(roots);
                let source = source.clone();
                state.ca_fingerprint = fingerprint_of(&[&source]);
            }
        }
        self.rebuild()?;
        tracing::info!("TLS certificate reloaded");
        Ok(())
    }

    fn rebuild(&self) -> Result<(), TlsError> {
        let state = lock(&self.shared.state);
        let config = build_config(&self.shared.provider, &state, &self.shared.resolver)?;
        self.shared.config.store(Arc::new(config));
        Ok(())
    }

    fn rebuild_or_warn(&self) {
        if let Err(e) = self.rebuild() {
            tracing::warn!("TLS configuration not changed: {e}");
        }
    }

    fn watch(&self) {
        let has_files = self.shared.cert.path().is_some()
            || lock(&self.shared.state)
                .client_ca
                .as_ref()
                .is_some_and(|(source, _)| source.path().is_some());
        if !has_files || self.shared.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let started = file_watch::spawn_poller(
            &self.shared,
            |shared| lock(&shared.state).reload_interval,
            |shared| {
                ServerTlsConfig {
                    shared: shared.clone(),
                }
                .reload_changed()
            },
        );
        if !started {
            self.shared.watching.store(false, Ordering::Release);
        }
    }

    /// One poll: reload whatever changed since the last look.
    fn reload_changed(&self) {
        let shared = &self.shared;
        let cert_now = fingerprint_of(&[&shared.cert, &shared.key]);
        let (cert_before, ca_source, ca_before) = {
            let state = lock(&shared.state);
            let ca = state.client_ca.as_ref().map(|(source, _)| source.clone());
            (state.cert_fingerprint, ca, state.ca_fingerprint)
        };
        if cert_now.is_some() && cert_now != cert_before {
            lock(&shared.state).cert_fingerprint = cert_now;
            match load_certified_key(&shared.cert, &shared.key, &shared.provider) {
                Ok(certified) => {
                    shared.resolver.current.store(Arc::new(certified));
                    tracing::info!("TLS certificate reloaded from {}", describe(&shared.cert));
                }
                Err(e) => tracing::warn!("TLS certificate not reloaded, keeping the old one: {e}"),
            }
        }
        if let Some(source) = ca_source {
            let ca_now = fingerprint_of(&[&source]);
            if ca_now.is_some() && ca_now != ca_before {
                lock(&shared.state).ca_fingerprint = ca_now;
                match load_roots(&source) {
                    Ok(roots) => {
                        if let Some((_, current)) = lock(&shared.state).client_ca.as_mut() {
                            *current = Arc::new(roots);
                        }
                        match self.rebuild() {
                            Ok(()) => {
                                tracing::info!("TLS client CA reloaded from {}", describe(&source))
                            }
                            Err(e) => tracing::warn!("TLS client CA not reloaded: {e}"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!("TLS client CA not reloaded, keeping the old one: {e}")
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("ServerTlsConfig")
            .field("cert", &describe(&self.shared.cert))
            .field(
                "client_ca",
                &state.client_ca.as_ref().map(|(s, _)| describe(s)),
            )
            .field("require_client_cert", &state.require_client_cert)
            .field("allow_plaintext", &state.allow_plaintext)
            .field("reload_interval", &state.reload_interval)
            .finish_non_exhaustive()
    }
}

fn describe(source: &PemSource) -> String {
    match source.path() {
        Some(path) => path.display().to_string(),
        None => "PEM bytes".to_owned(),
    }
}

fn fingerprint_of(sources: &[&PemSource]) -> Option<u64> {
    let paths: Option<Vec<PathBuf>> = sources
        .iter()
        .map(|s| s.path().map(Path::to_path_buf))
        .collect();
    file_watch::fingerprint(&paths?).ok()
}

fn load_certified_key(
    cert: &PemSource,
    key: &PemSource,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let (cert_pem, cert_name) = cert.read()?;
    let (key_pem, key_name) = key.read()?;
    let chain = pem::certificates(&cert_pem, &cert_name)?;
    let key = pem::private_key(&key_pem, &key_name)?;
    warn_if_outside_validity(&chain[0], &cert_name);
    CertifiedKey::from_der(chain, key, provider).map_err(TlsError::KeyPair)
}

/// An expired or not-yet-valid certificate is still served (clients will refuse it with a clear
/// error), but the operator hears about it.
fn warn_if_outside_validity(der: &[u8], name: &str) {
    use x509_parser::prelude::*;
    if let Ok((_, cert)) = X509Certificate::from_der(der)
        && !cert.validity().is_valid()
    {
        tracing::warn!(
            "TLS certificate {name} is outside its validity period ({} to {}); clients will refuse it",
            cert.validity().not_before,
            cert.validity().not_after
        );
    }
}

fn load_roots(source: &PemSource) -> Result<RootCertStore, TlsError> {
    let (pem, name) = source.read()?;
    pem::root_store(&pem, &name)
}

fn build_config(
    provider: &Arc<CryptoProvider>,
    state: &State,
    resolver: &Arc<ReloadingCert>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let required = state
        .require_client_cert
        .unwrap_or(state.client_ca.is_some());
    let verifier: Arc<dyn ClientCertVerifier> = match &state.client_ca {
        Some((_, roots)) => {
            let builder =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let builder = if required {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map_err(|e| TlsError::Config(format!("client CA: {e}")))?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let refuse = required && state.client_ca.is_none();
    if refuse {
        tracing::warn!(
            "client certificates are required but no client CA is set: every TLS handshake will be refused; set `client_ca_file`"
        );
    }
    resolver.refuse.store(refuse, Ordering::Relaxed);
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = state.alpn.clone();
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    Ok(config)
}
