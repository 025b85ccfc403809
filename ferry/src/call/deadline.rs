//! Deadlines: the one owner of "run within the deadline, else `DEADLINE_EXCEEDED`" and of the
//! conversion between the relative timeout a wire carries and the instant a call keeps.
//!
//! Every protocol sends a relative timeout (the native HEADERS frame, gRPC's `grpc-timeout`,
//! Connect's `connect-timeout-ms`) because clocks differ between hosts; each side turns it into
//! an [`Instant`] on arrival with [`from_timeout`] and back with [`wire_timeout`] before sending.
//! Client, server, balancer and tools all enforce it with [`within`], so a call that runs out of
//! time reads the same wherever it was stopped.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;

use super::{MessageStream, StreamItem};
use crate::Status;

/// The status of a call whose deadline passed while it ran (on either side).
pub fn exceeded() -> Status {
    Status::deadline_exceeded("the deadline passed before the call finished")
}

/// The status of a call whose deadline had passed before it was sent.
pub fn expired_before_sending() -> Status {
    Status::deadline_exceeded("the deadline passed before the call was sent")
}

/// Runs `future` until `deadline` (forever without one); past it, [`exceeded`].
///
/// The future is polled before the clock, so a result that is ready wins even past the
/// deadline.
pub async fn within<T, F>(deadline: Option<Instant>, future: F) -> Result<T, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future)
            .await
            .unwrap_or_else(|_elapsed| Err(exceeded())),
        None => future.await,
    }
}

/// The deadline for a timeout that arrived on the wire; `None` (no deadline) when the timeout
/// is so large that it cannot be represented, which means "no hurry" rather than "now".
pub fn from_timeout(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The timeout to put on the wire for `deadline`: `Ok(None)` without one, [`expired_before_sending`]
/// when it has already passed.
pub fn wire_timeout(deadline: Option<Instant>) -> Result<Option<Duration>, Status> {
    let Some(deadline) = deadline else {
        return Ok(None);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(expired_before_sending());
    }
    Ok(Some(left))
}

/// Bounds a stream by `deadline`: past it the stream ends with [`exceeded`]. A panic while
/// producing an item ends it with `INTERNAL`, so a faulty stream fails only its own call.
pub fn guard_stream(stream: MessageStream, deadline: Option<Instant>) -> MessageStream {
    MessageStream::new(GuardedStream {
        inner: Some(stream),
        sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
    })
}

/// See [`guard_stream`].
struct GuardedStream {
    inner: Option<MessageStream>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for GuardedStream {
    type Item = Result<StreamItem, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll_next(cx)));
        match polled {
            Ok(Poll::Ready(None)) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Ok(Poll::Ready(Some(item))) => {
                // A stream that is always ready never reaches the timer below; its deadline
                // is checked here (the timer has fired once the deadline has passed).
                if self.sleep.as_ref().is_some_and(|s| s.is_elapsed()) {
                    self.inner = None;
                    return Poll::Ready(Some(Err(exceeded())));
                }
                if item.is_err() {
                    self.inner = None;
                }
                Poll::Ready(Some(item))
            }
            Ok(Poll::Pending) => {
                let elapsed = match self.sleep.as_mut() {
                    Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if elapsed {
                    self.inner = None;
                    return Poll::Ready(Some(Err(exceeded())));
                }
                Poll::Pending
            }
            Err(_panic) => {
                self.inner = None;
                Poll::Ready(Some(Err(Status::internal("the stream panicked"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[tokio::test]
    async fn within_stops_at_the_deadline_and_lets_ready_results_win() {
        let soon = Some(Instant::now() + Duration::from_millis(5));
        let slow = within(soon, std::future::pending::<Result<(), Status>>()).await;
        assert_eq!(slow.unwrap_err().code(), Code::DeadlineExceeded);
        let past = Some(Instant::now() - Duration::from_millis(5));
        assert_eq!(within(past, async { Ok(7) }).await.unwrap(), 7);
        assert_eq!(within(None, async { Ok(1) }).await.unwrap(), 1);
    }

    #[test]
    fn wire_timeouts_round_trip_and_refuse_the_past() {
        assert_eq!(wire_timeout(None).unwrap(), None);
        let before = Instant::now();
        let left = wire_timeout(from_timeout(Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        // What is left is 5 s less the time these two calls took, however slow the machine.
        assert!(left <= Duration::from_secs(5));
        assert!(left + before.elapsed() >= Duration::from_secs(5));
        let past = Some(Instant::now() - Duration::from_millis(1));
        assert_eq!(
            wire_timeout(past).unwrap_err().message(),
            expired_before_sending().message()
        );
        assert_eq!(from_timeout(Duration::MAX), None);
    }
}
