//! The gRPC server side: any gRPC client (grpcio, grpc-go, tonic, grpc-js…) can call Ferry.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;

use super::codec::{
    self, ACCEPT_ENCODING, CONTENT_TYPE, Encoding, MessageDecoder, put_status, split_messages,
};
use crate::call::{Body, MessageStream, Protocol, deadline};
use crate::http::HttpContext;
use crate::http::body::{ReplyBody, collect, reply_body, streaming_body};
use crate::http::envelope::{Batches, CompressPolicy};
use crate::http::headers::{headers_to_metadata, metadata_to_headers};
use crate::{Metadata, Request, Status};

/// What the request's headers say about the call.
struct CallHeaders {
    metadata: Metadata,
    deadline: Option<Instant>,
    encoding: Encoding,
    /// What the caller accepts for compressed replies.
    accepted: Encoding,
}

fn call_headers(headers: &HeaderMap) -> Result<CallHeaders, Status> {
    if headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc+json"))
    {
        return Err(Status::unimplemented(
            "application/grpc+json is not supported; send application/grpc (protobuf), or JSON \
             over the Connect protocol (application/json)",
        ));
    }
    let encoding = Encoding::from_header(headers.get("grpc-encoding"))?;
    let accepted = Encoding::negotiate(headers.get("grpc-accept-encoding"));
    let deadline = match headers.get("grpc-timeout") {
        None => None,
        Some(value) => {
            let timeout = codec::parse_timeout(value.as_bytes()).ok_or_else(|| {
                Status::invalid_argument(format!("malformed grpc-timeout header {value:?}"))
            })?;
            deadline::from_timeout(timeout)
        }
    };
    Ok(CallHeaders {
        metadata: headers_to_metadata(headers),
        deadline,
        encoding,
        accepted,
    })
}

/// A response that ends at its headers: `grpc-status` and friends, no body.
pub(crate) fn trailers_only(status: &Status) -> http::Response<ReplyBody> {
    let mut response = http::Response::new(reply_body(None, None));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    metadata_to_headers(status.metadata(), headers);
    put_status(headers, status);
    response
}

/// The trailers of a call that ended well.
fn ok_trailers(trailers: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    metadata_to_headers(trailers, &mut headers);
    headers.insert("grpc-status", HeaderValue::from_static("0"));
    headers
}

/// The trailers of a call that failed mid-stream.
fn error_trailers(trailers: &Metadata, status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    metadata_to_headers(trailers, &mut headers);
    metadata_to_headers(status.metadata(), &mut headers);
    put_status(&mut headers, status);
    headers
}

/// Serves one gRPC call through the server's one dispatch path.
pub(crate) async fn serve(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let (parts, body) = request.into_parts();
    let route = match ctx.dispatch.resolve(parts.uri.path().as_bytes()) {
        Ok(route) => route,
        Err(status) => return trailers_only(&status),
    };
    let call = match call_headers(&parts.headers) {
        Ok(call) => call,
        Err(status) => return trailers_only(&status),
    };
    let limit = ctx.max_message_size;
    let body = if route.1.client_streams() {
        Body::Stream(request_stream(body, call.encoding, limit))
    } else {
        let data = match collect(body, limit.saturating_add(5)).await {
            Ok(collected) => collected.data,
            Err(status) => return trailers_only(&status),
        };
        match split_messages(data, call.encoding, limit) {
            Ok(mut messages) if messages.len() == 1 => {
                Body::Message(messages.pop().unwrap_or_default())
            }
            Ok(messages) => {
                return trailers_only(&Status::internal(format!(
                    "a unary call needs exactly one request message, got {}",
                    messages.len()
                )));
            }
            Err(status) => return trailers_only(&status),
        }
    };
    let mut request = Request::from_wire(route, call.metadata, call.deadline, peer, body);
    request.set_arrival(Protocol::Grpc, call.encoding != Encoding::Identity);
    let response = match ctx.dispatch.call(request).await {
        Ok(response) => response,
        Err(status) => return trailers_only(&status),
    };
    // By default a reply is compressed when the request was (and the caller accepts gzip).
    let policy = CompressPolicy {
        compress: response.compress(),
        encoding: call.accepted,
        auto_min: (call.encoding == Encoding::Gzip).then_some(0),
    };
    let (metadata, body, trailers) = response.into_wire_parts();
    let (mut reply, compressed) = match body {
        Body::Message(message) => {
            let mut framed = BytesMut::new();
            policy.put(&mut framed, &message);
            let body = reply_body(Some(framed.freeze()), Some(ok_trailers(&trailers)));
            (http::Response::new(body), policy.applies(message.len()))
        }
        Body::Stream(stream) => {
            // Messages may be compressed one by one; each says whether it is.
            let compressed = policy.encoding == Encoding::Gzip;
            let body = streaming_reply(stream, trailers, policy);
            (http::Response::new(body), compressed)
        }
    };
    let headers = reply.headers_mut();
    metadata_to_headers(&metadata, headers);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    if compressed {
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(ACCEPT_ENCODING),
    );
    reply
}

/// The request body of a streaming call as a stream of messages.
fn request_stream(body: hyper::body::Incoming, encoding: Encoding, limit: usize) -> MessageStream {
    use http_body_util::BodyExt;
    let state = (body, MessageDecoder::new(encoding, limit), false);
    MessageStream::from_messages(futures_util::stream::unfold(
        state,
        move |(mut body, mut decoder, done)| async move {
            if done {
                return None;
            }
            loop {
                match decoder.next() {
                    Ok(Some(message)) => return Some((Ok(message), (body, decoder, false))),
                    Ok(None) => {}
                    Err(status) => return Some((Err(status), (body, decoder, true))),
                }
                match body.frame().await {
                    None if decoder.is_empty() => return None,
                    None => return Some((Err(codec::truncated()), (body, decoder, true))),
                    Some(Err(e)) => {
                        let status = Status::cancelled(format!("the request stream broke: {e}"));
                        return Some((Err(status), (body, decoder, true)));
                    }
                    Some(Ok(frame)) => {
                        if let Ok(chunk) = frame.into_data() {
                            decoder.push(&chunk);
                        }
                    }
                }
            }
        },
    ))
}

/// A streamed reply: the messages in batches as they come, then the trailers (or the error).
fn streaming_reply(stream: MessageStream, trailers: Metadata, policy: CompressPolicy) -> ReplyBody {
    let mut batches = Batches::new(stream, policy);
    batches.trailers = trailers;
    let frames = batches.into_frames(Frame::data, |trailers, error| match error {
        Some(status) => Frame::trailers(error_trailers(&trailers, &status)),
        None => Frame::trailers(ok_trailers(&trailers)),
    });
    streaming_body(frames)
}
