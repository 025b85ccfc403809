//! The gRPC client side: one HTTP/2 connection to any gRPC server, multiplexing unary and
//! streaming calls.

use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use super::codec::{
    self, ACCEPT_ENCODING, CONTENT_TYPE, Encoding, MessageDecoder, http_status_to_grpc,
    split_messages, take_status,
};
use crate::call::{Body, CallResult, Compress, MessageStream, StreamItem, deadline};
use crate::http::body::{RequestBody, collect};
use crate::http::envelope::{Batches, CompressPolicy};
use crate::http::headers::{headers_to_metadata, metadata_to_headers};
use crate::{Code, Request, Response, Status};

/// One HTTP/2 connection to a gRPC server.
#[derive(Clone)]
pub(crate) struct GrpcConnection {
    sender: hyper::client::conn::http2::SendRequest<RequestBody>,
    authority: http::uri::Authority,
    max_message_size: usize,
}

impl GrpcConnection {
    /// Opens an HTTP/2 (prior knowledge, cleartext) connection to `addr`.
    pub(crate) async fn connect(
        addr: std::net::SocketAddr,
        authority: &str,
        max_message_size: usize,
    ) -> Result<GrpcConnection, Status> {
        let authority: http::uri::Authority = authority
            .parse()
            .map_err(|e| Status::invalid_argument(format!("bad authority {authority:?}: {e}")))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| {
                    Status::unavailable(format!("HTTP/2 handshake with {addr} failed: {e}"))
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("gRPC connection to {addr} ended: {e}");
            }
        });
        Ok(GrpcConnection {
            sender,
            authority,
            max_message_size,
        })
    }

    /// Whether new calls may start on this connection.
    pub(crate) fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Makes one call, unary or streaming; the whole call is bounded by its deadline.
    pub(crate) async fn call(&self, request: Request<Body>) -> CallResult {
        let deadline = request.deadline();
        let streams_back = request.method_kind().server_streams();
        let result = deadline::within(deadline, self.exchange(request, streams_back)).await;
        // A reply stream must end by the deadline too.
        result.map(|response| {
            response.map(|body| match body {
                Body::Stream(stream) => Body::Stream(deadline::guard_stream(stream, deadline)),
                message => message,
            })
        })
    }

    async fn exchange(&self, request: Request<Body>, streams_back: bool) -> CallResult {
        let timeout = deadline::wire_timeout(request.deadline())?;
        // Requests are compressed only when asked (a server may not read gzip); a stream's
        // messages may then turn compression off and on again one by one.
        let policy = CompressPolicy {
            compress: request.compress(),
            encoding: Encoding::Gzip,
            auto_min: None,
        };
        let compressed = request.compress() == Compress::Always;
        let (method, metadata, body) = request.into_call_parts();
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(method.as_ref())
            .build()
            .map_err(|e| Status::invalid_argument(format!("bad method path {method:?}: {e}")))?;
        // A streamed request goes on only while the caller holds the call (see CallGuard).
        let mut guard = None;
        let body = match body {
            Body::Message(message) => {
                let mut framed = bytes::BytesMut::new();
                policy.put(&mut framed, &message);
                RequestBody::Full(Some(framed.freeze()))
            }
            Body::Stream(messages) => {
                let policy = if compressed {
                    policy
                } else {
                    CompressPolicy::never()
                };
                let (body, call) = RequestBody::stream(Batches::new(messages, policy));
                guard = Some(call);
                body
            }
        };
        let mut http_request = http::Request::new(body);
        *http_request.method_mut() = http::Method::POST;
        *http_request.uri_mut() = uri;
        let headers = http_request.headers_mut();
        metadata_to_headers(&metadata, headers);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if compressed {
            headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        }
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("ferry/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(timeout) = timeout
            && let Ok(value) = HeaderValue::from_str(&codec::encode_timeout(timeout))
        {
            headers.insert("grpc-timeout", value);
        }
        let mut sender = self.sender.clone();
        sender
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection closed: {e}")))?;
        let response = sender
            .send_request(http_request)
            .await
            .map_err(|e| Status::unavailable(format!("the call failed: {e}")))?;
        let (parts, body) = response.into_parts();
        if let Some(status) = take_status(&parts.headers) {
            // A trailers-only response.
            if status.code() != Code::Ok {
                return Err(status.with_metadata(headers_to_metadata(&parts.headers)));
            }
        }
        if parts.status != StatusCode::OK {
            return Err(http_status_to_grpc(parts.status));
        }
        let encoding = Encoding::from_header(parts.headers.get("grpc-encoding"))?;
        let metadata = headers_to_metadata(&parts.headers);
        let limit = self.max_message_size;
        if streams_back {
            let mut stream = response_stream(body, parts.headers, encoding, limit);
            if let Some(guard) = guard {
                stream = guard.guard_stream(stream);
            }
            return Ok(Response::from_wire(
                metadata,
                Body::Stream(stream),
                crate::Metadata::new(),
            ));
        }
        let collected = collect(body, limit.saturating_add(5)).await?;
        let trailer_headers = collected.trailers.unwrap_or_default();
        let status = take_status(&trailer_headers)
            .or_else(|| take_status(&parts.headers))
            .ok_or_else(|| Status::internal("the server sent no grpc-status"))?;
        let trailers = headers_to_metadata(&trailer_headers);
        if status.code() != Code::Ok {
            return Err(status.with_metadata(trailers));
        }
        let mut messages = split_messages(collected.data, encoding, limit)?;
        if messages.len() != 1 {
            return Err(Status::internal(format!(
                "a unary reply needs exactly one message, got {}",
                messages.len()
            )));
        }
        let message = messages.pop().unwrap_or_default();
        Ok(Response::from_wire(
            metadata,
            Body::Message(message),
            trailers,
        ))
    }
}

/// A streamed reply as messages, then its trailers (or the error status they carry).
fn response_stream(
    body: hyper::body::Incoming,
    headers: HeaderMap,
    encoding: Encoding,
    limit: usize,
) -> MessageStream {
    let state = Some((body, MessageDecoder::new(encoding, limit), headers));
    MessageStream::new(futures_util::stream::unfold(state, |state| async move {
        let (mut body, mut decoder, headers) = state?;
        loop {
            match decoder.next() {
                Ok(Some(message)) => {
                    return Some((
                        Ok(StreamItem::Message(message)),
                        Some((body, decoder, headers)),
                    ));
                }
                Ok(None) => {}
                Err(status) => return Some((Err(status), None)),
            }
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => decoder.push(&chunk),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return Some((end_of_stream(&trailers, &headers, &decoder), None));
                    }
                },
                Some(Err(e)) => {
                    let status = Status::unavailable(format!("the reply stream broke: {e}"));
                    return Some((Err(status), None));
                }
                None => {
                    let trailers = HeaderMap::new();
                    return Some((end_of_stream(&trailers, &headers, &decoder), None));
                }
            }
        }
    }))
}

/// The last item of a reply stream: its trailers, or the error status they (or a
/// trailers-only response's headers) carry.
fn end_of_stream(
    trailers: &HeaderMap,
    headers: &HeaderMap,
    decoder: &MessageDecoder,
) -> Result<StreamItem, Status> {
    if !decoder.is_empty() {
        return Err(codec::truncated());
    }
    let status = take_status(trailers)
        .or_else(|| take_status(headers))
        .ok_or_else(|| Status::internal("the server sent no grpc-status"))?;
    let metadata = headers_to_metadata(trailers);
    if status.code() != Code::Ok {
        return Err(status.with_metadata(metadata));
    }
    Ok(StreamItem::Trailers(metadata))
}
