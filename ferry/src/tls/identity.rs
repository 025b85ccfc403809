//! The verified client certificate's identity, as handlers and policy see it.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

/// Who the client's verified TLS certificate says it is.
///
/// The server builds one per mTLS connection from the certificate rustls verified and puts it in
/// every request's extensions, so handlers and layers read it with
/// `request.extensions().get::<PeerIdentity>()`. Cloning is cheap (one reference count).
///
/// ```
/// use ferry::tls::PeerIdentity;
/// let peer = PeerIdentity::new("CN=front,O=Acme")
///     .with_uri("spiffe://acme.example/ns/prod/sa/front")
///     .with_dns_name("front.prod.svc");
/// assert_eq!(peer.spiffe_id(), Some("spiffe://acme.example/ns/prod/sa/front"));
/// assert_eq!(peer.dns_names(), ["front.prod.svc"]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    inner: Arc<Inner>,
}

#[derive(Clone, PartialEq, Eq, Default)]
struct Inner {
    subject: String,
    dns_names: Vec<String>,
    uris: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    certificate: Bytes,
}

impl PeerIdentity {
    /// An identity with this subject and nothing else; for tests and custom transports (servers
    /// use `PeerIdentity::from_der`, feature `tls`).
    pub fn new(subject: impl Into<String>) -> PeerIdentity {
        PeerIdentity {
            inner: Arc::new(Inner {
                subject: subject.into(),
                ..Inner::default()
            }),
        }
    }

    /// Adds a DNS subject alternative name.
    pub fn with_dns_name(mut self, name: impl Into<String>) -> PeerIdentity {
        Arc::make_mut(&mut self.inner).dns_names.push(name.into());
        self
    }

    /// Adds a URI subject alternative name (a SPIFFE id is one).
    pub fn with_uri(mut self, uri: impl Into<String>) -> PeerIdentity {
        Arc::make_mut(&mut self.inner).uris.push(uri.into());
        self
    }

    /// Adds an IP address subject alternative name.
    pub fn with_ip_address(mut self, ip: IpAddr) -> PeerIdentity {
        Arc::make_mut(&mut self.inner).ip_addresses.push(ip);
        self
    }

    /// The certificate's subject as an RFC 4514 string, most specific part first:
    /// `CN=front,O=Acme,C=DE`.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// DNS names from the subject alternative name extension, in certificate order.
    pub fn dns_names(&self) -> &[String] {
        &self.inner.dns_names
    }

    /// URIs from the subject alternative name extension, in certificate order.
    pub fn uris(&self) -> &[String] {
        &self.inner.uris
    }

    /// IP addresses from the subject alternative name extension, in certificate order.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.inner.ip_addresses
    }

    /// The first URI SAN with the `spiffe://` scheme: the workload's SPIFFE id.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.inner
            .uris
            .iter()
            .map(String::as_str)
            .find(|uri| uri.starts_with("spiffe://"))
    }

    /// The end-entity certificate, DER-encoded (empty for identities made with
    /// [`PeerIdentity::new`]).
    pub fn certificate_der(&self) -> &Bytes {
        &self.inner.certificate
    }
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("subject", &self.inner.subject)
            .field("dns_names", &self.inner.dns_names)
            .field("uris", &self.inner.uris)
            .field("ip_addresses", &self.inner.ip_addresses)
            .field(
                "certificate",
                &format_args!("{} bytes", self.inner.certificate.len()),
            )
            .finish()
    }
}

#[cfg(feature = "tls")]
mod parse {
    use super::*;
    use crate::tls::TlsError;
    use x509_parser::prelude::*;

    impl PeerIdentity {
        /// The identity in a DER-encoded X.509 certificate.
        ///
        /// It does not verify the certificate: call it on the certificate rustls verified, which
        /// [`PeerIdentity::from_connection`] does.
        pub fn from_der(der: &[u8]) -> Result<PeerIdentity, TlsError> {
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|e| TlsError::Certificate(format!("cannot parse the certificate: {e}")))?;
            let mut inner = Inner {
                subject: rfc4514(cert.subject()),
                certificate: Bytes::copy_from_slice(der),
                ..Inner::default()
            };
            let san = cert.subject_alternative_name().map_err(|e| {
                TlsError::Certificate(format!("bad subject alternative name extension: {e}"))
            })?;
            for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
                match name {
                    GeneralName::DNSName(dns) => inner.dns_names.push((*dns).to_owned()),
                    GeneralName::URI(uri) => inner.uris.push((*uri).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            inner.ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
            Ok(PeerIdentity {
                inner: Arc::new(inner),
            })
        }

        /// The identity of the client certificate rustls verified on this server connection, or
        /// `None` when the client sent none (or it cannot be parsed, which rustls' verification
        /// makes unlikely).
        ///
        /// With tokio-rustls: `PeerIdentity::from_connection(tls_stream.get_ref().1)`.
        pub fn from_connection(connection: &rustls::ServerConnection) -> Option<PeerIdentity> {
            let end_entity = connection.peer_certificates()?.first()?;
            match PeerIdentity::from_der(end_entity) {
                Ok(identity) => Some(identity),
                Err(e) => {
                    tracing::debug!("client certificate verified but unreadable: {e}");
                    None
                }
            }
        }
    }

    fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
        match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
            _ => None,
        }
    }

    /// RFC 4514: RDNs in reverse order, `,` between them, `+` inside a multi-valued RDN.
    pub(super) fn rfc4514(name: &X509Name<'_>) -> String {
        let rdns: Vec<String> = name
            .iter_rdn()
            .map(|rdn| {
                rdn.iter()
                    .map(|attr| {
                        let oid = attr.attr_type().to_id_string();
                        match (short_name(&oid), attr.as_str()) {
                            (Some(short), Ok(value)) => format!("{short}={}", escape(value)),
                            (short, _) => {
                                let key = short.map_or(oid.clone(), str::to_owned);
                                format!("{key}=#{}", hex(&attr_der(attr)))
                            }
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        rdns.into_iter().rev().collect::<Vec<_>>().join(",")
    }

    fn attr_der(attr: &AttributeTypeAndValue<'_>) -> Vec<u8> {
        use x509_parser::asn1_rs::ToDer;
        attr.attr_value()
            .to_der_vec()
            .unwrap_or_else(|_| attr.as_slice().to_vec())
    }

    /// The attribute type names RFC 4514 section 3 defines; others are written as dotted OIDs.
    fn short_name(oid: &str) -> Option<&'static str> {
        Some(match oid {
            "2.5.4.3" => "CN",
            "2.5.4.7" => "L",
            "2.5.4.8" => "ST",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.6" => "C",
            "2.5.4.9" => "STREET",
            "0.9.2342.19200300.100.1.25" => "DC",
            "0.9.2342.19200300.100.1.1" => "UID",
            _ => return None,
        })
    }

    fn escape(value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let last = value.chars().count().saturating_sub(1);
        for (i, c) in value.chars().enumerate() {
            match c {
                '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '#' if i == 0 => out.push_str("\\#"),
                ' ' if i == 0 || i == last => out.push_str("\\ "),
                '\0' => out.push_str("\\00"),
                c => out.push(c),
            }
        }
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn escapes_special_characters() {
            assert_eq!(escape("a,b"), "a\\,b");
            assert_eq!(escape(" lead"), "\\ lead");
            assert_eq!(escape("#x"), "\\#x");
            assert_eq!(escape("trail "), "trail\\ ");
            assert_eq!(escape("plain"), "plain");
        }

        #[test]
        fn garbage_is_an_error_not_a_panic() {
            assert!(PeerIdentity::from_der(b"\x30\x03garbage").is_err());
            assert!(PeerIdentity::from_der(&[]).is_err());
        }
    }
}
