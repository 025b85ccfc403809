//! The client side: a [`Channel`] to one endpoint, shared by every generated client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use crate::native::client::{Backoff, Connection};
use crate::native::frame::Limits;
use crate::service::{BoxFuture, RawResult};
use crate::{Request, Response, Status};

/// A cheap-to-clone handle for calling one endpoint; clones share one multiplexed connection.
///
/// The connection is opened on first use, re-opened with exponential backoff after it breaks,
/// and every call in flight is multiplexed over it.
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
    authority: String,
    config: ChannelBuilder,
    conn: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<Backoff>,
}

/// Configures a [`Channel`] before it connects.
#[derive(Clone, Debug)]
pub struct ChannelBuilder {
    target: String,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    limits: Limits,
}

impl ChannelBuilder {
    /// Applies `timeout` to every call that has no deadline of its own.
    pub fn timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Gives up connecting after `timeout` (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Largest response message accepted, in bytes (default 4 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> ChannelBuilder {
        self.limits.max_frame_size = bytes;
        self
    }

    /// Builds the channel without connecting; the first call connects.
    pub fn lazy(self) -> Result<Channel, Status> {
        let authority = parse_target(&self.target)?;
        Ok(Channel {
            inner: Arc::new(Inner {
                authority,
                config: self,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Backoff::default()),
            }),
        })
    }

    /// Builds the channel and connects now, so a wrong address fails here.
    pub async fn connect(self) -> Result<Channel, Status> {
        let channel = self.lazy()?;
        channel.connection().await?;
        Ok(channel)
    }
}

/// Accepts `ferry://host:port` or a bare `host:port`; returns `host:port`.
fn parse_target(target: &str) -> Result<String, Status> {
    let authority = match target.split_once("://") {
        None => target,
        Some(("ferry", rest)) => rest,
        Some((scheme, _)) => {
            return Err(Status::invalid_argument(format!(
                "unsupported target scheme {scheme:?} in {target:?}; use ferry://host:port"
            )));
        }
    };
    let authority = authority.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(authority.to_owned())
        }
        _ => Err(Status::invalid_argument(format!(
            "target {target:?} needs a host and a port, e.g. ferry://127.0.0.1:8000"
        ))),
    }
}

impl Channel {
    /// Starts configuring a channel to `target` (`ferry://host:port` or `host:port`).
    pub fn builder(target: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder {
            target: target.into(),
            timeout: None,
            connect_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }

    /// Connects to `target` with default settings.
    pub async fn connect(target: impl Into<String>) -> Result<Channel, Status> {
        Channel::builder(target).connect().await
    }

    /// The `host:port` this channel calls.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// Makes one encoded unary call; `request.method()` names the method.
    pub async fn call(&self, mut request: Request<Bytes>) -> RawResult {
        if request.deadline().is_none()
            && let Some(timeout) = self.inner.config.timeout
        {
            request.set_timeout(timeout);
        }
        let conn = self.connection().await?;
        conn.call(request).await
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
        let mut request = request.map(|m| Bytes::from(m.encode_to_vec()));
        request.set_method(method);
        let response = self.call(request).await?;
        let (metadata, body) = response.into_parts();
        let message = Resp::decode(body).map_err(|e| {
            Status::internal(format!("cannot decode the response of {method}: {e}"))
        })?;
        Ok(Response::from_parts(metadata, message))
    }

    /// The live connection, opening one if there is none (at most one connect at a time).
    async fn connection(&self) -> Result<Arc<Connection>, Status> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut backoff = self.inner.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if let Some(wait) = backoff.wait() {
            return Err(Status::unavailable(format!(
                "{} is unreachable; next connection attempt in {wait:?}",
                self.inner.authority
            )));
        }
        let config = &self.inner.config;
        let attempt = tokio::time::timeout(config.connect_timeout, self.open());
        match attempt.await {
            Ok(Ok(conn)) => {
                backoff.succeeded();
                let conn = Arc::new(conn);
                *self.slot() = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(status)) => {
                backoff.failed();
                Err(status)
            }
            Err(_) => {
                backoff.failed();
                Err(Status::unavailable(format!(
                    "connecting to {} timed out after {:?}",
                    self.inner.authority, config.connect_timeout
                )))
            }
        }
    }

    async fn open(&self) -> Result<Connection, Status> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.inner.authority)
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot resolve {}: {e}", self.inner.authority))
            })?
            .collect();
        let mut last =
            Status::unavailable(format!("{} resolved to no address", self.inner.authority));
        for addr in addrs {
            match Connection::connect(addr, self.inner.config.limits).await {
                Ok(conn) => return Ok(conn),
                Err(status) => last = status,
            }
        }
        Err(last)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Connection>>> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<Arc<Connection>> {
        let mut slot = self.slot();
        match &*slot {
            Some(conn) if conn.is_usable() => Some(conn.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("authority", &self.inner.authority)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("ferry://127.0.0.1:8000").unwrap(),
            "127.0.0.1:8000"
        );
        assert_eq!(parse_target("localhost:1").unwrap(), "localhost:1");
        assert_eq!(parse_target("[::1]:80").unwrap(), "[::1]:80");
        assert!(parse_target("ferry://nohost").is_err());
        assert!(parse_target("gopher://a:1").is_err());
        assert!(parse_target(":80").is_err());
    }
}
