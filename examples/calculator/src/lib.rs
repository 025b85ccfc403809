//! The Calculator service: Ferry's seed example.
//!
//! - [`pb`]: code generated from `proto/calculator/v1/calculator.proto`.
//! - [`CalculatorService`]: the implementation of the generated [`pb::Calculator`] trait.
//! - [`Calculator`]: a thin wrapper over the generated client so calls read like local ones:
//!   `calculator.add(1.0, 2.0).await? == 3.0`.

use std::time::Duration;

use ferry::{Request, Response, ResponseStream, Status, Streaming};
use futures_util::StreamExt;

/// Generated protobuf messages, the `Calculator` trait, `CalculatorServer` and `CalculatorClient`.
pub mod pb {
    #![allow(missing_docs)]
    ferry::include_proto!("calculator.v1");
}

use pb::{CalculateRequest, CalculateResponse, CountRequest, Number};

/// The most numbers one `Count` call streams.
pub const MAX_COUNT: i64 = 1_000_000;

/// The calculator's implementation.
#[derive(Debug, Default, Clone)]
pub struct CalculatorService;

fn answer(result: f64) -> Result<Response<CalculateResponse>, Status> {
    Ok(Response::new(CalculateResponse { result }))
}

impl pb::Calculator for CalculatorService {
    async fn add(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        answer(a + b)
    }

    async fn subtract(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        answer(a - b)
    }

    async fn multiply(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        answer(a * b)
    }

    async fn divide(
        &self,
        request: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = request.into_inner();
        if b == 0.0 {
            return Err(Status::invalid_argument(format!(
                "cannot divide {a} by zero: the divisor `b` must be non-zero"
            )));
        }
        answer(a / b)
    }

    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<ResponseStream<Number>>, Status> {
        let CountRequest { from, to, delay_ms } = request.into_inner();
        if to.saturating_sub(from) >= MAX_COUNT {
            return Err(Status::invalid_argument(format!(
                "cannot count from {from} to {to}: at most {MAX_COUNT} numbers per call"
            )));
        }
        let delay = Duration::from_millis(delay_ms.clamp(0, 60_000) as u64);
        let numbers = futures_util::stream::iter(from..=to).then(move |n| async move {
            if !delay.is_zero() && n != from {
                tokio::time::sleep(delay).await;
            }
            Ok(Number { value: n as f64 })
        });
        Ok(Response::new(ResponseStream::new(numbers)))
    }

    async fn sum(
        &self,
        request: Request<Streaming<Number>>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let mut numbers = request.into_inner();
        let mut total = 0.0;
        while let Some(number) = numbers.message().await? {
            total += number.value;
        }
        answer(total)
    }

    async fn running_sum(
        &self,
        request: Request<Streaming<Number>>,
    ) -> Result<Response<ResponseStream<Number>>, Status> {
        let totals = request.into_inner().scan(0.0, |total, number| {
            let item = number.and_then(|n| {
                if n.value.is_nan() {
                    return Err(Status::invalid_argument("NaN is not a number to add"));
                }
                *total += n.value;
                Ok(Number { value: *total })
            });
            std::future::ready(Some(item))
        });
        Ok(Response::new(ResponseStream::new(totals)))
    }
}

/// The server-side adapter for [`CalculatorService`], ready for `Server::add_service`.
pub fn service() -> pb::CalculatorServer<CalculatorService> {
    pb::CalculatorServer::new(CalculatorService)
}

/// A calculator on the other end of the wire that reads like a local one.
///
/// ```no_run
/// # async fn demo() -> Result<(), ferry::Status> {
/// let calculator = calculator::Calculator::connect("ferry://127.0.0.1:8000").await?;
/// assert_eq!(calculator.add(1.0, 2.0).await?, 3.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Calculator {
    client: pb::CalculatorClient,
}

impl Calculator {
    /// Connects to a calculator server at `target`.
    pub async fn connect(target: &str) -> Result<Calculator, Status> {
        Ok(Calculator::new(ferry::Channel::connect(target).await?))
    }

    /// A calculator calling over an existing channel.
    pub fn new(channel: ferry::Channel) -> Calculator {
        Calculator {
            client: pb::CalculatorClient::new(channel),
        }
    }

    /// The generated client underneath, for calls with metadata or deadlines.
    pub fn client(&self) -> &pb::CalculatorClient {
        &self.client
    }

    /// `a + b`, computed remotely.
    pub async fn add(&self, a: f64, b: f64) -> Result<f64, Status> {
        Ok(self
            .client
            .add(CalculateRequest { a, b })
            .await?
            .into_inner()
            .result)
    }

    /// `a - b`, computed remotely.
    pub async fn subtract(&self, a: f64, b: f64) -> Result<f64, Status> {
        Ok(self
            .client
            .subtract(CalculateRequest { a, b })
            .await?
            .into_inner()
            .result)
    }

    /// `a * b`, computed remotely.
    pub async fn multiply(&self, a: f64, b: f64) -> Result<f64, Status> {
        Ok(self
            .client
            .multiply(CalculateRequest { a, b })
            .await?
            .into_inner()
            .result)
    }

    /// The numbers `from..=to`, streamed by the server.
    pub async fn count(&self, from: i64, to: i64) -> Result<Streaming<Number>, Status> {
        let request = CountRequest {
            from,
            to,
            delay_ms: 0,
        };
        Ok(self.client.count(request).await?.into_inner())
    }

    /// The sum of `numbers`, streamed to the server.
    pub async fn sum(&self, numbers: Vec<f64>) -> Result<f64, Status> {
        let numbers = futures_util::stream::iter(numbers.into_iter().map(|value| Number { value }));
        Ok(self.client.sum(numbers).await?.into_inner().result)
    }

    /// `a / b`, computed remotely; `INVALID_ARGUMENT` when `b` is zero.
    pub async fn divide(&self, a: f64, b: f64) -> Result<f64, Status> {
        Ok(self
            .client
            .divide(CalculateRequest { a, b })
            .await?
            .into_inner()
            .result)
    }
}
