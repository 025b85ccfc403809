//! Per-stream flow control of the native protocol (see `docs/protocol.md`, "Flow control").
//!
//! Each direction of a stream starts with [`STREAM_WINDOW`] bytes of credit. A sender may send
//! a DATA frame while its credit is positive, and each frame spends its payload length (so one
//! large message may take the credit below zero, and a receiver buffers at most the window
//! plus one message per stream). The receiver grants credit back with WINDOW_UPDATE as the
//! application consumes messages, once half a window has been consumed, so a reader that stops
//! reading stops its sender after one window.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::Outbound;
use crate::Status;
use crate::call::StreamItem;

/// The credit each direction of a stream starts with, in bytes of DATA payload.
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;

/// Credit is granted back once this many bytes have been consumed.
const GRANT_THRESHOLD: u32 = STREAM_WINDOW / 2;

/// The send credit of one stream direction, shared by the task that sends and the connection
/// that receives the peer's WINDOW_UPDATEs.
#[derive(Debug)]
pub(crate) struct Credit {
    window: AtomicI64,
    closed: AtomicBool,
    changed: Notify,
}

impl Credit {
    /// Credit of one initial window.
    pub(crate) fn new() -> Credit {
        Credit {
            window: AtomicI64::new(i64::from(STREAM_WINDOW)),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Whether the window is positive right now (and the stream open).
    pub(crate) fn available(&self) -> bool {
        self.window.load(Ordering::Acquire) > 0 && !self.closed.load(Ordering::Acquire)
    }

    /// Waits until the window is positive; `false` once the stream is closed.
    pub(crate) async fn acquire(&self) -> bool {
        if self.available() {
            return true;
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.window.load(Ordering::Acquire) > 0 {
                return true;
            }
            notified.await;
        }
    }

    /// Spends credit for one sent frame of `len` bytes.
    pub(crate) fn spend(&self, len: usize) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        self.window.fetch_sub(len, Ordering::AcqRel);
    }

    /// Adds credit from a WINDOW_UPDATE.
    pub(crate) fn grant(&self, increment: u32) {
        self.window
            .fetch_add(i64::from(increment), Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Whether the stream has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends the stream: senders waiting for credit give up.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Frames ready together are handed to the connection in one piece of up to this many bytes.
const SEND_BATCH: usize = 64 * 1024;

/// Sends the messages of `messages` as DATA frames on `stream` as `credit` allows, encoding
/// the frames that are ready together into one piece (one queue hop and one wake-up of the
/// connection for many messages). Ends with the trailers the stream carried, or its error;
/// `Err(CANCELLED)` when the stream or the connection closed first.
pub(crate) async fn send_stream(
    stream: u32,
    messages: &mut crate::call::MessageStream,
    credit: &Credit,
    tx: &mpsc::UnboundedSender<Outbound>,
) -> Result<crate::Metadata, Status> {
    use futures_util::FutureExt;
    let closed = || Status::cancelled("the call or its connection closed");
    let mut trailers = crate::Metadata::new();
    let mut batch = bytes::BytesMut::new();
    loop {
        // Wait only when nothing is ready: flush what is batched first.
        let item = match messages.next().now_or_never() {
            Some(item) => item,
            None => {
                flush(stream, &mut batch, tx).map_err(|()| closed())?;
                messages.next().await
            }
        };
        match item {
            Some(Ok(StreamItem::Message(message))) => {
                if !credit.available() {
                    flush(stream, &mut batch, tx).map_err(|()| closed())?;
                    if !credit.acquire().await {
                        return Err(closed());
                    }
                }
                credit.spend(message.len());
                super::frame::encode_data(&mut batch, stream, false, &message);
                if batch.len() >= SEND_BATCH {
                    flush(stream, &mut batch, tx).map_err(|()| closed())?;
                }
            }
            Some(Ok(StreamItem::Trailers(more))) => trailers.extend(more),
            // The native protocol does not compress.
            Some(Ok(StreamItem::Compress(_))) => {}
            Some(Err(status)) => {
                flush(stream, &mut batch, tx).map_err(|()| closed())?;
                return Err(status);
            }
            None => {
                flush(stream, &mut batch, tx).map_err(|()| closed())?;
                return Ok(trailers);
            }
        }
    }
}

/// Hands the batched frames of `stream` to the connection.
fn flush(
    stream: u32,
    batch: &mut bytes::BytesMut,
    tx: &mpsc::UnboundedSender<Outbound>,
) -> Result<(), ()> {
    if batch.is_empty() {
        return Ok(());
    }
    let frames = batch.split().freeze();
    tx.send(Outbound::Frames { stream, frames }).map_err(|_| ())
}

/// The receive side of one stream direction: how much the peer may still send before it
/// exceeds its credit. The connection spends it as DATA arrives; the [`InboundStream`] the
/// application reads adds back what it grants.
#[derive(Clone, Debug)]
pub(crate) struct ReceiveWindow {
    left: Arc<AtomicI64>,
}

impl ReceiveWindow {
    pub(crate) fn new() -> ReceiveWindow {
        ReceiveWindow {
            left: Arc::new(AtomicI64::new(i64::from(STREAM_WINDOW))),
        }
    }

    /// Accounts for one received DATA frame; `false` if the peer had no credit for it (it
    /// sent while its window was not positive).
    pub(crate) fn receive(&self, len: usize) -> bool {
        if self.left.load(Ordering::Acquire) <= 0 {
            return false;
        }
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        self.left.fetch_sub(len, Ordering::AcqRel);
        true
    }

    /// Accounts for credit granted back to the peer.
    fn granted(&self, increment: u32) {
        self.left.fetch_add(i64::from(increment), Ordering::AcqRel);
    }
}

/// The messages of one inbound stream direction, as the application reads them; consuming
/// them grants the peer more credit.
pub(crate) struct InboundStream {
    items: mpsc::UnboundedReceiver<Result<StreamItem, Status>>,
    stream: u32,
    /// Consumed bytes not yet granted back.
    unacked: u32,
    grants: mpsc::WeakUnboundedSender<Outbound>,
    window: ReceiveWindow,
    /// Runs when the stream is dropped (the client cancels an abandoned call).
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl InboundStream {
    /// A stream fed through `items`; grants go out through `grants` (the connection's queue).
    pub(crate) fn new(
        items: mpsc::UnboundedReceiver<Result<StreamItem, Status>>,
        stream: u32,
        grants: mpsc::WeakUnboundedSender<Outbound>,
        window: ReceiveWindow,
    ) -> InboundStream {
        InboundStream {
            items,
            stream,
            unacked: 0,
            grants,
            window,
            on_drop: None,
        }
    }

    /// Runs `f` if the stream is dropped before it ends.
    pub(crate) fn on_drop(mut self, f: impl FnOnce() + Send + 'static) -> InboundStream {
        self.on_drop = Some(Box::new(f));
        self
    }

    fn consumed(&mut self, len: usize) {
        self.unacked = self
            .unacked
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        if self.unacked >= GRANT_THRESHOLD
            && let Some(grants) = self.grants.upgrade()
        {
            self.window.granted(self.unacked);
            let _ = grants.send(Outbound::WindowUpdate {
                stream: self.stream,
                increment: self.unacked,
            });
            self.unacked = 0;
        }
    }
}

impl Stream for InboundStream {
    type Item = Result<StreamItem, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.items.poll_recv(cx));
        match &item {
            Some(Ok(StreamItem::Message(message))) => {
                let len = message.len();
                self.consumed(len);
            }
            Some(Ok(StreamItem::Compress(_))) => {}
            Some(Ok(StreamItem::Trailers(_)) | Err(_)) | None => {
                // The stream has ended (or is ending): nothing to cancel any more.
                self.on_drop = None;
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for InboundStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn credit_blocks_at_zero_and_resumes_on_grant() {
        let credit = Arc::new(Credit::new());
        assert!(credit.acquire().await);
        credit.spend(STREAM_WINDOW as usize + 10);
        let waiter = {
            let credit = credit.clone();
            tokio::spawn(async move { credit.acquire().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        credit.grant(20);
        assert!(waiter.await.unwrap());
        credit.close();
        assert!(!credit.acquire().await);
    }

    #[test]
    fn a_receive_window_refuses_data_sent_without_credit() {
        let window = ReceiveWindow::new();
        assert!(window.receive(STREAM_WINDOW as usize + 100));
        assert!(!window.receive(1));
        window.granted(200);
        assert!(window.receive(1));
    }

    #[tokio::test]
    async fn consuming_half_a_window_grants_it_back() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (grants, mut out) = mpsc::unbounded_channel();
        let window = ReceiveWindow::new();
        assert!(window.receive(STREAM_WINDOW as usize));
        let mut inbound = InboundStream::new(rx, 7, grants.downgrade(), window.clone());
        let chunk = Bytes::from(vec![0u8; GRANT_THRESHOLD as usize / 2]);
        for _ in 0..2 {
            tx.send(Ok(StreamItem::Message(chunk.clone()))).unwrap();
        }
        inbound.next().await;
        assert!(out.try_recv().is_err());
        inbound.next().await;
        match out.try_recv() {
            Ok(Outbound::WindowUpdate {
                stream: 7,
                increment,
            }) => {
                assert_eq!(increment, GRANT_THRESHOLD)
            }
            _ => panic!("expected a WINDOW_UPDATE"),
        }
        assert!(
            window.receive(1),
            "the grant was credited to the receive window"
        );
    }
}
