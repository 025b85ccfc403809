//! Serving one native-protocol connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::flow::{Credit, InboundStream, ReceiveWindow};
use super::frame::{self, Frame, FrameError, HEADER_LEN, Headers, Kind, Limits, PREFACE};
use super::{MAX_BATCH, MAX_DISCARD, Outbound, StreamIds, encode_reply, read_preface};
use crate::call::{Body, BoxService, MessageStream, MethodKind, Protocol, StreamItem, deadline};
use crate::server::{Dispatch, Shutdown, begin, finish, guarded, handler_panicked};
use crate::{Code, Request, Status};

/// How long a new connection may take to send its preface before it is closed.
pub(crate) const PREFACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Per-connection settings of the native protocol on the server.
#[derive(Clone, Debug)]
pub(crate) struct ConnConfig {
    pub limits: Limits,
    pub max_concurrent_streams: usize,
}

/// A call's interned method path and how it streams.
type Route = (std::borrow::Cow<'static, str>, MethodKind);

/// A call running on its own task.
struct Active {
    task: AbortHandle,
    /// Where the client's further messages go (client-streaming and bidirectional calls until
    /// the client half-closes), and how much it may still send.
    inbound: Option<(
        mpsc::UnboundedSender<Result<StreamItem, Status>>,
        ReceiveWindow,
    )>,
    /// The credit for the reply stream, granted by the client's WINDOW_UPDATEs.
    credit: Option<Arc<Credit>>,
}

impl Active {
    fn stop(self) {
        self.task.abort();
        if let Some(credit) = self.credit {
            credit.close();
        }
    }
}

/// One connection's state, owned by the single task that serves it.
///
/// That task reads and decodes frames, runs each handler's first poll inline (most unary
/// handlers finish there, so they need no task of their own), spawns a task only for a handler
/// that has to wait, and encodes every reply into one buffer written once per batch of input.
struct Conn {
    /// Clones go to spawned handlers, which send their replies back to the connection task.
    replies: mpsc::UnboundedSender<Outbound>,
    dispatch: Dispatch,
    /// This connection's own clone of the layered service (called without a clone per call).
    svc: BoxService,
    peer: Option<SocketAddr>,
    cfg: Arc<ConnConfig>,
    /// Calls running on their own task, by stream id.
    active: HashMap<u32, Active, StreamIds>,
    /// Calls whose HEADERS arrived and whose one request message has not (unary and
    /// server-streaming methods).
    open: HashMap<u32, (Headers, Route), StreamIds>,
    last_stream: u32,
    draining: bool,
    /// Frames waiting to be written.
    out: BytesMut,
    /// Bytes of an oversized frame's payload still to skip.
    discard: usize,
}

/// Serves a connection whose first bytes (possibly the whole preface) are already in `buf`.
pub(crate) async fn serve_connection<R, W>(
    mut reader: R,
    mut writer: W,
    mut buf: BytesMut,
    peer: Option<SocketAddr>,
    dispatch: Dispatch,
    cfg: Arc<ConnConfig>,
    shutdown: Shutdown,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(PREFACE_TIMEOUT, read_preface(&mut reader, &mut buf)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(?peer, "closing connection: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(
                ?peer,
                "closing connection: no preface within {PREFACE_TIMEOUT:?}"
            );
            return;
        }
    }
    let (replies, mut rx) = mpsc::unbounded_channel();
    let mut out = BytesMut::with_capacity(16 * 1024);
    out.extend_from_slice(&PREFACE);
    let mut conn = Conn {
        replies,
        svc: dispatch.service(),
        dispatch,
        peer,
        cfg,
        active: HashMap::default(),
        open: HashMap::default(),
        last_stream: 0,
        draining: false,
        out,
        discard: 0,
    };
    let clean = conn
        .run(&mut reader, &mut writer, &mut buf, &mut rx, &shutdown)
        .await;
    if !clean {
        conn.abort_all();
    }
    // Whatever is still queued (a GOAWAY, replies) goes out before the write half closes.
    let finish = async {
        writer.write_all(&conn.out).await?;
        writer.shutdown().await
    };
    tokio::select! {
        biased;
        _ = shutdown.force.cancelled() => {}
        written = finish => {
            if let Err(e) = written {
                tracing::debug!(?peer, "write error: {e}");
            }
        }
    }
}

impl Conn {
    /// Runs until the peer leaves or shutdown completes; `true` when every call finished.
    async fn run<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        buf: &mut BytesMut,
        rx: &mut mpsc::UnboundedReceiver<Outbound>,
        shutdown: &Shutdown,
    ) -> bool
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            loop {
                if self.discard > 0 {
                    let skip = self.discard.min(buf.len());
                    buf.advance(skip);
                    self.discard -= skip;
                    if self.discard > 0 {
                        break;
                    }
                }
                match Frame::decode(buf, &self.cfg.limits) {
                    Ok(Some(frame)) => {
                        if let Err(status) = self.on_frame(frame).await {
                            self.protocol_error(status);
                            return false;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if let Err(status) = self.on_oversized(e, buf) {
                            self.protocol_error(status);
                            return false;
                        }
                    }
                }
            }
            if !self.out.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.force.cancelled() => return false,
                    written = writer.write_all(&self.out) => if let Err(e) = written {
                        tracing::debug!(peer = ?self.peer, "write error: {e}");
                        return false;
                    },
                }
                self.out.clear();
                if self.out.capacity() > 4 * MAX_BATCH {
                    self.out = BytesMut::with_capacity(16 * 1024);
                }
            }
            if self.draining && self.open.is_empty() && self.active.is_empty() {
                return true;
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            tokio::select! {
                biased;
                _ = shutdown.force.cancelled() => return false,
                _ = shutdown.drain.cancelled(), if !self.draining => self.start_draining(),
                reply = rx.recv() => {
                    // `self.replies` keeps the channel open, so there is always a reply here.
                    if let Some(reply) = reply {
                        self.on_reply(reply);
                    }
                    // Let other handlers that are ready finish too, so their replies share
                    // this write.
                    tokio::task::yield_now().await;
                    while self.out.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(reply) => self.on_reply(reply),
                            Err(_) => break,
                        }
                    }
                }
                read = reader.read_buf(buf) => match read {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(peer = ?self.peer, "read error: {e}");
                        return false;
                    }
                },
            }
        }
    }

    /// Output of a call running on its own task; dropped if the call was cancelled.
    fn on_reply(&mut self, reply: Outbound) {
        match reply {
            Outbound::Reply { stream, result } => {
                if let Some(active) = self.active.remove(&stream) {
                    active.stop();
                    encode_reply(&mut self.out, stream, result);
                }
            }
            Outbound::Status { stream, outcome } => {
                if let Some(active) = self.active.remove(&stream) {
                    active.stop();
                    super::encode_end(&mut self.out, stream, outcome);
                }
            }
            other => {
                if self.active.contains_key(&other.stream()) {
                    other.encode(&mut self.out);
                }
            }
        }
    }

    /// Fails only the offending stream when a request's message or metadata is over the limit
    /// (skipping the rest of its frame); any other decoding error ends the connection.
    fn on_oversized(&mut self, error: FrameError, buf: &mut BytesMut) -> Result<(), Status> {
        let (stream, kind, what) = match &error {
            FrameError::FrameTooLarge {
                len,
                max,
                kind: Some(kind @ (Kind::Headers | Kind::Data)),
                stream,
            } if *len <= MAX_DISCARD => {
                buf.advance(HEADER_LEN);
                self.discard = *len;
                let what =
                    format!("request message of {len} bytes exceeds the limit of {max} bytes");
                (*stream, *kind, what)
            }
            FrameError::MetadataTooLarge { len, max, stream } => {
                let what =
                    format!("request metadata of {len} bytes exceeds the limit of {max} bytes");
                (*stream, Kind::Headers, what)
            }
            _ => return Err(Status::internal(format!("protocol error: {error}"))),
        };
        match kind {
            Kind::Headers => {
                if stream % 2 == 0 || stream <= self.last_stream {
                    return Err(Status::internal(format!(
                        "stream id {stream} is not odd and increasing"
                    )));
                }
                self.last_stream = stream;
            }
            _ => {
                // DATA for a stream we no longer track (cancelled or refused) is skipped quietly.
                let known = self.open.remove(&stream).is_some();
                let running = self.active.remove(&stream).map(Active::stop).is_some();
                if !known && !running {
                    return Ok(());
                }
            }
        }
        self.reply(stream, Status::resource_exhausted(what));
        Ok(())
    }

    fn start_draining(&mut self) {
        self.draining = true;
        frame::encode_goaway(
            &mut self.out,
            self.last_stream,
            Code::Unavailable,
            "server is shutting down",
        );
    }

    fn protocol_error(&mut self, status: Status) {
        tracing::debug!(peer = ?self.peer, "closing connection: {status}");
        frame::encode_goaway(
            &mut self.out,
            self.last_stream,
            status.code(),
            status.message(),
        );
    }

    fn abort_all(&mut self) {
        for (_, active) in self.active.drain() {
            active.stop();
        }
    }

    fn reply(&mut self, stream: u32, status: Status) {
        encode_reply(&mut self.out, stream, Err(status));
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Status> {
        match frame {
            Frame::Headers {
                stream,
                end_stream,
                headers,
            } => {
                if let Some(active) = self.active.get_mut(&stream) {
                    // HEADERS on a running stream: the client half-closes its messages.
                    if !end_stream || active.inbound.is_none() {
                        return Err(Status::internal(format!(
                            "HEADERS on running stream {stream} must half-close it"
                        )));
                    }
                    active.inbound = None;
                    return Ok(());
                }
                if stream % 2 == 0 || stream <= self.last_stream {
                    return Err(Status::internal(format!(
                        "stream id {stream} is not odd and increasing"
                    )));
                }
                self.last_stream = stream;
                if self.draining {
                    self.reply(stream, Status::unavailable("server is shutting down"));
                    return Ok(());
                }
                let in_flight = self.open.len() + self.active.len();
                if in_flight >= self.cfg.max_concurrent_streams {
                    self.reply(
                        stream,
                        Status::resource_exhausted(format!(
                            "too many concurrent calls on this connection (limit {})",
                            self.cfg.max_concurrent_streams
                        )),
                    );
                    return Ok(());
                }
                let route = match self.dispatch.resolve(&headers.method) {
                    Ok(route) => route,
                    Err(status) => {
                        self.reply(stream, status);
                        return Ok(());
                    }
                };
                let kind = route.1;
                if kind.client_streams() {
                    self.dispatch_streaming(stream, headers, route, None, end_stream);
                } else if end_stream {
                    // No message follows: the request is the empty message.
                    self.dispatch(stream, headers, route, Bytes::new()).await;
                } else {
                    self.open.insert(stream, (headers, route));
                }
            }
            Frame::Data {
                stream,
                end_stream,
                data,
            } => {
                if let Some((headers, route)) = self.open.remove(&stream) {
                    let kind = route.1;
                    if !end_stream {
                        self.reply(
                            stream,
                            Status::internal(
                                "a unary or server-streaming request has exactly one message",
                            ),
                        );
                    } else if kind == MethodKind::Unary {
                        self.dispatch(stream, headers, route, data).await;
                    } else {
                        self.dispatch_streaming(stream, headers, route, Some(data), true);
                    }
                    return Ok(());
                }
                // DATA for a stream we no longer track (cancelled or refused) is ignored.
                let Some(active) = self.active.get_mut(&stream) else {
                    return Ok(());
                };
                let Some((tx, window)) = &mut active.inbound else {
                    return Err(Status::internal(format!(
                        "DATA on stream {stream} after the client half-closed it"
                    )));
                };
                if !window.receive(data.len()) {
                    let status = Status::resource_exhausted(
                        "flow control: the client sent DATA without credit",
                    );
                    if let Some(active) = self.active.remove(&stream) {
                        active.stop();
                    }
                    self.reply(stream, status);
                    return Ok(());
                }
                // A handler that stopped reading drops its end; its messages are dropped too.
                let _ = tx.send(Ok(StreamItem::Message(data)));
                if end_stream {
                    active.inbound = None;
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if let Some(Active {
                    credit: Some(credit),
                    ..
                }) = self.active.get(&stream)
                {
                    credit.grant(increment);
                }
            }
            Frame::Cancel { stream, .. } => {
                self.open.remove(&stream);
                if let Some(active) = self.active.remove(&stream) {
                    active.stop();
                }
            }
            Frame::Ping {
                ack: false,
                payload,
            } => frame::encode_ping(&mut self.out, true, payload),
            Frame::Ping { ack: true, .. } | Frame::GoAway { .. } => {}
            Frame::Status { .. } => {
                return Err(Status::internal("clients must not send STATUS frames"));
            }
        }
        Ok(())
    }

    /// Starts a call whose client streams messages, or whose reply is a stream, on its own
    /// task. `first` is the request message of a server-streaming call; a client stream gets
    /// its messages as they arrive (`half_closed`: none will).
    fn dispatch_streaming(
        &mut self,
        stream: u32,
        headers: Headers,
        route: Route,
        first: Option<Bytes>,
        half_closed: bool,
    ) {
        let deadline = headers.timeout.and_then(deadline::from_timeout);
        let mut inbound = None;
        let body = match first {
            Some(message) => Body::Message(message),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                let grants = self.replies.downgrade();
                let window = ReceiveWindow::new();
                let messages = InboundStream::new(rx, stream, grants, window.clone());
                if !half_closed {
                    inbound = Some((tx, window));
                }
                Body::Stream(MessageStream::new(messages))
            }
        };
        let mut request = Request::from_wire(route, headers.metadata, deadline, self.peer, body);
        request.set_arrival(Protocol::Native, false);
        let credit = Arc::new(Credit::new());
        let replies = self.replies.clone();
        let mut svc = self.svc.clone();
        let sender_credit = credit.clone();
        let task = tokio::spawn(async move {
            let future = begin(&mut svc, request).await;
            let result = guarded(future, deadline).await;
            let reply = send_reply(stream, result, &sender_credit, &replies, deadline).await;
            let _ = replies.send(reply);
        });
        self.active.insert(
            stream,
            Active {
                task: task.abort_handle(),
                inbound,
                credit: Some(credit),
            },
        );
    }

    async fn dispatch(&mut self, stream: u32, headers: Headers, route: Route, body: Bytes) {
        let deadline = headers.timeout.and_then(deadline::from_timeout);
        let mut request = Request::from_wire(
            route,
            headers.metadata,
            deadline,
            self.peer,
            Body::Message(body),
        );
        request.set_arrival(Protocol::Native, false);
        let mut future = begin(&mut self.svc, request).await;
        // The first poll runs right here: a handler that finishes without waiting (the common
        // unary case) costs no task, no channel hop and no lock. Its outcome is what a spawned
        // task would have produced: a timeout polls the call before the clock, so a call that
        // is ready wins even past its deadline, and a panic becomes INTERNAL.
        let mut cx = Context::from_waker(Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(result)) => {
                encode_reply(&mut self.out, stream, finish(result, deadline));
                return;
            }
            Ok(Poll::Pending) => {}
            Err(_panic) => {
                self.reply(stream, handler_panicked());
                return;
            }
        }
        // It has to wait: give it a task (it re-registers its wakers when first polled there),
        // under the deadline, and let CANCEL abort it.
        let replies = self.replies.clone();
        let task = tokio::spawn(async move {
            let result = guarded(future, deadline).await;
            let _ = replies.send(Outbound::Reply { stream, result });
        });
        self.active.insert(
            stream,
            Active {
                task: task.abort_handle(),
                inbound: None,
                credit: None,
            },
        );
    }
}

/// Sends a finished call's reply: a single message at once; a stream message by message as
/// the client grants credit, then its trailers (all before the deadline). Returns the last
/// item to queue (the reply or the STATUS).
async fn send_reply(
    stream: u32,
    result: crate::call::CallResult,
    credit: &Credit,
    replies: &mpsc::UnboundedSender<Outbound>,
    deadline: Option<std::time::Instant>,
) -> Outbound {
    let response = match result {
        Ok(response) => response,
        Err(status) => {
            return Outbound::Status {
                stream,
                outcome: Err(status),
            };
        }
    };
    let (metadata, body, mut trailers) = response.into_wire_parts();
    let mut messages = match body {
        Body::Message(message) => {
            let response = crate::Response::from_wire(metadata, Body::Message(message), trailers);
            return Outbound::Reply {
                stream,
                result: Ok(response),
            };
        }
        Body::Stream(messages) => messages,
    };
    if replies
        .send(Outbound::Headers { stream, metadata })
        .is_err()
    {
        return Outbound::Cancel {
            stream,
            code: Code::Cancelled,
        };
    }
    let send_all = async {
        let more = super::flow::send_stream(stream, &mut messages, credit, replies).await?;
        trailers.extend(more);
        Ok(())
    };
    let outcome = deadline::within(deadline, send_all).await;
    Outbound::Status {
        stream,
        outcome: outcome.map(|()| trailers),
    }
}
