//! The Connect protocol and REST routes: Connect unary calls (`POST /package.Service/Method`
//! with a JSON or protobuf body) and REST routes declared with `google.api.http` annotations,
//! served through the server's one dispatch path; [`client`] is the Connect client transport.
//!
//! JSON follows the canonical proto3 JSON mapping (via prost-reflect); errors are Connect's
//! `{"code": "invalid_argument", "message": "…"}` with the matching HTTP status.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions, Value,
};

pub(crate) mod client;
mod rest;

use crate::call::{Body, MethodKind, deadline};
use crate::http::HttpContext;
use crate::http::body::{ReplyBody, collect, reply_body};
use crate::http::headers::{headers_to_metadata, metadata_to_headers, put_metadata};
use crate::{Code, Request, Status};
use rest::{RestRoute, match_template, set_path, url_query};

/// Transcodes JSON to and from protobuf for every registered unary method.
#[derive(Default)]
pub(crate) struct JsonGateway {
    /// `/package.Service/Method` → method.
    methods: HashMap<String, Target>,
    /// REST routes, tried in declaration order.
    routes: Vec<RestRoute>,
}

/// A method calls are transcoded for, with its path ready for the request (interned, so no
/// call allocates it).
#[derive(Clone)]
struct Target {
    method: MethodDescriptor,
    path: Cow<'static, str>,
}

impl JsonGateway {
    /// Builds the gateway for `services` (full names) described in `pool`.
    pub(crate) fn new(pool: &DescriptorPool, services: &[&str]) -> JsonGateway {
        let mut gateway = JsonGateway::default();
        let http_rule = pool.get_extension_by_name("google.api.http");
        for name in services {
            let Some(service) = pool.get_service_by_name(name) else {
                continue;
            };
            for method in service.methods() {
                if method.is_client_streaming() || method.is_server_streaming() {
                    continue;
                }
                let path = crate::call::join(service.full_name(), method.name());
                let target = Target {
                    path: Cow::Borrowed(crate::call::intern(&path)),
                    method,
                };
                if let Some(ext) = &http_rule {
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

/// The HTTP status Connect uses for each code.
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

/// A Connect error response.
pub(crate) fn error_response(status: &Status, http: StatusCode) -> http::Response<ReplyBody> {
    let mut body = serde_json::Map::new();
    body.insert("code".into(), status.code().as_str().into());
    if !status.message().is_empty() {
        body.insert("message".into(), status.message().into());
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = http::Response::new(reply_body(Some(Bytes::from(bytes)), None));
    *response.status_mut() = http;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn fail(status: Status) -> http::Response<ReplyBody> {
    let http = http_status(status.code());
    error_response(&status, http)
}

#[derive(Clone, Copy, PartialEq)]
enum BodyFormat {
    Json,
    Proto,
    Form,
}

/// Serves one HTTP request that is not gRPC.
pub(crate) async fn serve(
    ctx: &HttpContext,
    peer: Option<SocketAddr>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<ReplyBody> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let format = match parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim())
    {
        // curl's `-d` sends form content by default: a JSON body is read as JSON, a
        // `a=1&b=2` body as fields.
        None | Some("application/json") => BodyFormat::Json,
        Some("application/x-www-form-urlencoded") => BodyFormat::Form,
        Some("application/proto") | Some("application/protobuf") => BodyFormat::Proto,
        Some(other) => {
            return error_response(
                &Status::invalid_argument(format!(
                    "unsupported content type {other:?}: send application/json \
                     (or application/grpc, application/proto)"
                )),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            );
        }
    };
    // Connect unary call, or a REST route.
    let (target, captures, body_field) = if let Some(target) = ctx.json.methods.get(path) {
        if parts.method != Method::POST {
            return error_response(
                &Status::invalid_argument(format!("{path} takes POST, not {}", parts.method)),
                StatusCode::METHOD_NOT_ALLOWED,
            );
        }
        (target, Vec::new(), "*")
    } else if let Some((route, captures)) = ctx.json.routes.iter().find_map(|route| {
        (route.verb == parts.method)
            .then(|| match_template(&route.template, path))
            .flatten()
            .map(|captures| (route, captures))
    }) {
        (&route.target, captures, route.body.as_str())
    } else {
        let status = if crate::call::split_method_path(path).is_some() {
            Status::unimplemented(format!("no method {path} on this server"))
        } else {
            Status::not_found(format!("no route for {} {path}", parts.method))
        };
        return error_response(&status, StatusCode::NOT_FOUND);
    };

    let data = match collect(body, ctx.max_message_size).await {
        Ok(collected) => collected.data,
        Err(status) => return fail(status),
    };
    let query = parts.uri.query().unwrap_or("");
    let input = match (format, body_field) {
        (BodyFormat::Proto, "*") => data,
        (BodyFormat::Proto, _) => {
            return fail(Status::invalid_argument(
                "protobuf bodies are accepted only where the whole message is the body",
            ));
        }
        (BodyFormat::Form, _) if !data.trim_ascii_start().starts_with(b"{") => {
            let form = String::from_utf8_lossy(&data).into_owned();
            let query = if query.is_empty() {
                form
            } else {
                format!("{query}&{form}")
            };
            match json_to_proto(&target.method.input(), &[], "", &captures, &query) {
                Ok(bytes) => bytes,
                Err(status) => return fail(status),
            }
        }
        (BodyFormat::Json | BodyFormat::Form, _) => {
            match json_to_proto(&target.method.input(), &data, body_field, &captures, query) {
                Ok(bytes) => bytes,
                Err(status) => return fail(status),
            }
        }
    };

    let deadline = match parts.headers.get("connect-timeout-ms") {
        None => None,
        Some(ms) => match ms.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(ms) => deadline::from_timeout(Duration::from_millis(ms)),
            None => {
                return fail(Status::invalid_argument(format!(
                    "malformed connect-timeout-ms header {ms:?}"
                )));
            }
        },
    };
    let metadata = headers_to_metadata(&parts.headers);
    let route = (target.path.clone(), MethodKind::Unary);
    let call = Request::from_wire(route, metadata, deadline, peer, Body::Message(input));
    let (metadata, output, trailers) = match ctx.dispatch.call(call).await {
        Ok(response) => response.into_wire_parts(),
        Err(status) => return fail(status),
    };
    let output = match output.into_message().await {
        Ok(output) => output,
        Err(status) => return fail(status),
    };
    let (bytes, content_type) = match format {
        BodyFormat::Proto => (output, "application/proto"),
        BodyFormat::Json | BodyFormat::Form => match proto_to_json(&target.method.output(), output)
        {
            Ok(json) => (json, "application/json"),
            Err(status) => return fail(status),
        },
    };
    let mut response = http::Response::new(reply_body(Some(bytes), None));
    metadata_to_headers(&metadata, response.headers_mut());
    put_metadata(&trailers, response.headers_mut(), "trailer-");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}

/// Builds the encoded request from a JSON body, path captures and query parameters.
fn json_to_proto(
    desc: &MessageDescriptor,
    body: &[u8],
    body_field: &str,
    captures: &[(String, String)],
    query: &str,
) -> Result<Bytes, Status> {
    let invalid = |e: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("invalid JSON for {}: {e}", desc.full_name()))
    };
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    // The common case, a whole-message body and nothing from the path or query: parse it
    // straight into the message, with no intermediate JSON tree.
    let whole_body = body_field == "*" && captures.is_empty();
    if whole_body && let Some(&first) = body.iter().find(|b| !b.is_ascii_whitespace()) {
        if first != b'{' {
            return Err(invalid(&"the body must be a JSON object"));
        }
        let mut parser = serde_json::Deserializer::from_slice(body);
        let message = DynamicMessage::deserialize_with_options(desc.clone(), &mut parser, &options)
            .and_then(|message| parser.end().map(|()| message))
            .map_err(|e| invalid(&e))?;
        return Ok(Bytes::from(message.encode_to_vec()));
    }
    let mut object = serde_json::Map::new();
    if !body_field.is_empty() && !body.iter().all(u8::is_ascii_whitespace) {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
        if body_field == "*" {
            match value {
                serde_json::Value::Object(map) => object = map,
                _ => return Err(invalid(&"the body must be a JSON object")),
            }
        } else {
            set_path(&mut object, desc, body_field, value)?;
        }
    }
    for (field, text) in captures {
        set_path(
            &mut object,
            desc,
            field,
            serde_json::Value::String(text.clone()),
        )?;
    }
    if body_field != "*" || body.is_empty() {
        for (key, text) in url_query(query) {
            set_path(&mut object, desc, &key, serde_json::Value::String(text))?;
        }
    }
    let message = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_json::Value::Object(object),
        &options,
    )
    .map_err(|e| invalid(&e))?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Renders an encoded message as canonical proto3 JSON.
fn proto_to_json(desc: &MessageDescriptor, bytes: Bytes) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| {
        Status::internal(format!(
            "the handler's {} did not decode: {e}",
            desc.full_name()
        ))
    })?;
    crate::json::to_vec(&message, &SerializeOptions::new())
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("cannot render JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
