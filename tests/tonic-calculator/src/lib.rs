//! The calculator served by tonic with tonic-reflection: a non-Ferry gRPC peer for the
//! `ferry` CLI's interop tests.

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

fn answer(result: f64) -> Reply {
    Ok(Response::new(pb::CalculateResponse { result }))
}

#[tonic::async_trait]
impl pb::calculator_server::Calculator for TonicCalculator {
    async fn add(&self, r: Request<pb::CalculateRequest>) -> Reply {
        let pb::CalculateRequest { a, b } = r.into_inner();
        answer(a + b)
    }
    async fn subtract(&self, r: Request<pb::CalculateRequest>) -> Reply {
        let pb::CalculateRequest { a, b } = r.into_inner();
        answer(a - b)
    }
    async fn multiply(&self, r: Request<pb::CalculateRequest>) -> Reply {
        let pb::CalculateRequest { a, b } = r.into_inner();
        answer(a * b)
    }
    async fn divide(&self, r: Request<pb::CalculateRequest>) -> Reply {
        let pb::CalculateRequest { a, b } = r.into_inner();
        if b == 0.0 {
            return Err(Status::invalid_argument("division by zero"));
        }
        answer(a / b)
    }
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
