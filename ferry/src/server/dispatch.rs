//! The one entry every protocol's server calls: the layer stack and the router, for unary and
//! streaming calls alike, under the call's deadline, with panics turned into `INTERNAL`.
//!
//! A layer added with [`Server::layer`](crate::Server::layer) (authentication, metrics, limits,
//! a cache) therefore sees every call on every protocol; no route can go around it.

use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;
use tower::{Service, ServiceExt};

use super::Router;
use crate::call::{self, Body, BoxFuture, BoxService, CallResult, MethodKind, deadline};
use crate::{Request, Status};

/// Request metadata key that asks the server to time the handler: send `ferry-timing: 1`.
pub const TIMING_REQUEST_KEY: &str = "ferry-timing";

/// Response metadata key carrying the handler's time when a caller asked for it, in the W3C
/// Server-Timing format: `server-timing: app;dur=0.042125` (milliseconds, to the nanosecond).
pub const SERVER_TIMING_KEY: &str = "server-timing";

/// The layered service plus the router it ends in (for method lookups by the protocols).
#[derive(Clone)]
pub(crate) struct Dispatch {
    svc: BoxService,
    router: Router,
}

impl Dispatch {
    pub(crate) fn new(svc: BoxService, router: Router) -> Dispatch {
        Dispatch { svc, router }
    }

    /// A clone of the layered service, for a connection that calls it many times.
    pub(crate) fn service(&self) -> BoxService {
        self.svc.clone()
    }

    /// The path of a call as it should travel through the stack (interned when the method is
    /// registered) and how the method streams. An unknown path is kept (checked and owned) and
    /// treated as unary, so the stack answers it `UNIMPLEMENTED` and layers still see it.
    pub(crate) fn resolve(&self, raw: &[u8]) -> Result<(Cow<'static, str>, MethodKind), Status> {
        match self.router.lookup(raw) {
            Some((path, kind)) => Ok((Cow::Borrowed(path), kind)),
            None => Ok((call::unregistered(raw)?, MethodKind::Unary)),
        }
    }

    /// Runs one call through the stack: what HTTP-based protocols call per request.
    pub(crate) async fn call(&self, request: Request<Body>) -> CallResult {
        let mut svc = self.svc.clone();
        let deadline = request.deadline();
        let future = begin(&mut svc, request).await;
        guarded(future, deadline).await
    }
}

/// Starts a call on a service that the caller owns: waits for readiness and calls it, with
/// the opt-in server timing around the handler. The future is not yet guarded; pass it to
/// [`guarded`] (or, after polling it by hand, its result to [`finish`]).
pub(crate) async fn begin(svc: &mut BoxService, request: Request<Body>) -> BoxFuture<CallResult> {
    if let Some(d) = request.deadline()
        && d <= Instant::now()
    {
        // Nobody waits for the answer any more: do not run the handler.
        return Box::pin(std::future::ready(Err(deadline::exceeded())));
    }
    let timing = wants_server_timing(request.metadata());
    match svc.ready().await {
        Ok(svc) if timing => Box::pin(with_server_timing(svc.call(request))),
        Ok(svc) => svc.call(request),
        Err(status) => Box::pin(std::future::ready(Err(status))),
    }
}

/// Awaits a handler's future until `deadline` (then `DEADLINE_EXCEEDED`), turning a panic into
/// [`handler_panicked`], and guards a streamed response the same way (see [`finish`]).
pub(crate) async fn guarded<F>(future: F, deadline: Option<Instant>) -> CallResult
where
    F: Future<Output = CallResult>,
{
    let caught = async {
        AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .unwrap_or_else(|_panic| Err(handler_panicked()))
    };
    let result = deadline::within(deadline, caught).await;
    finish(result, deadline)
}

/// Guards the response stream of a finished handler future: the stream must end by the call's
/// deadline, and a panic while producing it ends it with `INTERNAL` (see
/// [`deadline::guard_stream`]).
pub(crate) fn finish(result: CallResult, deadline: Option<Instant>) -> CallResult {
    result.map(|response| {
        response.map(|body| match body {
            Body::Message(bytes) => Body::Message(bytes),
            Body::Stream(stream) => Body::Stream(deadline::guard_stream(stream, deadline)),
        })
    })
}

/// The status a call gets when its handler panics.
pub(crate) fn handler_panicked() -> Status {
    Status::internal("the handler panicked")
}

/// Whether a request asked for [`SERVER_TIMING_KEY`] in its response (`ferry-timing: 1`).
pub(crate) fn wants_server_timing(metadata: &crate::Metadata) -> bool {
    metadata.get(TIMING_REQUEST_KEY) == Some("1")
}

/// Runs a handler future and adds `server-timing: app;dur=<ms>` (time from first poll to
/// completion) to a successful response.
async fn with_server_timing<F>(handler: F) -> CallResult
where
    F: Future<Output = CallResult>,
{
    let started = Instant::now();
    let mut result = handler.await;
    if let Ok(response) = &mut result {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        response
            .metadata_mut()
            .insert(SERVER_TIMING_KEY, format!("app;dur={ms:.6}"));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Response;
    use crate::call::MessageStream;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use std::task::Poll;
    use std::time::Duration;

    #[tokio::test]
    async fn server_timing_is_opt_in() {
        let ok = || async { Ok(Response::new(Body::empty())) };
        let timed = with_server_timing(ok()).await.unwrap();
        let value = timed.metadata().get(SERVER_TIMING_KEY).unwrap();
        let ms: f64 = value.strip_prefix("app;dur=").unwrap().parse().unwrap();
        assert!(ms >= 0.0, "{value}");
        let mut metadata = crate::Metadata::new();
        assert!(!wants_server_timing(&metadata));
        metadata.insert(TIMING_REQUEST_KEY, "1");
        assert!(wants_server_timing(&metadata));
    }

    #[tokio::test]
    async fn streams_end_at_the_deadline_and_panics_become_internal() {
        let endless = MessageStream::new(futures_util::stream::pending());
        let deadline = Some(Instant::now() + Duration::from_millis(10));
        let Ok(response) = finish(Ok(Response::new(Body::Stream(endless))), deadline) else {
            panic!("finish failed");
        };
        let Body::Stream(mut stream) = response.into_inner() else {
            panic!("not a stream");
        };
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), crate::Code::DeadlineExceeded);
        assert!(stream.next().await.is_none());

        let panicking = MessageStream::from_messages(futures_util::stream::poll_fn(
            |_| -> Poll<Option<Result<Bytes, Status>>> { panic!("boom") },
        ));
        let Ok(response) = finish(Ok(Response::new(Body::Stream(panicking))), None) else {
            panic!("finish failed");
        };
        let Body::Stream(mut stream) = response.into_inner() else {
            panic!("not a stream");
        };
        assert_eq!(
            stream.next().await.unwrap().unwrap_err().code(),
            crate::Code::Internal
        );
    }

    #[tokio::test]
    async fn expired_calls_never_reach_the_handler() {
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reached.clone();
        let mut svc = BoxService::new(tower::service_fn(move |_req: Request<Body>| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, Status>(Response::new(Body::empty())) }
        }));
        let mut req = Request::new(Body::empty());
        req.set_deadline(Some(Instant::now() - Duration::from_millis(1)));
        let result = guarded(begin(&mut svc, req).await, None).await;
        assert_eq!(result.unwrap_err().code(), crate::Code::DeadlineExceeded);
        assert!(!reached.load(std::sync::atomic::Ordering::SeqCst));
    }
}
