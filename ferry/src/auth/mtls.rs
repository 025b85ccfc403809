//! The verified client certificate as a principal.

use super::{Authenticator, Principal};
use crate::tls::PeerIdentity;
use crate::{Metadata, Status};

/// Turns the client certificate the TLS layer verified into a [`Principal`] of kind `"mtls"`.
///
/// The subject is the certificate's SPIFFE id (first `spiffe://` URI SAN) if it has one, else
/// its first DNS SAN, else its RFC 4514 subject. Roles can be granted per subject with
/// [`role`](MtlsAuthenticator::role). Without a verified certificate it answers `Ok(None)`; the
/// certificate itself was already checked during the handshake.
///
/// ```
/// use ferry::auth::{Authenticator, MtlsAuthenticator};
/// use ferry::tls::PeerIdentity;
/// let mtls = MtlsAuthenticator::new().role("spiffe://acme.example/sa/front", "caller");
/// let peer = PeerIdentity::new("CN=front").with_uri("spiffe://acme.example/sa/front");
/// let who = mtls.authenticate(&ferry::Metadata::new(), "/a.B/C", Some(&peer)).unwrap().unwrap();
/// assert_eq!(who.subject, "spiffe://acme.example/sa/front");
/// assert_eq!(who.roles, ["caller"]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MtlsAuthenticator {
    roles: Vec<(String, String)>,
}

impl MtlsAuthenticator {
    /// Authenticates every verified client certificate, granting no roles.
    pub fn new() -> MtlsAuthenticator {
        MtlsAuthenticator::default()
    }

    /// Grants `role` to the certificate whose principal subject is `subject`.
    pub fn role(
        mut self,
        subject: impl Into<String>,
        role: impl Into<String>,
    ) -> MtlsAuthenticator {
        self.roles.push((subject.into(), role.into()));
        self
    }

    /// The principal subject for a certificate: SPIFFE id, else first DNS SAN, else subject.
    pub fn subject_of(peer: &PeerIdentity) -> &str {
        peer.spiffe_id()
            .or_else(|| peer.dns_names().first().map(String::as_str))
            .unwrap_or_else(|| peer.subject())
    }
}

impl Authenticator for MtlsAuthenticator {
    fn authenticate(
        &self,
        _metadata: &Metadata,
        _method: &str,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status> {
        let Some(peer) = peer else {
            return Ok(None);
        };
        let subject = MtlsAuthenticator::subject_of(peer);
        let roles = self
            .roles
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, role)| role.clone());
        Ok(Some(Principal::new("mtls", subject).with_roles(roles)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_preference() {
        let subject_only = PeerIdentity::new("CN=a,O=b");
        assert_eq!(MtlsAuthenticator::subject_of(&subject_only), "CN=a,O=b");
        let dns = subject_only
            .clone()
            .with_dns_name("a.svc")
            .with_uri("https://not-spiffe");
        assert_eq!(MtlsAuthenticator::subject_of(&dns), "a.svc");
        let spiffe = dns.with_uri("spiffe://td/ns/x");
        assert_eq!(MtlsAuthenticator::subject_of(&spiffe), "spiffe://td/ns/x");
        let none = MtlsAuthenticator::new().authenticate(&Metadata::new(), "/a/b", None);
        assert!(matches!(none, Ok(None)));
    }
}
