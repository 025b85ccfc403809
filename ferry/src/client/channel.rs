//! The client side: a [`Channel`], shared by every generated client.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use prost::Message;
use tower::ServiceExt;

use super::balance::Balancer;
use super::endpoint::{Endpoint, EndpointConfig};
use super::hedge::HedgeConfig;
use super::outlier::{HealthCheck, OutlierConfig};
use super::retry::{RetryBudget, RetryConfig};
use crate::cache::Cache;
use crate::call::{
    Body, BoxFuture, BoxService, CallResult, MessageStream, MethodKind, StreamItem, Streaming,
};
use crate::discovery::Discovery;
use crate::{Request, Response, Status};

/// A cheap-to-clone handle for making calls; clones share connections.
///
/// Built for one endpoint it keeps one multiplexed connection, opened on first use and
/// re-opened with exponential backoff after it breaks; every call in flight shares it.
///
/// ```no_run
/// # async fn demo() -> Result<(), ferry::Status> {
/// let channel = ferry::Channel::builder("ferry://127.0.0.1:8000")
///     .timeout(std::time::Duration::from_secs(1))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    target: String,
    timeout: Option<Duration>,
    service: BoxService,
    endpoint: Option<Endpoint>,
    cache: Option<Cache>,
}

/// Configures a [`Channel`] before it connects.
#[derive(Clone, Debug)]
pub struct ChannelBuilder {
    target: String,
    timeout: Option<Duration>,
    endpoint: EndpointConfig,
    cluster: super::cluster::ClusterConfig,
    cache: Option<Cache>,
}

impl ChannelBuilder {
    /// Applies `timeout` to every call that has no deadline of its own.
    pub fn timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Gives up connecting after `timeout` (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.endpoint.connect_timeout = timeout;
        self
    }

    /// Largest response message accepted, in bytes (default 4 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> ChannelBuilder {
        self.endpoint.max_message_size = bytes;
        self
    }

    /// Balances over the instances `discovery` reports instead of the target address.
    pub fn discovery(mut self, discovery: impl Discovery) -> ChannelBuilder {
        self.cluster.discovery = Some(Arc::new(discovery));
        self
    }

    /// How calls are spread over instances (default power of two choices over peak EWMA).
    pub fn balancer(mut self, balancer: Balancer) -> ChannelBuilder {
        self.cluster.balancer = balancer;
        self.cluster.configured = true;
        self
    }

    /// The retry policy of every method without its own (default: `UNAVAILABLE`, 4 attempts).
    pub fn retry(mut self, config: RetryConfig) -> ChannelBuilder {
        self.cluster.retry = config;
        self.cluster.configured = true;
        self
    }

    /// The retry policy of one method (`/package.Service/Method`).
    pub fn retry_method(
        mut self,
        method: impl Into<String>,
        config: RetryConfig,
    ) -> ChannelBuilder {
        self.cluster.retry_methods.insert(method.into(), config);
        self.cluster.configured = true;
        self
    }

    /// The budget all retries of this channel share (default 20 % of calls + 10/s).
    pub fn retry_budget(mut self, budget: RetryBudget) -> ChannelBuilder {
        self.cluster.budget = Some(budget);
        self.cluster.configured = true;
        self
    }

    /// Hedges `method` (`/package.Service/Method`), which must be safe to run twice.
    pub fn hedge(mut self, method: impl Into<String>, config: HedgeConfig) -> ChannelBuilder {
        self.cluster.hedge.insert(method.into(), config);
        self.cluster.configured = true;
        self
    }

    /// Hedges every method in `methods`, typically a generated client's
    /// `SIDE_EFFECT_FREE_METHODS` (those marked `idempotency_level = NO_SIDE_EFFECTS`).
    ///
    /// ```no_run
    /// # fn demo(safe: &[&str]) -> Result<(), ferry::Status> {
    /// // e.g. safe = CalculatorClient::SIDE_EFFECT_FREE_METHODS
    /// let channel = ferry::Channel::builder("ferry://10.0.0.1:8000,10.0.0.2:8000")
    ///     .hedge_methods(safe, ferry::client::hedge::HedgeConfig::default())
    ///     .lazy()?;
    /// # Ok(()) }
    /// ```
    pub fn hedge_methods(self, methods: &[&str], config: HedgeConfig) -> ChannelBuilder {
        methods.iter().fold(self, |builder, method| {
            builder.hedge(*method, config.clone())
        })
    }

    /// When endpoints are ejected for failing (default 5 `UNAVAILABLE` in a row, ≤ 50 %).
    pub fn outlier_detection(mut self, config: OutlierConfig) -> ChannelBuilder {
        self.cluster.outlier = config;
        self.cluster.configured = true;
        self
    }

    /// Probes every endpoint actively (default: off).
    pub fn health_check(mut self, check: HealthCheck) -> ChannelBuilder {
        self.cluster.health_check = Some(check);
        self.cluster.configured = true;
        self
    }

    /// Answers calls to the side-effect-free methods `cache` covers from it, and coalesces
    /// identical calls in flight; every other call is unaffected. Keep a clone of the cache to
    /// read its [`stats`](Cache::stats); clones of the channel share it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), ferry::Status> {
    /// use std::time::Duration;
    /// let cache = ferry::cache::Cache::builder()
    ///     .side_effect_free(&["/shop.v1.Pricing/Price"]) // PricingClient::SIDE_EFFECT_FREE_METHODS
    ///     .ttl(Duration::from_secs(5))
    ///     .build()?;
    /// let channel = ferry::Channel::builder("ferry://127.0.0.1:7100").cache(cache).lazy()?;
    /// # Ok(()) }
    /// ```
    pub fn cache(mut self, cache: Cache) -> ChannelBuilder {
        self.cache = Some(cache);
        self
    }

    /// Builds the channel without connecting; the first call connects.
    ///
    /// A balanced channel (a comma list of addresses, a [`discovery`](Self::discovery), or any
    /// balancing, retry or hedging option) must be built inside a Tokio runtime.
    pub fn lazy(self) -> Result<Channel, Status> {
        if let Some(discovery) = self.cluster.discovery_for(&self.target)? {
            let service = super::cluster::build(discovery, self.endpoint, &self.cluster);
            return Ok(Channel {
                inner: Arc::new(Inner {
                    target: self.target,
                    timeout: self.timeout,
                    service,
                    endpoint: None,
                    cache: self.cache,
                }),
            });
        }
        let endpoint = Endpoint::new(&self.target, self.endpoint)?;
        Ok(Channel {
            inner: Arc::new(Inner {
                target: self.target,
                timeout: self.timeout,
                service: BoxService::new(endpoint.clone()),
                endpoint: Some(endpoint),
                cache: self.cache,
            }),
        })
    }

    /// Builds the channel and connects now, so a wrong address fails here.
    ///
    /// A balanced channel connects to each instance lazily, so for it this is [`Self::lazy`].
    pub async fn connect(self) -> Result<Channel, Status> {
        let channel = self.lazy()?;
        if let Some(endpoint) = &channel.inner.endpoint {
            endpoint.connect().await?;
        }
        Ok(channel)
    }
}

impl Channel {
    /// Starts configuring a channel to `target` (`ferry://host:port` or `host:port`).
    pub fn builder(target: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder {
            target: target.into(),
            timeout: None,
            endpoint: EndpointConfig::default(),
            cluster: super::cluster::ClusterConfig::default(),
            cache: None,
        }
    }

    /// A channel balancing over the instances `discovery` reports, with the default policies:
    /// power of two choices over peak EWMA, retries of `UNAVAILABLE` within a 20 % budget,
    /// outlier ejection. Use [`Channel::builder`] and
    /// [`ChannelBuilder::discovery`] to change them.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the balancer runs on a task).
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use ferry::discovery::StaticDiscovery;
    /// let discovery = StaticDiscovery::parse("ferry://10.0.0.1:8000,10.0.0.2:8000").unwrap();
    /// let channel = ferry::Channel::balanced(discovery);
    /// # }
    /// ```
    pub fn balanced(discovery: impl Discovery) -> Channel {
        let discovery: Arc<dyn Discovery> = Arc::new(discovery);
        let config = super::cluster::ClusterConfig::default();
        Channel {
            inner: Arc::new(Inner {
                target: discovery.describe(),
                timeout: None,
                service: super::cluster::build(discovery, EndpointConfig::default(), &config),
                endpoint: None,
                cache: None,
            }),
        }
    }

    /// Connects to `target` with default settings.
    pub async fn connect(target: impl Into<String>) -> Result<Channel, Status> {
        Channel::builder(target).connect().await
    }

    /// A channel over any transport service, e.g. a load balancer; `target` names it in logs.
    pub fn from_service(target: impl Into<String>, service: BoxService) -> Channel {
        Channel {
            inner: Arc::new(Inner {
                target: target.into(),
                timeout: None,
                service,
                endpoint: None,
                cache: None,
            }),
        }
    }

    /// The target this channel was built for.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Makes one encoded call; `request.method()` names the method.
    pub async fn call(&self, mut request: Request<Body>) -> CallResult {
        if request.deadline().is_none()
            && let Some(timeout) = self.inner.timeout
        {
            request.set_timeout(timeout);
        }
        if let Some(cache) = &self.inner.cache
            && cache.caches(request.method())
        {
            let channel = self.clone();
            let next = move |request| async move { channel.call_uncached(request).await };
            return cache.call(request, next).await;
        }
        self.call_uncached(request).await
    }

    /// The cache this channel answers from, if it was built with one.
    pub fn cache(&self) -> Option<&Cache> {
        self.inner.cache.as_ref()
    }

    /// One call past the cache.
    async fn call_uncached(&self, request: Request<Body>) -> CallResult {
        match &self.inner.endpoint {
            // The common case skips the boxed service.
            Some(endpoint) => endpoint.call(request).await,
            None => self.inner.service.clone().oneshot(request).await,
        }
    }

    /// Makes one typed unary call to `method` (`/package.Service/Method`).
    pub async fn unary<Req, Resp>(
        &self,
        method: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let mut request = request.map(|m| Body::Message(crate::codegen::encode(&m)));
        request.set_method(method);
        let response = self.call(request).await?;
        decode_single(method, response).await
    }

    /// Calls a server-streaming `method` with one request; the replies arrive as a stream.
    pub async fn server_streaming<Req, Resp>(
        &self,
        method: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let mut request = request.map(|m| Body::Message(crate::codegen::encode(&m)));
        request.set_method(method);
        request.set_method_kind(MethodKind::ServerStreaming);
        let response = self.call(request).await?;
        Ok(response.map(|body| Streaming::new(body.into_stream())))
    }

    /// Calls a client-streaming `method` with a stream of requests; one reply comes back.
    pub async fn client_streaming<S, Resp>(
        &self,
        method: &'static str,
        request: Request<S>,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream + Send + 'static,
        S::Item: Message,
        Resp: Message + Default,
    {
        let mut request = request.map(encode_stream);
        request.set_method(method);
        request.set_method_kind(MethodKind::ClientStreaming);
        let response = self.call(request).await?;
        decode_single(method, response).await
    }

    /// Calls a bidirectionally streaming `method`: requests go out as `request` yields them,
    /// replies arrive as a stream.
    pub async fn bidi_streaming<S, Resp>(
        &self,
        method: &'static str,
        request: Request<S>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream + Send + 'static,
        S::Item: Message,
        Resp: Message + Default,
    {
        let mut request = request.map(encode_stream);
        request.set_method(method);
        request.set_method_kind(MethodKind::BidiStreaming);
        let response = self.call(request).await?;
        Ok(response.map(|body| Streaming::new(body.into_stream())))
    }
}

/// A stream of typed requests as an encoded body.
fn encode_stream<S>(stream: S) -> Body
where
    S: Stream + Send + 'static,
    S::Item: Message,
{
    Body::Stream(MessageStream::new(
        stream.map(|m| Ok(StreamItem::Message(crate::codegen::encode(&m)))),
    ))
}

/// The one reply message of a unary or client-streaming call, decoded.
async fn decode_single<Resp: Message + Default>(
    method: &str,
    response: Response<Body>,
) -> Result<Response<Resp>, Status> {
    let (metadata, body, mut trailers) = response.into_wire_parts();
    let (bytes, more) = body.into_single().await?;
    trailers.extend(more);
    let message = Resp::decode(bytes)
        .map_err(|e| Status::internal(format!("cannot decode the response of {method}: {e}")))?;
    Ok(Response::from_wire(metadata, message, trailers))
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target)
            .finish()
    }
}

impl tower::Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move { channel.call(request).await })
    }
}
