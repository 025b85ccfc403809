//! The one error type of the `tls` module.

use std::path::PathBuf;

/// Why a TLS configuration could not be built or reloaded.
///
/// Each message names the file or setting at fault and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// PEM input held no certificate.
    #[error("{0}: no certificate found; expected PEM blocks `-----BEGIN CERTIFICATE-----`")]
    NoCertificates(String),
    /// PEM input held no private key, or one rustls cannot use.
    #[error(
        "{0}: no usable private key; expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"
    )]
    NoPrivateKey(String),
    /// PEM input was malformed.
    #[error("{what}: malformed PEM: {detail}")]
    Pem {
        /// Which input.
        what: String,
        /// The parser's complaint.
        detail: String,
    },
    /// A certificate could not be parsed or used.
    #[error("{0}")]
    Certificate(String),
    /// The private key does not belong to the certificate, or rustls refused the pair.
    #[error("the certificate and private key do not form a usable pair: {0}")]
    KeyPair(rustls::Error),
    /// No trust roots: the system store is empty and no CA was given.
    #[error(
        "no trust roots: the system certificate store is empty or unreadable; set a CA with `ca_file` or `ca_pem`"
    )]
    NoRoots,
    /// A server name (SNI) that is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}: expected a DNS name or an IP address")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}
