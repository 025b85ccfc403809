//! The Calculator service: Ferry's seed example.
//!
//! - [`pb`]: code generated from `proto/calculator/v1/calculator.proto`.
//! - [`CalculatorService`]: the implementation of the generated [`pb::Calculator`] trait.
//! - [`Calculator`]: a thin wrapper over the generated client so calls read like local ones:
//!   `calculator.add(1.0, 2.0).await? == 3.0`.

use ferry::{Request, Response, Status};

/// Generated protobuf messages, the `Calculator` trait, `CalculatorServer` and `CalculatorClient`.
pub mod pb {
    #![allow(missing_docs)]
    ferry::include_proto!("calculator.v1");
}

use pb::{CalculateRequest, CalculateResponse};

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
