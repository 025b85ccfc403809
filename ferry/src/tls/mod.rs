//! TLS and mTLS with rustls: server and client configurations, the caller's certificate identity,
//! and telling a TLS handshake from plaintext on the one port.
//!
//! Everything that needs rustls is behind the `tls` cargo feature: `ServerTlsConfig`,
//! `ClientTlsConfig`, `TlsError` and `PeerIdentity::from_der`. The plain data and helpers
//! ([`PeerIdentity`], [`is_tls_handshake`], the ALPN ids) are always there, so a server built
//! without the feature can still recognise a TLS client and refuse it clearly.
//!
//! Only TLS 1.2 and TLS 1.3 are spoken (rustls implements nothing older), with rustls' `ring`
//! cryptography provider: no OpenSSL, no cmake, a C compiler is all the build needs.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ferry::tls::{ClientTlsConfig, ServerTlsConfig, ALPN_FERRY};
//!
//! // Server: certificate and key from files, reloaded when they change; clients must present a
//! // certificate signed by `clients-ca.pem`.
//! let server = ServerTlsConfig::from_pem_files("server.pem", "server.key")?
//!     .client_ca_file("clients-ca.pem")?
//!     .require_client_cert(true);
//! let acceptor = server.acceptor();
//!
//! // Client: trust only our CA, present a certificate, speak Ferry's native protocol.
//! let client = ClientTlsConfig::builder()
//!     .ca_file("ca.pem")
//!     .identity_files("client.pem", "client.key")
//!     .build()?;
//! let tcp = tokio::net::TcpStream::connect("10.0.0.1:8443").await?;
//! let tls = client.connect(tcp, "calc.internal", &[ALPN_FERRY]).await?;
//! # let _ = (acceptor, tls); Ok(()) }
//! ```

mod identity;
mod sniff;

#[cfg(feature = "tls")]
mod client;
#[cfg(feature = "tls")]
mod error;
#[cfg(feature = "tls")]
mod pem;
#[cfg(feature = "tls")]
mod server;

#[cfg(feature = "tls")]
pub use client::{ClientTlsConfig, ClientTlsConfigBuilder};
#[cfg(feature = "tls")]
pub use error::TlsError;
pub use identity::PeerIdentity;
#[cfg(feature = "tls")]
pub use server::ServerTlsConfig;
pub use sniff::{PLAINTEXT_ON_TLS_PORT_RESPONSE, TLS_HANDSHAKE_BYTE, is_tls_handshake};

/// ALPN id of Ferry's native protocol over TLS: `ferry/1`.
///
/// Not registered with IANA; it follows the registry's `name/version` shape (like `h2`, `http/1.1`
/// and `spdy/3`) so a future incompatible version of the native protocol can negotiate `ferry/2`
/// on the same port. A Ferry client connecting with `ferrys://` offers exactly this id; gRPC
/// (`grpcs://`) offers [`ALPN_H2`]; HTTP (`https://`) offers [`ALPN_H2`] and [`ALPN_HTTP1`].
///
/// ```
/// assert_eq!(ferry::tls::ALPN_FERRY, b"ferry/1");
/// ```
pub const ALPN_FERRY: &[u8] = b"ferry/1";

/// ALPN id of HTTP/2 (`h2`), which carries gRPC and HTTP/JSON over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// ALPN id of HTTP/1.1 (`http/1.1`), which carries HTTP/JSON over TLS.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The ALPN ids a Ferry server offers, in its order of preference.
///
/// When a client offers none of them, rustls refuses the handshake with the
/// `no_application_protocol` alert (RFC 7301). A client that offers no ALPN at all (for example
/// `openssl s_client` without `-alpn`) is accepted; the server then sniffs the first decrypted
/// bytes exactly as it does on a plaintext connection.
pub const SERVER_ALPN: [&[u8]; 3] = [ALPN_FERRY, ALPN_H2, ALPN_HTTP1];
