//! The calculator on a Ferry server, with the test layer when asked; the same on a background
//! runtime for synchronous tests (the CLI's, which run the real binary); and the tonic peer.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry::call::{Body, BoxFuture, BoxService, CallResult};
use ferry::{Request, Server, ServerHandle, Status};
use tower::{Layer, Service};

pub use tonic_calculator::{ECHO_PREFIX, Reflection, SLEEP_KEY};

/// Test middleware, the same behaviour as the tonic peer's: sleeps before the call when asked
/// (`x-sleep-ms: <ms>`), and echoes request metadata whose key starts with `x-echo` into the
/// response (`-bin` keys as binary, the others as text).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoLayer;

impl Layer<BoxService> for EchoLayer {
    type Service = Echo;

    fn layer(&self, inner: BoxService) -> Echo {
        Echo { inner }
    }
}

/// The service [`EchoLayer`] wraps around the router.
#[derive(Clone)]
pub struct Echo {
    inner: BoxService,
}

impl Service<Request<Body>> for Echo {
    type Response = ferry::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let sleep = request
            .metadata()
            .get(SLEEP_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis);
        let echo: Vec<(String, Bytes)> = request
            .metadata()
            .iter()
            .filter(|(key, _)| key.starts_with(ECHO_PREFIX))
            .map(|(key, value)| (key.to_owned(), Bytes::copy_from_slice(value)))
            .collect();
        let future = self.inner.call(request);
        Box::pin(async move {
            if let Some(sleep) = sleep {
                tokio::time::sleep(sleep).await;
            }
            let mut response = future.await?;
            for (key, value) in echo {
                if key.ends_with("-bin") {
                    response.metadata_mut().insert_bin(key, value);
                } else {
                    let text = String::from_utf8_lossy(&value).into_owned();
                    response.metadata_mut().insert(key, text);
                }
            }
            Ok(response)
        })
    }
}

/// Starts the calculator on `127.0.0.1:0`, on all three protocols.
pub async fn start_calculator() -> ServerHandle {
    start_calculator_with(|server| server).await
}

/// Starts the calculator on `127.0.0.1:0` with [`EchoLayer`].
pub async fn start_echo_calculator() -> ServerHandle {
    start_calculator_with(|server| server.layer(EchoLayer)).await
}

/// Starts the calculator on `127.0.0.1:0` after `configure` adjusts the server.
pub async fn start_calculator_with(configure: impl FnOnce(Server) -> Server) -> ServerHandle {
    configure(Server::builder().add_service(calculator::service()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

/// Starts the tonic calculator (with reflection v1 and v1alpha) on a loopback port.
pub async fn start_tonic() -> SocketAddr {
    tonic_calculator::spawn()
        .await
        .expect("bind a loopback port")
}

/// A tonic client for the calculator at `addr`.
pub async fn tonic_client(
    addr: SocketAddr,
) -> tonic_calculator::pb::calculator_client::CalculatorClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("tonic connects");
    tonic_calculator::pb::calculator_client::CalculatorClient::new(channel)
}

/// A server running on its own runtime thread until the test process exits, for tests that
/// are not async themselves.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TestServer {
    /// `scheme://addr`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

/// Runs `start` on a new two-thread runtime that lives until the process exits; returns the
/// address it reports.
fn on_runtime_thread<F, Fut>(start: F) -> SocketAddr
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = SocketAddr>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let addr = start().await;
            tx.send(addr).expect("the test is waiting");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("the server started")
}

/// The calculator on a Ferry server (native, gRPC and HTTP/JSON on one port), in the
/// background.
pub fn ferry_calculator() -> TestServer {
    ferry_calculator_with(|server| server)
}

/// The calculator on a Ferry server configured by `configure` first, in the background.
pub fn ferry_calculator_with(
    configure: impl FnOnce(Server) -> Server + Send + 'static,
) -> TestServer {
    let addr = on_runtime_thread(move || async move {
        let handle = start_calculator_with(configure).await;
        let addr = handle.local_addr();
        // Serves until the process exits.
        std::mem::forget(handle);
        addr
    });
    TestServer { addr }
}

/// The calculator on a tonic server with tonic-reflection (v1 and v1alpha), in the background.
pub fn tonic_calculator() -> TestServer {
    tonic_calculator_with(Reflection::Both)
}

/// The calculator on a tonic server offering the given reflection services, in the
/// background.
pub fn tonic_calculator_with(reflection: Reflection) -> TestServer {
    let addr = on_runtime_thread(move || async move {
        tonic_calculator::spawn_with(reflection)
            .await
            .expect("start tonic")
    });
    TestServer { addr }
}
