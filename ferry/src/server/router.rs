//! The server-side service abstraction: generated adapters implement [`ServiceHandler`], and a
//! [`Router`] dispatches encoded calls to them by method path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::call::{self, Body, BoxFuture, CallResult, MethodKind};
use crate::{Request, Status};

/// One protobuf service as the server sees it: encoded requests in, encoded responses out.
///
/// `ferry-build` generates an implementation for each service (e.g. `CalculatorServer`), so users
/// implement the typed trait instead of this one.
pub trait ServiceHandler: Send + Sync + 'static {
    /// Fully qualified service name, e.g. `calculator.v1.Calculator`.
    fn name(&self) -> &'static str;

    /// The encoded `FileDescriptorSet` describing this service and its messages.
    fn file_descriptor_set(&self) -> &'static [u8];

    /// Every method of the service: its bare name (e.g. `Add`) and how it streams.
    fn methods(&self) -> &'static [(&'static str, MethodKind)];

    /// Handles one call to `method` (the bare method name, e.g. `Add`).
    fn call(&self, method: &str, request: Request<Body>) -> BoxFuture<CallResult>;

    /// JSON ⇄ protobuf transcoding for `method` (the bare method name) through its generated
    /// message structs, so the HTTP/JSON path needs no reflection; `None` (the default, and for
    /// methods whose messages hold `google.protobuf.Any`) keeps the reflection path. See
    /// [`JsonCodec`](crate::json::JsonCodec) for how a server calls it.
    fn json_codec(&self, method: &str) -> Option<crate::json::JsonCodec> {
        let _ = method;
        None
    }
}

/// One registered method.
#[derive(Clone)]
struct Route {
    handler: Arc<dyn ServiceHandler>,
    /// The bare method name.
    method: &'static str,
    kind: MethodKind,
    /// The interned full path.
    path: &'static str,
}

/// Routes `/package.Service/Method` paths to registered [`ServiceHandler`]s.
///
/// It is a [`tower::Service`], so any tower layer can wrap it.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<HashMap<&'static [u8], Route>>,
    services: Arc<BTreeMap<&'static str, Arc<dyn ServiceHandler>>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a service; a later service with the same name replaces an earlier one.
    pub fn add_service(mut self, service: impl ServiceHandler) -> Router {
        let handler: Arc<dyn ServiceHandler> = Arc::new(service);
        let name = handler.name();
        let routes = Arc::make_mut(&mut self.routes);
        routes.retain(|_, route| route.handler.name() != name);
        for &(method, kind) in handler.methods() {
            let path = call::intern(&call::join(name, method));
            let route = Route {
                handler: handler.clone(),
                method,
                kind,
                path,
            };
            routes.insert(path.as_bytes(), route);
        }
        Arc::make_mut(&mut self.services).insert(name, handler);
        self
    }

    /// Names of the registered services, sorted.
    pub fn service_names(&self) -> Vec<&'static str> {
        self.services.keys().copied().collect()
    }

    /// The registered service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&Arc<dyn ServiceHandler>> {
        self.services.get(name)
    }

    /// The interned path and kind of a registered method, looked up by the path's bytes.
    pub(crate) fn lookup(&self, path: &[u8]) -> Option<(&'static str, MethodKind)> {
        self.routes.get(path).map(|route| (route.path, route.kind))
    }

    /// Dispatches one encoded call by its method path.
    pub fn route(&self, request: Request<Body>) -> BoxFuture<CallResult> {
        match self.routes.get(request.method().as_bytes()) {
            Some(route) => route.handler.call(route.method, request),
            None => {
                let status = self.unknown(request.method());
                Box::pin(std::future::ready(Err(status)))
            }
        }
    }

    /// Why `path` names no method here.
    fn unknown(&self, path: &str) -> Status {
        match call::split_method_path(path) {
            None => Status::unimplemented(format!(
                "malformed method path {path:?}: expected /package.Service/Method"
            )),
            Some((service, method)) if self.services.contains_key(service) => {
                Status::unimplemented(format!("service {service} has no method {method}"))
            }
            Some((service, _)) => Status::unimplemented(format!("unknown service {service}")),
        }
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("services", &self.service_names())
            .finish()
    }
}

impl tower::Service<Request<Body>> for Router {
    type Response = crate::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.route(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_service_is_unimplemented() {
        let mut req = Request::new(Body::empty());
        req.set_method("/nope.Svc/Do");
        let err = Router::new().route(req).await.unwrap_err();
        assert_eq!(err.code(), crate::Code::Unimplemented);
        assert!(err.message().contains("unknown service nope.Svc"), "{err}");
    }
}
