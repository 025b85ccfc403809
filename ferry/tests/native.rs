//! Ferry's native protocol end to end over loopback TCP: many calls on one connection,
//! deadlines (the server's own enforcement isolated with hand-written frames), cancellation,
//! graceful shutdown, bad input, reconnects, size limits, and the two ways the server runs a
//! handler (polled inline, or moved to a task when it has to wait).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::{Channel, Code, Request, Response, Server, Status};
use ferry_test_support::calculator::pb::{self, CalculateRequest, CalculateResponse};
use ferry_test_support::calculator::{self, Calculator};
use ferry_test_support::native_wire::{self, PREFACE, Wire};
use ferry_test_support::{PATIENCE, start_calculator, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long the server waits for a whole preface (docs/protocol.md).
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

fn target(server: &ferry::ServerHandle) -> String {
    format!("ferry://{}", server.local_addr())
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

#[tokio::test]
async fn a_slow_call_past_its_deadline_is_deadline_exceeded() {
    let mut fx = start_slow(Duration::from_secs(5)).await;
    let client = pb::CalculatorClient::connect(target(&fx.server))
        .await
        .unwrap();
    // Long enough that even a busy machine sends the call before its deadline passes (else
    // the handler would never start), short beside the handler's minute.
    let request = Request::new(CalculateRequest {
        a: -1.0,
        b: 60_000.0,
    })
    .with_timeout(Duration::from_millis(300));
    let status = client.add(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    tokio::time::timeout(PATIENCE, fx.started.recv())
        .await
        .expect("the handler started")
        .unwrap();
    // The handler is stopped, not left running (by the client's CANCEL or the server's own
    // timer, whichever comes first; the server's timer alone is tested below).
    wait_for("the expired handler is cancelled", async || {
        fx.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(fx.finished.load(Ordering::SeqCst), 0);
    // A call within its deadline still succeeds on the same connection.
    let ok = Request::new(CalculateRequest { a: -1.0, b: 1.0 }).with_timeout(PATIENCE);
    assert_eq!(client.add(ok).await.unwrap().into_inner().result, 0.0);
}

/// A call whose HEADERS grant 300 ms, to a handler that would take a minute, from a client that
/// has no timer and never sends CANCEL: only the server's own deadline can end it. (300 ms,
/// not less, so that even a busy machine starts the handler before the deadline passes.)
#[tokio::test]
async fn the_server_enforces_the_wire_deadline_on_its_own() {
    let mut fx = start_slow(Duration::from_secs(5)).await;
    let mut wire = Wire::connect(fx.server.local_addr()).await.unwrap();
    let message = prost::Message::encode_to_vec(&CalculateRequest {
        a: -1.0,
        b: 60_000.0,
    });
    let mut call = native_wire::headers(
        1,
        "/calculator.v1.Calculator/Add",
        Some(Duration::from_millis(300)),
        &[],
    );
    call.extend(native_wire::data(1, &message, true));
    wire.send(&call).await.unwrap();
    tokio::time::timeout(PATIENCE, fx.started.recv())
        .await
        .expect("the handler starts")
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, wire.status_of(1))
        .await
        .expect("the server answers by itself, without a CANCEL")
        .expect("a STATUS frame");
    assert_eq!(status.code, native_wire::DEADLINE_EXCEEDED, "{status:?}");
    assert!(status.message.contains("deadline"), "{status:?}");
    wait_for("the server cancels the expired handler", async || {
        fx.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(fx.finished.load(Ordering::SeqCst), 0);
    // The connection carries on: a call without a deadline on the next stream succeeds.
    let quick = prost::Message::encode_to_vec(&CalculateRequest { a: 2.0, b: 3.0 });
    let mut call = native_wire::headers(3, "/calculator.v1.Calculator/Add", None, &[]);
    call.extend(native_wire::data(3, &quick, true));
    wire.send(&call).await.unwrap();
    let status = tokio::time::timeout(PATIENCE, wire.status_of(3))
        .await
        .expect("an answer")
        .expect("a STATUS frame");
    assert_eq!(status.code, 0, "{status:?}");
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
    wait_for("the server observes the cancellation", async || {
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
    wait_for("the listener closes", async || {
        TcpStream::connect(addr).await.is_err()
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

/// Reads until the server closes the connection, for at most `within`; returns what it sent.
/// A reset (the server closed with our bytes unread) counts as a close.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {within:?}"),
            Ok(Ok(0)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Ok(Err(e)) => panic!("reading from the server failed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_bad_native_preface_is_closed_without_a_word() {
    let server = start_calculator().await;
    let addr = server.local_addr();
    let mut wrong_version = PREFACE;
    wrong_version[6] = 2;
    let cases: [(&str, &[u8]); 3] = [
        // The native first byte, then the wrong magic.
        ("wrong magic", &[0xF0, b'H', b'T', b'T', b'P', b'/', 1, 0]),
        ("wrong version", &wrong_version),
        // A mismatch at the second byte fails at once, without waiting for the rest.
        ("short and wrong", &[0xF0, 0x00]),
    ];
    for (what, bytes) in cases {
        let mut bad = TcpStream::connect(addr).await.unwrap();
        bad.write_all(bytes).await.unwrap();
        // The spec: the server closes without sending anything (no preface, no GOAWAY), at
        // once rather than at the end of its 10 s preface timeout.
        let received = read_until_closed(&mut bad, PREFACE_TIMEOUT / 2).await;
        assert!(
            received.is_empty(),
            "{what}: the server sent {received:02x?} before closing"
        );
    }
    // A good client is unaffected.
    let calc = Calculator::connect(&format!("ferry://{addr}"))
        .await
        .unwrap();
    assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0);
}

#[tokio::test]
async fn a_first_byte_that_is_not_native_goes_to_http() {
    let server = start_calculator().await;
    let mut http = TcpStream::connect(server.local_addr()).await.unwrap();
    http.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let reply = read_until_closed(&mut http, PATIENCE).await;
    assert!(
        reply.starts_with(b"HTTP/1."),
        "not an HTTP reply: {:?}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test]
async fn garbage_from_one_client_does_not_hurt_the_next() {
    let server = start_calculator().await;
    let addr = server.local_addr();

    // A valid preface followed by a frame that lies about its length: the server says why in
    // a GOAWAY, then closes.
    let mut liar = Wire::connect(addr).await.unwrap();
    liar.send(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    liar.send(&[0u8; 64]).await.unwrap();
    let goaway = tokio::time::timeout(PATIENCE, liar.next_frame())
        .await
        .expect("the server answers the oversized frame")
        .expect("a GOAWAY frame");
    let (last_stream, code, message) = goaway.goaway().expect("a GOAWAY frame");
    assert_eq!((last_stream, code), (0, Code::Internal as u8), "{message}");
    assert!(
        message.contains("protocol error") && message.contains("exceeds the limit"),
        "{message}"
    );
    let after = tokio::time::timeout(PATIENCE, liar.next_frame())
        .await
        .expect("the server closes the connection");
    assert!(after.is_err(), "a frame after GOAWAY: {after:?}");

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

// The server polls a handler once inline and moves it to a task only when it has to wait.
// These pin down that both paths behave the same: panics become INTERNAL and leave the
// connection usable, deadlines and replies are per call, and replies of waiting and
// non-waiting calls on one connection never get mixed up.

/// `add` answers at once; `subtract` panics at once; `multiply` panics after waiting;
/// `divide` waits `b` milliseconds, then answers `a`.
struct Mixed;

impl pb::Calculator for Mixed {
    async fn add(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        Ok(Response::new(CalculateResponse { result: a + b }))
    }

    async fn subtract(
        &self,
        _: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        panic!("a handler that panics before it ever waits");
    }

    async fn multiply(
        &self,
        _: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        panic!("a handler that panics after waiting");
    }

    async fn divide(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        tokio::time::sleep(Duration::from_millis(b as u64)).await;
        Ok(Response::new(CalculateResponse { result: a }))
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

async fn start_mixed() -> (ferry::ServerHandle, pb::CalculatorClient) {
    let server = Server::builder()
        .add_service(pb::CalculatorServer::new(Mixed))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = pb::CalculatorClient::connect(format!("ferry://{}", server.local_addr()))
        .await
        .unwrap();
    (server, client)
}

fn req(a: f64, b: f64) -> CalculateRequest {
    CalculateRequest { a, b }
}

#[tokio::test]
async fn panics_are_internal_whether_or_not_the_handler_waited() {
    let (server, client) = start_mixed().await;
    for _ in 0..3 {
        let now = client.subtract(req(1.0, 1.0)).await.unwrap_err();
        assert_eq!(now.code(), Code::Internal, "{now}");
        assert!(now.message().contains("panicked"), "{now}");
        let later = client.multiply(req(1.0, 1.0)).await.unwrap_err();
        assert_eq!(later.code(), Code::Internal, "{later}");
        // The connection is unharmed.
        let ok = client.add(req(2.0, 3.0)).await.unwrap();
        assert_eq!(ok.into_inner().result, 5.0);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn waiting_and_immediate_calls_interleave_on_one_connection() {
    let (server, client) = start_mixed().await;
    let calls = (0..400u32).map(|n| {
        let client = client.clone();
        async move {
            let i = f64::from(n);
            if n.is_multiple_of(4) {
                // Waits 1..=8 ms, so replies come back out of order.
                let reply = client.divide(req(i, 1.0 + i % 8.0)).await.unwrap();
                assert_eq!(reply.into_inner().result, i);
            } else {
                let reply = client.add(req(i, 1.0)).await.unwrap();
                assert_eq!(reply.into_inner().result, i + 1.0);
            }
        }
    });
    futures_util::future::join_all(calls).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_waiting_call_still_meets_its_deadline_and_an_immediate_one_is_unaffected() {
    let (server, client) = start_mixed().await;
    let late = client
        .divide(Request::new(req(1.0, 60_000.0)).with_timeout(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late}");
    // Its deadline is its own: the next call on the connection has a deadline long enough
    // for a loaded machine, and is answered.
    let quick = client
        .add(Request::new(req(1.0, 2.0)).with_timeout(PATIENCE))
        .await
        .unwrap();
    assert_eq!(quick.into_inner().result, 3.0);
    server.shutdown().await.unwrap();
}
