//! A tower layer that counts the calls passing through a server's layer stack, by method path,
//! with the kind each request said it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry::Request;
use ferry::call::{Body, BoxService, MethodKind};
use tower::{Layer, ServiceExt};

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
    type Service = BoxService;

    fn layer(&self, inner: BoxService) -> BoxService {
        let counter = self.clone();
        BoxService::new(inner.map_request(move |request: Request<Body>| {
            counter.count(&request);
            request
        }))
    }
}

impl CountingLayer {
    fn count(&self, request: &Request<Body>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(request.method().to_owned())
            .or_insert((request.method_kind(), 0))
            .1 += 1;
    }
}
