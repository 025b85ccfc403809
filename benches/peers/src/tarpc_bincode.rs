//! tarpc with its serde transport (bincode over length-delimited TCP frames).

use futures_util::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::{TcpListener, TcpStream};
use tokio_serde::formats::Bincode;

use crate::load::{self, Measured};

#[tarpc::service]
trait Echo {
    async fn echo(payload: ByteBuf) -> ByteBuf;
}

#[derive(Clone)]
struct Service;

impl Echo for Service {
    async fn echo(self, _: tarpc::context::Context, payload: ByteBuf) -> ByteBuf {
        payload
    }
}

pub async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
        let channel = BaseChannel::with_defaults(transport);
        tokio::spawn(
            channel
                .execute(Service.serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                }),
        );
    }
}

pub async fn client(args: crate::ClientArgs) -> Result<Measured, String> {
    let crate::ClientArgs {
        addr,
        size,
        concurrency,
        warmup,
        window,
    } = args;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
    let client = EchoClient::new(tarpc::client::Config::default(), transport).spawn();
    let payload = ByteBuf::from(vec![0xabu8; size]);
    load::closed_loop(concurrency, warmup, window, move || {
        let (client, payload) = (client.clone(), payload.clone());
        async move {
            let reply = client
                .echo(tarpc::context::current(), payload)
                .await
                .map_err(|e| e.to_string())?;
            crate::check_len(reply.len(), size)
        }
    })
    .await
}
