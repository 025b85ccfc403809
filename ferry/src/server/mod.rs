//! The server: one port, every registered service, one dispatch path, graceful shutdown.
//!
//! - `mod.rs`: the [`Server`] builder, the accept loop and protocol sniffing.
//! - [`router`](Router): method path → [`ServiceHandler`].
//! - `dispatch`: the one entry every protocol calls (layers ▸ router, deadline, panics).
//! - `shutdown`: the signals that drain and stop connections.

mod dispatch;
mod router;
mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;

use crate::call::{Body, BoxService};
use crate::connect::JsonGateway;
use crate::discovery::{Registration, Registry};
use crate::http::HttpContext;
use crate::native::frame::{Limits, PREFACE};
use crate::native::server::{ConnConfig, PREFACE_TIMEOUT, serve_connection};
use crate::services::health::HealthReporter;
use crate::services::reflection::{Descriptors, Reflection};
use crate::{Request, Response, Status};

pub(crate) use dispatch::{Dispatch, begin, finish, guarded, handler_panicked};
pub use dispatch::{SERVER_TIMING_KEY, TIMING_REQUEST_KEY};
pub use router::{Router, ServiceHandler};
pub(crate) use shutdown::Shutdown;

pub use crate::http::cors::Cors;

type LayerFn = Arc<dyn Fn(BoxService) -> BoxService + Send + Sync>;

/// Serves registered services on one listening socket.
///
/// ```no_run
/// # async fn demo(calculator: impl ferry::ServiceHandler) -> std::io::Result<()> {
/// ferry::Server::builder()
///     .add_service(calculator)
///     .serve("127.0.0.1:8000") // until Ctrl-C or SIGTERM, then drains in-flight calls
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    router: Router,
    layers: Vec<LayerFn>,
    conn: ConnConfig,
    grace: Duration,
    health: HealthReporter,
    reflection: bool,
    registries: Vec<Arc<dyn Registry>>,
    advertise: Option<SocketAddr>,
    cors: crate::http::cors::Cors,
    reject_unknown_json: bool,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            router: Router::new(),
            layers: Vec::new(),
            conn: ConnConfig {
                limits: Limits::default(),
                max_concurrent_streams: 4096,
            },
            grace: Duration::from_secs(30),
            health: HealthReporter::default(),
            reflection: true,
            registries: Vec::new(),
            advertise: None,
            cors: crate::http::cors::Cors::default(),
            reject_unknown_json: false,
        }
    }
}

impl Server {
    /// A server with no services and default limits.
    pub fn builder() -> Server {
        Server::default()
    }

    /// Registers a service (usually a generated `FooServer::new(impl)`).
    pub fn add_service(mut self, service: impl ServiceHandler) -> Server {
        self.router = self.router.add_service(service);
        self
    }

    /// Wraps every call, on every protocol, unary and streaming, in a tower layer; the layer
    /// added last runs first.
    pub fn layer<L>(mut self, layer: L) -> Server
    where
        L: Layer<BoxService> + Send + Sync + 'static,
        L::Service: tower::Service<Request<Body>, Response = Response<Body>, Error = Status>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
    {
        self.layers
            .push(Arc::new(move |svc| BoxService::new(layer.layer(svc))));
        self
    }

    /// Limit on calls in flight per connection (default 4096); more are refused with
    /// `RESOURCE_EXHAUSTED`.
    pub fn max_concurrent_streams(mut self, limit: usize) -> Server {
        self.conn.max_concurrent_streams = limit;
        self
    }

    /// Largest request message accepted, in bytes (default 4 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Server {
        self.conn.limits.max_frame_size = bytes;
        self
    }

    /// Largest metadata accepted per call, in bytes (default 16 KiB).
    pub fn max_metadata_size(mut self, bytes: usize) -> Server {
        self.conn.limits.max_metadata_size = bytes;
        self
    }

    /// How long graceful shutdown waits for in-flight calls before aborting them (default 30 s).
    pub fn shutdown_grace_period(mut self, grace: Duration) -> Server {
        self.grace = grace;
        self
    }

    /// The reporter behind the built-in `grpc.health.v1.Health` service; every registered
    /// service starts `SERVING` and turns `NOT_SERVING` when graceful shutdown begins.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Whether to serve gRPC server reflection (default: yes), which lets tools such as
    /// `ferry list` or grpcurl discover the services.
    pub fn reflection(mut self, enable: bool) -> Server {
        self.reflection = enable;
        self
    }

    /// Which origins browsers may call from (default: any origin, without credentials).
    pub fn cors(mut self, cors: Cors) -> Server {
        self.cors = cors;
        self
    }

    /// Whether JSON requests naming fields the schema does not have are refused with
    /// `INVALID_ARGUMENT` (default: no — they are ignored, so a client built from a newer
    /// schema keeps working).
    pub fn reject_unknown_json_fields(mut self, reject: bool) -> Server {
        self.reject_unknown_json = reject;
        self
    }

    /// Announces every service of this server in `registry` once it listens (e.g. an
    /// `EtcdRegistry`), and withdraws them first thing on graceful shutdown.
    ///
    /// ```no_run
    /// # async fn demo(svc: impl ferry::ServiceHandler, registry: impl ferry::discovery::Registry) -> std::io::Result<()> {
    /// let server = ferry::Server::builder().add_service(svc).register(registry).bind("127.0.0.1:0").await?;
    /// # Ok(()) }
    /// ```
    pub fn register(mut self, registry: impl Registry) -> Server {
        self.registries.push(Arc::new(registry));
        self
    }

    /// The address registries announce (default: the bound address, which must then not be a
    /// wildcard such as `0.0.0.0`).
    pub fn advertise_address(mut self, addr: SocketAddr) -> Server {
        self.advertise = Some(addr);
        self
    }

    /// Registers every service in every registry; all or nothing.
    async fn register_all(&self, local: SocketAddr) -> std::io::Result<Vec<Registration>> {
        let mut done = Vec::new();
        if self.registries.is_empty() {
            return Ok(done);
        }
        let addr = self.advertise.unwrap_or(local);
        if addr.ip().is_unspecified() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "cannot register the wildcard address {addr}; set Server::advertise_address"
                ),
            ));
        }
        for registry in &self.registries {
            for service in self.router.service_names() {
                match registry.register(service, addr).await {
                    Ok(registration) => done.push(registration),
                    Err(status) => {
                        deregister_all(done).await;
                        return Err(std::io::Error::other(format!(
                            "cannot register {service} at {addr}: {status}"
                        )));
                    }
                }
            }
        }
        Ok(done)
    }

    /// The registered services.
    pub fn router(&self) -> &Router {
        &self.router
    }

    fn service(&self, router: Router) -> BoxService {
        let mut svc = BoxService::new(router);
        for layer in &self.layers {
            svc = layer(svc);
        }
        svc
    }

    /// Binds `addr` and serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn serve(self, addr: impl ToSocketAddrs) -> std::io::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "ferry server listening");
        self.serve_with_shutdown(listener, shutdown::signal()).await
    }

    /// Serves `listener` until `signal` completes, then stops accepting, tells clients to go
    /// away, and waits (up to the grace period) for in-flight calls to finish.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let token = CancellationToken::new();
        let trigger = token.clone();
        let watcher = async move {
            signal.await;
            trigger.cancel();
        };
        let registrations = self.register_all(listener.local_addr()?).await?;
        let (result, ()) = tokio::join!(self.run(listener, token.clone(), registrations), async {
            tokio::select! {
                _ = watcher => {},
                _ = token.cancelled() => {},
            }
        });
        result
    }

    /// Binds `addr`, serves in a background task, and returns a handle to stop it.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let registrations = self.register_all(local_addr).await?;
        let task = tokio::spawn(self.run(listener, token.clone(), registrations));
        Ok(ServerHandle {
            local_addr,
            token,
            task,
        })
    }

    /// The router with the built-in services, and what HTTP connections share.
    fn prepare(&self) -> std::io::Result<Arc<HttpContext>> {
        // A health service the user registered takes precedence over the built-in one.
        let mut router = if self.router.service("grpc.health.v1.Health").is_some() {
            self.router.clone()
        } else {
            self.router.clone().add_service(self.health.service())
        };
        let user_services = router.service_names();
        self.health.register(&user_services);
        let descriptors = Descriptors::build(
            user_services
                .iter()
                .filter_map(|name| router.service(name))
                .map(|svc| svc.file_descriptor_set())
                .chain([crate::services::reflection::OWN_DESCRIPTORS]),
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let descriptors = Arc::new(descriptors);
        if self.reflection {
            use crate::services::reflection::{pb, pb_v1alpha};
            let mut listed: Vec<String> = user_services.iter().map(|n| (*n).to_owned()).collect();
            listed.push(pb::ServerReflectionClient::SERVICE_NAME.to_owned());
            listed.push(pb_v1alpha::ServerReflectionClient::SERVICE_NAME.to_owned());
            listed.sort();
            let (v1, v1alpha) = Reflection::new(descriptors.clone(), listed).services();
            router = router.add_service(v1).add_service(v1alpha);
        }
        // Every service, the built-in ones too, answers over the Connect protocol.
        let json = JsonGateway::new(&descriptors.pool, &router, self.reject_unknown_json);
        let dispatch = Dispatch::new(self.service(router.clone()), router);
        Ok(Arc::new(HttpContext {
            dispatch,
            json,
            max_message_size: self.conn.limits.max_frame_size,
            max_concurrent_streams: u32::try_from(self.conn.max_concurrent_streams)
                .unwrap_or(u32::MAX),
            cors: self.cors.clone(),
        }))
    }

    async fn run(
        self,
        listener: TcpListener,
        token: CancellationToken,
        registrations: Vec<Registration>,
    ) -> std::io::Result<()> {
        let http = self.prepare()?;
        let cfg = Arc::new(self.conn.clone());
        let shutdown = Shutdown {
            drain: CancellationToken::new(),
            force: CancellationToken::new(),
        };
        let connections = TaskTracker::new();
        // If this task is aborted (`ServerHandle::abort`), the guard drops every connection too.
        let _abort_connections = shutdown.force.clone().drop_guard();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(handle_connection(
                            stream,
                            peer,
                            cfg.clone(),
                            http.clone(),
                            shutdown.clone(),
                        ));
                    }
                    Err(e) => {
                        // Typically out of file descriptors: wait a moment instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        // Withdraw from discovery first, so clients stop choosing this server.
        deregister_all(registrations).await;
        drop(listener);
        self.health.set_all_not_serving();
        shutdown.drain.cancel();
        connections.close();
        if tokio::time::timeout(self.grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; aborting calls still in flight");
            shutdown.force.cancel();
            connections.wait().await;
        }
        Ok(())
    }
}

async fn deregister_all(registrations: Vec<Registration>) {
    for registration in registrations {
        let what = registration.description().to_owned();
        if let Err(status) = registration.deregister().await {
            tracing::warn!("cannot deregister {what}: {status}");
        }
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: Arc<ConnConfig>,
    http: Arc<HttpContext>,
    shutdown: Shutdown,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "set_nodelay failed: {e}");
    }
    // One port, three protocols: Ferry's preface starts with a byte no HTTP request can.
    let mut first = [0u8; 1];
    match tokio::time::timeout(PREFACE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "connection failed before its first byte: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no data within {PREFACE_TIMEOUT:?}; closing");
            return;
        }
    }
    if first[0] != PREFACE[0] {
        crate::http::serve_connection(stream, peer, http, shutdown).await;
        return;
    }
    let (reader, writer) = stream.into_split();
    let buf = BytesMut::with_capacity(16 * 1024);
    let dispatch = http.dispatch.clone();
    serve_connection(reader, writer, buf, Some(peer), dispatch, cfg, shutdown).await;
}

/// A server running in the background, returned by [`Server::bind`].
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    token: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.token.cancel();
    }

    /// Shuts down gracefully and waits until every in-flight call has finished.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.token.cancel();
        self.task.await.map_err(std::io::Error::other)?
    }

    /// Stops at once: the listener closes and every connection and call is dropped.
    pub fn abort(self) {
        self.task.abort();
    }
}
