//! End-to-end tests of the calculator over Ferry's native protocol on loopback TCP.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calculator::Calculator;
use calculator::pb::{self, CalculateRequest, CalculateResponse};
use ferry::{Channel, Code, Request, Response, Server, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The native protocol's connection preface (docs/protocol.md): magic, version 1, flags.
const PREFACE: [u8; 8] = [0xF0, b'F', b'E', b'R', b'R', b'Y', 1, 0];

/// How long a test waits for something that should happen promptly before failing.
const PATIENCE: Duration = Duration::from_secs(10);

async fn start_calculator() -> ferry::ServerHandle {
    Server::builder()
        .add_service(calculator::service())
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

fn target(server: &ferry::ServerHandle) -> String {
    format!("ferry://{}", server.local_addr())
}

#[tokio::test]
async fn the_four_operations() {
    let server = start_calculator().await;
    let calc = Calculator::connect(&target(&server)).await.unwrap();
    assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0);
    assert_eq!(calc.subtract(1.0, 2.0).await.unwrap(), -1.0);
    assert_eq!(calc.multiply(-3.0, 2.5).await.unwrap(), -7.5);
    assert_eq!(calc.divide(7.0, 2.0).await.unwrap(), 3.5);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dividing_by_zero_is_invalid_argument() {
    let server = start_calculator().await;
    let calc = Calculator::connect(&target(&server)).await.unwrap();
    let status = calc.divide(1.0, 0.0).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("divide 1 by zero"),
        "unexpected message: {}",
        status.message()
    );
    // The connection is still good after an error.
    assert_eq!(calc.add(2.0, 2.0).await.unwrap(), 4.0);
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let server = start_calculator().await;
    let channel = Channel::connect(target(&server)).await.unwrap();
    let mut request = Request::new(ferry::call::Body::empty());
    request.set_method("/calculator.v1.Calculator/Modulo");
    let status = channel.call(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let mut request = Request::new(ferry::call::Body::empty());
    request.set_method("/nope.v1.Nothing/Add");
    let status = channel.call(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let fx = start_slow(Duration::from_secs(5)).await;
    let client = pb::CalculatorClient::connect(target(&fx.server))
        .await
        .unwrap();
    let calls = (0..1000).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let answer = client
                .multiply(CalculateRequest {
                    a: i as f64,
                    b: 3.0,
                })
                .await;
            (i, answer)
        })
    });
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(results.len(), 1000);
    for result in results {
        let (i, answer) = result.unwrap();
        assert_eq!(answer.unwrap().into_inner().result, i as f64 * 3.0);
    }
    let peers = fx.peers.lock().unwrap();
    assert_eq!(
        peers.len(),
        1,
        "all calls should ride one connection: {peers:?}"
    );
}

/// A calculator whose `add` sleeps for `b` milliseconds when `a` is negative, reporting when a
/// slow call starts and whether it finished or was cancelled.
#[derive(Clone)]
struct SlowCalculator {
    started: mpsc::UnboundedSender<()>,
    finished: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
}

struct CancelProbe {
    done: bool,
    cancelled: Arc<AtomicUsize>,
}

impl Drop for CancelProbe {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl pb::Calculator for SlowCalculator {
    async fn add(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        if a < 0.0 {
            let mut probe = CancelProbe {
                done: false,
                cancelled: self.cancelled.clone(),
            };
            let _ = self.started.send(());
            tokio::time::sleep(Duration::from_millis(b as u64)).await;
            probe.done = true;
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Response::new(CalculateResponse { result: a + b }))
    }

    async fn subtract(
        &self,
        _: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    /// Multiplies and records which connection (client address) the call came over.
    async fn multiply(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let peer = request
            .peer()
            .ok_or_else(|| Status::internal("no peer address"))?;
        self.peers.lock().unwrap().insert(peer);
        let CalculateRequest { a, b } = request.into_inner();
        Ok(Response::new(CalculateResponse { result: a * b }))
    }

    async fn divide(
        &self,
        _: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn count(
        &self,
        r: Request<calculator::pb::CountRequest>,
    ) -> Result<Response<ferry::ResponseStream<calculator::pb::Number>>, Status> {
        calculator::pb::Calculator::count(&calculator::CalculatorService, r).await
    }
    async fn sum(
        &self,
        r: Request<ferry::Streaming<calculator::pb::Number>>,
    ) -> Result<Response<CalculateResponse>, Status> {
        calculator::pb::Calculator::sum(&calculator::CalculatorService, r).await
    }
    async fn running_sum(
        &self,
        r: Request<ferry::Streaming<calculator::pb::Number>>,
    ) -> Result<Response<ferry::ResponseStream<calculator::pb::Number>>, Status> {
        calculator::pb::Calculator::running_sum(&calculator::CalculatorService, r).await
    }
}

struct SlowFixture {
    started: mpsc::UnboundedReceiver<()>,
    finished: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    server: ferry::ServerHandle,
}

async fn start_slow(grace: Duration) -> SlowFixture {
    let (tx, rx) = mpsc::unbounded_channel();
    let service = SlowCalculator {
        started: tx,
        finished: Arc::default(),
        cancelled: Arc::default(),
        peers: Arc::default(),
    };
    let (finished, cancelled) = (service.finished.clone(), service.cancelled.clone());
    let peers = service.peers.clone();
    let server = Server::builder()
        .add_service(pb::CalculatorServer::new(service))
        .shutdown_grace_period(grace)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    SlowFixture {
        started: rx,
        finished,
        cancelled,
        peers,
        server,
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_slow_call_past_its_deadline_is_deadline_exceeded() {
    let mut fx = start_slow(Duration::from_secs(5)).await;
    let client = pb::CalculatorClient::connect(target(&fx.server))
        .await
        .unwrap();
    let request = Request::new(CalculateRequest {
        a: -1.0,
        b: 5_000.0,
    })
    .with_timeout(Duration::from_millis(50));
    let status = client.add(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    fx.started.recv().await.unwrap();
    // The server enforces the deadline too: the handler is stopped, not left running.
    eventually("the server cancels the expired handler", || {
        fx.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(fx.finished.load(Ordering::SeqCst), 0);
    // A call within its deadline still succeeds on the same connection.
    let ok =
        Request::new(CalculateRequest { a: -1.0, b: 1.0 }).with_timeout(Duration::from_secs(5));
    assert_eq!(client.add(ok).await.unwrap().into_inner().result, 0.0);
}

#[tokio::test]
async fn dropping_the_call_cancels_the_handler() {
    let mut fx = start_slow(Duration::from_secs(5)).await;
    let client = pb::CalculatorClient::connect(target(&fx.server))
        .await
        .unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .add(CalculateRequest {
                    a: -1.0,
                    b: 60_000.0,
                })
                .await
        })
    };
    tokio::time::timeout(PATIENCE, fx.started.recv())
        .await
        .expect("the handler starts")
        .unwrap();
    call.abort();
    eventually("the server observes the cancellation", || {
        fx.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(fx.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_calls_and_refuses_new_ones() {
    let mut fx = start_slow(Duration::from_secs(30)).await;
    let addr = fx.server.local_addr();
    let client = pb::CalculatorClient::connect(target(&fx.server))
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.add(CalculateRequest { a: -1.0, b: 300.0 }).await })
        })
        .collect();
    for _ in 0..3 {
        fx.started.recv().await.unwrap();
    }
    let shutdown = tokio::spawn(fx.server.shutdown());
    // New connections are refused once the listener closes.
    eventually("the listener closes", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
    })
    .await;
    // New calls on the existing connection are refused too (the server said GOAWAY).
    let late = client.add(CalculateRequest { a: 1.0, b: 1.0 }).await;
    assert!(
        late.is_err(),
        "a call after shutdown began was served: {late:?}"
    );
    assert_eq!(late.unwrap_err().code(), Code::Unavailable);
    for call in in_flight {
        let answer = call.await.unwrap().expect("in-flight call completes");
        assert_eq!(answer.into_inner().result, 299.0);
    }
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown completes once calls drain")
        .unwrap()
        .unwrap();
    assert_eq!(fx.finished.load(Ordering::SeqCst), 3);
    assert_eq!(fx.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn garbage_from_one_client_does_not_hurt_the_next() {
    let server = start_calculator().await;
    let addr = server.local_addr();

    // Not a Ferry preface at all: the server closes the connection.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, bad.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "server should close a connection with a bad preface"
    );

    // A valid preface followed by a frame that lies about its length.
    let mut liar = TcpStream::connect(addr).await.unwrap();
    liar.write_all(&PREFACE).await.unwrap();
    liar.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    liar.write_all(&[0u8; 64]).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, liar.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "server should close a connection with an oversized frame"
    );

    // Random bytes after a valid preface.
    let mut noisy = TcpStream::connect(addr).await.unwrap();
    noisy.write_all(&PREFACE).await.unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = noisy.write_all(&noise).await;
    drop(noisy);

    let calc = Calculator::connect(&format!("ferry://{addr}"))
        .await
        .unwrap();
    assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0);
}

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts() {
    let server = start_calculator().await;
    let addr = server.local_addr();
    let calc = Calculator::connect(&format!("ferry://{addr}"))
        .await
        .unwrap();
    assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0);
    server.shutdown().await.unwrap();

    // While the server is down calls fail fast with UNAVAILABLE.
    let down = calc.add(1.0, 2.0).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down}");

    let restarted = Server::builder()
        .add_service(calculator::service())
        .bind(addr)
        .await
        .expect("rebind the same port");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match calc.add(2.0, 3.0).await {
            Ok(answer) => {
                assert_eq!(answer, 5.0);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no reconnect: {status}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversized_request_fails_only_its_own_call() {
    let mut fx = start_slow(Duration::from_secs(5)).await;
    let target = target(&fx.server);
    let channel = Channel::connect(target.clone()).await.unwrap();
    let client = pb::CalculatorClient::new(channel.clone());
    // A call in flight on the same connection while the oversized one is refused.
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.add(CalculateRequest { a: -1.0, b: 200.0 }).await })
    };
    fx.started.recv().await.unwrap();

    let mut big = Request::new(ferry::call::Body::Message(bytes::Bytes::from(
        vec![0u8; 5 * 1024 * 1024],
    )));
    big.set_method("/calculator.v1.Calculator/Add");
    let status = channel.call(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("exceeds the limit"), "{status}");

    let mut fat = Request::new(CalculateRequest { a: 1.0, b: 1.0 });
    fat.metadata_mut().insert("x-fat", "m".repeat(64 * 1024));
    let status = client.add(fat).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");

    assert_eq!(in_flight.await.unwrap().unwrap().into_inner().result, 199.0);
    let answer = client
        .multiply(CalculateRequest { a: 2.0, b: 3.0 })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().result, 6.0);
    assert_eq!(fx.peers.lock().unwrap().len(), 1, "the connection survived");
}

#[tokio::test]
async fn an_oversized_reply_fails_only_its_own_call() {
    let server = start_calculator().await;
    let channel = Channel::builder(target(&server))
        .max_message_size(4)
        .connect()
        .await
        .unwrap();
    let calc = Calculator::new(channel);
    // 0 + 0 encodes to an empty message; 1.5 + 1 needs 9 bytes.
    assert_eq!(calc.add(0.0, 0.0).await.unwrap(), 0.0);
    let status = calc.add(1.5, 1.0).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert_eq!(calc.add(0.0, 0.0).await.unwrap(), 0.0);
}

#[tokio::test]
async fn an_enormous_timeout_is_not_a_tiny_one() {
    let mut fx = start_slow(Duration::from_secs(5)).await;
    let client = pb::CalculatorClient::connect(target(&fx.server))
        .await
        .unwrap();
    // More microseconds than fit in 64 bits: must saturate, not wrap around to 1 ms.
    let timeout = Duration::from_micros(u64::MAX) + Duration::from_millis(1);
    let request = Request::new(CalculateRequest { a: -1.0, b: 20.0 }).with_timeout(timeout);
    let answer = client.add(request).await.unwrap();
    assert_eq!(answer.into_inner().result, 19.0);
    fx.started.recv().await.unwrap();
}

#[test]
fn methods_marked_no_side_effects_are_listed_for_hedging() {
    assert_eq!(
        pb::CalculatorClient::SIDE_EFFECT_FREE_METHODS,
        [
            "/calculator.v1.Calculator/Add",
            "/calculator.v1.Calculator/Subtract",
            "/calculator.v1.Calculator/Multiply",
            "/calculator.v1.Calculator/Divide",
        ]
    );
}
