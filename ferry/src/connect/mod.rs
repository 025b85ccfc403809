//! HTTP for browsers and curl: the Connect protocol (unary `POST` and `GET`, and streaming),
//! gRPC-Web, and REST routes declared with `google.api.http` annotations — all served through
//! the server's one dispatch path. [`client`] is the Connect client transport.
//!
//! - `unary`: Connect unary calls (JSON, protobuf or form bodies; `GET` for methods marked
//!   `NO_SIDE_EFFECTS`) and REST routes.
//! - `stream`: Connect streaming (`application/connect+proto` / `+json`).
//! - `grpc_web`: gRPC-Web (`application/grpc-web`, `+proto`, `-text`).
//! - `codec`: JSON ⇄ protobuf; `rest`: path templates.
//!
//! Errors are Connect's `{"code": "invalid_argument", "message": "…"}` with the HTTP status of
//! the Connect specification's table (streams end with an end-of-stream message instead).

pub(crate) mod client;
mod codec;
mod grpc_web;
mod rest;
mod stream;
mod unary;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

use crate::call::{MethodKind, deadline};
use crate::http::HttpContext;
use crate::http::body::{ReplyBody, reply_body};
use crate::server::Router;
use crate::{Code, Status};
use rest::RestRoute;

/// Every registered method as the HTTP/JSON side sees it, and the REST routes.
#[derive(Default)]
pub(crate) struct JsonGateway {
    /// `/package.Service/Method` → method.
    methods: HashMap<String, Target>,
    /// REST routes, tried in declaration order.
    routes: Vec<RestRoute>,
    /// Whether JSON with fields the schema does not know is refused (default: ignored).
    reject_unknown: bool,
}

/// A method calls are transcoded for, with its path ready for the request (interned, so no
/// call allocates it).
#[derive(Clone)]
struct Target {
    method: MethodDescriptor,
    /// JSON ⇄ protobuf for the method.
    json: codec::Transcoder,
    path: Cow<'static, str>,
    kind: MethodKind,
    /// Marked `idempotency_level = NO_SIDE_EFFECTS`: unary ones may be called with `GET`.
    side_effect_free: bool,
}

impl JsonGateway {
    /// Builds the gateway for every service of `router`, described in `pool`.
    pub(crate) fn new(pool: &DescriptorPool, router: &Router, reject_unknown: bool) -> JsonGateway {
        let mut gateway = JsonGateway {
            reject_unknown,
            ..JsonGateway::default()
        };
        let http_rule = pool.get_extension_by_name("google.api.http");
        for name in router.service_names() {
            let Some(service) = pool.get_service_by_name(name) else {
                continue;
            };
            let handler = router.service(name);
            for method in service.methods() {
                let path = crate::call::join(service.full_name(), method.name());
                let kind = MethodKind::from_streaming(
                    method.is_client_streaming(),
                    method.is_server_streaming(),
                );
                let side_effect_free = method
                    .method_descriptor_proto()
                    .options
                    .as_ref()
                    .is_some_and(|o| {
                        o.idempotency_level()
                            == prost_types::method_options::IdempotencyLevel::NoSideEffects
                    });
                let json = codec::Transcoder {
                    input: method.input(),
                    output: method.output(),
                    generated: handler.and_then(|h| h.json_codec(method.name())),
                };
                let target = Target {
                    path: Cow::Borrowed(crate::call::intern(&path)),
                    method,
                    json,
                    kind,
                    side_effect_free,
                };
                if let Some(ext) = &http_rule
                    && kind == MethodKind::Unary
                {
                    let options = target.method.options();
                    if options.has_extension(ext)
                        && let Value::Message(rule) = options.get_extension(ext).as_ref()
                    {
                        gateway.add_rule(rule, &target);
                    }
                }
                gateway.methods.insert(path, target);
            }
        }
        gateway
    }
}

/// The HTTP status the Connect specification gives each code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    let status = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The code a client infers from an HTTP status that came without a Connect error.
pub(crate) fn code_for_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A Connect error as JSON: `{"code": …, "message": …}`.
pub(crate) fn error_json(status: &Status) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("code".into(), status.code().as_str().into());
    if !status.message().is_empty() {
        body.insert("message".into(), status.message().into());
    }
    body
}

/// A Connect unary error response with the given HTTP status.
pub(crate) fn error_response(status: &Status, http: StatusCode) -> http::Response<ReplyBody> {
    let bytes = serde_json::to_vec(&error_json(status)).unwrap_or_default();
    let mut response = http::Response::new(reply_body(Some(Bytes::from(bytes)), None));
    *response.status_mut() = http;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    crate::http::headers::metadata_to_headers(status.metadata(), headers);
    if status.code() == Code::Unauthenticated {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// A Connect unary error response with the code's HTTP status.
pub(crate) fn fail(status: Status) -> http::Response<ReplyBody> {
    let http = http_status(status.code());
    error_response(&status, http)
}

/// `405 Method Not Allowed` with the `Allow` header listing what the path takes.
fn not_allowed(path: &str, method: &Method, allow: &'static str) -> http::Response<ReplyBody> {
    let status = Status::unimplemented(format!("{path} takes {allow}, not {method}"));
    let mut response = error_response(&status, StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `415 Unsupported Media Type`.
fn unsupported_media(what: &str, expected: &str) -> http::Response<ReplyBody> {
    let status = Status::unimplemented(format!(
        "unsupported content type {what:?}: send {expected}"
    ));
    error_response(&status, StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

/// The deadline a `connect-timeout-ms` header grants (at most 10 digits, per the spec).
fn connect_deadline(headers: &HeaderMap) -> Result<Option<Instant>, Status> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = value.as_bytes();
    let ms = (!text.is_empty() && text.len() <= 10 && text.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(text).ok()?.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| {
            Status::invalid_argument(format!("malformed connect-timeout-ms header {value:?}"))
        })?;
    Ok(deadline::from_timeout(Duration::from_millis(ms)))
}

/// The media type of a request, without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Serves one HTTP request that is not gRPC: gRPC-Web, Connect streaming, Connect unary, or a
/// REST route.
pub(crate) async fn serve(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let media = media_type(request.headers());
    let media = media.as_deref().unwrap_or("");
    if media.starts_with("application/grpc-web") {
        return grpc_web::serve(ctx, peer, request).await;
    }
    if media.starts_with("application/connect+") {
        return stream::serve(ctx, peer, request).await;
    }
    unary::serve(ctx, peer, request).await
}
