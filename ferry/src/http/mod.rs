//! HTTP on Ferry's port: HTTP/2 and HTTP/1.1 (served by hyper), carrying gRPC
//! ([`crate::grpc`]) and the Connect protocol with REST routes ([`crate::connect`]).

pub(crate) mod body;
pub(crate) mod compression;
pub(crate) mod cors;
pub(crate) mod envelope;
pub(crate) mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::connect::JsonGateway;
use crate::server::{Dispatch, Shutdown};
use body::ReplyBody;

/// What every HTTP connection of a server shares.
pub(crate) struct HttpContext {
    /// The one entry into the layer stack and the router.
    pub dispatch: Dispatch,
    /// JSON transcoding and REST routes.
    pub json: JsonGateway,
    /// Largest request message accepted.
    pub max_message_size: usize,
    /// Concurrent HTTP/2 streams allowed per connection.
    pub max_concurrent_streams: u32,
    /// Which origins browsers may call from.
    pub cors: cors::Cors,
}

/// Serves one HTTP/1.1 or HTTP/2 connection until it closes or the server shuts down.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) {
    let max_concurrent_streams = ctx.max_concurrent_streams;
    let service = hyper::service::service_fn(move |request| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(route(&ctx, Some(peer), request).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(max_concurrent_streams);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
            return;
        }
        _ = shutdown.drain.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.force.cancelled() => {}
    }
}

/// Sends a request to the protocol its content type names; answers CORS preflights.
async fn route(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    if let Some(preflight) = ctx.cors.preflight(request.method(), request.headers()) {
        return preflight;
    }
    let origin = request.headers().get(http::header::ORIGIN).cloned();
    let mut response = if crate::grpc::is_grpc(&request) {
        crate::grpc::server::serve(ctx, peer, request).await
    } else {
        crate::connect::serve(ctx, peer, request).await
    };
    ctx.cors.decorate(origin.as_ref(), &mut response);
    response
}
