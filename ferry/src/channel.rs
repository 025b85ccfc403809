//! The client side: a [`Channel`], shared by every generated client.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::endpoint::{Endpoint, EndpointConfig};
use crate::service::{BoxFuture, RawResult};
use crate::{Request, Response, Status};

/// The transport under a [`Channel`]: any tower service from encoded requests to encoded
/// responses (one [`Endpoint`], a load balancer over many, or a custom stack).
pub type ChannelService = BoxCloneSyncService<Request<Bytes>, Response<Bytes>, Status>;

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
    service: ChannelService,
    endpoint: Option<Endpoint>,
}

/// Configures a [`Channel`] before it connects.
#[derive(Clone, Debug)]
pub struct ChannelBuilder {
    target: String,
    timeout: Option<Duration>,
    endpoint: EndpointConfig,
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

    /// Builds the channel without connecting; the first call connects.
    pub fn lazy(self) -> Result<Channel, Status> {
        let endpoint = Endpoint::new(&self.target, self.endpoint)?;
        Ok(Channel {
            inner: Arc::new(Inner {
                target: self.target,
                timeout: self.timeout,
                service: ChannelService::new(endpoint.clone()),
                endpoint: Some(endpoint),
            }),
        })
    }

    /// Builds the channel and connects now, so a wrong address fails here.
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
        }
    }

    /// Connects to `target` with default settings.
    pub async fn connect(target: impl Into<String>) -> Result<Channel, Status> {
        Channel::builder(target).connect().await
    }

    /// A channel over any transport service, e.g. a load balancer; `target` names it in logs.
    pub fn from_service(target: impl Into<String>, service: ChannelService) -> Channel {
        Channel {
            inner: Arc::new(Inner {
                target: target.into(),
                timeout: None,
                service,
                endpoint: None,
            }),
        }
    }

    /// The target this channel was built for.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Makes one encoded unary call; `request.method()` names the method.
    pub async fn call(&self, mut request: Request<Bytes>) -> RawResult {
        if request.deadline().is_none()
            && let Some(timeout) = self.inner.timeout
        {
            request.set_timeout(timeout);
        }
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
        let mut request = request.map(|m| crate::codegen::encode(&m));
        request.set_method(method);
        let response = self.call(request).await?;
        let (metadata, body) = response.into_parts();
        let message = Resp::decode(body).map_err(|e| {
            Status::internal(format!("cannot decode the response of {method}: {e}"))
        })?;
        Ok(Response::from_parts(metadata, message))
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target)
            .finish()
    }
}

impl tower::Service<Request<Bytes>> for Channel {
    type Response = Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<RawResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move { channel.call(request).await })
    }
}
