//! Message bodies: one encoded message for unary calls, a stream of them for streaming calls.
//!
//! Every protocol hands the server (and gets from the client) a [`Body`], so one tower stack
//! carries unary and streaming calls alike. Streams end with optional trailing metadata
//! ([`StreamItem::Trailers`]) or an error [`Status`].

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Metadata, Status};

/// The encoded message(s) of a request or response.
pub enum Body {
    /// Exactly one message: unary requests and responses.
    Message(Bytes),
    /// Any number of messages: streaming requests and responses.
    Stream(MessageStream),
}

impl Body {
    /// An empty single message.
    pub fn empty() -> Body {
        Body::Message(Bytes::new())
    }

    /// A copy of a single-message body; `None` for a stream, which cannot be replayed.
    pub fn try_clone(&self) -> Option<Body> {
        match self {
            Body::Message(bytes) => Some(Body::Message(bytes.clone())),
            Body::Stream(_) => None,
        }
    }

    /// The single message, or `None` for a stream.
    pub fn as_message(&self) -> Option<&Bytes> {
        match self {
            Body::Message(bytes) => Some(bytes),
            Body::Stream(_) => None,
        }
    }

    /// The body as a stream: a stream unchanged, a single message as a one-item stream.
    pub fn into_stream(self) -> MessageStream {
        match self {
            Body::Message(bytes) => MessageStream::once(bytes),
            Body::Stream(stream) => stream,
        }
    }

    /// The single message of this body; a stream must hold exactly one message (what a unary
    /// method receives from a protocol that always streams).
    pub async fn into_message(self) -> Result<Bytes, Status> {
        self.into_single().await.map(|(message, _)| message)
    }

    /// The single message of this body and the trailers a stream ended with.
    pub async fn into_single(self) -> Result<(Bytes, Metadata), Status> {
        match self {
            Body::Message(bytes) => Ok((bytes, Metadata::new())),
            Body::Stream(mut stream) => {
                let mut first = None;
                let mut trailers = Metadata::new();
                while let Some(item) = stream.next().await {
                    match item? {
                        StreamItem::Message(bytes) if first.is_none() => first = Some(bytes),
                        StreamItem::Message(_) => {
                            return Err(Status::unimplemented(
                                "a single-message body held more than one message",
                            ));
                        }
                        StreamItem::Trailers(more) => trailers.extend(more),
                        StreamItem::Compress(_) => {}
                    }
                }
                let first = first.ok_or_else(|| {
                    Status::unimplemented("a single-message body held no message")
                })?;
                Ok((first, trailers))
            }
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Message(bytes)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Message(bytes) => f.debug_tuple("Message").field(&bytes.len()).finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// One item of a [`MessageStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// One encoded message.
    Message(Bytes),
    /// Trailing metadata; the last item of a stream that ends well.
    Trailers(Metadata),
    /// Whether the messages after this item are compressed on the wire (a reply stream's
    /// per-message choice, as gRPC allows; protocols without per-message compression ignore
    /// it).
    Compress(Compress),
}

/// Whether a reply's messages are compressed on the wire, where the protocol and the caller
/// allow it (gRPC, gRPC-Web and the Connect protocol, with gzip; the native protocol never
/// compresses). Set it with [`Response::set_compress`](crate::Response::set_compress).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compress {
    /// The transport decides: gRPC compresses a reply when the request was compressed; the
    /// Connect protocol when the reply is at least 1 KiB. Only if the caller accepts gzip.
    #[default]
    Auto,
    /// Compress every message, if the caller accepts gzip.
    Always,
    /// Send every message uncompressed.
    Never,
}

type Inner = Pin<Box<dyn Stream<Item = Result<StreamItem, Status>> + Send + 'static>>;

/// A stream of encoded messages; it ends after its trailers, or with an error.
pub struct MessageStream {
    inner: Inner,
}

impl MessageStream {
    /// Wraps any stream of items.
    pub fn new<S>(stream: S) -> MessageStream
    where
        S: Stream<Item = Result<StreamItem, Status>> + Send + 'static,
    {
        MessageStream {
            inner: Box::pin(stream),
        }
    }

    /// A stream of the given messages.
    pub fn from_messages<S>(messages: S) -> MessageStream
    where
        S: Stream<Item = Result<Bytes, Status>> + Send + 'static,
    {
        MessageStream::new(messages.map(|m| m.map(StreamItem::Message)))
    }

    /// A stream holding one message.
    pub fn once(message: Bytes) -> MessageStream {
        MessageStream::new(futures_util::stream::once(std::future::ready(Ok(
            StreamItem::Message(message),
        ))))
    }

    /// A stream that ends at once.
    pub fn empty() -> MessageStream {
        MessageStream::new(futures_util::stream::empty())
    }

    /// A stream that fails at once with `status`.
    pub fn error(status: Status) -> MessageStream {
        MessageStream::new(futures_util::stream::once(std::future::ready(Err(status))))
    }
}

impl Stream for MessageStream {
    type Item = Result<StreamItem, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageStream")
    }
}

/// The stream of typed messages a streaming handler answers with: any stream of
/// `Result<T, Status>`, boxed. The stream ends the call: after its last item the call ends
/// well, after an `Err` it ends with that status.
///
/// ```
/// use futures_util::stream;
/// let numbers: ferry::ResponseStream<u32> = ferry::ResponseStream::new(stream::iter([Ok(1), Ok(2)]));
/// ```
pub struct ResponseStream<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>,
}

impl<T> ResponseStream<T> {
    /// Boxes any stream of messages.
    pub fn new<S>(stream: S) -> ResponseStream<T>
    where
        S: Stream<Item = Result<T, Status>> + Send + 'static,
    {
        ResponseStream {
            inner: Box::pin(stream),
        }
    }
}

impl<T> Stream for ResponseStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<T> std::fmt::Debug for ResponseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseStream")
    }
}

/// An inbound stream of typed messages: what a streaming handler receives, and what a client
/// gets back from a server-streaming or bidirectional call.
///
/// ```no_run
/// # async fn demo(mut numbers: ferry::Streaming<u32>) -> Result<(), ferry::Status> {
/// while let Some(n) = numbers.message().await? {
///     println!("{n}");
/// }
/// println!("trailers: {:?}", numbers.trailers());
/// # Ok(()) }
/// ```
/// (`u32` stands in for a generated message type.)
pub struct Streaming<T> {
    inner: MessageStream,
    trailers: Option<Metadata>,
    done: bool,
    decode: fn(Bytes) -> Result<T, Status>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Streaming<T> {
    /// Decodes each message of `inner` as a `T`.
    pub fn new(inner: MessageStream) -> Streaming<T> {
        Streaming {
            inner,
            trailers: None,
            done: false,
            decode: |bytes| {
                T::decode(bytes)
                    .map_err(|e| Status::internal(format!("cannot decode a streamed message: {e}")))
            },
            _marker: PhantomData,
        }
    }
}

impl<T> Streaming<T> {
    /// The next message; `Ok(None)` once the stream has ended well.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        self.next().await.transpose()
    }

    /// The trailing metadata, once the stream has ended well.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    /// The encoded stream underneath.
    pub fn into_inner(self) -> MessageStream {
        self.inner
    }
}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(StreamItem::Message(bytes))) => {
                    let decoded = (self.decode)(bytes);
                    if decoded.is_err() {
                        self.done = true;
                    }
                    return Poll::Ready(Some(decoded));
                }
                Some(Ok(StreamItem::Trailers(metadata))) => match &mut self.trailers {
                    Some(existing) => existing.extend(metadata),
                    None => self.trailers = Some(metadata),
                },
                Some(Ok(StreamItem::Compress(_))) => {}
                Some(Err(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    self.done = true;
                    if self.trailers.is_none() {
                        self.trailers = Some(Metadata::new());
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streaming_decodes_keeps_trailers_and_stops_at_errors() {
        let mut md = Metadata::new();
        md.insert("k", "v");
        let items = vec![
            Ok(StreamItem::Message(Bytes::from(
                prost::Message::encode_to_vec(&7u32),
            ))),
            Ok(StreamItem::Trailers(md.clone())),
        ];
        let mut s: Streaming<u32> =
            Streaming::new(MessageStream::new(futures_util::stream::iter(items)));
        assert_eq!(s.message().await.unwrap(), Some(7));
        assert_eq!(s.message().await.unwrap(), None);
        assert_eq!(s.trailers(), Some(&md));

        let items = vec![
            Err(Status::aborted("x")),
            Ok(StreamItem::Message(Bytes::new())),
        ];
        let mut s: Streaming<u32> =
            Streaming::new(MessageStream::new(futures_util::stream::iter(items)));
        assert!(s.message().await.is_err());
        assert_eq!(s.message().await.unwrap(), None);
        assert_eq!(s.trailers(), None);
    }

    #[tokio::test]
    async fn unary_bodies_take_exactly_one_message() {
        let one = Body::Stream(MessageStream::once(Bytes::from_static(b"a")));
        assert_eq!(one.into_message().await.unwrap(), Bytes::from_static(b"a"));
        let none = Body::Stream(MessageStream::empty());
        assert!(none.into_message().await.is_err());
        let two = Body::Stream(MessageStream::from_messages(futures_util::stream::iter(
            vec![Ok(Bytes::new()), Ok(Bytes::new())],
        )));
        assert!(two.into_message().await.is_err());
    }
}
