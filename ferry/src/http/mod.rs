//! HTTP on Ferry's port: HTTP/2 and HTTP/1.1 (served by hyper), carrying gRPC
//! ([`grpc`]) and JSON ([`json`]: Connect-style unary calls and REST routes).

pub(crate) mod body;
pub(crate) mod grpc;
pub(crate) mod json;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::Metadata;
use crate::native::server::Shutdown;
use crate::service::BoxService;
use body::ReplyBody;

/// Everything an HTTP connection needs to serve calls.
pub(crate) struct HttpContext {
    /// The layered router every protocol calls into.
    pub svc: BoxService,
    /// Streaming methods served only over gRPC (health `Watch`, reflection).
    pub streams: Arc<HashMap<String, grpc::StreamHandler>>,
    /// JSON transcoding and REST routes.
    pub json: Arc<json::JsonGateway>,
    /// Largest request message accepted.
    pub max_message_size: usize,
    /// The client's address.
    pub peer: Option<SocketAddr>,
}

/// The per-server part of [`HttpContext`], shared by all connections.
#[derive(Clone)]
pub(crate) struct HttpShared {
    pub streams: Arc<HashMap<String, grpc::StreamHandler>>,
    pub json: Arc<json::JsonGateway>,
    pub max_message_size: usize,
    pub max_concurrent_streams: u32,
}

/// Serves one HTTP/1.1 or HTTP/2 connection until it closes or the server shuts down.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    svc: BoxService,
    shared: HttpShared,
    shutdown: Shutdown,
) {
    let ctx = Arc::new(HttpContext {
        svc,
        streams: shared.streams.clone(),
        json: shared.json.clone(),
        max_message_size: shared.max_message_size,
        peer: Some(peer),
    });
    let service = hyper::service::service_fn(move |request| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(route(ctx, request).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(shared.max_concurrent_streams);
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

async fn route(
    ctx: Arc<HttpContext>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    if grpc::is_grpc(&request) {
        grpc::serve(ctx, request).await
    } else {
        json::serve(ctx, request).await
    }
}

/// Headers that belong to the protocol, not to the call's metadata.
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-encoding"
            | "accept"
            | "accept-encoding"
            | "te"
            | "host"
            | "connection"
            | "transfer-encoding"
            | "keep-alive"
            | "upgrade"
            | "date"
            | "trailer"
            | "connect-protocol-version"
            | "connect-timeout-ms"
    ) || name.starts_with("grpc-")
}

/// Call metadata from HTTP headers (`-bin` values base64-decoded).
pub(crate) fn headers_to_metadata(headers: &HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let key = name.as_str();
        if is_reserved(key) {
            continue;
        }
        if key.ends_with("-bin") {
            if let Some(bytes) = decode_base64(value.as_bytes()) {
                metadata.insert_bin(key, bytes);
            }
        } else if let Ok(text) = value.to_str() {
            metadata.append(key, text);
        }
    }
    metadata
}

/// HTTP headers from call metadata (`-bin` values base64-encoded); invalid entries are skipped.
pub(crate) fn metadata_to_headers(metadata: &Metadata, headers: &mut HeaderMap) {
    for (key, value) in metadata.iter() {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            continue;
        };
        let value = if key.ends_with("-bin") {
            let encoded =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, value);
            HeaderValue::from_str(&encoded)
        } else {
            HeaderValue::from_bytes(value)
        };
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
}

/// Decodes base64 with or without padding, as gRPC peers send both.
pub(crate) fn decode_base64(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let trimmed = value
        .strip_suffix(b"==")
        .or_else(|| value.strip_suffix(b"="))
        .unwrap_or(value);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .ok()
}
