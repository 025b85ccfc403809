//! Method paths (`/package.Service/Method`): the one place that parses, validates and interns
//! them, for every protocol.
//!
//! Paths of registered methods are interned once, when a service is added to a
//! [`Router`](crate::server::Router), so a call to a known method carries a `&'static str` and
//! allocates nothing for its path. A path from the wire that names no registered method is
//! checked (UTF-8, at most [`MAX_METHOD_PATH_LEN`] bytes) and kept as an owned string, so a
//! peer can never grow the intern table.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use crate::Status;

/// The longest method path accepted from the wire, in bytes. Real paths are far shorter; the
/// cap keeps a peer from making the server hold a huge path per open call.
pub const MAX_METHOD_PATH_LEN: usize = 1024;

/// How a method exchanges messages, as declared in its `.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStreaming,
    /// One request, a stream of responses.
    ServerStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// The kind of a method with the given streaming flags.
    pub fn from_streaming(client: bool, server: bool) -> MethodKind {
        match (client, server) {
            (false, false) => MethodKind::Unary,
            (true, false) => MethodKind::ClientStreaming,
            (false, true) => MethodKind::ServerStreaming,
            (true, true) => MethodKind::BidiStreaming,
        }
    }

    /// Whether the client sends a stream.
    pub fn client_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ClientStreaming | MethodKind::BidiStreaming
        )
    }

    /// Whether the server sends a stream.
    pub fn server_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ServerStreaming | MethodKind::BidiStreaming
        )
    }
}

/// Splits `/package.Service/Method` into `("package.Service", "Method")`.
///
/// ```
/// use ferry::call::split_method_path;
/// assert_eq!(split_method_path("/calc.v1.Calc/Add"), Some(("calc.v1.Calc", "Add")));
/// assert_eq!(split_method_path("calc.v1.Calc/Add"), None);
/// ```
pub fn split_method_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// The full path of `method` in `service`.
pub(crate) fn join(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

/// Every path interned so far. Only registration adds to it (never the wire), so it holds at
/// most the methods of the services this process registered.
static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// The `'static` copy of a registered method's path (one per distinct path per process).
pub(crate) fn intern(path: &str) -> &'static str {
    let mut table = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = table.get(path) {
        return found;
    }
    let leaked: &'static str = Box::leak(path.to_owned().into_boxed_str());
    table.insert(leaked);
    leaked
}

/// A method path that arrived from the wire and names no registered method: checked, then
/// owned. The error is for the caller to turn into its protocol's answer.
pub(crate) fn unregistered(raw: &[u8]) -> Result<Cow<'static, str>, Status> {
    if raw.len() > MAX_METHOD_PATH_LEN {
        return Err(Status::invalid_argument(format!(
            "method path of {} bytes is longer than the limit of {MAX_METHOD_PATH_LEN}",
            raw.len()
        )));
    }
    match std::str::from_utf8(raw) {
        Ok(text) => Ok(Cow::Owned(text.to_owned())),
        Err(_) => Err(Status::invalid_argument("method path is not UTF-8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_split() {
        assert_eq!(
            split_method_path("/calculator.v1.Calculator/Add"),
            Some(("calculator.v1.Calculator", "Add"))
        );
        assert_eq!(split_method_path("calculator/Add"), None);
        assert_eq!(split_method_path("/calculator"), None);
        assert_eq!(split_method_path("/a/b/c"), None);
        assert_eq!(split_method_path("//Add"), None);
    }

    #[test]
    fn interning_dedupes_and_the_wire_never_interns() {
        let a = intern("/t.S/M");
        let b = intern(&String::from("/t.S/M"));
        assert!(std::ptr::eq(a, b));
        assert!(matches!(unregistered(b"/t.S/Other"), Ok(Cow::Owned(_))));
        assert!(unregistered(&[0xff, 0xfe]).is_err());
        assert!(unregistered(&vec![b'a'; MAX_METHOD_PATH_LEN + 1]).is_err());
    }

    #[test]
    fn kinds_follow_the_streaming_flags() {
        assert_eq!(MethodKind::from_streaming(false, false), MethodKind::Unary);
        assert!(MethodKind::from_streaming(true, true).client_streams());
        assert!(!MethodKind::ServerStreaming.client_streams());
        assert!(MethodKind::ServerStreaming.server_streams());
    }
}
