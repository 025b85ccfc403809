//! tonic (gRPC over HTTP/2): a tonic server and tonic's generated client.

use std::net::SocketAddr;

use crate::load::{self, Measured};

pub mod pb {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tonic/echo.v1.rs"));
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};

struct Service;

#[tonic::async_trait]
impl Echo for Service {
    type StreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::EchoResponse, tonic::Status>> + Send>,
    >;

    async fn stream(
        &self,
        request: tonic::Request<pb::StreamRequest>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let size = request.into_inner().size.min(1 << 20) as usize;
        let message = pb::EchoResponse {
            payload: vec![0xab; size],
        };
        let endless = tokio_stream::iter(std::iter::repeat_with(move || Ok(message.clone())));
        Ok(tonic::Response::new(Box::pin(endless)))
    }

    async fn echo(
        &self,
        request: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoResponse>, tonic::Status> {
        let pb::EchoRequest { payload } = request.into_inner();
        Ok(tonic::Response::new(pb::EchoResponse { payload }))
    }
}

pub async fn serve(listener: tokio::net::TcpListener) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let _ = tonic::transport::Server::builder()
        .add_service(EchoServer::new(Service))
        .serve_with_incoming(incoming)
        .await;
}

/// A tonic client on one HTTP/2 connection to `addr` (also used against Ferry's gRPC server).
pub async fn connect(addr: SocketAddr) -> Result<EchoClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(EchoClient::new(channel))
}

pub async fn client(args: crate::ClientArgs) -> Result<Measured, String> {
    let crate::ClientArgs {
        addr,
        size,
        concurrency,
        warmup,
        window,
    } = args;
    let client = connect(addr).await?;
    let payload = vec![0xabu8; size];
    load::closed_loop(concurrency, warmup, window, move || {
        let (mut client, payload) = (client.clone(), payload.clone());
        async move {
            let reply = client
                .echo(pb::EchoRequest { payload })
                .await
                .map_err(|e| e.to_string())?;
            crate::check_len(reply.get_ref().payload.len(), size)
        }
    })
    .await
}

/// Counts the messages of server streams over gRPC with tonic's client (also used against
/// Ferry's gRPC server).
pub async fn stream(args: crate::ClientArgs) -> Result<Measured, String> {
    let client = connect(args.addr).await?;
    let mut streams = Vec::new();
    for _ in 0..args.concurrency {
        let request = pb::StreamRequest {
            size: args.size as u32,
        };
        let stream = client
            .clone()
            .stream(request)
            .await
            .map_err(|e| e.to_string())?;
        let size = args.size;
        let sizes = futures_util::StreamExt::map(stream.into_inner(), move |message| {
            let message = message.map_err(|e| e.to_string())?;
            crate::check_len(message.payload.len(), size).map(|()| size)
        });
        streams.push(Box::pin(sizes));
    }
    load::count_streams(streams, args.warmup, args.window).await
}
