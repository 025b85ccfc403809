//! gRPC over HTTP/2: the server side (any gRPC client can call Ferry) and the client side
//! (Ferry's `Channel` can call any gRPC server), unary and streaming.
//!
//! Mapping (details in `docs/grpc-and-http.md`):
//! - path `/package.Service/Method` → [`Request::method`](crate::Request::method);
//! - `grpc-timeout` ↔ the request's deadline;
//! - other headers ↔ [`Metadata`](crate::Metadata) (`-bin` keys base64-encoded on the wire);
//! - `grpc-status` / `grpc-message` (percent-encoded) / `grpc-status-details-bin` ↔ [`Status`](crate::Status).

pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod server;

/// Whether an HTTP request is a gRPC call (`application/grpc` or `application/grpc+…`).
pub(crate) fn is_grpc(request: &http::Request<hyper::body::Incoming>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| {
            let ct = ct.as_bytes();
            ct == codec::CONTENT_TYPE.as_bytes() || ct.starts_with(b"application/grpc+")
        })
}
