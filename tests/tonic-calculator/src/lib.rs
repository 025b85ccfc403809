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

/// Serves the calculator and reflection (v1 and v1alpha) on `127.0.0.1:0` in a background
/// task; returns the bound address.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder.register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(std::io::Error::other)?;
    let v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::calculator_server::CalculatorServer::new(
                TonicCalculator,
            ))
            .add_service(v1)
            .add_service(v1alpha)
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}
