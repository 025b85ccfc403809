//! The Connect protocol's client side: `http://` targets of a
//! [`Channel`](crate::Channel) call Connect servers (Ferry, connect-go, connect-es…) with
//! protobuf bodies over pooled HTTP/1.1 connections.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::call::{Body, CallResult, deadline};
use crate::http::body::collect;
use crate::http::headers::{headers_to_metadata, metadata_to_headers};
use crate::{Code, Metadata, Request, Response, Status};

/// Connect clients say which protocol version they speak.
const PROTOCOL_VERSION: &str = "1";

/// A pool of HTTP/1.1 connections to one Connect server.
#[derive(Clone)]
pub(crate) struct ConnectConnection {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: http::uri::Authority,
    max_message_size: usize,
}

impl ConnectConnection {
    /// A client for `authority`; connections open on demand and are kept alive between calls.
    pub(crate) fn new(
        authority: &str,
        max_message_size: usize,
    ) -> Result<ConnectConnection, Status> {
        let authority: http::uri::Authority = authority
            .parse()
            .map_err(|e| Status::invalid_argument(format!("bad authority {authority:?}: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(ConnectConnection {
            client,
            authority,
            max_message_size,
        })
    }

    /// Makes one unary call, bounded by its deadline.
    pub(crate) async fn call(&self, request: Request<Body>) -> CallResult {
        if request.method_kind() != crate::call::MethodKind::Unary {
            return Err(Status::unimplemented(
                "the Connect client does not stream yet; use grpc:// or ferry:// for streaming",
            ));
        }
        let deadline = request.deadline();
        deadline::within(deadline, self.unary(request)).await
    }

    async fn unary(&self, request: Request<Body>) -> CallResult {
        let timeout = deadline::wire_timeout(request.deadline())?;
        let (method, metadata, body) = request.into_call_parts();
        let message = body.into_message().await?;
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(method.as_ref())
            .build()
            .map_err(|e| Status::invalid_argument(format!("bad method path {method:?}: {e}")))?;
        let mut http_request = http::Request::new(Full::new(message));
        *http_request.method_mut() = http::Method::POST;
        *http_request.uri_mut() = uri;
        let headers = http_request.headers_mut();
        metadata_to_headers(&metadata, headers);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/proto"),
        );
        headers.insert(
            "connect-protocol-version",
            HeaderValue::from_static(PROTOCOL_VERSION),
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("ferry/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(timeout) = timeout {
            let ms = timeout.as_millis().clamp(1, 9_999_999_999);
            headers.insert("connect-timeout-ms", HeaderValue::from(ms as u64));
        }
        let response = self
            .client
            .request(http_request)
            .await
            .map_err(|e| Status::unavailable(format!("the call failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let collected = collect(body, self.max_message_size).await?;
        if parts.status != StatusCode::OK {
            return Err(error_from(parts.status, &collected.data));
        }
        let (metadata, trailers) = split_trailers(headers_to_metadata(&parts.headers));
        Ok(Response::from_wire(
            metadata,
            Body::Message(collected.data),
            trailers,
        ))
    }
}

/// Separates a unary response's `trailer-…` headers (its trailers) from the rest.
fn split_trailers(all: Metadata) -> (Metadata, Metadata) {
    let mut metadata = Metadata::new();
    let mut trailers = Metadata::new();
    for (key, value) in all.iter() {
        let value = Bytes::copy_from_slice(value);
        match key.strip_prefix("trailer-") {
            Some(name) => trailers.append_raw(name.to_owned(), value),
            None => metadata.append_raw(key.to_owned(), value),
        }
    }
    (metadata, trailers)
}

/// A Connect error body (`{"code": "...", "message": "..."}`), or the HTTP status's code.
pub(crate) fn error_from(http: StatusCode, body: &[u8]) -> Status {
    #[derive(serde::Deserialize)]
    struct ConnectError {
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(error) = serde_json::from_slice::<ConnectError>(body)
        && let Some(code) = Code::from_name(&error.code)
    {
        return Status::new(code, error.message);
    }
    let code = match http.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {http} without a Connect error"))
}
