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

use super::frame::{Frame, FrameError, HEADER_LEN, Kind, Limits};
use super::{MAX_DISCARD, Outbound, StreamIds, read_preface, write_loop};
use crate::call::{Body, CallResult, MethodKind, deadline};
use crate::{Code, Metadata, Request, Response, Status};

type Reply = CallResult;

struct PendingCall {
    reply: oneshot::Sender<Reply>,
    metadata: Metadata,
    body: Option<Bytes>,
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
            let _ = call.reply.send(Err(status.clone()));
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

    /// Sends one unary call and waits for its reply, the deadline, or the caller giving up.
    pub(crate) async fn call(&self, request: Request<Body>) -> Reply {
        if request.method_kind() != MethodKind::Unary {
            return Err(Status::unimplemented(
                "streaming calls over the native protocol are not supported yet; use grpc://",
            ));
        }
        let deadline = request.deadline();
        let timeout = deadline::wire_timeout(deadline)?;
        let (method, metadata, body) = request.into_call_parts();
        let body = body.into_message().await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        // Stream ids must reach the wire in increasing order, so the id is allocated and the
        // frame queued under the same lock (the queue send never blocks).
        let stream = {
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
            let call = Outbound::Call {
                stream,
                method,
                timeout,
                metadata,
                body,
            };
            if self.tx.send(call).is_err() {
                return Err(Status::unavailable("connection closed"));
            }
            pending.insert(
                stream,
                PendingCall {
                    reply: reply_tx,
                    metadata: Metadata::new(),
                    body: None,
                },
            );
            stream
        };
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
        if self.armed && self.conn.shared.pending().remove(&self.stream).is_some() {
            let _ = self.conn.tx.send(Outbound::Cancel {
                stream: self.stream,
                code: self.code,
            });
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
                            let _ = call.reply.send(Err(Status::resource_exhausted(format!(
                                "response message of {len} bytes exceeds the limit of {max} bytes"
                            ))));
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
        } => {
            if let Some(call) = pending.get_mut(&stream) {
                call.metadata.extend(headers.metadata);
            }
        }
        Frame::Data { stream, data, .. } => {
            if let Some(call) = pending.get_mut(&stream) {
                call.body = Some(data);
            }
        }
        Frame::Status {
            stream,
            status,
            metadata,
        } => {
            if let Some(call) = pending.remove(&stream) {
                let reply = if status.code() == Code::Ok {
                    Ok(Response::from_wire(
                        call.metadata,
                        Body::Message(call.body.unwrap_or_default()),
                        metadata,
                    ))
                } else {
                    Err(status.with_metadata(metadata))
                };
                let _ = call.reply.send(reply);
            }
        }
        Frame::Cancel { stream, code } => {
            if let Some(call) = pending.remove(&stream) {
                let _ = call
                    .reply
                    .send(Err(Status::new(code, "the server cancelled the call")));
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
        Frame::Ping { ack: true, .. } | Frame::WindowUpdate { .. } => {}
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
