//! A tower layer that counts the calls passing through a server's layer stack, by method path,
//! with the kind each request said it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ferry::call::{Body, BoxFuture, BoxService, CallResult, MethodKind};
use ferry::{Request, Status};
use tower::{Layer, Service};

/// Counts calls by method; add it with `Server::layer` and keep a clone to read the counts.
#[derive(Clone, Default)]
pub struct CountingLayer {
    seen: Arc<Mutex<HashMap<String, (MethodKind, usize)>>>,
}

impl CountingLayer {
    /// How many calls to `method` (`/package.Service/Method`) passed, and as what kind (the kind
    /// of the first one).
    pub fn seen(&self, method: &str) -> Option<(MethodKind, usize)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
            .copied()
    }

    /// How many calls to `method` passed.
    pub fn calls(&self, method: &str) -> usize {
        self.seen(method).map_or(0, |(_, n)| n)
    }
}

impl Layer<BoxService> for CountingLayer {
    type Service = Counting;

    fn layer(&self, inner: BoxService) -> Counting {
        Counting {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`CountingLayer`] wraps around the router.
#[derive(Clone)]
pub struct Counting {
    inner: BoxService,
    layer: CountingLayer,
}

impl Service<Request<Body>> for Counting {
    type Response = ferry::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let kind = request.method_kind();
        self.layer
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(request.method().to_owned())
            .or_insert((kind, 0))
            .1 += 1;
        self.inner.call(request)
    }
}
