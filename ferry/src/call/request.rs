//! The protocol-independent call model: [`Request`] and [`Response`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Compress, Metadata, MethodKind, Protocol};

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
    kind: MethodKind,
    compress: Compress,
    /// Server side: the protocol the call arrived on.
    protocol: Option<Protocol>,
    /// Server side: whether the request declared a message encoding (gzip).
    compressed: bool,
    extensions: http::Extensions,
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
            kind: MethodKind::Unary,
            compress: Compress::Auto,
            protocol: None,
            compressed: false,
            extensions: http::Extensions::new(),
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

    /// Typed values that layers and transports attach for later layers and the handler; they
    /// never travel on the wire. The server puts the caller's TLS identity
    /// (`ferry::tls::PeerIdentity`) here, and the authentication layer the authenticated
    /// `ferry::auth::Principal`.
    ///
    /// ```
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct TenantId(u32);
    /// let mut req = ferry::Request::new(());
    /// req.extensions_mut().insert(TenantId(7));
    /// assert_eq!(req.extensions().get::<TenantId>(), Some(&TenantId(7)));
    /// ```
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// Attached values, mutably; see [`Request::extensions`].
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
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
            kind: self.kind,
            compress: self.compress,
            protocol: self.protocol,
            compressed: self.compressed,
            extensions: self.extensions,
        }
    }

    /// A copy of everything but the message, which is `message` instead.
    pub(crate) fn clone_with<U>(&self, message: U) -> Request<U> {
        Request {
            message,
            metadata: self.metadata.clone(),
            deadline: self.deadline,
            method: self.method.clone(),
            peer: self.peer,
            kind: self.kind,
            compress: self.compress,
            protocol: self.protocol,
            compressed: self.compressed,
            extensions: self.extensions.clone(),
        }
    }

    /// How the called method streams (set by generated clients and by server transports;
    /// unary unless said otherwise).
    pub fn method_kind(&self) -> MethodKind {
        self.kind
    }

    /// Declares how the called method streams; see [`Request::method_kind`].
    pub fn set_method_kind(&mut self, kind: MethodKind) {
        self.kind = kind;
    }

    /// Whether the request is compressed on the wire (gRPC and the Connect protocol, with
    /// gzip; default [`Compress::Auto`], which sends requests uncompressed). A server that does
    /// not read gzip answers `UNIMPLEMENTED`. A request stream may change the choice per
    /// message with [`StreamItem::Compress`](crate::call::StreamItem::Compress).
    pub fn compress(&self) -> Compress {
        self.compress
    }

    /// Asks the transport to compress the request, or not; see [`Request::compress`].
    pub fn set_compress(&mut self, compress: Compress) {
        self.compress = compress;
    }

    /// Server side: the protocol the call arrived on (`None` for a request made in process).
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Server side: whether the caller sent its message(s) compressed (declared a message
    /// encoding such as gzip).
    pub fn arrived_compressed(&self) -> bool {
        self.compressed
    }

    /// Records how the call arrived; set by server transports.
    pub(crate) fn set_arrival(&mut self, protocol: Protocol, compressed: bool) {
        self.protocol = Some(protocol);
        self.compressed = compressed;
    }

    /// A request as a server transport received it.
    pub(crate) fn from_wire(
        (method, kind): (Cow<'static, str>, MethodKind),
        metadata: Metadata,
        deadline: Option<Instant>,
        peer: Option<SocketAddr>,
        message: T,
    ) -> Request<T> {
        Request {
            message,
            metadata,
            deadline,
            method,
            peer,
            kind,
            compress: Compress::Auto,
            protocol: None,
            compressed: false,
            extensions: http::Extensions::new(),
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

/// A response message (or stream of messages) plus its metadata: leading metadata, sent
/// before the message (gRPC headers), and trailers, sent after it.
#[derive(Debug, Clone)]
pub struct Response<T> {
    message: T,
    metadata: Metadata,
    trailers: Metadata,
    compress: Compress,
}

impl<T> Response<T> {
    /// A response carrying `message` with empty metadata.
    pub fn new(message: T) -> Response<T> {
        Response {
            message,
            metadata: Metadata::new(),
            trailers: Metadata::new(),
            compress: Compress::Auto,
        }
    }

    /// A response from a message and metadata.
    pub fn from_parts(metadata: Metadata, message: T) -> Response<T> {
        Response {
            message,
            metadata,
            trailers: Metadata::new(),
            compress: Compress::Auto,
        }
    }

    /// Whether the reply is compressed on the wire (default [`Compress::Auto`]).
    pub fn compress(&self) -> Compress {
        self.compress
    }

    /// Asks the transport to compress the reply, or not; see [`Compress`].
    pub fn set_compress(&mut self, compress: Compress) {
        self.compress = compress;
    }

    /// Trailing metadata, sent after the message: gRPC trailers, the native STATUS frame's
    /// metadata, Connect's `trailer-` headers or end-of-stream metadata.
    pub fn trailers(&self) -> &Metadata {
        &self.trailers
    }

    /// Trailing metadata, mutably; see [`Response::trailers`].
    pub fn trailers_mut(&mut self) -> &mut Metadata {
        &mut self.trailers
    }

    /// Splits into leading metadata, message and trailers; used by transports.
    pub(crate) fn into_wire_parts(self) -> (Metadata, T, Metadata) {
        (self.metadata, self.message, self.trailers)
    }

    /// A response as a client transport received it.
    pub(crate) fn from_wire(metadata: Metadata, message: T, trailers: Metadata) -> Response<T> {
        Response {
            message,
            metadata,
            trailers,
            compress: Compress::Auto,
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

    /// Replaces the message, keeping the metadata and trailers.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            message: f(self.message),
            metadata: self.metadata,
            trailers: self.trailers,
            compress: self.compress,
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

/// Anything a generated client's client-streaming or bidirectional method accepts: a stream of
/// messages, or a [`Request`] around one (to add metadata or a deadline).
pub trait IntoStreamingRequest {
    /// The message type the stream yields.
    type Message;
    /// The stream of messages.
    type Stream: futures_util::Stream<Item = Self::Message> + Send + 'static;

    /// Wraps `self` into a request.
    fn into_streaming_request(self) -> Request<Self::Stream>;
}

impl<S> IntoStreamingRequest for S
where
    S: futures_util::Stream + Send + 'static,
{
    type Message = S::Item;
    type Stream = S;

    fn into_streaming_request(self) -> Request<S> {
        Request::new(self)
    }
}

impl<S> IntoStreamingRequest for Request<S>
where
    S: futures_util::Stream + Send + 'static,
{
    type Message = S::Item;
    type Stream = S;

    fn into_streaming_request(self) -> Request<S> {
        self
    }
}
