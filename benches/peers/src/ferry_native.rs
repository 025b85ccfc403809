//! Ferry over its native protocol: a Ferry server and Ferry's generated client.

use crate::load::{self, Measured};

mod pb {
    #![allow(missing_docs, dead_code, clippy::all)]
    ferry::include_proto!("echo.v1");
}

struct Echo;

impl pb::Echo for Echo {
    async fn stream(
        &self,
        request: ferry::Request<pb::StreamRequest>,
    ) -> Result<ferry::Response<ferry::ResponseStream<pb::EchoResponse>>, ferry::Status> {
        let size = request.into_inner().size.min(1 << 20) as usize;
        let message = pb::EchoResponse {
            payload: vec![0xab; size],
        };
        let endless = futures_util::stream::repeat_with(move || Ok(message.clone()));
        Ok(ferry::Response::new(ferry::ResponseStream::new(endless)))
    }

    async fn echo(
        &self,
        request: ferry::Request<pb::EchoRequest>,
    ) -> Result<ferry::Response<pb::EchoResponse>, ferry::Status> {
        let pb::EchoRequest { payload } = request.into_inner();
        Ok(ferry::Response::new(pb::EchoResponse { payload }))
    }
}

pub async fn serve(listener: tokio::net::TcpListener) {
    let _ = ferry::Server::builder()
        .add_service(pb::EchoServer::new(Echo))
        .serve_with_shutdown(listener, std::future::pending())
        .await;
}

pub async fn client(args: crate::ClientArgs) -> Result<Measured, String> {
    let crate::ClientArgs {
        addr,
        size,
        concurrency,
        warmup,
        window,
    } = args;
    let client = pb::EchoClient::connect(format!("ferry://{addr}"))
        .await
        .map_err(|e| e.to_string())?;
    let payload = vec![0xabu8; size];
    load::closed_loop(concurrency, warmup, window, move || {
        let (client, payload) = (client.clone(), payload.clone());
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

/// Counts the messages of server streams over Ferry's native protocol.
pub async fn stream(args: crate::ClientArgs) -> Result<Measured, String> {
    let client = pb::EchoClient::connect(format!("ferry://{}", args.addr))
        .await
        .map_err(|e| e.to_string())?;
    let mut streams = Vec::new();
    for _ in 0..args.concurrency {
        let request = pb::StreamRequest {
            size: args.size as u32,
        };
        let stream = client.stream(request).await.map_err(|e| e.to_string())?;
        let size = args.size;
        let sizes = futures_util::StreamExt::map(stream.into_inner(), move |message| {
            let message = message.map_err(|e| e.to_string())?;
            crate::check_len(message.payload.len(), size).map(|()| size)
        });
        streams.push(Box::pin(sizes));
    }
    load::count_streams(streams, args.warmup, args.window).await
}
