//! One remote address: its connection, reconnect backoff and transport.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::call::{Body, BoxFuture, CallResult, Protocol};
use crate::connect::client::ConnectConnection;
use crate::grpc::client::GrpcConnection;
use crate::native::client::{Backoff, Connection};
use crate::native::frame::Limits;
use crate::{Request, Status};

/// How an [`Endpoint`] connects (one remote `host:port`).
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Gives up connecting after this long (default 5 s).
    pub connect_timeout: Duration,
    /// Largest response message accepted, in bytes (default 4 MiB).
    pub max_message_size: usize,
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            connect_timeout: Duration::from_secs(5),
            max_message_size: Limits::default().max_frame_size,
        }
    }
}

/// One remote server: a lazily opened multiplexed connection, re-opened with exponential
/// backoff after it breaks. Cheap to clone; clones share the connection.
///
/// Most code uses a [`Channel`](crate::Channel), which wraps one endpoint or balances over many.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

/// An open connection of one protocol.
#[derive(Clone)]
enum Transport {
    Native(Arc<Connection>),
    Grpc(GrpcConnection),
    Connect(Arc<ConnectConnection>),
}

impl Transport {
    fn is_usable(&self) -> bool {
        match self {
            Transport::Native(conn) => conn.is_usable(),
            Transport::Grpc(conn) => conn.is_usable(),
            Transport::Connect(_) => true,
        }
    }

    async fn call(&self, request: Request<Body>) -> CallResult {
        match self {
            Transport::Native(conn) => conn.call(request).await,
            Transport::Grpc(conn) => conn.call(request).await,
            Transport::Connect(conn) => conn.call(request).await,
        }
    }
}

struct Inner {
    protocol: Protocol,
    authority: String,
    config: EndpointConfig,
    conn: Mutex<Option<Transport>>,
    connecting: tokio::sync::Mutex<Backoff>,
}

/// Splits `scheme://host:port` (or a bare `host:port`) into its scheme, if any, and a checked
/// `host:port`.
fn split_target(target: &str) -> Result<(Option<&str>, &str), Status> {
    let (scheme, rest) = match target.split_once("://") {
        None => (None, target),
        Some((scheme, rest)) => (Some(scheme), rest),
    };
    let authority = rest.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok((scheme, authority))
        }
        _ => Err(Status::invalid_argument(format!(
            "target {target:?} needs a host and a port, e.g. ferry://127.0.0.1:8000"
        ))),
    }
}

/// Parses a target: `ferry://host:port` or a bare `host:port` (native), `grpc://host:port`
/// (gRPC) or `http://host:port` (Connect) into its protocol and `host:port`.
///
/// ```
/// use ferry::client::{Protocol, parse_target};
/// assert_eq!(parse_target("grpc://a:1/").unwrap(), (Protocol::Grpc, "a:1".to_owned()));
/// assert_eq!(parse_target("a:1").unwrap(), (Protocol::Native, "a:1".to_owned()));
/// assert!(parse_target("ferry://nohost").is_err());
/// ```
pub fn parse_target(target: &str) -> Result<(Protocol, String), Status> {
    let (scheme, authority) = split_target(target)?;
    let protocol = match scheme {
        None | Some("ferry") => Protocol::Native,
        Some("grpc") => Protocol::Grpc,
        Some("http") => Protocol::Connect,
        Some(scheme) => {
            return Err(Status::invalid_argument(format!(
                "unsupported target scheme {scheme:?} in {target:?}; use ferry:// (native), \
                 grpc:// (gRPC) or http:// (Connect) followed by host:port"
            )));
        }
    };
    Ok((protocol, authority.to_owned()))
}

impl Endpoint {
    /// An endpoint for `target`; nothing connects yet.
    ///
    /// `ferry://host:port` (or a bare `host:port`) speaks Ferry's native protocol;
    /// `grpc://host:port` speaks gRPC over cleartext HTTP/2, so a Ferry client can call any
    /// gRPC server; `http://host:port` speaks the Connect protocol.
    pub fn new(target: &str, config: EndpointConfig) -> Result<Endpoint, Status> {
        let (protocol, authority) = parse_target(target)?;
        Ok(Endpoint {
            inner: Arc::new(Inner {
                protocol,
                authority,
                config,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Backoff::default()),
            }),
        })
    }

    /// The `host:port` this endpoint calls.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// The protocol this endpoint speaks.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// Whether a usable connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Opens the connection now if it is not open.
    pub async fn connect(&self) -> Result<(), Status> {
        self.connection().await.map(drop)
    }

    /// Makes one encoded call; `request.method()` names the method.
    pub async fn call(&self, request: Request<Body>) -> CallResult {
        let conn = self.connection().await?;
        conn.call(request).await
    }

    /// The live connection, opening one if there is none (at most one connect at a time).
    async fn connection(&self) -> Result<Transport, Status> {
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

    async fn open(&self) -> Result<Transport, Status> {
        let limits = Limits {
            max_frame_size: self.inner.config.max_message_size,
            ..Limits::default()
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.inner.authority)
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot resolve {}: {e}", self.inner.authority))
            })?
            .collect();
        let mut last =
            Status::unavailable(format!("{} resolved to no address", self.inner.authority));
        for addr in addrs {
            let opened = match self.inner.protocol {
                Protocol::Native => Connection::connect(addr, limits)
                    .await
                    .map(|conn| Transport::Native(Arc::new(conn))),
                Protocol::Grpc => GrpcConnection::connect(
                    addr,
                    &self.inner.authority,
                    self.inner.config.max_message_size,
                )
                .await
                .map(Transport::Grpc),
                Protocol::GrpcWeb | Protocol::Rest => Err(Status::invalid_argument(
                    "gRPC-Web and REST are served, not spoken by Ferry's client",
                )),
                Protocol::Connect => {
                    // Connections open per call from a pool; check the address answers now.
                    tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                        Status::unavailable(format!("cannot connect to {addr}: {e}"))
                    })?;
                    ConnectConnection::new(
                        &self.inner.authority,
                        self.inner.config.max_message_size,
                    )
                    .map(|conn| Transport::Connect(Arc::new(conn)))
                }
            };
            match opened {
                Ok(conn) => return Ok(conn),
                Err(status) => last = status,
            }
        }
        Err(last)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Transport>> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<Transport> {
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

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.inner.authority)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl tower::Service<Request<Body>> for Endpoint {
    type Response = crate::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let endpoint = self.clone();
        Box::pin(async move { endpoint.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let native = |a: &str| (Protocol::Native, a.to_owned());
        let grpc = |a: &str| (Protocol::Grpc, a.to_owned());
        let connect = |a: &str| (Protocol::Connect, a.to_owned());
        assert_eq!(
            parse_target("ferry://127.0.0.1:8000").unwrap(),
            native("127.0.0.1:8000")
        );
        assert_eq!(parse_target("localhost:1").unwrap(), native("localhost:1"));
        assert_eq!(parse_target("[::1]:80").unwrap(), native("[::1]:80"));
        assert_eq!(parse_target("grpc://h:1").unwrap(), grpc("h:1"));
        assert_eq!(parse_target("http://h:1/").unwrap(), connect("h:1"));
        assert!(parse_target("ferry://nohost").is_err());
        assert!(parse_target("gopher://a:1").is_err());
        assert!(parse_target(":80").is_err());
    }
}
