//! The protocol-independent call model: [`Request`] and [`Response`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Metadata;

/// A message plus everything that travels with it: metadata, a deadline, the method and the peer.
///
/// Every protocol Ferry speaks maps onto this one type, so middleware written against it works
/// for native, gRPC and HTTP/JSON calls alike.
///
/// ```
/// use std::time::Duration;
/// let mut req = ferry::Request::new("hello").with_timeout(Duration::from_millis(50));
/// req.metadata_mut().insert("x-tenant", "acme");
/// assert!(req.remaining().unwrap() <= Duration::from_millis(50));
/// ```
#[derive(Debug, Clone)]
pub struct Request<T> {
    message: T,
    metadata: Metadata,
    deadline: Option<Instant>,
    method: Cow<'static, str>,
    peer: Option<SocketAddr>,
    extensions: ::http::Extensions,
}

impl<T> Request<T> {
    /// A request carrying `message`, with no metadata and no deadline.
    pub fn new(message: T) -> Request<T> {
        Request {
            message,
            metadata: Metadata::new(),
            deadline: None,
            method: Cow::Borrowed(""),
            peer: None,
            extensions: ::http::Extensions::new(),
        }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Consumes the request, returning the message.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// The metadata sent with the call.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata sent with the call, mutably.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The instant after which the caller no longer wants an answer, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it has passed), or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline, replacing any earlier one.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Gives the call `timeout` from now, keeping an existing deadline if that is sooner.
    pub fn set_timeout(&mut self, timeout: Duration) {
        let candidate = Instant::now().checked_add(timeout);
        self.deadline = match (self.deadline, candidate) {
            (Some(existing), Some(new)) => Some(existing.min(new)),
            (existing, new) => existing.or(new),
        };
    }

    /// Builder form of [`Request::set_timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Request<T> {
        self.set_timeout(timeout);
        self
    }

    /// The full method path, `/package.Service/Method`; empty until the call is addressed.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The method path when it is a `'static` string (a literal or an interned path), which
    /// lets a router pass it on without copying it.
    pub(crate) fn static_method(&self) -> Option<&'static str> {
        match self.method {
            Cow::Borrowed(path) => Some(path),
            Cow::Owned(_) => None,
        }
    }

    /// Sets the full method path.
    pub fn set_method(&mut self, method: impl Into<Cow<'static, str>>) {
        self.method = method.into();
    }

    /// The remote address of the caller (server side) when the transport knows it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Records the remote address; set by transports.
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        self.peer = peer;
    }

    /// Typed values attached to the call by layers and transports, for handlers and later layers.
    ///
    /// The server puts the caller's TLS identity (`ferry::tls::PeerIdentity`) here, and the
    /// authentication layer the authenticated `ferry::auth::Principal`.
    ///
    /// ```
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct TenantId(u32);
    /// let mut req = ferry::Request::new(());
    /// req.extensions_mut().insert(TenantId(7));
    /// assert_eq!(req.extensions().get::<TenantId>(), Some(&TenantId(7)));
    /// ```
    pub fn extensions(&self) -> &::http::Extensions {
        &self.extensions
    }

    /// The call's typed extensions, mutably; see [`Request::extensions`].
    pub fn extensions_mut(&mut self) -> &mut ::http::Extensions {
        &mut self.extensions
    }

    /// Replaces the message, keeping metadata, deadline, method, peer and extensions.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        Request {
            message: f(self.message),
            metadata: self.metadata,
            deadline: self.deadline,
            method: self.method,
            peer: self.peer,
            extensions: self.extensions,
        }
    }

    /// A request as a server transport received it.
    pub(crate) fn from_wire(
        method: impl Into<Cow<'static, str>>,
        metadata: Metadata,
        deadline: Option<Instant>,
        peer: Option<SocketAddr>,
        message: T,
    ) -> Request<T> {
        Request {
            message,
            metadata,
            deadline,
            method: method.into(),
            peer,
            extensions: ::http::Extensions::new(),
        }
    }

    /// Splits into method path, metadata and message; used by transports.
    pub(crate) fn into_call_parts(self) -> (Cow<'static, str>, Metadata, T) {
        (self.method, self.metadata, self.message)
    }

    /// A new request for `message` that inherits this request's deadline and nothing else.
    ///
    /// Use it in a handler that calls another service, so the remaining time propagates.
    pub fn child<U>(&self, message: U) -> Request<U> {
        let mut req = Request::new(message);
        req.deadline = self.deadline;
        req
    }
}

/// A response message plus its metadata.
#[derive(Debug, Clone)]
pub struct Response<T> {
    message: T,
    metadata: Metadata,
}

impl<T> Response<T> {
    /// A response carrying `message` with empty metadata.
    pub fn new(message: T) -> Response<T> {
        Response {
            message,
            metadata: Metadata::new(),
        }
    }

    /// A response from a message and metadata.
    pub fn from_parts(metadata: Metadata, message: T) -> Response<T> {
        Response { message, metadata }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Consumes the response, returning the message.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Splits into metadata and message.
    pub fn into_parts(self) -> (Metadata, T) {
        (self.metadata, self.message)
    }

    /// The response metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The response metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Replaces the message, keeping the metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            message: f(self.message),
            metadata: self.metadata,
        }
    }
}

/// Anything a generated client method accepts: a bare message or a full [`Request`].
pub trait IntoRequest<T> {
    /// Wraps `self` into a request.
    fn into_request(self) -> Request<T>;
}

impl<T> IntoRequest<T> for T {
    fn into_request(self) -> Request<T> {
        Request::new(self)
    }
}

impl<T> IntoRequest<T> for Request<T> {
    fn into_request(self) -> Request<T> {
        self
    }
}
