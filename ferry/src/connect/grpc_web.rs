//! gRPC-Web, so browsers call Ferry with no proxy: gRPC's enveloped messages over HTTP/1.1 or
//! HTTP/2 without HTTP trailers — the status and trailers travel in a last envelope flagged
//! `0x80`, as HTTP/1-style header lines. `application/grpc-web` and `+proto` carry binary
//! bodies; `application/grpc-web-text` carries them base64-encoded (each chunk of the reply
//! padded on its own).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;

use crate::call::{Body, MessageStream, Protocol, deadline};
use crate::grpc::codec::{self, Encoding, MessageDecoder, put_status};
use crate::http::HttpContext;
use crate::http::body::{ReplyBody, answer_early, reply_body, streaming_body};
use crate::http::envelope::{self, Batches, CompressPolicy};
use crate::http::headers::{headers_to_metadata, metadata_to_headers};
use crate::{Metadata, Request, Status};

/// Serves one gRPC-Web call.
pub(super) async fn serve(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let (parts, body) = request.into_parts();
    let media = super::media_type(&parts.headers).unwrap_or_default();
    let text = match media.as_str() {
        "application/grpc-web" | "application/grpc-web+proto" => false,
        "application/grpc-web-text" | "application/grpc-web-text+proto" => true,
        other => {
            let expected = "application/grpc-web+proto or application/grpc-web-text+proto";
            let response = super::unsupported_media(other, expected);
            return answer_early(body, parts.version, response).await;
        }
    };
    let reply = Reply { text };
    let route = match ctx.dispatch.resolve(parts.uri.path().as_bytes()) {
        Ok(route) => route,
        Err(status) => {
            return answer_early(body, parts.version, reply.trailers_only(&status)).await;
        }
    };
    let headers = &parts.headers;
    let encoding = match Encoding::from_header(headers.get("grpc-encoding")) {
        Ok(encoding) => encoding,
        Err(status) => {
            return answer_early(body, parts.version, reply.trailers_only(&status)).await;
        }
    };
    let deadline = match headers.get("grpc-timeout") {
        None => None,
        Some(value) => match codec::parse_timeout(value.as_bytes()) {
            Some(timeout) => deadline::from_timeout(timeout),
            None => {
                let status =
                    Status::invalid_argument(format!("malformed grpc-timeout header {value:?}"));
                return answer_early(body, parts.version, reply.trailers_only(&status)).await;
            }
        },
    };
    let limit = ctx.max_message_size;
    let mut messages = request_stream(body, text, MessageDecoder::new(encoding, limit));
    let body = if route.1.client_streams() {
        Body::Stream(messages)
    } else {
        let mut first = None;
        while let Some(item) = messages.next().await {
            match item {
                Ok(crate::call::StreamItem::Message(message)) if first.is_none() => {
                    first = Some(message)
                }
                Ok(crate::call::StreamItem::Message(_)) => {
                    let status = Status::internal("a unary call needs exactly one request message");
                    return reply.trailers_only(&status);
                }
                Ok(_) => {}
                Err(status) => return reply.trailers_only(&status),
            }
        }
        match first {
            Some(message) => Body::Message(message),
            None => {
                let status = Status::internal("the request carried no message");
                return reply.trailers_only(&status);
            }
        }
    };
    let mut metadata = headers_to_metadata(headers);
    metadata.remove("x-grpc-web");
    metadata.remove("x-user-agent");
    let mut request = Request::from_wire(route, metadata, deadline, peer, body);
    request.set_arrival(Protocol::GrpcWeb, encoding != Encoding::Identity);
    let response = match ctx.dispatch.call(request).await {
        Ok(response) => response,
        Err(status) => return reply.trailers_only(&status),
    };
    let accepted = Encoding::negotiate(headers.get("grpc-accept-encoding"));
    let policy = CompressPolicy {
        compress: response.compress(),
        encoding: accepted,
        auto_min: (encoding == Encoding::Gzip).then_some(0),
    };
    reply.stream(response, policy)
}

/// The request body as messages: base64 decoded first for `-text`, in any chunking.
fn request_stream(
    body: hyper::body::Incoming,
    text: bool,
    decoder: MessageDecoder,
) -> MessageStream {
    use http_body_util::BodyExt;
    let state = Some((body, decoder, Base64Chunks::default()));
    MessageStream::from_messages(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (mut body, mut decoder, mut base64) = state?;
            loop {
                match decoder.next() {
                    Ok(Some(message)) => return Some((Ok(message), Some((body, decoder, base64)))),
                    Ok(None) => {}
                    Err(status) => return Some((Err(status), None)),
                }
                match body.frame().await {
                    None if decoder.is_empty() && base64.is_empty() => return None,
                    None => return Some((Err(envelope::truncated()), None)),
                    Some(Err(e)) => {
                        let status = Status::cancelled(format!("the request stream broke: {e}"));
                        return Some((Err(status), None));
                    }
                    Some(Ok(frame)) => {
                        let Ok(chunk) = frame.into_data() else {
                            continue;
                        };
                        if !text {
                            decoder.push(&chunk);
                            continue;
                        }
                        match base64.push(&chunk) {
                            Ok(decoded) => decoder.push(&decoded),
                            Err(status) => return Some((Err(status), None)),
                        }
                    }
                }
            }
        },
    ))
}

/// Decodes base64 that arrives in arbitrary chunks (a quartet may straddle two; padding may
/// end a chunk and the next one start afresh).
#[derive(Default)]
struct Base64Chunks {
    pending: Vec<u8>,
}

impl Base64Chunks {
    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Status> {
        use base64::Engine;
        self.pending
            .extend(chunk.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let mut out = Vec::new();
        // Whole quartets are decoded; a quartet with padding ends a segment.
        let whole = self.pending.len() / 4 * 4;
        for quartet in self.pending[..whole].chunks(4) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(quartet)
                .map_err(|e| Status::invalid_argument(format!("bad grpc-web-text body: {e}")))?;
            out.extend_from_slice(&decoded);
        }
        self.pending.drain(..whole);
        Ok(out)
    }
}

/// How the reply is written.
struct Reply {
    text: bool,
}

impl Reply {
    fn content_type(&self) -> HeaderValue {
        if self.text {
            HeaderValue::from_static("application/grpc-web-text+proto")
        } else {
            HeaderValue::from_static("application/grpc-web+proto")
        }
    }

    /// A reply that is only a status: in the headers (a "trailers-only" reply, which needs
    /// CORS to expose `grpc-status`), and again as a trailers envelope in the body, which every
    /// client reads.
    fn trailers_only(&self, status: &Status) -> http::Response<ReplyBody> {
        let body = self.encode(trailers_envelope(&Metadata::new(), Some(status)));
        let mut response = http::Response::new(reply_body(Some(body), None));
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, self.content_type());
        metadata_to_headers(status.metadata(), headers);
        put_status(headers, status);
        *response.status_mut() = StatusCode::OK;
        response
    }

    /// A chunk as it goes on the wire.
    fn encode(&self, chunk: Bytes) -> Bytes {
        if !self.text {
            return chunk;
        }
        use base64::Engine;
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(&chunk))
    }

    /// The reply's messages as they come, then the trailers envelope.
    fn stream(
        self,
        response: crate::Response<Body>,
        policy: CompressPolicy,
    ) -> http::Response<ReplyBody> {
        let (metadata, body, trailers) = response.into_wire_parts();
        let mut batches = Batches::new(body.into_stream(), policy);
        batches.trailers = trailers;
        let text = self.text;
        let frames = batches.into_frames(
            move |chunk| Frame::data(Reply { text }.encode(chunk)),
            move |trailers, error| {
                let block = trailers_envelope(&trailers, error.as_ref());
                Frame::data(Reply { text }.encode(block))
            },
        );
        let mut reply = http::Response::new(streaming_body(frames));
        let headers = reply.headers_mut();
        metadata_to_headers(&metadata, headers);
        headers.insert(http::header::CONTENT_TYPE, self.content_type());
        if policy.encoding == Encoding::Gzip {
            headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        }
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static(codec::ACCEPT_ENCODING),
        );
        reply
    }
}

/// The trailers envelope: `grpc-status`, `grpc-message` and the trailers as header lines.
fn trailers_envelope(trailers: &Metadata, status: Option<&Status>) -> Bytes {
    let mut headers = HeaderMap::new();
    metadata_to_headers(trailers, &mut headers);
    match status {
        Some(status) => {
            metadata_to_headers(status.metadata(), &mut headers);
            put_status(&mut headers, status);
        }
        None => {
            headers.insert("grpc-status", HeaderValue::from_static("0"));
        }
    }
    let mut block = Vec::new();
    for (name, value) in &headers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut out = BytesMut::new();
    envelope::put(&mut out, envelope::GRPC_WEB_TRAILERS, &block);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_chunks_decode_across_boundaries_and_padding() {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        // Two separately padded segments, fed a byte at a time.
        let text = format!("{}{}", engine.encode(b"hello"), engine.encode(b"!"));
        let mut chunks = Base64Chunks::default();
        let mut out = Vec::new();
        for b in text.as_bytes() {
            out.extend(chunks.push(&[*b]).unwrap());
        }
        assert!(chunks.is_empty());
        assert_eq!(out, b"hello!");
    }

    #[test]
    fn the_trailers_envelope_is_header_lines() {
        let mut trailers = Metadata::new();
        trailers.insert("x-cost", "3");
        let block = trailers_envelope(&trailers, None);
        assert_eq!(block[0], envelope::GRPC_WEB_TRAILERS);
        let text = String::from_utf8_lossy(&block[5..]);
        assert!(text.contains("x-cost: 3\r\n"), "{text}");
        assert!(text.contains("grpc-status: 0\r\n"), "{text}");
    }
}
