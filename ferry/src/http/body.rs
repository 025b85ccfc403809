//! HTTP bodies: one response body type for every HTTP reply, and bounded request reading.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use crate::Status;
use crate::call::{MessageStream, StreamItem};

/// The body of every HTTP response Ferry's server sends.
pub(crate) type ReplyBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body of `data` (if any) followed by `trailers` (if any).
pub(crate) fn reply_body(data: Option<Bytes>, trailers: Option<HeaderMap>) -> ReplyBody {
    // Bodies that know they are complete let hyper end the stream with the headers (what a
    // gRPC trailers-only response needs) or send a content-length.
    match (data, trailers) {
        (None, None) => Empty::new().boxed_unsync(),
        (Some(data), None) => Full::new(data).boxed_unsync(),
        (data, trailers) => frames_body(data, trailers),
    }
}

fn frames_body(data: Option<Bytes>, trailers: Option<HeaderMap>) -> ReplyBody {
    let frames = data
        .into_iter()
        .map(Frame::data)
        .chain(trailers.map(Frame::trailers))
        .map(Ok::<_, Infallible>);
    StreamBody::new(stream::iter(frames.collect::<Vec<_>>())).boxed_unsync()
}

/// A body streaming `frames` as they come.
pub(crate) fn streaming_body(frames: BoxStream<'static, Frame<Bytes>>) -> ReplyBody {
    StreamBody::new(frames.map(Ok::<_, Infallible>)).boxed_unsync()
}

/// What was read from a request or response body.
pub(crate) struct Collected {
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Reads a whole body, failing with `RESOURCE_EXHAUSTED` once it exceeds `limit` bytes.
pub(crate) async fn collect<B>(mut body: B, limit: usize) -> Result<Collected, Status>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut data = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Status::unavailable(format!("reading the body failed: {e}")))?;
        match frame.into_data() {
            Ok(chunk) => {
                let len = first.as_ref().map_or(0, Bytes::len) + data.len() + chunk.len();
                if len > limit {
                    return Err(Status::resource_exhausted(format!(
                        "message larger than the limit of {limit} bytes"
                    )));
                }
                // Keep the common single-chunk body without copying it.
                match first.take() {
                    None if data.is_empty() => first = Some(chunk),
                    Some(prev) => {
                        data.extend_from_slice(&prev);
                        data.extend_from_slice(&chunk);
                    }
                    None => data.extend_from_slice(&chunk),
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let data = first.unwrap_or_else(|| data.freeze());
    Ok(Collected { data, trailers })
}

/// The most of an unread request body drained before an early reply goes out.
pub(crate) const MAX_DRAIN: usize = 1024 * 1024;
/// The longest an early reply waits for an unread request body to arrive.
pub(crate) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends `response` for a request whose body the server did not read (a 404, 405, 415 or 400
/// decided from the headers alone).
///
/// Over HTTP/1.1 an unread body is a problem: the client may still be writing it, and a server
/// that closes the connection under it makes the client see a reset (`EPIPE`) instead of the
/// answer, on that request or the next one it sends on the connection. So the body is drained
/// first, up to [`MAX_DRAIN`] bytes within [`DRAIN_TIME`], and the connection is kept; a body
/// larger or slower than that makes the reply say `Connection: close`, so the client knows the
/// connection ends after it. HTTP/2 resets the stream cleanly and needs neither.
pub(crate) async fn answer_early(
    mut body: hyper::body::Incoming,
    version: http::Version,
    mut response: http::Response<ReplyBody>,
) -> http::Response<ReplyBody> {
    if version != http::Version::HTTP_11 && version != http::Version::HTTP_10 {
        return response;
    }
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > MAX_DRAIN {
                    return false;
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if !drained {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request body a client sends: one message (already framed for its protocol), or a stream
/// enveloped as it is sent.
pub(crate) enum RequestBody {
    Full(Option<Bytes>),
    /// Stops with [`SendError::Cancelled`] once the [`CallGuard`] from
    /// [`RequestBody::stream`] is dropped.
    Stream(super::envelope::Batches, tokio::sync::oneshot::Receiver<()>),
}

impl RequestBody {
    /// A streamed request body, and the guard that keeps it going: hold the guard as long as
    /// the caller holds the call (the call's future, then its reply stream, see
    /// [`CallGuard::guard_stream`]).
    ///
    /// The HTTP client keeps pulling a request body after the caller dropped the call, so
    /// without the guard the server would hear nothing until the caller's request stream
    /// ended, and would then see a clean end of the request stream (a complete request) for a
    /// call its caller had cancelled. With it, dropping the call fails the body at once with
    /// [`SendError::Cancelled`]: HTTP/2 resets the stream with `CANCEL`, HTTP/1.1 closes the
    /// connection.
    pub(crate) fn stream(batches: super::envelope::Batches) -> (RequestBody, CallGuard) {
        let (alive, cancelled) = tokio::sync::oneshot::channel();
        (
            RequestBody::Stream(batches, cancelled),
            CallGuard { _alive: alive },
        )
    }
}

/// Dropping it cancels the request body it came with (see [`RequestBody::stream`]).
pub(crate) struct CallGuard {
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl CallGuard {
    /// Keeps guarding the call while its reply `stream` is read: dropping the stream before its
    /// end cancels the call; once the stream has ended the guard is let go.
    pub(crate) fn guard_stream(self, stream: MessageStream) -> MessageStream {
        let mut guard = Some(self);
        MessageStream::new(stream.inspect(move |item| {
            if !matches!(item, Ok(StreamItem::Message(_) | StreamItem::Compress(_))) {
                drop(guard.take());
            }
        }))
    }
}

/// Why a request body stopped.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The request stream failed with this status.
    Failed(Status),
    /// The caller dropped the call. Carries HTTP/2's `CANCEL`, which hyper finds among the
    /// error's sources and resets the stream with.
    Cancelled(h2::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Failed(status) => write!(f, "the request stream failed: {status}"),
            SendError::Cancelled(_) => f.write_str("the caller cancelled the call"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Failed(_) => None,
            SendError::Cancelled(reason) => Some(reason),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, SendError>>> {
        match self.get_mut() {
            RequestBody::Full(data) => {
                std::task::Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
            // Request streams carry no trailers; a stream's are dropped.
            RequestBody::Stream(batches, cancelled) => {
                // Checked first: a caller that dropped the call and then ended its request
                // stream must not look like a complete request.
                if std::pin::Pin::new(cancelled).poll(cx).is_ready() {
                    let cancel = h2::Error::from(h2::Reason::CANCEL);
                    return std::task::Poll::Ready(Some(Err(SendError::Cancelled(cancel))));
                }
                batches
                    .poll_batch(cx)
                    .map(|batch| batch.map(|b| b.map(Frame::data).map_err(SendError::Failed)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Full(Some(data)) => http_body::SizeHint::with_exact(data.len() as u64),
            RequestBody::Full(None) => http_body::SizeHint::with_exact(0),
            RequestBody::Stream(..) => http_body::SizeHint::default(),
        }
    }
}
