//! Shared support for the interop tests: a Ferry calculator server with test middleware, and a
//! tonic calculator server, both on loopback ports.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry::service::{BoxFuture, BoxService, RawResult};
use ferry::{Request, Status};
use tower::{Layer, Service};

/// tonic's generated calculator client and server.
pub mod tonic_pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("calculator.v1");
}

/// Request metadata that makes the test middleware sleep this many milliseconds first.
pub const SLEEP_KEY: &str = "x-sleep-ms";
/// Request metadata keys with this prefix are echoed back in the response metadata.
pub const ECHO_PREFIX: &str = "x-echo";

/// Test middleware: sleeps when asked (`x-sleep-ms`) and echoes `x-echo*` metadata.
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

impl Service<Request<Bytes>> for Echo {
    type Response = ferry::Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<RawResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
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

/// Starts the calculator on a loopback port with [`EchoLayer`], on all three protocols.
pub async fn start_ferry() -> ferry::ServerHandle {
    ferry::Server::builder()
        .add_service(calculator::service())
        .layer(EchoLayer)
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

/// A calculator implemented with tonic, echoing `x-echo*` metadata and sleeping on request.
#[derive(Debug, Default)]
pub struct TonicCalculator;

type TonicResult = Result<tonic::Response<tonic_pb::CalculateResponse>, tonic::Status>;

impl TonicCalculator {
    async fn answer(
        request: tonic::Request<tonic_pb::CalculateRequest>,
        op: fn(f64, f64) -> Result<f64, tonic::Status>,
    ) -> TonicResult {
        let sleep = request
            .metadata()
            .get(SLEEP_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = sleep {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let echoed = request.metadata().clone();
        let tonic_pb::CalculateRequest { a, b } = request.into_inner();
        let mut response = tonic::Response::new(tonic_pb::CalculateResponse { result: op(a, b)? });
        for entry in echoed.iter() {
            match entry {
                tonic::metadata::KeyAndValueRef::Ascii(key, value)
                    if key.as_str().starts_with(ECHO_PREFIX) =>
                {
                    response.metadata_mut().insert(key.clone(), value.clone());
                }
                tonic::metadata::KeyAndValueRef::Binary(key, value)
                    if key.as_str().starts_with(ECHO_PREFIX) =>
                {
                    response
                        .metadata_mut()
                        .insert_bin(key.clone(), value.clone());
                }
                _ => {}
            }
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl tonic_pb::calculator_server::Calculator for TonicCalculator {
    async fn add(&self, request: tonic::Request<tonic_pb::CalculateRequest>) -> TonicResult {
        Self::answer(request, |a, b| Ok(a + b)).await
    }

    async fn subtract(&self, request: tonic::Request<tonic_pb::CalculateRequest>) -> TonicResult {
        Self::answer(request, |a, b| Ok(a - b)).await
    }

    async fn multiply(&self, request: tonic::Request<tonic_pb::CalculateRequest>) -> TonicResult {
        Self::answer(request, |a, b| Ok(a * b)).await
    }

    async fn divide(&self, request: tonic::Request<tonic_pb::CalculateRequest>) -> TonicResult {
        Self::answer(request, |a, b| {
            if b == 0.0 {
                Err(tonic::Status::invalid_argument(
                    "tonic cannot divide by zero",
                ))
            } else {
                Ok(a / b)
            }
        })
        .await
    }
}

/// Starts [`TonicCalculator`] on a loopback port; the server stops when the returned sender is
/// dropped or fired.
pub async fn start_tonic() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(tonic_pb::calculator_server::CalculatorServer::new(
                TonicCalculator,
            ))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}
