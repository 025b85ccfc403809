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

use super::frame::{self, Frame, FrameError, HEADER_LEN, Headers, Kind, Limits, PREFACE};
use super::{MAX_BATCH, MAX_DISCARD, Outbound, StreamIds, encode_reply, read_preface};
use crate::call::{Body, BoxService, MethodKind, deadline};
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
    /// Handlers running on their own task, by stream id.
    active: HashMap<u32, AbortHandle, StreamIds>,
    /// Streams whose HEADERS arrived and whose DATA has not.
    open: HashMap<u32, Headers, StreamIds>,
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

    /// A reply from a handler that ran on its own task; dropped if the call was cancelled.
    fn on_reply(&mut self, reply: Outbound) {
        if let Outbound::Reply { stream, result } = reply
            && self.active.remove(&stream).is_some()
        {
            encode_reply(&mut self.out, stream, result);
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
                if self.open.remove(&stream).is_none() {
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
        for (_, handle) in self.active.drain() {
            handle.abort();
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
                if end_stream {
                    self.dispatch(stream, headers, Bytes::new()).await;
                } else {
                    self.open.insert(stream, headers);
                }
            }
            Frame::Data {
                stream,
                end_stream,
                data,
            } => {
                // DATA for a stream we no longer track (cancelled or refused) is ignored.
                if let Some(headers) = self.open.remove(&stream) {
                    if end_stream {
                        self.dispatch(stream, headers, data).await;
                    } else {
                        self.reply(
                            stream,
                            Status::unimplemented("streaming requests are not supported yet"),
                        );
                    }
                }
            }
            Frame::Cancel { stream, .. } => {
                self.open.remove(&stream);
                if let Some(handle) = self.active.remove(&stream) {
                    handle.abort();
                }
            }
            Frame::Ping {
                ack: false,
                payload,
            } => frame::encode_ping(&mut self.out, true, payload),
            Frame::Ping { ack: true, .. } | Frame::GoAway { .. } | Frame::WindowUpdate { .. } => {}
            Frame::Status { .. } => {
                return Err(Status::internal("clients must not send STATUS frames"));
            }
        }
        Ok(())
    }

    async fn dispatch(&mut self, stream: u32, headers: Headers, body: Bytes) {
        let route = match self.dispatch.resolve(&headers.method) {
            Ok((_, kind)) if kind != MethodKind::Unary => {
                let status = Status::unimplemented(
                    "streaming methods are not served over the native protocol yet; use gRPC",
                );
                self.reply(stream, status);
                return;
            }
            Ok(route) => route,
            Err(status) => {
                self.reply(stream, status);
                return;
            }
        };
        let deadline = headers.timeout.and_then(deadline::from_timeout);
        let request = Request::from_wire(
            route,
            headers.metadata,
            deadline,
            self.peer,
            Body::Message(body),
        );
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
        self.active.insert(stream, task.abort_handle());
    }
}
