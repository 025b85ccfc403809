//! The server-side tower layer: authenticate, authorize, hand the principal to the handler.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use super::{AuthChain, Authenticator, Policy, Principal};
use crate::tls::PeerIdentity;
use crate::{Request, Status};

/// A tower layer that authenticates and authorizes every call before the inner service sees it.
///
/// For each call it runs the authenticators in the order added (see [`AuthChain`]), reading the
/// metadata, the method path and the [`PeerIdentity`] the TLS transport left in the request's
/// extensions; checks the [`Policy`]; and on success inserts the [`Principal`] (if any) into the
/// request's extensions and calls the inner service. A refusal answers at once with
/// `UNAUTHENTICATED` or `PERMISSION_DENIED`; the inner service is not called.
///
/// The service is generic over the request body, so one layer guards unary and streaming calls
/// of every protocol alike. Cloning is cheap.
///
/// ```
/// use ferry::auth::{AuthLayer, MtlsAuthenticator, Policy, Rule};
/// let layer = AuthLayer::new(Policy::new().rule("/grpc.health.v1.Health/*", Rule::allow_unauthenticated()))
///     .authenticator(MtlsAuthenticator::new());
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
struct Shared {
    chain: AuthChain,
    policy: Policy,
}

impl AuthLayer {
    /// A layer enforcing `policy`, with no authenticators yet (so every caller is anonymous).
    pub fn new(policy: Policy) -> AuthLayer {
        AuthLayer {
            shared: Arc::new(Shared {
                chain: AuthChain::new(),
                policy,
            }),
        }
    }

    /// Adds an authenticator after those already added.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> AuthLayer {
        let shared = Arc::make_mut(&mut self.shared);
        let chain = std::mem::take(&mut shared.chain);
        shared.chain = chain.with(authenticator);
        self
    }

    /// Authenticates and authorizes one call without a service around it: the principal (if
    /// any) on success, the status to answer with on refusal.
    pub fn check<B>(&self, request: &Request<B>) -> Result<Option<Principal>, Status> {
        let peer = request.extensions().get::<PeerIdentity>();
        let method = request.method();
        let principal = self
            .shared
            .chain
            .authenticate(request.metadata(), method, peer)?;
        self.shared.policy.check(method, principal.as_ref())?;
        Ok(principal)
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Error = Status>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = Either<Ready<Result<S::Response, Status>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.layer.check(&request) {
            Ok(principal) => {
                let extensions = request.extensions_mut();
                extensions.remove::<Principal>();
                if let Some(principal) = principal {
                    extensions.insert(principal);
                }
                Either::Right(self.inner.call(request))
            }
            Err(status) => Either::Left(ready(Err(status))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKeyAuthenticator, MtlsAuthenticator, Rule};
    use crate::{Code, Response};
    use tower::{Layer, Service, ServiceExt};

    /// Echoes who the handler saw.
    fn who_am_i<B>()
    -> impl Service<Request<B>, Response = Response<String>, Error = Status, Future: Send> + Clone
    where
        B: Send + 'static,
    {
        tower::service_fn(|req: Request<B>| async move {
            let who = req.extensions().get::<Principal>().map_or_else(
                || "anonymous".to_owned(),
                |p| format!("{}:{}", p.kind, p.subject),
            );
            Ok::<_, Status>(Response::new(who))
        })
    }

    fn layer() -> AuthLayer {
        AuthLayer::new(
            Policy::deny_by_default()
                .rule("/grpc.health.v1.Health/*", Rule::allow_unauthenticated())
                .rule("/a.S/*", Rule::authenticated())
                .rule("/a.S/Admin", Rule::new().role("admin")),
        )
        .authenticator(MtlsAuthenticator::new())
        .authenticator(ApiKeyAuthenticator::new().key(
            "k-0123456789abcdef",
            Principal::new("api-key", "ops").with_roles(["admin"]),
        ))
    }

    async fn call<B: Send + 'static>(
        method: &'static str,
        key: Option<&str>,
        peer: Option<PeerIdentity>,
        body: B,
    ) -> Result<String, Status> {
        let mut req = Request::new(body);
        req.set_method(method);
        if let Some(key) = key {
            req.metadata_mut().insert("x-api-key", key);
        }
        if let Some(peer) = peer {
            req.extensions_mut().insert(peer);
        }
        // A principal smuggled in by an earlier layer never survives authentication.
        req.extensions_mut()
            .insert(Principal::new("forged", "root"));
        let svc = layer().layer(who_am_i::<B>());
        Ok(svc.oneshot(req).await?.into_inner())
    }

    #[tokio::test]
    async fn every_outcome() {
        let peer = PeerIdentity::new("CN=front").with_dns_name("front.svc");
        assert_eq!(
            call("/grpc.health.v1.Health/Check", None, None, ())
                .await
                .ok()
                .as_deref(),
            Some("anonymous")
        );
        assert_eq!(
            call("/a.S/M", None, Some(peer.clone()), ())
                .await
                .ok()
                .as_deref(),
            Some("mtls:front.svc")
        );
        assert_eq!(
            call(
                "/a.S/M",
                Some("k-0123456789abcdef"),
                None,
                "a body of any type"
            )
            .await
            .ok()
            .as_deref(),
            Some("api-key:ops")
        );
        let code = |r: Result<String, Status>| r.err().map(|s| s.code());
        assert_eq!(
            code(call("/a.S/M", None, None, ()).await),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(
                call(
                    "/a.S/M",
                    Some("k-wrong-wrong-wrong"),
                    Some(peer.clone()),
                    ()
                )
                .await
            ),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(call("/a.S/Admin", None, Some(peer.clone()), ()).await),
            Some(Code::PermissionDenied)
        );
        assert!(
            call("/a.S/Admin", Some("k-0123456789abcdef"), None, ())
                .await
                .is_ok()
        );
        assert_eq!(
            code(call("/b.T/M", Some("k-0123456789abcdef"), None, ()).await),
            Some(Code::PermissionDenied)
        );
    }
}
