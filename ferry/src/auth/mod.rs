//! Authentication and authorization as tower layers that see every call.
//!
//! On the server, [`AuthLayer`] runs the [`Authenticator`]s on each call's metadata (and the TLS
//! [`PeerIdentity`] the transport put in its extensions), then checks the [`Policy`] for the
//! method. A call that passes carries the [`Principal`] in its extensions for the handler:
//!
//! ```
//! use ferry::auth::{ApiKeyAuthenticator, AuthLayer, Policy, Principal, Rule};
//!
//! let keys = ApiKeyAuthenticator::new().key("k-3f9a1c", Principal::new("api-key", "billing").with_roles(["reader"]));
//! let policy = Policy::deny_by_default()
//!     .rule("/grpc.health.v1.Health/*", Rule::allow_unauthenticated())
//!     .rule("/calculator.v1.Calculator/Add", Rule::new().role("reader"))
//!     .rule("/calculator.v1.Calculator/*", Rule::new().role("admin"));
//! let layer = AuthLayer::new(policy).authenticator(keys);
//! // Server::builder().layer(layer) ...; in a handler:
//! // let who = request.extensions().get::<Principal>().map(|p| p.subject.as_str());
//! # let _ = layer;
//! ```
//!
//! Failures never say more than needed: `UNAUTHENTICATED` "missing or invalid credentials" (or
//! "token expired"), `PERMISSION_DENIED` "permission denied"; the reasons (bad signature, unknown
//! key id, which rule refused) are logged at debug level. On HTTP, the transport adds
//! `WWW-Authenticate` to 401 answers using [`www_authenticate`].
//!
//! On the client, [`BearerLayer`] attaches `authorization: Bearer <token>` from a
//! [`TokenProvider`] to every call of a channel.

mod api_key;
mod client;
#[cfg(feature = "jwt")]
mod jwt;
mod layer;
mod mtls;
mod policy;

use std::future::Future;
use std::pin::Pin;

pub use api_key::ApiKeyAuthenticator;
pub use client::{BearerLayer, BearerService, RefreshingToken, StaticToken, Token, TokenProvider};
#[cfg(feature = "jwt")]
pub use jwt::{JwtAuthenticator, JwtAuthenticatorBuilder, JwtError};
pub use layer::{AuthLayer, AuthService};
pub use mtls::MtlsAuthenticator;
pub use policy::{Policy, PolicyError, Rule};

use crate::tls::PeerIdentity;
use crate::{Code, Metadata, Status};

/// A boxed, sendable future, as [`TokenProvider`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The message of every `UNAUTHENTICATED` answer except an expired token.
pub const INVALID_CREDENTIALS: &str = "missing or invalid credentials";

/// The message of `UNAUTHENTICATED` for a token whose `exp` has passed, so clients know to
/// refresh it.
pub const TOKEN_EXPIRED: &str = "token expired";

/// The message of every `PERMISSION_DENIED` answer.
pub const PERMISSION_DENIED: &str = "permission denied";

/// Who is calling, as an [`Authenticator`] established it.
///
/// Handlers find it in the request's extensions once [`AuthLayer`] let the call through:
///
/// ```
/// # fn handler(request: ferry::Request<()>) {
/// use ferry::auth::Principal;
/// if let Some(who) = request.extensions().get::<Principal>() {
///     println!("{} ({}) with roles {:?}", who.subject, who.kind, who.roles);
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Principal {
    /// The caller's identity: a JWT's `sub`, an API key's owner, an mTLS SPIFFE id or DNS name.
    pub subject: String,
    /// Roles the credentials grant (a JWT's `roles` claim, an API key's roles).
    pub roles: Vec<String>,
    /// OAuth scopes the credentials grant (a JWT's `scope` or `scp` claim).
    pub scopes: Vec<String>,
    /// Which kind of authenticator established it: `"jwt"`, `"api-key"`, `"mtls"` or a custom
    /// authenticator's name.
    pub kind: &'static str,
    /// All claims of a JWT (`Null` for other kinds), for handlers that need more than the above.
    pub claims: serde_json::Value,
}

impl Principal {
    /// A principal of this kind and subject, without roles, scopes or claims.
    pub fn new(kind: &'static str, subject: impl Into<String>) -> Principal {
        Principal {
            subject: subject.into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            kind,
            claims: serde_json::Value::Null,
        }
    }

    /// Adds roles.
    pub fn with_roles<I, S>(mut self, roles: I) -> Principal
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Adds scopes.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Principal
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Sets the raw claims.
    pub fn with_claims(mut self, claims: serde_json::Value) -> Principal {
        self.claims = claims;
        self
    }

    /// Whether the principal has this role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the principal has this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Establishes who is calling from one kind of credentials.
///
/// It answers:
/// - `Ok(Some(principal))`: credentials of this kind were present and valid;
/// - `Ok(None)`: no credentials of this kind (another authenticator may know the caller);
/// - `Err(status)`: credentials of this kind were present but invalid. Use
///   `Status::unauthenticated` with [`INVALID_CREDENTIALS`] (or [`TOKEN_EXPIRED`]) and log the
///   reason at debug level; never put key ids or parser messages in the status.
///
/// It runs on every call, synchronously: an authenticator that consults another service
/// (token introspection, a user directory) should cache and refresh in the background, the way
/// `JwtAuthenticator` reloads its key set.
///
/// ```
/// use ferry::auth::{Authenticator, Principal};
/// use ferry::tls::PeerIdentity;
/// use ferry::{Metadata, Status};
///
/// /// Trusts a header set by the sidecar proxy in front of the service.
/// struct FromProxy;
/// impl Authenticator for FromProxy {
///     fn authenticate(&self, md: &Metadata, _method: &str, _peer: Option<&PeerIdentity>)
///         -> Result<Option<Principal>, Status> {
///         Ok(md.get("x-authenticated-user").map(|user| Principal::new("proxy", user)))
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one call to `method` (`/package.Service/Method`).
    fn authenticate(
        &self,
        metadata: &Metadata,
        method: &str,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status>;
}

impl<A: Authenticator + ?Sized> Authenticator for std::sync::Arc<A> {
    fn authenticate(
        &self,
        metadata: &Metadata,
        method: &str,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status> {
        (**self).authenticate(metadata, method, peer)
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Box<A> {
    fn authenticate(
        &self,
        metadata: &Metadata,
        method: &str,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status> {
        (**self).authenticate(metadata, method, peer)
    }
}

/// Several authenticators tried in order: the first that yields a principal wins, and any that
/// finds invalid credentials fails the call (a bad token is not excused by a valid API key).
///
/// ```
/// use ferry::auth::{ApiKeyAuthenticator, AuthChain, MtlsAuthenticator};
/// let chain = AuthChain::new()
///     .with(MtlsAuthenticator::new())
///     .with(ApiKeyAuthenticator::new());
/// assert_eq!(chain.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct AuthChain {
    authenticators: Vec<std::sync::Arc<dyn Authenticator>>,
}

impl AuthChain {
    /// An empty chain, which authenticates nobody.
    pub fn new() -> AuthChain {
        AuthChain::default()
    }

    /// Appends an authenticator.
    pub fn with(mut self, authenticator: impl Authenticator) -> AuthChain {
        self.authenticators.push(std::sync::Arc::new(authenticator));
        self
    }

    /// Number of authenticators.
    pub fn len(&self) -> usize {
        self.authenticators.len()
    }

    /// Whether the chain has no authenticator.
    pub fn is_empty(&self) -> bool {
        self.authenticators.is_empty()
    }
}

impl Authenticator for AuthChain {
    fn authenticate(
        &self,
        metadata: &Metadata,
        method: &str,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<Principal>, Status> {
        let mut found = None;
        for authenticator in &self.authenticators {
            // Every authenticator runs, so invalid credentials of any kind fail the call even
            // when an earlier authenticator already knows the caller.
            if let Some(principal) = authenticator.authenticate(metadata, method, peer)? {
                found.get_or_insert(principal);
            }
        }
        Ok(found)
    }
}

impl std::fmt::Debug for AuthChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthChain")
            .field("authenticators", &self.authenticators.len())
            .finish()
    }
}

/// The `WWW-Authenticate` value an HTTP transport should send with a status it maps to 401:
/// `Some("Bearer")` for `UNAUTHENTICATED`, `None` otherwise.
///
/// ```
/// use ferry::Status;
/// use ferry::auth::www_authenticate;
/// assert_eq!(www_authenticate(&Status::unauthenticated("missing or invalid credentials")), Some("Bearer"));
/// assert_eq!(www_authenticate(&Status::permission_denied("permission denied")), None);
/// ```
pub fn www_authenticate(status: &Status) -> Option<&'static str> {
    (status.code() == Code::Unauthenticated).then_some("Bearer")
}

/// `UNAUTHENTICATED` with [`INVALID_CREDENTIALS`].
pub(crate) fn invalid_credentials() -> Status {
    Status::unauthenticated(INVALID_CREDENTIALS)
}

/// The bearer token in `authorization: Bearer <token>`, if the header holds one.
#[cfg_attr(not(feature = "jwt"), allow(dead_code))]
pub(crate) fn bearer_token(metadata: &Metadata) -> Option<&str> {
    let value = metadata.get("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Option<Principal>, Status>);
    impl Authenticator for Fixed {
        fn authenticate(
            &self,
            _: &Metadata,
            _: &str,
            _: Option<&PeerIdentity>,
        ) -> Result<Option<Principal>, Status> {
            self.0.clone()
        }
    }

    #[test]
    fn chain_first_principal_wins_any_error_fails() {
        let md = Metadata::new();
        let a = || Fixed(Ok(Some(Principal::new("t", "a"))));
        let b = || Fixed(Ok(Some(Principal::new("t", "b"))));
        let none = || Fixed(Ok(None));
        let bad = || Fixed(Err(invalid_credentials()));
        let chain = AuthChain::new().with(none()).with(a()).with(b());
        let got = chain.authenticate(&md, "/x/y", None);
        assert_eq!(got.ok().flatten().map(|p| p.subject), Some("a".to_owned()));
        let chain = AuthChain::new().with(a()).with(bad());
        assert_eq!(
            chain
                .authenticate(&md, "/x/y", None)
                .err()
                .map(|s| s.code()),
            Some(Code::Unauthenticated)
        );
        assert!(matches!(
            AuthChain::new().authenticate(&md, "/x/y", None),
            Ok(None)
        ));
    }

    #[test]
    fn bearer_parsing() {
        let mut md = Metadata::new();
        assert_eq!(bearer_token(&md), None);
        md.insert("authorization", "Bearer abc.def");
        assert_eq!(bearer_token(&md), Some("abc.def"));
        md.insert("authorization", "bearer  xyz ");
        assert_eq!(bearer_token(&md), Some("xyz"));
        md.insert("authorization", "Basic dXNlcg==");
        assert_eq!(bearer_token(&md), None);
        md.insert("authorization", "Bearer ");
        assert_eq!(bearer_token(&md), None);
    }
}
