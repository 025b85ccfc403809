//! gRPC over HTTP/2: the server side (any gRPC client can call Ferry) and the client side
//! (Ferry's `Channel` can call any gRPC server).
//!
//! Mapping (details in `docs/grpc-and-http.md`):
//! - path `/package.Service/Method` → [`Request::method`];
//! - `grpc-timeout` ↔ the request's deadline;
//! - other headers ↔ [`Metadata`](crate::Metadata) (`-bin` keys base64-encoded on the wire);
//! - `grpc-status` / `grpc-message` (percent-encoded) / `grpc-status-details-bin` ↔ [`Status`].

use std::borrow::Cow;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::Compression;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::body::{ReplyBody, collect, reply_body, streaming_body};
use super::{HttpContext, headers_to_metadata, metadata_to_headers};
use crate::native::frame::intern_method;
use crate::service::run_call;
use crate::{Code, Metadata, Request, Response, Status};

/// The content type of gRPC requests and responses.
pub(crate) const CONTENT_TYPE: &str = "application/grpc";

/// Characters `grpc-message` must percent-encode (everything outside printable ASCII, and `%`).
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// The encodings this implementation reads and writes.
const ACCEPT_ENCODING: &str = "identity,gzip";

/// A server-side handler for a streaming method: a stream of encoded requests in, a stream of
/// encoded responses out. Used by the built-in health `Watch` and reflection services.
pub(crate) type StreamHandler = Arc<
    dyn Fn(
            Request<BoxStream<'static, Result<Bytes, Status>>>,
        ) -> BoxStream<'static, Result<Bytes, Status>>
        + Send
        + Sync,
>;

/// Whether message bodies are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    fn from_header(value: Option<&HeaderValue>) -> Result<Encoding, Status> {
        match value.map(HeaderValue::to_str) {
            None | Some(Ok("identity")) => Ok(Encoding::Identity),
            Some(Ok("gzip")) => Ok(Encoding::Gzip),
            Some(other) => Err(Status::unimplemented(format!(
                "grpc-encoding {other:?} is not supported; use one of {ACCEPT_ENCODING}"
            ))),
        }
    }
}

/// Formats a timeout for the `grpc-timeout` header (at most 8 digits, finest unit that fits).
pub(crate) fn encode_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    const MAX: u128 = 99_999_999;
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
    ] {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{}H", nanos.div_ceil(3_600_000_000_000).min(MAX))
}

/// Parses a `grpc-timeout` header value such as `100m` or `5S`.
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Prefixes `message` with gRPC's 5-byte header, compressing it if asked.
pub(crate) fn frame_message(message: &[u8], encoding: Encoding) -> Bytes {
    let (flag, payload) = match encoding {
        Encoding::Identity => (0u8, None),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
            // Writing to a Vec cannot fail.
            let compressed = gz.write_all(message).and_then(|()| gz.finish()).ok();
            (1u8, compressed)
        }
    };
    let flag = if payload.is_some() { flag } else { 0 };
    let body = payload.as_deref().unwrap_or(message);
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(flag);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
    out.freeze()
}

/// Splits a body into its length-prefixed messages, decompressing each (bounded by `limit`).
pub(crate) fn split_messages(
    mut data: Bytes,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<Bytes>, Status> {
    let mut messages = Vec::new();
    while data.has_remaining() {
        let Some(message) = next_message(&mut data, encoding, limit)? else {
            return Err(Status::internal(
                "the body ended in the middle of a length-prefixed message",
            ));
        };
        messages.push(message);
    }
    Ok(messages)
}

/// Takes one whole message from the front of `buf`, or `None` if it is not complete yet.
fn next_message(
    buf: &mut Bytes,
    encoding: Encoding,
    limit: usize,
) -> Result<Option<Bytes>, Status> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > limit {
        return Err(Status::resource_exhausted(format!(
            "message of {len} bytes is larger than the limit of {limit} bytes"
        )));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    let payload = buf.split_to(len);
    match (flag, encoding) {
        (0, _) => Ok(Some(payload)),
        (1, Encoding::Gzip) => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(&payload[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Status::internal(format!("cannot gunzip a message: {e}")))?;
            if read > limit {
                return Err(Status::resource_exhausted(format!(
                    "decompressed message is larger than the limit of {limit} bytes"
                )));
            }
            Ok(Some(Bytes::from(out)))
        }
        (1, Encoding::Identity) => Err(Status::internal(
            "a compressed message arrived without a grpc-encoding",
        )),
        (flag, _) => Err(Status::internal(format!(
            "invalid message flag {flag}; expected 0 or 1"
        ))),
    }
}

/// Writes `status` into `headers` (as trailers, or a trailers-only response).
pub(crate) fn put_status(headers: &mut HeaderMap, status: &Status) {
    headers.insert("grpc-status", HeaderValue::from(status.code().as_i32()));
    if !status.message().is_empty() {
        let encoded = utf8_percent_encode(status.message(), MESSAGE_ESCAPES).to_string();
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
    if !status.details().is_empty() {
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            status.details(),
        );
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-status-details-bin", value);
        }
    }
}

/// Reads a status from trailers (or the headers of a trailers-only response).
pub(crate) fn take_status(headers: &HeaderMap) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let mut status = Status::new(Code::from_i32(code), message);
    if let Some(details) = headers
        .get("grpc-status-details-bin")
        .and_then(|v| super::decode_base64(v.as_bytes()))
    {
        status = status.with_details(Bytes::from(details));
    }
    Some(status)
}

fn trailers_only(status: &Status) -> http::Response<ReplyBody> {
    let mut response = http::Response::new(reply_body(None, None));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    put_status(headers, status);
    response
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// Builds a Ferry request from a gRPC request's headers.
fn request_parts(
    parts: &http::request::Parts,
    ctx: &HttpContext,
) -> Result<(Metadata, Option<Instant>, Encoding, Encoding), Status> {
    let headers = &parts.headers;
    let encoding = Encoding::from_header(headers.get("grpc-encoding"))?;
    // Answer compressed only when the caller compressed its request and accepts gzip.
    let accepts_gzip = headers
        .get("grpc-accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim() == "gzip"));
    let reply_encoding = if encoding == Encoding::Gzip && accepts_gzip {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let deadline = match headers.get("grpc-timeout") {
        None => None,
        Some(value) => {
            let timeout = value.to_str().ok().and_then(parse_timeout).ok_or_else(|| {
                Status::invalid_argument(format!("malformed grpc-timeout header {value:?}"))
            })?;
            Instant::now().checked_add(timeout)
        }
    };
    let _ = ctx;
    Ok((
        headers_to_metadata(headers),
        deadline,
        encoding,
        reply_encoding,
    ))
}

/// Serves one gRPC call.
pub(crate) async fn serve(
    ctx: Arc<HttpContext>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let (parts, body) = request.into_parts();
    // Interned like the native protocol's paths, so a call allocates no copy of it.
    let method: Cow<'static, str> = match intern_method(parts.uri.path().as_bytes()) {
        Some(path) => Cow::Borrowed(path),
        None => Cow::Owned(parts.uri.path().to_owned()),
    };
    let (metadata, deadline, encoding, reply_encoding) = match request_parts(&parts, &ctx) {
        Ok(parsed) => parsed,
        Err(status) => return trailers_only(&status),
    };
    if let Some(handler) = ctx.streams.get(method.as_ref()) {
        let limit = ctx.max_message_size;
        let incoming = message_stream(body, encoding, limit);
        let request = Request::from_wire(method, metadata, deadline, ctx.peer, incoming);
        let outgoing = handler(request);
        return streaming_reply(outgoing, reply_encoding);
    }
    let data = match collect(body, ctx.max_message_size.saturating_add(5)).await {
        Ok(collected) => collected.data,
        Err(status) => return trailers_only(&status),
    };
    let message = match split_messages(data, encoding, ctx.max_message_size) {
        Ok(mut messages) if messages.len() == 1 => messages.pop().unwrap_or_default(),
        Ok(messages) => {
            return trailers_only(&Status::internal(format!(
                "a unary call needs exactly one request message, got {}",
                messages.len()
            )));
        }
        Err(status) => return trailers_only(&status),
    };
    let request = Request::from_wire(method, metadata, deadline, ctx.peer, message);
    let mut svc = ctx.svc.clone();
    match run_call(&mut svc, request).await {
        Ok(response) => {
            let (metadata, body) = response.into_parts();
            let mut reply = http::Response::new(reply_body(
                Some(frame_message(&body, reply_encoding)),
                Some(ok_trailers()),
            ));
            let headers = reply.headers_mut();
            metadata_to_headers(&metadata, headers);
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE),
            );
            if reply_encoding == Encoding::Gzip {
                headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
            }
            headers.insert(
                "grpc-accept-encoding",
                HeaderValue::from_static(ACCEPT_ENCODING),
            );
            reply
        }
        Err(status) => trailers_only(&status),
    }
}

/// The request body of a streaming call as a stream of messages.
fn message_stream(
    body: hyper::body::Incoming,
    encoding: Encoding,
    limit: usize,
) -> BoxStream<'static, Result<Bytes, Status>> {
    use http_body_util::BodyExt;
    let state = (body, Bytes::new(), false);
    futures_util::stream::unfold(state, move |(mut body, mut buf, done)| async move {
        if done {
            return None;
        }
        loop {
            match next_message(&mut buf, encoding, limit) {
                Ok(Some(message)) => return Some((Ok(message), (body, buf, false))),
                Ok(None) => {}
                Err(status) => return Some((Err(status), (body, buf, true))),
            }
            match body.frame().await {
                None if buf.is_empty() => return None,
                None => {
                    let status = Status::internal("the stream ended inside a message");
                    return Some((Err(status), (body, buf, true)));
                }
                Some(Err(e)) => {
                    let status = Status::cancelled(format!("the request stream broke: {e}"));
                    return Some((Err(status), (body, buf, true)));
                }
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        let mut joined = BytesMut::with_capacity(buf.len() + chunk.len());
                        joined.extend_from_slice(&buf);
                        joined.extend_from_slice(&chunk);
                        buf = joined.freeze();
                    }
                }
            }
        }
    })
    .boxed()
}

fn streaming_reply(
    outgoing: BoxStream<'static, Result<Bytes, Status>>,
    encoding: Encoding,
) -> http::Response<ReplyBody> {
    let frames = futures_util::stream::unfold(Some(outgoing), move |state| async move {
        let mut outgoing = state?;
        match outgoing.next().await {
            Some(Ok(message)) => Some((
                Frame::data(frame_message(&message, encoding)),
                Some(outgoing),
            )),
            Some(Err(status)) => {
                let mut trailers = HeaderMap::new();
                put_status(&mut trailers, &status);
                Some((Frame::trailers(trailers), None))
            }
            None => Some((Frame::trailers(ok_trailers()), None)),
        }
    });
    let mut reply = http::Response::new(streaming_body(frames.boxed()));
    let headers = reply.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    if encoding == Encoding::Gzip {
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    reply
}

/// Whether an HTTP request is a gRPC call.
pub(crate) fn is_grpc(request: &http::Request<hyper::body::Incoming>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct == CONTENT_TYPE || ct.starts_with("application/grpc+"))
}

/// The client side: one HTTP/2 connection to a gRPC server, multiplexing calls.
#[derive(Clone)]
pub(crate) struct GrpcConnection {
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
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

    /// Makes one unary gRPC call.
    pub(crate) async fn call(&self, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let deadline = request.deadline();
        let call = self.call_inner(request);
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), call)
                .await
                .map_err(|_| Status::deadline_exceeded("no reply within the deadline"))?,
            None => call.await,
        }
    }

    async fn call_inner(&self, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let timeout = request.remaining();
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(Status::deadline_exceeded(
                "deadline passed before the call was sent",
            ));
        }
        let (method, metadata, body) = request.into_call_parts();
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(method.as_ref())
            .build()
            .map_err(|e| Status::invalid_argument(format!("bad method path {method:?}: {e}")))?;
        let mut http_request = http::Request::new(http_body_util::Full::new(frame_message(
            &body,
            Encoding::Identity,
        )));
        *http_request.method_mut() = http::Method::POST;
        *http_request.uri_mut() = uri;
        let headers = http_request.headers_mut();
        metadata_to_headers(&metadata, headers);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("ferry/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(timeout) = timeout
            && let Ok(value) = HeaderValue::from_str(&encode_timeout(timeout))
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
            // Trailers-only response.
            if status.code() != Code::Ok {
                return Err(status);
            }
        }
        if parts.status != StatusCode::OK {
            return Err(http_status_to_grpc(parts.status));
        }
        let encoding = Encoding::from_header(parts.headers.get("grpc-encoding"))?;
        let collected = collect(body, self.max_message_size.saturating_add(5)).await?;
        let status = collected
            .trailers
            .as_ref()
            .and_then(take_status)
            .or_else(|| take_status(&parts.headers))
            .ok_or_else(|| Status::internal("the server sent no grpc-status"))?;
        if status.code() != Code::Ok {
            return Err(status);
        }
        let mut messages = split_messages(collected.data, encoding, self.max_message_size)?;
        if messages.len() != 1 {
            return Err(Status::internal(format!(
                "a unary reply needs exactly one message, got {}",
                messages.len()
            )));
        }
        let mut metadata = headers_to_metadata(&parts.headers);
        if let Some(trailers) = &collected.trailers {
            metadata.extend(headers_to_metadata(trailers));
        }
        Ok(Response::from_parts(
            metadata,
            messages.pop().unwrap_or_default(),
        ))
    }
}

/// The gRPC code for a non-200 HTTP status without `grpc-status` (per the gRPC HTTP/2 spec).
fn http_status_to_grpc(status: StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without a gRPC status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(50),
            Duration::from_secs(5),
            Duration::from_secs(3 * 86_400),
        ] {
            let encoded = encode_timeout(d);
            assert!(encoded.len() <= 9, "{encoded}");
            let parsed = parse_timeout(&encoded).unwrap();
            assert!(parsed >= d, "{d:?} -> {encoded} -> {parsed:?}");
        }
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("1x"), None);
        assert_eq!(parse_timeout("m"), None);
        assert_eq!(parse_timeout("123456789S"), None);
    }

    #[test]
    fn messages_frame_and_split() {
        for encoding in [Encoding::Identity, Encoding::Gzip] {
            let mut body = BytesMut::new();
            body.extend_from_slice(&frame_message(b"hello", encoding));
            body.extend_from_slice(&frame_message(b"", encoding));
            let messages = split_messages(body.freeze(), encoding, 1024).unwrap();
            assert_eq!(messages, vec![Bytes::from_static(b"hello"), Bytes::new()]);
        }
        let big = frame_message(&[7u8; 100], Encoding::Identity);
        let err = split_messages(big, Encoding::Identity, 10).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        let truncated = Bytes::from_static(&[0, 0, 0, 0, 9, 1]);
        assert!(split_messages(truncated, Encoding::Identity, 1024).is_err());
    }

    #[test]
    fn status_survives_trailers() {
        let status = Status::invalid_argument("100% wrong: ünïcode\nnewline")
            .with_details(Bytes::from_static(b"\x00\x01details"));
        let mut headers = HeaderMap::new();
        put_status(&mut headers, &status);
        assert_eq!(take_status(&headers).unwrap(), status);
    }
}
