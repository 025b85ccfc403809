//! The native server runs a handler's first poll inline and spawns a task only for a handler
//! that has to wait. These tests pin down that both paths behave the same: panics become
//! INTERNAL and leave the connection usable, deadlines and replies are per call, and replies of
//! waiting and non-waiting calls on one connection never get mixed up.

use std::time::Duration;

use calculator::pb::{self, CalculateRequest, CalculateResponse};
use ferry::{Code, Request, Response, Server, Status};

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

async fn start() -> (ferry::ServerHandle, pb::CalculatorClient) {
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
    let (server, client) = start().await;
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
    let (server, client) = start().await;
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
    let (server, client) = start().await;
    let late = client
        .divide(Request::new(req(1.0, 2_000.0)).with_timeout(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late}");
    let quick = client
        .add(Request::new(req(1.0, 2.0)).with_timeout(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(quick.into_inner().result, 3.0);
    server.shutdown().await.unwrap();
}
