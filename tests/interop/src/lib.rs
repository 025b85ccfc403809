//! Shared support for the interop tests: a Ferry calculator server with test middleware that
//! behaves like the tonic peer (`tonic-calculator`): sleeping on `x-sleep-ms`, echoing
//! `x-echo*` metadata.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry::call::{Body, BoxFuture, BoxService, CallResult};
use ferry::{Request, Status};
use tower::{Layer, Service};

/// tonic's generated calculator client and server (from the `tonic-calculator` test peer).
pub use tonic_calculator::pb as tonic_pb;

pub use tonic_calculator::{ECHO_PREFIX, SLEEP_KEY};

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

/// Starts the calculator on a loopback port with [`EchoLayer`], on all three protocols.
pub async fn start_ferry() -> ferry::ServerHandle {
    ferry::Server::builder()
        .add_service(calculator::service())
        .layer(EchoLayer)
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

/// Starts the tonic calculator (with reflection) on a loopback port.
pub async fn start_tonic() -> SocketAddr {
    tonic_calculator::spawn()
        .await
        .expect("bind a loopback port")
}

/// A tonic client for the calculator at `addr`.
pub async fn tonic_client(
    addr: SocketAddr,
) -> tonic_pb::calculator_client::CalculatorClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("tonic connects");
    tonic_pb::calculator_client::CalculatorClient::new(channel)
}
