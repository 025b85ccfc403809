//! The calculator served by tonic with tonic-reflection, and tonic's generated client: the
//! non-Ferry gRPC peer of the interop and CLI tests. It echoes `x-echo*` metadata and sleeps
//! when asked (`x-sleep-ms`), so tests can check metadata and deadlines.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

/// Code tonic-prost-build generated from `calculator/v1/calculator.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("calculator.v1");
}

/// The encoded `FileDescriptorSet` tonic-reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/calculator_descriptor.bin"));

/// The calculator, implemented for tonic.
#[derive(Debug, Default)]
pub struct TonicCalculator;

type Reply = Result<Response<pb::CalculateResponse>, Status>;

/// Request metadata that makes the server sleep this many milliseconds first.
pub const SLEEP_KEY: &str = "x-sleep-ms";
/// Request metadata keys with this prefix are echoed back in the response metadata.
pub const ECHO_PREFIX: &str = "x-echo";

impl TonicCalculator {
    /// Sleeps if asked, computes, and echoes `x-echo*` metadata.
    async fn answer(
        request: Request<pb::CalculateRequest>,
        op: fn(f64, f64) -> Result<f64, Status>,
    ) -> Reply {
        let sleep = request
            .metadata()
            .get(SLEEP_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = sleep {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let echoed = request.metadata().clone();
        let pb::CalculateRequest { a, b } = request.into_inner();
        let mut response = Response::new(pb::CalculateResponse { result: op(a, b)? });
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
impl pb::calculator_server::Calculator for TonicCalculator {
    async fn add(&self, r: Request<pb::CalculateRequest>) -> Reply {
        Self::answer(r, |a, b| Ok(a + b)).await
    }
    async fn subtract(&self, r: Request<pb::CalculateRequest>) -> Reply {
        Self::answer(r, |a, b| Ok(a - b)).await
    }
    async fn multiply(&self, r: Request<pb::CalculateRequest>) -> Reply {
        Self::answer(r, |a, b| Ok(a * b)).await
    }
    async fn divide(&self, r: Request<pb::CalculateRequest>) -> Reply {
        Self::answer(r, |a, b| {
            if b == 0.0 {
                Err(Status::invalid_argument("division by zero"))
            } else {
                Ok(a / b)
            }
        })
        .await
    }

    type CountStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::Number, Status>> + Send + 'static>,
    >;

    async fn count(
        &self,
        r: Request<pb::CountRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let pb::CountRequest { from, to, delay_ms } = r.into_inner();
        let delay = std::time::Duration::from_millis(delay_ms.clamp(0, 60_000) as u64);
        let numbers = async_stream_count(from, to, delay);
        Ok(Response::new(Box::pin(numbers)))
    }

    async fn sum(
        &self,
        r: Request<tonic::Streaming<pb::Number>>,
    ) -> Result<Response<pb::CalculateResponse>, Status> {
        let mut numbers = r.into_inner();
        let mut total = 0.0;
        while let Some(n) = numbers.message().await? {
            total += n.value;
        }
        Ok(Response::new(pb::CalculateResponse { result: total }))
    }

    type RunningSumStream = Self::CountStream;

    async fn running_sum(
        &self,
        r: Request<tonic::Streaming<pb::Number>>,
    ) -> Result<Response<Self::RunningSumStream>, Status> {
        use tokio_stream::StreamExt;
        let mut total = 0.0;
        let totals = r.into_inner().map(move |n| {
            n.map(|n| {
                total += n.value;
                pb::Number { value: total }
            })
        });
        Ok(Response::new(Box::pin(totals)))
    }
}

/// `from..=to` as a stream, pausing `delay` between numbers.
fn async_stream_count(
    from: i64,
    to: i64,
    delay: std::time::Duration,
) -> impl tokio_stream::Stream<Item = Result<pb::Number, Status>> + Send + 'static {
    let numbers = tokio_stream::iter(from..=to);
    tokio_stream::StreamExt::then(numbers, move |n| async move {
        if !delay.is_zero() && n != from {
            tokio::time::sleep(delay).await;
        }
        Ok(pb::Number { value: n as f64 })
    })
}

/// Which reflection services the tonic server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reflection {
    /// `grpc.reflection.v1` and `grpc.reflection.v1alpha`.
    Both,
    /// Only the older `grpc.reflection.v1alpha`, as many deployed servers still do.
    V1AlphaOnly,
}

/// Serves the calculator and reflection (v1 and v1alpha) on `127.0.0.1:0` in a background
/// task; returns the bound address.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    spawn_with(Reflection::Both).await
}

/// Serves the calculator with the given reflection services on `127.0.0.1:0` in a background
/// task; returns the bound address.
pub async fn spawn_with(reflection: Reflection) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    let v1alpha = configure().build_v1alpha().map_err(std::io::Error::other)?;
    let v1 = match reflection {
        Reflection::Both => Some(configure().build_v1().map_err(std::io::Error::other)?),
        Reflection::V1AlphaOnly => None,
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = tonic::transport::Server::builder()
        .add_service(pb::calculator_server::CalculatorServer::new(
            TonicCalculator,
        ))
        .add_service(v1alpha)
        .add_optional_service(v1);
    tokio::spawn(router.serve_with_incoming(incoming));
    Ok(addr)
}
