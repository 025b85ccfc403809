//! The server-side service abstraction: generated adapters implement [`ServiceHandler`], and a
//! [`Router`] dispatches encoded calls to them by method path.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::{Request, Response, Status};

/// A boxed, sendable future, as returned by handlers and middleware.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The outcome of an encoded call.
pub type RawResult = Result<Response<Bytes>, Status>;

/// A type-erased tower service over encoded calls; what server and client middleware wrap.
pub type BoxService = tower::util::BoxCloneSyncService<Request<Bytes>, Response<Bytes>, Status>;

/// One protobuf service as the server sees it: encoded requests in, encoded responses out.
///
/// `ferry-build` generates an implementation for each service (e.g. `CalculatorServer`), so users
/// implement the typed trait instead of this one.
pub trait ServiceHandler: Send + Sync + 'static {
    /// Fully qualified service name, e.g. `calculator.v1.Calculator`.
    fn name(&self) -> &'static str;

    /// The encoded `FileDescriptorSet` describing this service and its messages.
    fn file_descriptor_set(&self) -> &'static [u8];

    /// Handles one call to `method` (the bare method name, e.g. `Add`).
    fn call(&self, method: &str, request: Request<Bytes>) -> BoxFuture<RawResult>;
}

/// Routes `/package.Service/Method` paths to registered [`ServiceHandler`]s.
///
/// It is a [`tower::Service`], so any tower layer can wrap it.
#[derive(Clone, Default)]
pub struct Router {
    services: Arc<HashMap<&'static str, Arc<dyn ServiceHandler>>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a service; a later service with the same name replaces an earlier one.
    pub fn add_service(mut self, service: impl ServiceHandler) -> Router {
        let services = Arc::make_mut(&mut self.services);
        services.insert(service.name(), Arc::new(service));
        self
    }

    /// Names of the registered services, sorted.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.services.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The registered service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&Arc<dyn ServiceHandler>> {
        self.services.get(name)
    }

    /// Dispatches one encoded call by its method path.
    pub fn route(&self, request: Request<Bytes>) -> BoxFuture<RawResult> {
        // Protocols intern known method paths, so the common case borrows instead of copying.
        match request.static_method() {
            Some(path) => self.route_path(path, request),
            None => {
                let path = request.method().to_owned();
                self.route_path(&path, request)
            }
        }
    }

    fn route_path(&self, path: &str, request: Request<Bytes>) -> BoxFuture<RawResult> {
        let Some((service, method)) = split_method_path(path) else {
            let status = Status::unimplemented(format!(
                "malformed method path {path:?}: expected /package.Service/Method"
            ));
            return Box::pin(std::future::ready(Err(status)));
        };
        match self.services.get(service) {
            Some(handler) => handler.call(method, request),
            None => {
                let status = Status::unimplemented(format!("unknown service {service}"));
                Box::pin(std::future::ready(Err(status)))
            }
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

/// Request metadata key that asks the server to time the handler: send `ferry-timing: 1`.
pub const TIMING_REQUEST_KEY: &str = "ferry-timing";

/// Response metadata key carrying the handler's time when a caller asked for it, in the W3C
/// Server-Timing format: `server-timing: app;dur=0.042125` (milliseconds, to the nanosecond).
pub const SERVER_TIMING_KEY: &str = "server-timing";

/// Whether a request asked for [`SERVER_TIMING_KEY`] in its response (`ferry-timing: 1`).
pub(crate) fn wants_server_timing(metadata: &crate::Metadata) -> bool {
    metadata.get(TIMING_REQUEST_KEY) == Some("1")
}

/// Runs a handler future and, when `wanted`, adds `server-timing: app;dur=<ms>` (time from
/// first poll to completion) to a successful response. Every protocol's server calls this, so
/// the opt-in timing behaves alike on all of them.
pub(crate) async fn with_server_timing<F>(wanted: bool, handler: F) -> RawResult
where
    F: Future<Output = RawResult>,
{
    if !wanted {
        return handler.await;
    }
    let started = std::time::Instant::now();
    let mut result = handler.await;
    if let Ok(response) = &mut result {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        response
            .metadata_mut()
            .insert(SERVER_TIMING_KEY, format!("app;dur={ms:.6}"));
    }
    result
}

/// Runs one call through `svc`, enforcing the request's deadline and turning a panicking
/// handler into `INTERNAL`; every protocol's server uses this, so they behave alike.
pub(crate) async fn run_call(svc: &mut BoxService, request: Request<Bytes>) -> RawResult {
    use tower::{Service, ServiceExt};
    let deadline = request.deadline();
    let timing = wants_server_timing(request.metadata());
    let future = with_server_timing(timing, svc.ready().await?.call(request));
    guarded(future, deadline).await
}

/// Awaits a handler's future until `deadline` (then `DEADLINE_EXCEEDED`), turning a panic into
/// [`handler_panicked`]. Shared by [`run_call`] and the native server's spawned handlers.
pub(crate) async fn guarded<F>(future: F, deadline: Option<std::time::Instant>) -> RawResult
where
    F: Future<Output = RawResult>,
{
    use futures_util::FutureExt;
    let guarded = std::panic::AssertUnwindSafe(future).catch_unwind();
    let outcome = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), guarded).await,
        None => Ok(guarded.await),
    };
    match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(_panic)) => Err(handler_panicked()),
        Err(_elapsed) => Err(Status::deadline_exceeded(
            "the call's deadline passed before the handler finished",
        )),
    }
}

/// The status a call gets when its handler panics.
pub(crate) fn handler_panicked() -> Status {
    Status::internal("the handler panicked")
}

/// Splits `/package.Service/Method` into `("package.Service", "Method")`.
pub fn split_method_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

impl tower::Service<Request<Bytes>> for Router {
    type Response = Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<RawResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        self.route(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_split() {
        assert_eq!(
            split_method_path("/calculator.v1.Calculator/Add"),
            Some(("calculator.v1.Calculator", "Add"))
        );
        assert_eq!(split_method_path("calculator/Add"), None);
        assert_eq!(split_method_path("/calculator"), None);
        assert_eq!(split_method_path("/a/b/c"), None);
        assert_eq!(split_method_path("//Add"), None);
    }

    #[tokio::test]
    async fn server_timing_is_opt_in() {
        let ok = || async { Ok(Response::new(Bytes::new())) };
        let plain = with_server_timing(false, ok()).await.unwrap();
        assert!(plain.metadata().get(SERVER_TIMING_KEY).is_none());
        let timed = with_server_timing(true, ok()).await.unwrap();
        let value = timed.metadata().get(SERVER_TIMING_KEY).unwrap();
        let ms: f64 = value.strip_prefix("app;dur=").unwrap().parse().unwrap();
        assert!(ms >= 0.0, "{value}");
        let mut metadata = crate::Metadata::new();
        metadata.insert(TIMING_REQUEST_KEY, "1");
        assert!(wants_server_timing(&metadata));
    }

    #[tokio::test]
    async fn unknown_service_is_unimplemented() {
        let mut req = Request::new(Bytes::new());
        req.set_method("/nope.Svc/Do");
        let err = Router::new().route(req).await.unwrap_err();
        assert_eq!(err.code(), crate::Code::Unimplemented);
    }
}
