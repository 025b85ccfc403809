//! The Connect protocol's client side: `http://` targets of a [`Channel`](crate::Channel) call
//! Connect servers (Ferry, connect-go, connect-es…) with protobuf bodies. Unary,
//! server-streaming and client-streaming calls go over pooled HTTP/1.1 connections, as the
//! protocol intends; bidirectional calls need HTTP/2 and use a cleartext HTTP/2 connection.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::call::{Body, CallResult, Compress, MessageStream, MethodKind, StreamItem, deadline};
use crate::http::body::{RequestBody, collect};
use crate::http::compression::{Compression, SUPPORTED};
use crate::http::envelope::{self, Batches, CompressPolicy};
use crate::http::headers::{headers_to_metadata, metadata_to_headers};
use crate::{Code, Metadata, Request, Response, Status};

/// Connect clients say which protocol version they speak.
const PROTOCOL_VERSION: &str = "1";

/// Pools of connections to one Connect server.
#[derive(Clone)]
pub(crate) struct ConnectConnection {
    /// HTTP/1.1 (unary, server and client streaming).
    http1: Client<HttpConnector, RequestBody>,
    /// Cleartext HTTP/2 with prior knowledge (bidirectional streaming).
    http2: Client<HttpConnector, RequestBody>,
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
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Ok(ConnectConnection {
            http1,
            http2,
            authority,
            max_message_size,
        })
    }

    /// Makes one call, bounded by its deadline.
    pub(crate) async fn call(&self, request: Request<Body>) -> CallResult {
        let deadline = request.deadline();
        let kind = request.method_kind();
        let result = deadline::within(deadline, async {
            if kind == MethodKind::Unary {
                self.unary(request).await
            } else {
                self.streaming(request).await
            }
        })
        .await;
        result.map(|response| {
            response.map(|body| match body {
                Body::Stream(stream) => Body::Stream(deadline::guard_stream(stream, deadline)),
                message => message,
            })
        })
    }

    fn request(
        &self,
        method: &str,
        metadata: &Metadata,
        timeout: Option<std::time::Duration>,
        body: RequestBody,
    ) -> Result<http::Request<RequestBody>, Status> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(method)
            .build()
            .map_err(|e| Status::invalid_argument(format!("bad method path {method:?}: {e}")))?;
        let mut request = http::Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        metadata_to_headers(metadata, headers);
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
        Ok(request)
    }

    async fn unary(&self, request: Request<Body>) -> CallResult {
        let timeout = deadline::wire_timeout(request.deadline())?;
        // Requests are compressed only when asked: a server may not read gzip.
        let compressed = request.compress() == Compress::Always;
        let (method, metadata, body) = request.into_call_parts();
        let mut message = body.into_message().await?;
        if compressed {
            message = Compression::Gzip.compress(&message);
        }
        let mut request = self.request(
            &method,
            &metadata,
            timeout,
            RequestBody::Full(Some(message)),
        )?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/proto"),
        );
        headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static(SUPPORTED),
        );
        if compressed {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        let response = self
            .http1
            .request(request)
            .await
            .map_err(|e| Status::unavailable(format!("the call failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let compression =
            Compression::from_header(parts.headers.get(http::header::CONTENT_ENCODING))?;
        let limit = self.max_message_size;
        let collected = collect(body, limit).await?;
        let data = compression.decompress(collected.data, limit)?;
        if parts.status != StatusCode::OK {
            let metadata = headers_to_metadata(&parts.headers);
            return Err(error_from(parts.status, &data).with_metadata(metadata));
        }
        let (metadata, trailers) = split_trailers(headers_to_metadata(&parts.headers));
        Ok(Response::from_wire(metadata, Body::Message(data), trailers))
    }

    async fn streaming(&self, request: Request<Body>) -> CallResult {
        let timeout = deadline::wire_timeout(request.deadline())?;
        let bidi = request.method_kind() == MethodKind::BidiStreaming;
        let compressed = request.compress() == Compress::Always;
        let policy = if compressed {
            CompressPolicy {
                compress: Compress::Always,
                encoding: Compression::Gzip,
                auto_min: None,
            }
        } else {
            CompressPolicy::never()
        };
        let (method, metadata, body) = request.into_call_parts();
        let messages = body.into_stream();
        // The request goes on only while the caller holds the call (see CallGuard).
        let (body, guard) = RequestBody::stream(Batches::new(messages, policy));
        let mut request = self.request(&method, &metadata, timeout, body)?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/connect+proto"),
        );
        headers.insert(
            "connect-accept-encoding",
            HeaderValue::from_static(SUPPORTED),
        );
        if compressed {
            headers.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
        }
        let client = if bidi { &self.http2 } else { &self.http1 };
        let response = client
            .request(request)
            .await
            .map_err(|e| Status::unavailable(format!("the call failed: {e}")))?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            let collected = collect(body, self.max_message_size).await?;
            return Err(error_from(parts.status, &collected.data));
        }
        let compression = Compression::from_header(parts.headers.get("connect-content-encoding"))?;
        let metadata = headers_to_metadata(&parts.headers);
        let stream = guard.guard_stream(reply_stream(body, compression, self.max_message_size));
        Ok(Response::from_wire(
            metadata,
            Body::Stream(stream),
            Metadata::new(),
        ))
    }
}

/// A streamed reply's messages, then its trailers (or error) from the end-of-stream message.
fn reply_stream(
    body: hyper::body::Incoming,
    compression: Compression,
    limit: usize,
) -> MessageStream {
    let state = Some((body, envelope::Decoder::new(limit)));
    MessageStream::new(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (mut body, mut decoder) = state?;
            loop {
                match decoder.next() {
                    Ok(Some((flags, payload))) => {
                        let payload = if flags & envelope::COMPRESSED != 0 {
                            match compression.decompress(payload, limit) {
                                Ok(payload) => payload,
                                Err(status) => return Some((Err(status), None)),
                            }
                        } else {
                            payload
                        };
                        if flags & envelope::CONNECT_END_STREAM != 0 {
                            return Some((end_of_stream(&payload), None));
                        }
                        let item = Ok(StreamItem::Message(payload));
                        return Some((item, Some((body, decoder))));
                    }
                    Ok(None) => {}
                    Err(status) => return Some((Err(status), None)),
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(chunk) = frame.into_data() {
                            decoder.push(&chunk);
                        }
                    }
                    Some(Err(e)) => {
                        let status = Status::unavailable(format!("the reply stream broke: {e}"));
                        return Some((Err(status), None));
                    }
                    None => {
                        let status = Status::unavailable(
                            "the reply stream ended without its end-of-stream message",
                        );
                        return Some((Err(status), None));
                    }
                }
            }
        },
    ))
}

/// The trailers of an end-of-stream message, or the error it carries.
fn end_of_stream(json: &[u8]) -> Result<StreamItem, Status> {
    #[derive(serde::Deserialize)]
    struct End {
        #[serde(default)]
        error: Option<serde_json::Value>,
        #[serde(default)]
        metadata: std::collections::BTreeMap<String, Vec<String>>,
    }
    let end: End = serde_json::from_slice(json)
        .map_err(|e| Status::internal(format!("malformed end-of-stream message: {e}")))?;
    let mut headers = HeaderMap::new();
    for (key, values) in &end.metadata {
        let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
    let trailers = headers_to_metadata(&headers);
    match end.error {
        None => Ok(StreamItem::Trailers(trailers)),
        Some(error) => {
            let body = serde_json::to_vec(&error).unwrap_or_default();
            Err(error_from(StatusCode::OK, &body).with_metadata(trailers))
        }
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

/// A Connect error (`{"code": "...", "message": "..."}`), or the HTTP status's code.
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
    let code = super::code_for_http(http);
    Status::new(code, format!("HTTP status {http} without a Connect error"))
}
