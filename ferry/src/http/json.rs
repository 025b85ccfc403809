//! HTTP/JSON: Connect-protocol unary calls (`POST /package.Service/Method` with a JSON or
//! protobuf body) and REST routes declared with `google.api.http` annotations.
//!
//! JSON follows the canonical proto3 JSON mapping (via prost-reflect); errors are Connect's
//! `{"code": "invalid_argument", "message": "…"}` with the matching HTTP status.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions, Value,
};

use super::body::{ReplyBody, collect, reply_body};
use super::{HttpContext, headers_to_metadata, metadata_to_headers};
use crate::native::frame::intern_method;
use crate::service::run_call;
use crate::{Code, Request, Status};

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

/// One `google.api.http` binding.
struct RestRoute {
    verb: Method,
    template: Vec<Segment>,
    /// `"*"` (the whole body), a field name, or empty (no body).
    body: String,
    target: Target,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    /// `*`: any one segment, not captured.
    Any,
    /// `{field}` or `{field=*}`: one segment captured into a field path.
    Capture(String),
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
                let path = format!("/{}/{}", service.full_name(), method.name());
                let target = Target {
                    path: match intern_method(path.as_bytes()) {
                        Some(interned) => Cow::Borrowed(interned),
                        None => Cow::Owned(path.clone()),
                    },
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

    fn add_rule(&mut self, rule: &DynamicMessage, target: &Target) {
        let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        for (verb, field) in [
            (Method::GET, "get"),
            (Method::PUT, "put"),
            (Method::POST, "post"),
            (Method::DELETE, "delete"),
            (Method::PATCH, "patch"),
        ] {
            let path = text(field);
            if path.is_empty() {
                continue;
            }
            match parse_template(&path) {
                Some(template) => self.routes.push(RestRoute {
                    verb,
                    template,
                    body: text("body"),
                    target: target.clone(),
                }),
                None => tracing::warn!(
                    method = target.method.full_name(),
                    "ignoring unsupported google.api.http path template {path:?}"
                ),
            }
        }
        if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
            for binding in more {
                if let Value::Message(binding) = binding {
                    self.add_rule(binding, target);
                }
            }
        }
    }
}

fn parse_template(path: &str) -> Option<Vec<Segment>> {
    let rest = path.strip_prefix('/')?;
    rest.split('/')
        .map(|segment| {
            if segment == "*" {
                Some(Segment::Any)
            } else if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
            {
                let field = inner.strip_suffix("=*").unwrap_or(inner);
                (!field.is_empty() && !field.contains(['=', '*', '/']))
                    .then(|| Segment::Capture(field.to_owned()))
            } else if segment.is_empty() || segment.contains(['{', '}', '*']) {
                None
            } else {
                Some(Segment::Literal(segment.to_owned()))
            }
        })
        .collect()
}

/// Matches `path` against `template`, returning the captured `(field path, value)` pairs.
fn match_template(template: &[Segment], path: &str) -> Option<Vec<(String, String)>> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if segments.len() != template.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (pattern, segment) in template.iter().zip(segments) {
        match pattern {
            Segment::Literal(lit) if lit == segment => {}
            Segment::Literal(_) => return None,
            Segment::Any if !segment.is_empty() => {}
            Segment::Capture(field) if !segment.is_empty() => {
                let value = percent_encoding::percent_decode_str(segment)
                    .decode_utf8_lossy()
                    .into_owned();
                captures.push((field.clone(), value));
            }
            Segment::Any | Segment::Capture(_) => return None,
        }
    }
    Some(captures)
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
    ctx: Arc<HttpContext>,
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
        let status = if crate::service::split_method_path(path).is_some() {
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
            Some(ms) => Instant::now().checked_add(Duration::from_millis(ms)),
            None => {
                return fail(Status::invalid_argument(format!(
                    "malformed connect-timeout-ms header {ms:?}"
                )));
            }
        },
    };
    let metadata = headers_to_metadata(&parts.headers);
    let call = Request::from_wire(target.path.clone(), metadata, deadline, ctx.peer, input);
    let mut svc = ctx.svc.clone();
    let (metadata, output) = match run_call(&mut svc, call).await {
        Ok(response) => response.into_parts(),
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

fn url_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Sets `a.b.c` in a JSON object, turning text into the field's JSON type where needed.
fn set_path(
    object: &mut serde_json::Map<String, serde_json::Value>,
    desc: &MessageDescriptor,
    path: &str,
    value: serde_json::Value,
) -> Result<(), Status> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let field = desc
        .get_field_by_name(head)
        .or_else(|| desc.get_field_by_json_name(head))
        .ok_or_else(|| {
            Status::invalid_argument(format!("{} has no field {head:?}", desc.full_name()))
        })?;
    let key = field.json_name().to_owned();
    match rest {
        Some(rest) => {
            let Kind::Message(inner) = field.kind() else {
                return Err(Status::invalid_argument(format!(
                    "{head:?} in {path:?} is not a message field"
                )));
            };
            let entry = object
                .entry(key)
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            match entry {
                serde_json::Value::Object(map) => set_path(map, &inner, rest, value),
                _ => Err(Status::invalid_argument(format!("{head:?} is set twice"))),
            }
        }
        None => {
            let value = match (&value, field.kind()) {
                (serde_json::Value::String(text), Kind::Bool) => match text.as_str() {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    _ => value,
                },
                (serde_json::Value::String(text), Kind::Double | Kind::Float) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(value, serde_json::Value::Number),
                _ => value,
            };
            let value = if field.is_list() && !value.is_array() {
                serde_json::Value::Array(vec![value])
            } else {
                value
            };
            match (object.get_mut(&key), value) {
                (Some(serde_json::Value::Array(list)), serde_json::Value::Array(more)) => {
                    list.extend(more);
                }
                (_, value) => {
                    object.insert(key, value);
                }
            }
            Ok(())
        }
    }
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
    fn templates_parse_and_match() {
        let t = parse_template("/v1/shelves/{shelf}/books/{book.id=*}").unwrap();
        assert_eq!(
            match_template(&t, "/v1/shelves/7/books/a%20b"),
            Some(vec![
                ("shelf".to_owned(), "7".to_owned()),
                ("book.id".to_owned(), "a b".to_owned())
            ])
        );
        assert_eq!(match_template(&t, "/v1/shelves/7/books"), None);
        assert_eq!(match_template(&t, "/v1/shelves//books/1"), None);
        assert_eq!(
            match_template(&parse_template("/add").unwrap(), "/add"),
            Some(vec![])
        );
        assert!(parse_template("add").is_none());
        assert!(parse_template("/v1/{name=shelves/**}").is_none());
    }

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
