//! One multiplexed native-protocol client connection per endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::flow::{Credit, InboundStream, ReceiveWindow};
use super::frame::{Frame, FrameError, HEADER_LEN, Kind, Limits};
use super::{MAX_DISCARD, Outbound, StreamIds, read_preface, write_loop};
use crate::call::{Body, CallResult, MessageStream, StreamItem, deadline};
use crate::{Code, Metadata, Request, Response, Status};

type Reply = CallResult;

/// A call waiting for (the rest of) its reply.
enum PendingCall {
    /// One reply message: resolved on STATUS.
    Unary {
        reply: oneshot::Sender<Reply>,
        metadata: Metadata,
        body: Option<Bytes>,
    },
    /// A streamed reply (or a streamed request): resolved when the reply starts, then fed.
    Streaming(StreamingCall),
}

struct StreamingCall {
    /// Resolves the call with the reply's leading metadata; taken when the reply starts.
    head: Option<oneshot::Sender<Result<Metadata, Status>>>,
    /// The reply's messages, trailers or error, for the caller's stream.
    items: mpsc::UnboundedSender<Result<StreamItem, Status>>,
    /// How much more the server may send.
    window: ReceiveWindow,
    /// The credit of the request stream.
    credit: Arc<Credit>,
    /// The task sending the request stream, if there is one.
    sender: Option<AbortHandle>,
}

impl StreamingCall {
    /// Starts the reply (if not started) with `metadata`.
    fn start(&mut self, metadata: Metadata) {
        if let Some(head) = self.head.take() {
            let _ = head.send(Ok(metadata));
        }
    }

    /// Ends the call: the last item goes to whoever waits (the call or its stream).
    fn end(mut self, last: Result<StreamItem, Status>) {
        self.credit.close();
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
        match (self.head.take(), last) {
            (Some(head), Err(status)) => {
                let _ = head.send(Err(status));
            }
            (Some(head), Ok(item)) => {
                let _ = head.send(Ok(Metadata::new()));
                let _ = self.items.send(Ok(item));
            }
            (None, last) => {
                let _ = self.items.send(last);
            }
        }
    }
}

impl PendingCall {
    fn fail(self, status: Status) {
        match self {
            PendingCall::Unary { reply, .. } => {
                let _ = reply.send(Err(status));
            }
            PendingCall::Streaming(call) => call.end(Err(status)),
        }
    }
}

/// Calls awaiting their reply, by stream id.
type Pending = HashMap<u32, PendingCall, StreamIds>;

struct Shared {
    pending: Mutex<Pending>,
    /// Set once the connection can take no new calls (closed, or GOAWAY received).
    closed: AtomicBool,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails every pending call whose stream id is above `above`.
    fn fail_pending(&self, above: u32, status: &Status) {
        fail_above(&mut self.pending(), above, status);
    }
}

/// Fails every call in `pending` whose stream id is above `above`.
fn fail_above(pending: &mut Pending, above: u32, status: &Status) {
    let ids: Vec<u32> = pending.keys().copied().filter(|id| *id > above).collect();
    for id in ids {
        if let Some(call) = pending.remove(&id) {
            call.fail(status.clone());
        }
    }
}

/// An established connection to one endpoint.
pub(crate) struct Connection {
    tx: mpsc::UnboundedSender<Outbound>,
    shared: Arc<Shared>,
    next_stream: AtomicU32,
}

impl Connection {
    /// Opens a TCP connection to `addr` and starts its reader and writer tasks.
    pub(crate) async fn connect(addr: SocketAddr, limits: Limits) -> Result<Connection, Status> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
        stream.set_nodelay(true)?;
        let (mut reader, writer) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            if let Err(e) = write_loop(writer, rx).await {
                tracing::debug!(%addr, "write error: {e}");
            }
        });
        let mut buf = BytesMut::with_capacity(16 * 1024);
        read_preface(&mut reader, &mut buf).await?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            closed: AtomicBool::new(false),
        });
        let reader_shared = shared.clone();
        let weak_tx = tx.downgrade();
        tokio::spawn(async move {
            let reason = read_loop(&mut reader, buf, &reader_shared, &weak_tx, &limits).await;
            tracing::debug!(%addr, "connection closed: {reason}");
            reader_shared.closed.store(true, Ordering::Release);
            reader_shared.fail_pending(0, &reason);
        });
        Ok(Connection {
            tx,
            shared,
            next_stream: AtomicU32::new(1),
        })
    }

    /// Whether new calls may start on this connection.
    pub(crate) fn is_usable(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    /// Allocates the next stream id and queues `first` for it, under the pending-table lock
    /// (ids must reach the wire in increasing order; the queue send never blocks), then
    /// registers `call` for its reply.
    fn open(&self, first: impl FnOnce(u32) -> Outbound, call: PendingCall) -> Result<u32, Status> {
        let mut pending = self.shared.pending();
        if !self.is_usable() {
            return Err(Status::unavailable("connection is closing"));
        }
        let stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
        if stream >= u32::MAX - 2 {
            self.shared.closed.store(true, Ordering::Release);
            return Err(Status::unavailable(
                "connection ran out of stream ids; reconnecting",
            ));
        }
        if self.tx.send(first(stream)).is_err() {
            return Err(Status::unavailable("connection closed"));
        }
        pending.insert(stream, call);
        Ok(stream)
    }

    /// Sends one call and waits for its reply (or, for a streamed reply, its start), the
    /// deadline, or the caller giving up.
    pub(crate) async fn call(&self, request: Request<Body>) -> Reply {
        let kind = request.method_kind();
        if kind.client_streams() || kind.server_streams() {
            return self.call_streaming(request).await;
        }
        let deadline = request.deadline();
        let timeout = deadline::wire_timeout(deadline)?;
        let (method, metadata, body) = request.into_call_parts();
        let body = body.into_message().await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let call = PendingCall::Unary {
            reply: reply_tx,
            metadata: Metadata::new(),
            body: None,
        };
        let first = |stream| Outbound::Call {
            stream,
            method,
            timeout,
            metadata,
            body,
        };
        let stream = self.open(first, call)?;
        let mut guard = CancelOnDrop {
            conn: self,
            stream,
            code: Code::Cancelled,
            armed: true,
        };
        let received = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), reply_rx).await {
                Ok(r) => r,
                Err(_) => {
                    guard.code = Code::DeadlineExceeded;
                    return Err(deadline::exceeded());
                }
            },
            None => reply_rx.await,
        };
        guard.armed = false;
        received.unwrap_or_else(|_| Err(Status::unavailable("connection closed")))
    }

    /// A call that streams in either direction: the request stream is sent as the server
    /// grants credit (on its own task), and the reply is a stream the caller reads.
    async fn call_streaming(&self, request: Request<Body>) -> Reply {
        let deadline = request.deadline();
        let timeout = deadline::wire_timeout(deadline)?;
        let (method, metadata, body) = request.into_call_parts();
        let (head_tx, head_rx) = oneshot::channel();
        let (items_tx, items_rx) = mpsc::unbounded_channel();
        let window = ReceiveWindow::new();
        let credit = Arc::new(Credit::new());
        let call = PendingCall::Streaming(StreamingCall {
            head: Some(head_tx),
            items: items_tx,
            window: window.clone(),
            credit: credit.clone(),
            sender: None,
        });
        let (stream, requests) = match body {
            Body::Message(message) => {
                let first = |stream| Outbound::Call {
                    stream,
                    method,
                    timeout,
                    metadata,
                    body: message,
                };
                (self.open(first, call)?, None)
            }
            Body::Stream(requests) => {
                let first = |stream| Outbound::Open {
                    stream,
                    method,
                    timeout,
                    metadata,
                };
                (self.open(first, call)?, Some(requests))
            }
        };
        if let Some(requests) = requests {
            let sender = tokio::spawn(send_requests(
                stream,
                requests,
                credit,
                self.tx.downgrade(),
                Arc::downgrade(&self.shared),
            ));
            if let Some(PendingCall::Streaming(call)) = self.shared.pending().get_mut(&stream) {
                call.sender = Some(sender.abort_handle());
            } else {
                // The call already ended.
                sender.abort();
            }
        }
        let mut guard = CancelOnDrop {
            conn: self,
            stream,
            code: Code::Cancelled,
            armed: true,
        };
        let head = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), head_rx).await {
                Ok(head) => head,
                Err(_) => {
                    guard.code = Code::DeadlineExceeded;
                    return Err(deadline::exceeded());
                }
            },
            None => head_rx.await,
        };
        guard.armed = false;
        let metadata = head.unwrap_or_else(|_| Err(Status::unavailable("connection closed")))?;
        let shared = Arc::downgrade(&self.shared);
        let tx = self.tx.downgrade();
        let messages = InboundStream::new(items_rx, stream, self.tx.downgrade(), window)
            .on_drop(move || cancel(&shared, &tx, stream, Code::Cancelled));
        let messages = deadline::guard_stream(MessageStream::new(messages), deadline);
        Ok(Response::from_wire(
            metadata,
            Body::Stream(messages),
            Metadata::new(),
        ))
    }
}

/// Sends a call's request stream as the server grants credit, then half-closes. A failing
/// request stream cancels the call with its status.
async fn send_requests(
    stream: u32,
    mut requests: MessageStream,
    credit: Arc<Credit>,
    tx: mpsc::WeakUnboundedSender<Outbound>,
    shared: std::sync::Weak<Shared>,
) {
    let Some(sender) = tx.upgrade() else { return };
    match super::flow::send_stream(stream, &mut requests, &credit, &sender).await {
        // The native protocol sends no request trailers.
        Ok(_trailers) => {
            let _ = sender.send(Outbound::HalfClose { stream });
        }
        Err(status) if status.code() == Code::Cancelled && credit.is_closed() => {}
        Err(status) => {
            // The request stream failed: the call fails with its status.
            if let Some(shared) = shared.upgrade()
                && let Some(call) = shared.pending().remove(&stream)
            {
                let code = status.code();
                let _ = sender.send(Outbound::Cancel { stream, code });
                call.fail(status);
            }
        }
    }
}

/// Cancels `stream` on the server if it is still pending (the caller gave up on it).
fn cancel(
    shared: &std::sync::Weak<Shared>,
    tx: &mpsc::WeakUnboundedSender<Outbound>,
    stream: u32,
    code: Code,
) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let removed = shared.pending().remove(&stream);
    if let Some(call) = removed {
        if let Some(tx) = tx.upgrade() {
            let _ = tx.send(Outbound::Cancel { stream, code });
        }
        call.fail(Status::cancelled("the caller gave up on the call"));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// Cancels the stream on the server when a call is abandoned (dropped future or deadline).
struct CancelOnDrop<'a> {
    conn: &'a Connection,
    stream: u32,
    code: Code,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = self.conn.shared.pending().remove(&self.stream);
        if let Some(call) = removed {
            let _ = self.conn.tx.send(Outbound::Cancel {
                stream: self.stream,
                code: self.code,
            });
            if let PendingCall::Streaming(call) = call {
                call.end(Err(Status::cancelled("the caller gave up on the call")));
            }
        }
    }
}

async fn read_loop(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    shared: &Shared,
    tx: &mpsc::WeakUnboundedSender<Outbound>,
    limits: &Limits,
) -> Status {
    // Bytes of an oversized reply still to skip.
    let mut discard = 0usize;
    loop {
        {
            // One lock for every frame of this read (usually the replies of many calls).
            let mut pending = shared.pending();
            loop {
                if discard > 0 {
                    let skip = discard.min(buf.len());
                    buf.advance(skip);
                    discard -= skip;
                    if discard > 0 {
                        break;
                    }
                }
                match Frame::decode(&mut buf, limits) {
                    Ok(Some(frame)) => {
                        if let Some(reason) = on_frame(frame, &mut pending, shared, tx) {
                            return reason;
                        }
                    }
                    Ok(None) => break,
                    // A reply too large for this client fails only its call.
                    Err(FrameError::FrameTooLarge {
                        len,
                        max,
                        kind: Some(Kind::Headers | Kind::Data | Kind::Status),
                        stream,
                    }) if len <= MAX_DISCARD => {
                        buf.advance(HEADER_LEN);
                        discard = len;
                        if let Some(call) = pending.remove(&stream) {
                            if let (PendingCall::Streaming(_), Some(tx)) = (&call, tx.upgrade()) {
                                let code = Code::ResourceExhausted;
                                let _ = tx.send(Outbound::Cancel { stream, code });
                            }
                            call.fail(Status::resource_exhausted(format!(
                                "response message of {len} bytes exceeds the limit of {max} bytes"
                            )));
                        }
                    }
                    Err(e) => {
                        return Status::unavailable(format!("protocol error from server: {e}"));
                    }
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return Status::unavailable("connection closed by the server"),
            Ok(_) => {}
            Err(e) => return Status::unavailable(format!("connection lost: {e}")),
        }
    }
}

/// Applies one frame from the server; returns a reason when the connection must close.
fn on_frame(
    frame: Frame,
    pending: &mut Pending,
    shared: &Shared,
    tx: &mpsc::WeakUnboundedSender<Outbound>,
) -> Option<Status> {
    match frame {
        Frame::Headers {
            stream, headers, ..
        } => match pending.get_mut(&stream) {
            Some(PendingCall::Unary { metadata, .. }) => metadata.extend(headers.metadata),
            Some(PendingCall::Streaming(call)) => call.start(headers.metadata),
            None => {}
        },
        Frame::Data { stream, data, .. } => match pending.get_mut(&stream) {
            Some(PendingCall::Unary { body, .. }) => *body = Some(data),
            Some(PendingCall::Streaming(call)) => {
                if !call.window.receive(data.len()) {
                    if let Some(call) = pending.remove(&stream) {
                        if let Some(tx) = tx.upgrade() {
                            let code = Code::ResourceExhausted;
                            let _ = tx.send(Outbound::Cancel { stream, code });
                        }
                        call.fail(Status::resource_exhausted(
                            "flow control: the server sent DATA without credit",
                        ));
                    }
                    return None;
                }
                call.start(Metadata::new());
                let _ = call.items.send(Ok(StreamItem::Message(data)));
            }
            None => {}
        },
        Frame::Status {
            stream,
            status,
            metadata,
        } => match pending.remove(&stream) {
            Some(PendingCall::Unary {
                reply,
                metadata: leading,
                body,
            }) => {
                let result = if status.code() == Code::Ok {
                    Ok(Response::from_wire(
                        leading,
                        Body::Message(body.unwrap_or_default()),
                        metadata,
                    ))
                } else {
                    Err(status.with_metadata(metadata))
                };
                let _ = reply.send(result);
            }
            Some(PendingCall::Streaming(call)) => {
                let last = if status.code() == Code::Ok {
                    Ok(StreamItem::Trailers(metadata))
                } else {
                    Err(status.with_metadata(metadata))
                };
                call.end(last);
            }
            None => {}
        },
        Frame::WindowUpdate { stream, increment } => {
            if let Some(PendingCall::Streaming(call)) = pending.get(&stream) {
                call.credit.grant(increment);
            }
        }
        Frame::Cancel { stream, code } => {
            if let Some(call) = pending.remove(&stream) {
                call.fail(Status::new(code, "the server cancelled the call"));
            }
        }
        Frame::Ping {
            ack: false,
            payload,
        } => {
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Outbound::Ping { ack: true, payload });
            }
        }
        Frame::GoAway {
            last_stream,
            code,
            message,
        } => {
            shared.closed.store(true, Ordering::Release);
            let status = Status::unavailable(format!(
                "server going away ({code}: {message}); the call was not processed"
            ));
            fail_above(pending, last_stream, &status);
        }
        Frame::Ping { ack: true, .. } => {}
    }
    None
}

/// Exponential reconnect backoff: 50 ms doubling to 2 s, reset by a successful connect.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    /// `Some(wait)` while a reconnect attempt must not be made yet.
    pub(crate) fn wait(&self) -> Option<Duration> {
        let at = self.retry_at?;
        let now = Instant::now();
        (at > now).then(|| at - now)
    }

    pub(crate) fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = Self::BASE.saturating_mul(1 << self.failures.min(16).saturating_sub(1));
        let delay = exp.min(Self::MAX);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::default();
        assert!(b.wait().is_none());
        assert_eq!(b.failed(), Duration::from_millis(50));
        assert_eq!(b.failed(), Duration::from_millis(100));
        for _ in 0..20 {
            b.failed();
        }
        assert_eq!(b.failed(), Duration::from_secs(2));
        assert!(b.wait().is_some());
        b.succeeded();
        assert!(b.wait().is_none());
    }
}
