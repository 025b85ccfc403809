//! Connect streaming: `application/connect+proto` and `+json` bodies of enveloped messages, a
//! reply of enveloped messages ending with an end-of-stream message (JSON: the error, if any,
//! and the trailers). Server- and client-streaming work over HTTP/1.1; bidirectional needs
//! HTTP/2.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderValue, Method, StatusCode};
use http_body::Frame;

use super::codec::Codec;
use super::{Target, connect_deadline, error_json, media_type, not_allowed, unsupported_media};
use crate::call::{Body, MessageStream, Protocol, StreamItem};
use crate::http::HttpContext;
use crate::http::body::{ReplyBody, answer_early, streaming_body};
use crate::http::compression::{Compression, MIN_COMPRESS};
use crate::http::envelope::{self, Batches, CompressPolicy};
use crate::http::headers::{headers_to_metadata, metadata_to_headers};
use crate::{Metadata, Request, Status};

/// Serves one Connect streaming call.
pub(super) async fn serve(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let (parts, body) = request.into_parts();
    let version = parts.version;
    let path = parts.uri.path();
    let media = media_type(&parts.headers).unwrap_or_default();
    let Some(codec) = media
        .strip_prefix("application/connect+")
        .and_then(Codec::from_name)
    else {
        let expected = "application/connect+proto or application/connect+json";
        return answer_early(body, version, unsupported_media(&media, expected)).await;
    };
    let Some(target) = ctx.json.methods.get(path) else {
        let status = Status::unimplemented(format!("no method {path} on this server"));
        let response = super::error_response(&status, StatusCode::NOT_FOUND);
        return answer_early(body, version, response).await;
    };
    if parts.method != Method::POST {
        return answer_early(body, version, not_allowed(path, &parts.method, "POST")).await;
    }
    if !target.kind.client_streams() && !target.kind.server_streams() {
        let expected = "application/proto or application/json (a unary method)";
        return answer_early(body, version, unsupported_media(&media, expected)).await;
    }
    let headers = &parts.headers;
    // Without connect-accept-encoding the client accepts what it sent.
    let accepted = Compression::negotiate(
        headers
            .get("connect-accept-encoding")
            .or_else(|| headers.get("connect-content-encoding")),
    );
    let reply = Reply { codec, accepted };
    let compression = match Compression::from_header(headers.get("connect-content-encoding")) {
        Ok(compression) => compression,
        Err(status) => return reply.failed(status),
    };
    let deadline = match connect_deadline(headers) {
        Ok(deadline) => deadline,
        Err(status) => return reply.failed(status),
    };
    let decode = Decode {
        codec,
        compression,
        json: target.json.clone(),
        limit: ctx.max_message_size,
        reject_unknown: ctx.json.reject_unknown,
    };
    let mut messages = request_stream(body, decode);
    let body = if target.kind.client_streams() {
        Body::Stream(messages)
    } else {
        // A server-streaming call takes exactly one request message.
        match one_message(&mut messages).await {
            Ok(message) => Body::Message(message),
            Err(status) => return reply.failed(status),
        }
    };
    let route = (target.path.clone(), target.kind);
    let mut request = Request::from_wire(route, headers_to_metadata(headers), deadline, peer, body);
    request.set_arrival(Protocol::Connect, compression != Compression::Identity);
    match ctx.dispatch.call(request).await {
        Ok(response) => reply.succeeded(response, target),
        Err(status) => reply.failed(status),
    }
}

/// The one request message of a stream that must hold exactly one.
async fn one_message(messages: &mut MessageStream) -> Result<Bytes, Status> {
    let mut first = None;
    while let Some(item) = messages.next().await {
        if let StreamItem::Message(message) = item? {
            if first.is_some() {
                return Err(Status::unimplemented(
                    "a server-streaming method takes exactly one request message",
                ));
            }
            first = Some(message);
        }
    }
    first.ok_or_else(|| Status::unimplemented("a server-streaming method needs a request message"))
}

/// How request messages are read.
struct Decode {
    codec: Codec,
    compression: Compression,
    json: super::codec::Transcoder,
    limit: usize,
    reject_unknown: bool,
}

impl Decode {
    fn message(&self, flags: u8, payload: Bytes) -> Result<Bytes, Status> {
        if flags & envelope::CONNECT_END_STREAM != 0 {
            return Err(Status::invalid_argument(
                "a request stream must not carry an end-of-stream message",
            ));
        }
        let payload = if flags & envelope::COMPRESSED != 0 {
            if self.compression == Compression::Identity {
                return Err(Status::internal(
                    "a compressed message arrived without a connect-content-encoding",
                ));
            }
            self.compression.decompress(payload, self.limit)?
        } else {
            payload
        };
        self.codec.decode(&self.json, payload, self.reject_unknown)
    }
}

/// The request body as a stream of protobuf messages.
fn request_stream(body: hyper::body::Incoming, decode: Decode) -> MessageStream {
    use http_body_util::BodyExt;
    let decoder = envelope::Decoder::new(decode.limit);
    let state = Some((body, decoder, decode));
    MessageStream::from_messages(futures_util::stream::unfold(state, |state| async move {
        let (mut body, mut decoder, decode) = state?;
        loop {
            match decoder.next() {
                Ok(Some((flags, payload))) => {
                    let message = decode.message(flags, payload);
                    let next = message.is_ok().then_some((body, decoder, decode));
                    return Some((message, next));
                }
                Ok(None) => {}
                Err(status) => return Some((Err(status), None)),
            }
            match body.frame().await {
                None if decoder.is_empty() => return None,
                None => return Some((Err(envelope::truncated()), None)),
                Some(Err(e)) => {
                    let status = Status::cancelled(format!("the request stream broke: {e}"));
                    return Some((Err(status), None));
                }
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        decoder.push(&chunk);
                    }
                }
            }
        }
    }))
}

/// How the reply is written.
struct Reply {
    codec: Codec,
    accepted: Compression,
}

impl Reply {
    fn content_type(&self) -> HeaderValue {
        match self.codec {
            Codec::Proto => HeaderValue::from_static("application/connect+proto"),
            Codec::Json => HeaderValue::from_static("application/connect+json"),
        }
    }

    /// A stream that ends with `status` before any message (still HTTP 200, as the
    /// specification requires of streaming replies).
    fn failed(&self, status: Status) -> http::Response<ReplyBody> {
        let mut end = BytesMut::new();
        put_end(&mut end, Some(&status), status.metadata());
        let frames = futures_util::stream::once(std::future::ready(Frame::data(end.freeze())));
        let mut response = http::Response::new(streaming_body(frames.boxed()));
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, self.content_type());
        response
    }

    /// The reply's messages as they come, then the end-of-stream message.
    fn succeeded(
        &self,
        response: crate::Response<Body>,
        target: &Target,
    ) -> http::Response<ReplyBody> {
        let policy = CompressPolicy {
            compress: response.compress(),
            encoding: self.accepted,
            auto_min: Some(MIN_COMPRESS),
        };
        let (metadata, body, trailers) = response.into_wire_parts();
        let codec = self.codec;
        let json = target.json.clone();
        let messages = body.into_stream().map(move |item| match item {
            Ok(StreamItem::Message(message)) => {
                codec.encode(&json, message).map(StreamItem::Message)
            }
            other => other,
        });
        let mut batches = Batches::new(MessageStream::new(messages), policy);
        batches.trailers = trailers;
        let frames = batches.into_frames(Frame::data, |mut trailers, error| {
            if let Some(status) = &error {
                trailers.extend(status.metadata().clone());
            }
            let mut end = BytesMut::new();
            put_end(&mut end, error.as_ref(), &trailers);
            Frame::data(end.freeze())
        });
        let mut reply = http::Response::new(streaming_body(frames));
        let headers = reply.headers_mut();
        metadata_to_headers(&metadata, headers);
        headers.insert(http::header::CONTENT_TYPE, self.content_type());
        if policy.encoding != Compression::Identity {
            headers.insert(
                "connect-content-encoding",
                HeaderValue::from_static(policy.encoding.name()),
            );
        }
        reply
    }
}

/// Appends the end-of-stream message: `{"error": …, "metadata": {"key": ["value", …]}}`.
fn put_end(out: &mut BytesMut, error: Option<&Status>, trailers: &Metadata) {
    let mut end = serde_json::Map::new();
    if let Some(status) = error {
        end.insert(
            "error".into(),
            serde_json::Value::Object(error_json(status)),
        );
    }
    if !trailers.is_empty() {
        end.insert("metadata".into(), metadata_json(trailers));
    }
    let json = serde_json::to_vec(&end).unwrap_or_else(|_| b"{}".to_vec());
    envelope::put(out, envelope::CONNECT_END_STREAM, &json);
}

/// Metadata as Connect's JSON object of string arrays (binary values base64-encoded).
pub(super) fn metadata_json(metadata: &Metadata) -> serde_json::Value {
    use base64::Engine;
    let mut object = serde_json::Map::new();
    for (key, value) in metadata.iter() {
        let text = if key.ends_with("-bin") {
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        let entry = object
            .entry(key.to_owned())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = entry {
            values.push(serde_json::Value::String(text));
        }
    }
    serde_json::Value::Object(object)
}
