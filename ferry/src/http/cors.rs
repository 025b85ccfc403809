//! Cross-origin requests, so pages served from anywhere can call the server from a browser
//! (gRPC-Web and the Connect protocol): preflights are answered, and replies name the origin
//! and expose the headers that carry statuses and metadata.

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::body::{ReplyBody, reply_body};

/// Which origins may call the server from a browser.
///
/// Ferry sends no `Access-Control-Allow-Credentials`, so browsers never attach cookies or
/// HTTP authentication to cross-origin calls; tokens travel in `authorization` metadata set by
/// the page's code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (the default): `Access-Control-Allow-Origin: *`.
    #[default]
    AnyOrigin,
    /// Only these origins (e.g. `https://app.example.com`).
    Origins(Vec<String>),
    /// No cross-origin calls: no CORS headers at all.
    Disabled,
}

/// How long browsers may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "7200";

/// Response headers a page may read: statuses and every metadata header of the reply.
const ALWAYS_EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

impl Cors {
    /// The `Access-Control-Allow-Origin` value for `origin`, if it may call.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            Cors::AnyOrigin => Some(HeaderValue::from_static("*")),
            Cors::Origins(list) => {
                let origin_text = origin.to_str().ok()?;
                list.iter()
                    .any(|allowed| allowed == origin_text)
                    .then(|| origin.clone())
            }
            Cors::Disabled => None,
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`), if this is
    /// one.
    pub(crate) fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<http::Response<ReplyBody>> {
        if method != Method::OPTIONS || !headers.contains_key("access-control-request-method") {
            return None;
        }
        let origin = headers.get(http::header::ORIGIN)?;
        let mut response = http::Response::new(reply_body(None, None));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let Some(allow) = self.allow_origin(origin) else {
            // Not allowed: answer without CORS headers, so the browser refuses the call.
            return Some(response);
        };
        let out = response.headers_mut();
        out.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        out.insert(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        // Any request header may carry metadata, so whatever the page asks for is allowed.
        if let Some(requested) = headers.get("access-control-request-headers") {
            out.insert(
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                requested.clone(),
            );
        }
        out.insert(
            http::header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        if matches!(self, Cors::Origins(_)) {
            out.append(http::header::VARY, HeaderValue::from_static("origin"));
        }
        Some(response)
    }

    /// Adds the CORS headers to a reply to a request from `origin`.
    pub(crate) fn decorate(
        &self,
        origin: Option<&HeaderValue>,
        response: &mut http::Response<ReplyBody>,
    ) {
        let Some(allow) = origin.and_then(|origin| self.allow_origin(origin)) else {
            return;
        };
        let headers = response.headers_mut();
        let mut exposed: Vec<&str> = ALWAYS_EXPOSED.to_vec();
        let names: Vec<String> = headers
            .keys()
            .map(|name| name.as_str().to_owned())
            .filter(|name| !is_safelisted(name) && !ALWAYS_EXPOSED.contains(&name.as_str()))
            .collect();
        exposed.extend(names.iter().map(String::as_str));
        if let Ok(value) = HeaderValue::from_str(&exposed.join(", ")) {
            headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if matches!(self, Cors::Origins(_)) {
            headers.append(http::header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

/// Response headers every page may read anyway (the CORS safelist).
fn is_safelisted(name: &str) -> bool {
    matches!(
        name,
        "cache-control"
            | "content-language"
            | "content-length"
            | "content-type"
            | "expires"
            | "last-modified"
            | "pragma"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflights_echo_the_requested_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ORIGIN, HeaderValue::from_static("null"));
        headers.insert(
            "access-control-request-method",
            HeaderValue::from_static("POST"),
        );
        headers.insert(
            "access-control-request-headers",
            HeaderValue::from_static("content-type,x-grpc-web"),
        );
        let response = Cors::AnyOrigin
            .preflight(&Method::OPTIONS, &headers)
            .expect("a preflight");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers()[http::header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type,x-grpc-web"
        );
        assert!(Cors::AnyOrigin.preflight(&Method::POST, &headers).is_none());
        let only = Cors::Origins(vec!["https://a.example".into()]);
        let refused = only.preflight(&Method::OPTIONS, &headers).unwrap();
        assert!(
            !refused
                .headers()
                .contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }

    #[test]
    fn replies_expose_statuses_and_metadata() {
        let mut response = http::Response::new(reply_body(None, None));
        response
            .headers_mut()
            .insert("x-tenant", HeaderValue::from_static("acme"));
        let origin = HeaderValue::from_static("https://a.example");
        Cors::AnyOrigin.decorate(Some(&origin), &mut response);
        let exposed = response.headers()[http::header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            exposed.contains("grpc-status") && exposed.contains("x-tenant"),
            "{exposed}"
        );
    }
}
