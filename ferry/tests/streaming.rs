//! Streaming calls (server, client and bidirectional) on every protocol that streams, with
//! metadata, trailers, deadlines, cancellation, errors mid-stream and flow control.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use calculator::pb::{CalculatorClient, CountRequest, Number};
use ferry::call::{Body, BoxFuture, BoxService, CallResult, MessageStream, StreamItem};
use ferry::{Channel, Code, Request, Server, ServerHandle, Status};
use futures_util::{Stream, StreamExt};

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);

/// Watches every streamed reply: counts the messages it produced and notes when it is dropped.
#[derive(Clone, Default)]
struct Watch {
    produced: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Watched {
    inner: BoxService,
    watch: Watch,
}

impl tower::Layer<BoxService> for Watch {
    type Service = Watched;

    fn layer(&self, inner: BoxService) -> Watched {
        Watched {
            inner,
            watch: self.clone(),
        }
    }
}

impl tower::Service<Request<Body>> for Watched {
    type Response = ferry::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let watch = self.watch.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| match body {
                Body::Stream(stream) => Body::Stream(MessageStream::new(Counted {
                    inner: stream,
                    watch,
                })),
                message => message,
            }))
        })
    }
}

struct Counted {
    inner: MessageStream,
    watch: Watch,
}

impl Stream for Counted {
    type Item = Result<StreamItem, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        if let Some(Ok(StreamItem::Message(_))) = &item {
            self.watch.produced.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(item)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.watch.dropped.store(true, Ordering::SeqCst);
    }
}

async fn start() -> (ServerHandle, Watch) {
    let watch = Watch::default();
    let server = Server::builder()
        .add_service(calculator::service())
        .layer(watch.clone())
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    (server, watch)
}

/// The protocols that stream, as target schemes.
const SCHEMES: [&str; 3] = ["ferry", "grpc", "http"];

async fn client(server: &ServerHandle, scheme: &str) -> CalculatorClient {
    let channel = Channel::connect(format!("{scheme}://{}", server.local_addr()))
        .await
        .expect("connect");
    CalculatorClient::new(channel)
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < PATIENCE {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_delivers_every_message_and_the_trailers() {
    let (server, _) = start().await;
    for scheme in SCHEMES {
        let calc = client(&server, scheme).await;
        let mut request = Request::new(CountRequest {
            from: 1,
            to: 5,
            delay_ms: 0,
        });
        request.metadata_mut().insert("x-tenant", "acme");
        let mut numbers = calc.count(request).await.expect(scheme).into_inner();
        let mut got = Vec::new();
        while let Some(n) = numbers.message().await.expect(scheme) {
            got.push(n.value);
        }
        assert_eq!(got, [1.0, 2.0, 3.0, 4.0, 5.0], "{scheme}");
        assert!(
            numbers.trailers().is_some(),
            "{scheme}: the stream ended well"
        );

        // An empty stream is a stream that ends at once, well.
        let mut none = calc
            .count(CountRequest {
                from: 2,
                to: 1,
                delay_ms: 0,
            })
            .await
            .expect(scheme)
            .into_inner();
        assert_eq!(none.message().await.expect(scheme), None, "{scheme}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_sums_a_stream() {
    const N: i32 = 10_000;
    let (server, _) = start().await;
    for scheme in SCHEMES {
        let calc = calculator::Calculator::new(client(&server, scheme).await.channel().clone());
        assert_eq!(
            calc.sum(vec![1.0, 2.0, 3.5]).await.expect(scheme),
            6.5,
            "{scheme}"
        );
        assert_eq!(calc.sum(Vec::new()).await.expect(scheme), 0.0, "{scheme}");
        let many: Vec<f64> = (0..N).map(f64::from).collect();
        assert_eq!(
            calc.sum(many).await.expect(scheme),
            (N * (N - 1) / 2) as f64,
            "{scheme}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_streams_interleave_one_for_one() {
    let (server, _) = start().await;
    for scheme in SCHEMES {
        let calc = client(&server, scheme).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let requests = tokio_stream_from(rx);
        let mut totals = calc.running_sum(requests).await.expect(scheme).into_inner();
        // Each answer arrives before the next number is sent: the streams really interleave.
        for (value, total) in [(1.0, 1.0), (2.0, 3.0), (10.0, 13.0)] {
            tx.send(Number { value }).unwrap();
            let got = totals.message().await.expect(scheme).expect("an answer");
            assert_eq!(got.value, total, "{scheme}");
        }
        drop(tx);
        assert_eq!(totals.message().await.expect(scheme), None, "{scheme}");
    }
    server.shutdown().await.unwrap();
}

/// The kernel's largest TCP receive or send buffer (`rmem` or `wmem`), in bytes.
fn tcp_buffer_max(which: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/tcp_{which}"))
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(8 * 1024 * 1024)
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_ends_it_after_the_messages_before() {
    let (server, _) = start().await;
    for scheme in SCHEMES {
        let calc = client(&server, scheme).await;
        let numbers =
            futures_util::stream::iter([1.0, 2.0, f64::NAN, 4.0].map(|value| Number { value }));
        let mut totals = calc.running_sum(numbers).await.expect(scheme).into_inner();
        assert_eq!(
            totals.message().await.expect(scheme).map(|n| n.value),
            Some(1.0)
        );
        assert_eq!(
            totals.message().await.expect(scheme).map(|n| n.value),
            Some(3.0)
        );
        let error = totals.message().await.expect_err(scheme);
        assert_eq!(error.code(), Code::InvalidArgument, "{scheme}: {error}");
        assert!(error.message().contains("NaN"), "{scheme}: {error}");

        // A handler that fails before streaming: gRPC and native report it at the call (the
        // reply is only a status); Connect's reply is a stream that ends with it.
        let refused = calc
            .count(CountRequest {
                from: 0,
                to: i64::MAX,
                delay_ms: 0,
            })
            .await;
        let error = match refused {
            Err(error) => error,
            Ok(reply) => reply.into_inner().message().await.expect_err(scheme),
        };
        assert_eq!(error.code(), Code::InvalidArgument, "{scheme}: {error}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_a_stream_on_both_sides() {
    let (server, watch) = start().await;
    for scheme in SCHEMES {
        watch.dropped.store(false, Ordering::SeqCst);
        let calc = client(&server, scheme).await;
        let request = Request::new(CountRequest {
            from: 0,
            to: 1000,
            delay_ms: 50,
        })
        .with_timeout(Duration::from_millis(300));
        let mut numbers = calc.count(request).await.expect(scheme).into_inner();
        let mut got = 0;
        let error = loop {
            match numbers.message().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("{scheme}: the stream ended well past its deadline"),
                Err(error) => break error,
            }
        };
        assert_eq!(error.code(), Code::DeadlineExceeded, "{scheme}: {error}");
        assert!(
            got > 0 && got < 1000,
            "{scheme}: {got} numbers before the deadline"
        );
        assert!(
            eventually(|| watch.dropped.load(Ordering::SeqCst)).await,
            "{scheme}: the server kept producing past the deadline"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_reply_stream_cancels_the_call_on_the_server() {
    let (server, watch) = start().await;
    for scheme in SCHEMES {
        watch.dropped.store(false, Ordering::SeqCst);
        let calc = client(&server, scheme).await;
        let request = CountRequest {
            from: 0,
            to: 100_000,
            delay_ms: 20,
        };
        let mut numbers = calc.count(request).await.expect(scheme).into_inner();
        numbers
            .message()
            .await
            .expect(scheme)
            .expect("a first number");
        drop(numbers);
        assert!(
            eventually(|| watch.dropped.load(Ordering::SeqCst)).await,
            "{scheme}: the server's stream outlived the client's interest"
        );
        // The connection still serves calls.
        let mut again = calc
            .count(CountRequest {
                from: 1,
                to: 1,
                delay_ms: 0,
            })
            .await
            .expect(scheme)
            .into_inner();
        assert_eq!(
            again.message().await.expect(scheme).map(|n| n.value),
            Some(1.0)
        );
    }
    server.shutdown().await.unwrap();
}

/// A consumer that stops reading holds the server to a bounded number of messages: flow
/// control stops the producer instead of buffering the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_stops_the_writer() {
    let (server, watch) = start().await;
    for scheme in SCHEMES {
        watch.produced.store(0, Ordering::SeqCst);
        let calc = client(&server, scheme).await;
        let request = CountRequest {
            from: 0,
            to: calculator::MAX_COUNT - 1,
            delay_ms: 0,
        };
        let mut numbers = calc.count(request).await.expect(scheme).into_inner();
        numbers
            .message()
            .await
            .expect(scheme)
            .expect("a first number");
        // Wait until the producer stalls: no progress for 200 ms (bounded by PATIENCE).
        let start = std::time::Instant::now();
        let mut last = watch.produced.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = watch.produced.load(Ordering::SeqCst);
            if now == last || start.elapsed() > PATIENCE {
                break;
            }
            last = now;
        }
        let produced = watch.produced.load(Ordering::SeqCst);
        // Each `Number` is 9 bytes. The native stream window is 256 KiB: 29,128 numbers, plus
        // the one the producer holds while it waits for credit and the one read. Over gRPC the
        // window is HTTP/2's: Ferry's client grants 2 MiB per stream (hyper's default), each
        // message takes 5 more bytes, and the server's HTTP/2 send queue holds a little more
        // (up to 1 MiB allowed here). The Connect protocol streams over HTTP/1.1, which has no
        // windows of its own: TCP's bound it, the kernel's largest socket buffers at both ends.
        // Without flow control all 1,000,000 would be produced.
        let bound = match scheme {
            "ferry" => 256 * 1024 / 9 + 3,
            "grpc" => 3 * 1024 * 1024 / 14,
            _ => (tcp_buffer_max("rmem") + tcp_buffer_max("wmem") + 1024 * 1024) / 14,
        };
        assert!(
            produced <= bound,
            "{scheme}: the server produced {produced} messages (bound {bound}) for a reader \
             that stopped"
        );
        eprintln!("{scheme}: a stalled reader held the producer to {produced} messages");
        drop(numbers);
    }
    server.shutdown().await.unwrap();
}
