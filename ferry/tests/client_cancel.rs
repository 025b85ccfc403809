//! A caller that drops a streaming call cancels it on the server, over every HTTP/2 client
//! (gRPC, and the Connect protocol's bidirectional calls), even while its request stream is
//! still open or about to end.
//!
//! Found by the gRPC interop cases (cancel_after_begin, cancel_after_first_response): hyper keeps
//! pulling a request body after the caller dropped the call, so the server saw nothing until
//! the caller's request stream ended, and then (racing the reset) could see a clean half-close,
//! i.e. a complete request, for a call the caller had cancelled.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use calculator::pb::{CalculatorClient, Number};
use ferry::call::{Body, BoxFuture, BoxService, CallResult, MessageStream, StreamItem};
use ferry::{Channel, Code, Request, Server, ServerHandle, Status};
use futures_util::{Stream, StreamExt};

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);

/// How the request stream a handler read ended.
#[derive(Clone, Debug, PartialEq)]
enum End {
    /// The caller half-closed: the handler saw every message and a clean end.
    Clean,
    /// The stream failed with this code.
    Failed(Code),
    /// The server dropped the call before its request stream ended (as it does when the
    /// client resets the stream): cancelled too.
    Dropped,
}

impl End {
    /// Whether the server learned that the call was cancelled.
    fn cancelled(&self) -> bool {
        matches!(self, End::Failed(Code::Cancelled) | End::Dropped)
    }
}

/// Counts the calls that reached the handler and records how each call's request stream
/// ended, in order.
#[derive(Clone, Default)]
struct Ends {
    started: Arc<Mutex<usize>>,
    ends: Arc<Mutex<Vec<End>>>,
}

/// Polls `check` until it holds or [`PATIENCE`] runs out.
async fn eventually(mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < PATIENCE && !check() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Ends {
    fn snapshot(&self) -> Vec<End> {
        self.ends.lock().unwrap().clone()
    }

    /// The ends recorded once there are `count` (or after [`PATIENCE`]).
    async fn wait_for(&self, count: usize) -> Vec<End> {
        eventually(|| self.snapshot().len() >= count).await;
        self.snapshot()
    }

    /// Waits until `count` calls have reached the handler.
    async fn wait_started(&self, count: usize) {
        eventually(|| *self.started.lock().unwrap() >= count).await;
    }
}

#[derive(Clone)]
struct Recorded {
    inner: BoxService,
    ends: Ends,
}

impl tower::Layer<BoxService> for Ends {
    type Service = Recorded;

    fn layer(&self, inner: BoxService) -> Recorded {
        Recorded {
            inner,
            ends: self.clone(),
        }
    }
}

impl tower::Service<Request<Body>> for Recorded {
    type Response = ferry::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ends = self.ends.clone();
        *ends.started.lock().unwrap() += 1;
        let request = request.map(|body| match body {
            Body::Stream(stream) => Body::Stream(MessageStream::new(Watched {
                inner: stream,
                ends: Some(ends),
            })),
            message => message,
        });
        self.inner.call(request)
    }
}

/// A request stream that records how it ended.
struct Watched {
    inner: MessageStream,
    ends: Option<Ends>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(ends) = self.ends.take() {
            ends.ends.lock().unwrap().push(End::Dropped);
        }
    }
}

impl Stream for Watched {
    type Item = Result<StreamItem, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        let end = match &item {
            None => Some(End::Clean),
            Some(Err(status)) => Some(End::Failed(status.code())),
            Some(Ok(_)) => None,
        };
        if let Some(end) = end
            && let Some(ends) = self.ends.take()
        {
            ends.ends.lock().unwrap().push(end);
        }
        Poll::Ready(item)
    }
}

async fn start() -> (ServerHandle, Ends) {
    let ends = Ends::default();
    let server = Server::builder()
        .add_service(calculator::service())
        .layer(ends.clone())
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    (server, ends)
}

/// A request stream fed by hand; it stays open while the sender lives.
fn queue() -> (
    tokio::sync::mpsc::UnboundedSender<Number>,
    impl Stream<Item = Number> + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    (
        tx,
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_bidi_call_cancels_it_while_its_request_stream_is_open() {
    let (server, ends) = start().await;
    // gRPC, and the Connect protocol's bidirectional calls (HTTP/2).
    for (i, scheme) in ["grpc", "http"].into_iter().enumerate() {
        let channel = Channel::connect(format!("{scheme}://{}", server.local_addr()))
            .await
            .expect(scheme);
        let calc = CalculatorClient::new(channel);
        let (tx, numbers) = queue();
        tx.send(Number { value: 1.0 }).unwrap();
        let mut totals = calc.running_sum(numbers).await.expect(scheme).into_inner();
        assert_eq!(totals.message().await.expect(scheme).unwrap().value, 1.0);
        // The caller gives up on the call but keeps its request stream open.
        drop(totals);
        let seen = ends.wait_for(i + 1).await;
        assert!(
            seen.get(i).is_some_and(End::cancelled),
            "{scheme}: the server must see the call cancelled while the caller's request \
             stream is still open (all ends so far: {seen:?})"
        );
        drop(tx);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_never_looks_complete_to_the_server() {
    const ROUNDS: usize = 20;
    let (server, ends) = start().await;
    let channel = Channel::connect(format!("grpc://{}", server.local_addr()))
        .await
        .unwrap();
    let calc = CalculatorClient::new(channel);
    for round in 0..ROUNDS {
        let (tx, numbers) = queue();
        let mut call = Box::pin(calc.sum(numbers));
        // The call is under way (the handler waits for numbers) when the caller drops it; the
        // request stream ends right after.
        tokio::select! {
            result = &mut call => panic!("round {round}: the sum ended by itself: {result:?}"),
            () = ends.wait_started(round + 1) => {}
        }
        drop(call);
        drop(tx);
        let seen = ends.wait_for(round + 1).await;
        assert!(
            seen.get(round).is_some_and(End::cancelled),
            "round {round}: a call the caller dropped reached the server as a complete \
             request stream (all ends so far: {seen:?})"
        );
    }
    server.shutdown().await.unwrap();
}
