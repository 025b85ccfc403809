//! Connect unary calls — `POST` with a JSON, protobuf or form body, or `GET` with the message in
//! the query for methods marked `NO_SIDE_EFFECTS` — and REST routes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

use super::codec::Codec;
use super::rest::match_template;
use super::{Target, connect_deadline, fail, media_type, not_allowed, unsupported_media};
use crate::call::{Body, MethodKind, Protocol};
use crate::http::HttpContext;
use crate::http::body::{ReplyBody, answer_early, collect, reply_body};
use crate::http::compression::{Compression, MIN_COMPRESS};
use crate::http::headers::{headers_to_metadata, metadata_to_headers, put_metadata};
use crate::{Request, Status};

/// How a unary body is written.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Codec(Codec),
    /// `application/x-www-form-urlencoded` (what curl's `-d` sends): a JSON body is read as
    /// JSON, an `a=1&b=2` body as fields.
    Form,
}

/// Serves a Connect unary call or a REST route.
pub(super) async fn serve(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let json = &ctx.json;

    if let Some(target) = json.methods.get(path) {
        if target.kind != MethodKind::Unary {
            let expected =
                "application/connect+proto or application/connect+json (a streaming method)";
            let media = media_type(&parts.headers).unwrap_or_default();
            return answer_early(body, parts.version, unsupported_media(&media, expected)).await;
        }
        let allow = if target.side_effect_free {
            "GET, POST"
        } else {
            "POST"
        };
        return match parts.method {
            Method::POST => {
                let format = match post_format(&parts.headers) {
                    Ok(format) => format,
                    Err(response) => return answer_early(body, parts.version, *response).await,
                };
                call_post(ctx, peer, &parts, body, target, format).await
            }
            Method::GET if target.side_effect_free => {
                drop(body);
                call_get(ctx, peer, &parts, target).await
            }
            _ => answer_early(body, parts.version, not_allowed(path, &parts.method, allow)).await,
        };
    }

    let routed = json.routes.iter().find_map(|route| {
        (route.verb == parts.method)
            .then(|| match_template(&route.template, path))
            .flatten()
            .map(|captures| (route, captures))
    });
    let Some((route, captures)) = routed else {
        let status = if crate::call::split_method_path(path).is_some() {
            Status::unimplemented(format!("no method {path} on this server"))
        } else {
            Status::not_found(format!("no route for {} {path}", parts.method))
        };
        return answer_early(
            body,
            parts.version,
            super::error_response(&status, StatusCode::NOT_FOUND),
        )
        .await;
    };
    let format = match post_format(&parts.headers) {
        Ok(format) => format,
        Err(response) => return answer_early(body, parts.version, *response).await,
    };
    let (data, compression) = match read_body(ctx, &parts, body).await {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let query = parts.uri.query().unwrap_or("");
    let transcoder = &route.target.json;
    let reject = json.reject_unknown;
    let input = match (format, route.body.as_str()) {
        (Format::Codec(Codec::Proto), "*") => Ok(data),
        (Format::Codec(Codec::Proto), _) => Err(Status::invalid_argument(
            "protobuf bodies are accepted only where the whole message is the body",
        )),
        (Format::Form, _) if !data.trim_ascii_start().starts_with(b"{") => {
            let form = String::from_utf8_lossy(&data).into_owned();
            let query = if query.is_empty() {
                form
            } else {
                format!("{query}&{form}")
            };
            transcoder.to_proto(&[], "", &captures, &query, reject)
        }
        (_, field) => transcoder.to_proto(&data, field, &captures, query, reject),
    };
    match input {
        Ok(input) => {
            let arrival = (Protocol::Rest, compression != Compression::Identity);
            dispatch(ctx, peer, &parts, &route.target, input, format, arrival).await
        }
        Err(status) => fail(status),
    }
}

/// The whole request body, gunzipped if its `content-encoding` says so (both bounded by the
/// message limit), and the encoding; or the reply to send instead.
async fn read_body(
    ctx: &HttpContext,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
) -> Result<(Bytes, Compression), Box<http::Response<ReplyBody>>> {
    let compression =
        match Compression::from_header(parts.headers.get(http::header::CONTENT_ENCODING)) {
            Ok(compression) => compression,
            Err(status) => {
                return Err(Box::new(
                    answer_early(body, parts.version, fail(status)).await,
                ));
            }
        };
    let limit = ctx.max_message_size;
    let data = collect(body, limit)
        .await
        .and_then(|collected| compression.decompress(collected.data, limit))
        .map_err(|status| Box::new(fail(status)))?;
    Ok((data, compression))
}

/// The format a `POST`'s content type names, or the 415 to answer.
fn post_format(headers: &http::HeaderMap) -> Result<Format, Box<http::Response<ReplyBody>>> {
    match media_type(headers).as_deref() {
        None | Some("application/json") => Ok(Format::Codec(Codec::Json)),
        Some("application/x-www-form-urlencoded") => Ok(Format::Form),
        Some("application/proto" | "application/protobuf") => Ok(Format::Codec(Codec::Proto)),
        Some(other) => Err(Box::new(unsupported_media(
            other,
            "application/json or application/proto (or application/grpc, application/grpc-web)",
        ))),
    }
}

/// A Connect `POST`: the whole body is the (possibly compressed) request message.
async fn call_post(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
    target: &Target,
    format: Format,
) -> http::Response<ReplyBody> {
    let (data, compression) = match read_body(ctx, parts, body).await {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let transcoder = &target.json;
    let reject = ctx.json.reject_unknown;
    let input = match format {
        Format::Codec(codec) => codec.decode(transcoder, data, reject),
        Format::Form if data.trim_ascii_start().starts_with(b"{") => {
            Codec::Json.decode(transcoder, data, reject)
        }
        Format::Form => {
            let form = String::from_utf8_lossy(&data).into_owned();
            transcoder.to_proto(&[], "", &[], &form, reject)
        }
    };
    match input {
        Ok(input) => {
            let arrival = (Protocol::Connect, compression != Compression::Identity);
            dispatch(ctx, peer, parts, target, input, format, arrival).await
        }
        Err(status) => fail(status),
    }
}

/// A Connect `GET`: `?connect=v1&encoding=json|proto&message=…[&base64=1][&compression=gzip]`.
async fn call_get(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    parts: &http::request::Parts,
    target: &Target,
) -> http::Response<ReplyBody> {
    let mut connect = None;
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    for pair in parts.uri.query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "connect" => connect = Some(value),
            "encoding" => encoding = Some(value),
            "message" => message = Some(value),
            "base64" => base64 = value == "1",
            "compression" => compression = Some(value),
            // Servers must allow other parameters (cache busters, for example).
            _ => {}
        }
    }
    if connect.is_some_and(|v| v != "v1") {
        let status = Status::invalid_argument("unsupported connect query parameter; expected v1");
        return fail(status);
    }
    let Some(encoding) = encoding else {
        return fail(Status::invalid_argument(
            "a Connect GET needs an encoding query parameter (json or proto)",
        ));
    };
    let Some(codec) = Codec::from_name(encoding) else {
        return unsupported_media(encoding, "encoding=json or encoding=proto");
    };
    let compression = match Compression::from_name(compression.unwrap_or("identity").as_bytes()) {
        Ok(compression) => compression,
        Err(status) => return fail(status),
    };
    let raw = percent_encoding::percent_decode_str(message.unwrap_or("")).collect::<Vec<u8>>();
    let data = if base64 {
        match decode_base64_url(&raw) {
            Some(data) => data,
            None => {
                return fail(Status::invalid_argument(
                    "the message query parameter is not URL-safe base64",
                ));
            }
        }
    } else {
        raw
    };
    let limit = ctx.max_message_size;
    if data.len() > limit {
        return fail(Status::resource_exhausted(format!(
            "message larger than the limit of {limit} bytes"
        )));
    }
    let data = match compression.decompress(Bytes::from(data), limit) {
        Ok(data) => data,
        Err(status) => return fail(status),
    };
    let input = match codec.decode(&target.json, data, ctx.json.reject_unknown) {
        Ok(input) => input,
        Err(status) => return fail(status),
    };
    let arrival = (Protocol::Connect, compression != Compression::Identity);
    dispatch(
        ctx,
        peer,
        parts,
        target,
        input,
        Format::Codec(codec),
        arrival,
    )
    .await
}

/// Base64 in the URL-safe alphabet (RFC 4648 §5), with or without padding; the standard
/// alphabet is accepted too.
fn decode_base64_url(data: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let trimmed: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| *b != b'=')
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            other => other,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
}

/// Runs the call and writes the Connect unary reply.
async fn dispatch(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    parts: &http::request::Parts,
    target: &Target,
    input: Bytes,
    format: Format,
    arrival: (Protocol, bool),
) -> http::Response<ReplyBody> {
    let deadline = match connect_deadline(&parts.headers) {
        Ok(deadline) => deadline,
        Err(status) => return fail(status),
    };
    let metadata = headers_to_metadata(&parts.headers);
    let route = (target.path.clone(), MethodKind::Unary);
    let mut call = Request::from_wire(route, metadata, deadline, peer, Body::Message(input));
    call.set_arrival(arrival.0, arrival.1);
    let response = match ctx.dispatch.call(call).await {
        Ok(response) => response,
        Err(status) => return fail(status),
    };
    let compress = response.compress();
    let (metadata, output, trailers) = response.into_wire_parts();
    let (output, more) = match output.into_single().await {
        Ok(output) => output,
        Err(status) => return fail(status),
    };
    let (bytes, content_type) = match format {
        Format::Codec(Codec::Proto) => (output, "application/proto"),
        Format::Codec(Codec::Json) | Format::Form => match target.json.to_json(output) {
            Ok(json) => (json, "application/json"),
            Err(status) => return fail(status),
        },
    };
    // Without an accept-encoding the client accepts what it sent.
    let accept = parts
        .headers
        .get(http::header::ACCEPT_ENCODING)
        .or_else(|| parts.headers.get(http::header::CONTENT_ENCODING));
    let policy = crate::http::envelope::CompressPolicy {
        compress,
        encoding: Compression::negotiate(accept),
        auto_min: Some(MIN_COMPRESS),
    };
    let compressed = policy.applies(bytes.len());
    let bytes = if compressed {
        policy.encoding.compress(&bytes)
    } else {
        bytes
    };
    let mut response = http::Response::new(reply_body(Some(bytes), None));
    let headers = response.headers_mut();
    metadata_to_headers(&metadata, headers);
    put_metadata(&trailers, headers, "trailer-");
    put_metadata(&more, headers, "trailer-");
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if compressed {
        headers.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static(policy.encoding.name()),
        );
    }
    if parts.method == Method::GET {
        headers.append(
            http::header::VARY,
            HeaderValue::from_static("accept-encoding"),
        );
    }
    response
}
