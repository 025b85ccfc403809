//! Serving one native-protocol connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use super::frame::{Frame, Headers, Limits};
use super::{Outbound, read_preface, write_loop};

/// How long a new connection may take to send its preface before it is closed.
pub const PREFACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use crate::service::BoxService;
use crate::{Code, Request, Status};

/// Per-connection settings of the native protocol on the server.
#[derive(Clone, Debug)]
pub(crate) struct ConnConfig {
    pub limits: Limits,
    pub max_concurrent_streams: usize,
}

type Active = Arc<Mutex<HashMap<u32, AbortHandle>>>;

/// Signals that end a connection: `drain` finishes in-flight calls, `force` aborts them.
#[derive(Clone)]
pub(crate) struct Shutdown {
    pub drain: CancellationToken,
    pub force: CancellationToken,
}

struct Conn {
    tx: mpsc::UnboundedSender<Outbound>,
    svc: BoxService,
    peer: Option<SocketAddr>,
    cfg: Arc<ConnConfig>,
    handlers: TaskTracker,
    active: Active,
    /// Streams whose HEADERS arrived and whose DATA has not.
    open: HashMap<u32, Headers>,
    last_stream: u32,
    draining: bool,
}

/// Serves a connection whose first bytes (possibly the whole preface) are already in `buf`.
pub(crate) async fn serve_connection<R, W>(
    mut reader: R,
    writer: W,
    mut buf: BytesMut,
    peer: Option<SocketAddr>,
    svc: BoxService,
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
    let (tx, rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_loop(writer, rx));
    let mut conn = Conn {
        tx,
        svc,
        peer,
        cfg,
        handlers: TaskTracker::new(),
        active: Arc::default(),
        open: HashMap::new(),
        last_stream: 0,
        draining: false,
    };
    let clean = conn.run(&mut reader, &mut buf, &shutdown).await;
    if !clean {
        conn.abort_all();
    }
    drop(conn);
    match writer_task.await {
        Ok(Err(e)) => tracing::debug!(?peer, "write error: {e}"),
        Err(e) => tracing::debug!(?peer, "writer task failed: {e}"),
        Ok(Ok(())) => {}
    }
}

impl Conn {
    /// Runs until the peer leaves or shutdown completes; `true` when every call finished.
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        shutdown: &Shutdown,
    ) -> bool {
        loop {
            loop {
                match Frame::decode(buf, &self.cfg.limits) {
                    Ok(Some(frame)) => {
                        if let Err(status) = self.on_frame(frame).await {
                            self.protocol_error(status);
                            return false;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.protocol_error(Status::internal(format!("protocol error: {e}")));
                        return false;
                    }
                }
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            tokio::select! {
                biased;
                _ = shutdown.force.cancelled() => return false,
                _ = shutdown.drain.cancelled(), if !self.draining => self.start_draining(),
                _ = self.handlers.wait(), if self.draining && self.open.is_empty() => return true,
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

    fn start_draining(&mut self) {
        self.draining = true;
        self.handlers.close();
        let _ = self.tx.send(Outbound::GoAway {
            last_stream: self.last_stream,
            code: Code::Unavailable,
            message: "server is shutting down".into(),
        });
    }

    fn protocol_error(&self, status: Status) {
        tracing::debug!(peer = ?self.peer, "closing connection: {status}");
        let _ = self.tx.send(Outbound::GoAway {
            last_stream: self.last_stream,
            code: status.code(),
            message: status.message().to_owned(),
        });
    }

    fn abort_all(&self) {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        for handle in active.values() {
            handle.abort();
        }
    }

    fn reply(&self, stream: u32, status: Status) {
        let _ = self.tx.send(Outbound::Reply {
            stream,
            result: Err(status),
        });
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
                let in_flight = self.open.len() + self.handlers.len();
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
                let handle = self
                    .active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&stream);
                if let Some(handle) = handle {
                    handle.abort();
                }
            }
            Frame::Ping {
                ack: false,
                payload,
            } => {
                let _ = self.tx.send(Outbound::Ping { ack: true, payload });
            }
            Frame::Ping { ack: true, .. } | Frame::GoAway { .. } | Frame::WindowUpdate { .. } => {}
            Frame::Status { .. } => {
                return Err(Status::internal("clients must not send STATUS frames"));
            }
        }
        Ok(())
    }

    async fn dispatch(&mut self, stream: u32, headers: Headers, body: Bytes) {
        let deadline = headers.timeout.and_then(|t| Instant::now().checked_add(t));
        let mut request = Request::new(body);
        request.set_method(headers.method);
        *request.metadata_mut() = headers.metadata;
        request.set_deadline(deadline);
        request.set_peer(self.peer);
        let timing = crate::service::wants_server_timing(request.metadata());
        let future = match self.svc.ready().await {
            Ok(svc) => crate::service::with_server_timing(timing, svc.call(request)),
            Err(status) => {
                self.reply(stream, status);
                return;
            }
        };
        let tx = self.tx.clone();
        let active = self.active.clone();
        let mut guard = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let task = self.handlers.spawn(async move {
            let guarded = AssertUnwindSafe(future).catch_unwind();
            let outcome = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), guarded).await,
                None => Ok(guarded.await),
            };
            let result = match outcome {
                Ok(Ok(result)) => result,
                Ok(Err(_panic)) => Err(Status::internal("the handler panicked")),
                Err(_elapsed) => Err(Status::deadline_exceeded(
                    "the call's deadline passed before the handler finished",
                )),
            };
            active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&stream);
            let _ = tx.send(Outbound::Reply { stream, result });
        });
        guard.insert(stream, task.abort_handle());
    }
}
