//! Response caching and request coalescing for side-effect-free methods, on the client
//! ([`ChannelBuilder::cache`](crate::ChannelBuilder::cache)) and on the server
//! ([`CacheLayer`] for [`Server::layer`](crate::Server::layer)) — one implementation for both.
//!
//! - **Only side-effect-free methods**: those a `.proto` marks
//!   `option idempotency_level = NO_SIDE_EFFECTS;`. The [`CacheBuilder`] learns them from the
//!   generated code (a client's `SIDE_EFFECT_FREE_METHODS`, or a package's
//!   `FILE_DESCRIPTOR_SET`) and refuses any other method. Only unary calls with a single message
//!   are cached; streaming calls pass through untouched.
//! - **Key**: the method path, the encoded request, and the values of the request metadata keys
//!   named with [`CacheBuilder::key_metadata`].
//! - **Freshness**: the TTL the builder gives the method, unless the reply carries
//!   `cache-control: max-age=N` (less its `age`), which wins; `no-store`, `no-cache` and
//!   `max-age=0` are never stored. Errors are not stored, unless
//!   [`CacheBuilder::negative_ttl`] allows definite ones for a short time.
//! - **Bounds**: at most [`max_entries`](CacheBuilder::max_entries) entries and
//!   [`max_bytes`](CacheBuilder::max_bytes) bytes (a `moka` cache with a weigher; TinyLFU
//!   decides what to evict).
//! - **Coalescing (single flight)**: identical calls in flight share one upstream call; one
//!   caller going away does not cancel it for the others; the last one leaving does.
//! - **Server side**: [`CacheLayer`] serves hits without calling the handler and adds
//!   `cache-control: max-age=N` to the replies of cached methods (and `age` to hits), so
//!   Connect GET replies are cacheable by ordinary HTTP caches and browsers.
//! - **Metrics**: [`Cache::stats`] — hits, misses, coalesced calls, stores, evictions,
//!   expirations, entries and bytes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry::Status> {
//! use std::time::Duration;
//! use ferry::cache::Cache;
//! // Client side: cache every side-effect-free method of the service for 5 s.
//! let cache = Cache::builder()
//!     .side_effect_free(&["/shop.v1.Pricing/Price"]) // PricingClient::SIDE_EFFECT_FREE_METHODS
//!     .ttl(Duration::from_secs(5))
//!     .build()?;
//! let channel = ferry::Channel::builder("ferry://127.0.0.1:7100").cache(cache.clone()).connect().await?;
//! // …calls…
//! println!("hit rate {:.1} %", cache.stats().hit_rate() * 100.0);
//! # Ok(()) }
//! ```

mod coalesce;
mod policy;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use crate::call::{Body, BoxFuture, CallResult, MethodKind, deadline};
use crate::{Request, Response, Status};
use coalesce::{Flights, Role};
use policy::{MethodPolicy, Policy, freshness};
use store::{Counters, Key, Outcome, Reply, Store, Stored};

pub use policy::{AGE, CACHE_CONTROL, CacheBuilder};

/// A bounded cache of replies to side-effect-free methods, with single-flight coalescing;
/// cheap to clone (clones share everything). Build one with [`Cache::builder`].
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    store: Store,
    min_weight: u32,
    max_entries: u64,
    max_bytes: u64,
    flights: Arc<Flights>,
    counters: Arc<Counters>,
}

/// A snapshot of a cache's counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls answered from the store.
    pub hits: u64,
    /// Cacheable calls the store could not answer (coalesced ones included).
    pub misses: u64,
    /// Misses that joined an identical call already in flight instead of calling upstream.
    pub coalesced: u64,
    /// Outcomes stored.
    pub stores: u64,
    /// Entries evicted to stay within the bounds.
    pub evictions: u64,
    /// Entries removed because their TTL ran out.
    pub expirations: u64,
    /// Entries held now (approximate while evictions are pending).
    pub entries: u64,
    /// Bytes held now, as the bound counts them (approximate while evictions are pending).
    pub bytes: u64,
}

impl CacheStats {
    /// Hits over hits plus misses; 0 before any cacheable call.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

impl Cache {
    /// Starts configuring a cache; see [`CacheBuilder`].
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    fn new(policy: Policy, builder: &CacheBuilder) -> Cache {
        let counters = Arc::new(Counters::default());
        let (store, min_weight) =
            store::store(builder.max_entries, builder.max_bytes, counters.clone());
        Cache {
            inner: Arc::new(Inner {
                policy,
                store,
                min_weight,
                max_entries: builder.max_entries,
                max_bytes: builder.max_bytes,
                flights: Arc::new(Flights::default()),
                counters,
            }),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            entries: self.inner.store.entry_count(),
            bytes: self.inner.store.weighted_size(),
        }
    }

    /// The configured bounds: most entries and most bytes.
    pub fn bounds(&self) -> (u64, u64) {
        (self.inner.max_entries, self.inner.max_bytes)
    }

    /// Applies pending evictions and expirations now (they otherwise run in small batches as
    /// the cache is used), so [`stats`](Self::stats) is exact.
    pub async fn sync(&self) {
        self.inner.store.run_pending_tasks().await;
    }

    /// Drops every stored reply (calls in flight are not affected).
    pub fn clear(&self) {
        self.inner.store.invalidate_all();
    }

    /// Calls in flight that others may join.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// Whether `method` (`/package.Service/Method`) is cached.
    pub fn caches(&self, method: &str) -> bool {
        self.inner.policy.methods.contains_key(method)
    }

    /// The policy of `request` if the cache applies to it: a configured method, unary, one
    /// message.
    fn policy_for(&self, request: &Request<Body>) -> Option<&MethodPolicy> {
        if request.method_kind() != MethodKind::Unary || request.get_ref().as_message().is_none() {
            return None;
        }
        self.inner.policy.methods.get(request.method())
    }

    /// Answers `request` from the store, from an identical call in flight, or by calling
    /// `next` (and storing what it returns); calls to methods the cache does not cover go
    /// straight to `next`.
    ///
    /// This is what [`Channel`](crate::Channel) and [`CacheLayer`] call; use it to put the cache
    /// in front of any other call path.
    pub async fn call<F, Fut>(&self, request: Request<Body>, next: F) -> CallResult
    where
        F: FnOnce(Request<Body>) -> Fut + Send + 'static,
        Fut: Future<Output = CallResult> + Send + 'static,
    {
        self.serve(request, next, false).await
    }

    async fn serve<F, Fut>(&self, request: Request<Body>, next: F, advertise: bool) -> CallResult
    where
        F: FnOnce(Request<Body>) -> Fut + Send + 'static,
        Fut: Future<Output = CallResult> + Send + 'static,
    {
        let Some(method) = self.policy_for(&request) else {
            return next(request).await;
        };
        let inner = &self.inner;
        let body = request.get_ref().as_message().cloned().unwrap_or_default();
        let key = Key::new(
            method.path.clone(),
            body,
            &inner.policy.key_metadata,
            request.metadata(),
        );
        if let Some(stored) = inner.store.get(&key).await {
            Counters::add(&inner.counters.hits);
            return respond(&stored.outcome, advertise.then(|| age(&stored)));
        }
        Counters::add(&inner.counters.misses);
        let ttl = method.ttl;
        let deadline = request.deadline();
        let upstream = {
            let cache = self.clone();
            let key = key.clone();
            move || -> BoxFuture<Outcome> {
                Box::pin(async move {
                    let outcome = collect(next(request).await).await;
                    cache.remember(key, &outcome, ttl).await;
                    outcome
                })
            }
        };
        let outcome = if inner.policy.coalesce {
            let (role, flight) = inner.flights.join(key, upstream);
            if let Role::Follower = role {
                Counters::add(&inner.counters.coalesced);
            }
            // Each caller waits no longer than its own deadline; leaving early does not cancel
            // the shared call for the others.
            deadline::within(deadline, flight).await
        } else {
            upstream().await
        };
        respond_fresh(outcome, (advertise && !ttl.is_zero()).then_some(ttl))
    }

    /// Stores `outcome` if its metadata and the policy allow.
    async fn remember(&self, key: Key, outcome: &Outcome, ttl: Duration) {
        let policy = &self.inner.policy;
        let ttl = match outcome {
            Ok(reply) => freshness(&reply.metadata, ttl),
            Err(status) => policy.error_ttl(status),
        };
        let Some(ttl) = ttl else {
            return;
        };
        let stored = Stored::new(&key, outcome.clone(), ttl, self.inner.min_weight);
        if stored.weight() as usize > policy.max_entry_bytes.max(self.inner.min_weight as usize)
            || u64::from(stored.weight()) > self.inner.max_bytes
        {
            return;
        }
        Counters::add(&self.inner.counters.stores);
        self.inner.store.insert(key, Arc::new(stored)).await;
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut methods: Vec<&String> = self.inner.policy.methods.keys().collect();
        methods.sort();
        f.debug_struct("Cache")
            .field("methods", &methods)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A reply as a cloneable outcome: a streamed body is read to its one message.
async fn collect(result: CallResult) -> Outcome {
    let (metadata, body, trailers) = result?.into_wire_parts();
    let body = body.into_message().await?;
    Ok(Arc::new(Reply {
        metadata,
        body,
        trailers,
    }))
}

/// How old a stored outcome is and how long it was fresh for, for `age` and `max-age`.
fn age(stored: &Stored) -> (Duration, Duration) {
    (stored.stored_at.elapsed(), stored.ttl)
}

/// A stored outcome as a call result; `advertise` adds `cache-control: max-age` and `age`.
fn respond(outcome: &Outcome, advertise: Option<(Duration, Duration)>) -> CallResult {
    match outcome {
        Ok(reply) => {
            let mut response = Response::from_wire(
                reply.metadata.clone(),
                reply.body.clone(),
                reply.trailers.clone(),
            )
            .map(Body::Message);
            if let Some((age, ttl)) = advertise {
                let metadata = response.metadata_mut();
                if metadata.get(CACHE_CONTROL).is_none() {
                    metadata.insert(CACHE_CONTROL, format!("max-age={}", ttl.as_secs()));
                }
                metadata.insert(AGE, age.as_secs().to_string());
            }
            Ok(response)
        }
        Err(status) => Err(status.clone()),
    }
}

/// A fresh outcome as a call result; `advertise` adds `cache-control: max-age=<ttl>` unless
/// the handler set its own `cache-control`.
fn respond_fresh(outcome: Outcome, advertise: Option<Duration>) -> CallResult {
    let reply = outcome?;
    let reply = Arc::try_unwrap(reply).unwrap_or_else(|shared| (*shared).clone());
    let mut response =
        Response::from_wire(reply.metadata, Body::Message(reply.body), reply.trailers);
    if let Some(ttl) = advertise
        && response.metadata().get(CACHE_CONTROL).is_none()
    {
        response
            .metadata_mut()
            .insert(CACHE_CONTROL, format!("max-age={}", ttl.as_secs()));
    }
    Ok(response)
}

/// The server side of a [`Cache`]: a tower layer for [`Server::layer`](crate::Server::layer).
///
/// Hits are answered without calling the handler; identical calls in flight share one handler
/// call; replies of cached methods carry `cache-control: max-age=N` (N the method's TTL, unless
/// the handler set its own `cache-control`) and hits an `age`, so HTTP caches and browsers can
/// keep Connect GET replies. Put it inside authentication (add it *before* the auth layer, as
/// the layer added last runs first), and key on the caller
/// ([`CacheBuilder::key_metadata`]) when replies differ per caller.
///
/// ```no_run
/// # async fn demo(pricing: impl ferry::ServiceHandler) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let fds = pricing.file_descriptor_set();
/// let cache = ferry::cache::Cache::builder().descriptors(fds).ttl(Duration::from_secs(10)).build()?;
/// ferry::Server::builder()
///     .add_service(pricing)
///     .layer(ferry::cache::CacheLayer::new(cache))
///     .serve("127.0.0.1:7100")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CacheLayer {
    cache: Cache,
}

impl CacheLayer {
    /// A layer serving from `cache`.
    pub fn new(cache: Cache) -> CacheLayer {
        CacheLayer { cache }
    }

    /// The cache, e.g. for its [`stats`](Cache::stats).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// The service [`CacheLayer`] wraps around the inner stack.
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
}

impl<S> Service<Request<Body>> for CacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Status> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.cache.policy_for(&request).is_none() {
            return Box::pin(self.inner.call(request));
        }
        // The readied service goes with the call; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let cache = self.cache.clone();
        Box::pin(async move { cache.serve(request, move |r| ready.oneshot(r), true).await })
    }
}
