//! Middleware is tower: one layer, written once, guards every protocol on the port.
//!
//! This layer demands `authorization: Bearer demo-token` on every call except health checks,
//! and lets only `Add` through for the read-only token. The example starts a server, calls it
//! with and without credentials over the native protocol and gRPC, and prints what happened.
//!
//! ```text
//! cargo run -p calculator --example middleware
//! ```

use std::task::{Context, Poll};

use ferry::call::{Body, BoxFuture, BoxService, CallResult};
use ferry::{Code, Request, Status};

/// Checks the caller's token and what it may call.
#[derive(Clone, Copy)]
struct AuthLayer;

impl tower::Layer<BoxService> for AuthLayer {
    type Service = Auth;

    fn layer(&self, inner: BoxService) -> Auth {
        Auth { inner }
    }
}

#[derive(Clone)]
struct Auth {
    inner: BoxService,
}

/// Who a token belongs to, and whether it may call `method`.
fn authorize(token: Option<&str>, method: &str) -> Result<(), Status> {
    match token {
        Some("Bearer demo-token") => Ok(()),
        Some("Bearer read-only") if method == "/calculator.v1.Calculator/Add" => Ok(()),
        Some("Bearer read-only") => Err(Status::permission_denied(format!(
            "the read-only token may not call {method}"
        ))),
        Some(_) => Err(Status::unauthenticated("unknown token")),
        None => Err(Status::unauthenticated(
            "send `authorization: Bearer <token>`",
        )),
    }
}

impl tower::Service<Request<Body>> for Auth {
    type Response = ferry::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let public = request.method().starts_with("/grpc.health.v1.Health/");
        let token = request.metadata().get("authorization");
        match public
            .then_some(())
            .map_or_else(|| authorize(token, request.method()), Ok)
        {
            Ok(()) => self.inner.call(request),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}

async fn add(target: &str, token: Option<&str>) -> Result<f64, Status> {
    let client = calculator::pb::CalculatorClient::connect(target).await?;
    let mut request = Request::new(calculator::pb::CalculateRequest { a: 1.0, b: 2.0 });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token);
    }
    Ok(client.add(request).await?.into_inner().result)
}

async fn divide(target: &str, token: &str) -> Result<f64, Status> {
    let client = calculator::pb::CalculatorClient::connect(target).await?;
    let mut request = Request::new(calculator::pb::CalculateRequest { a: 1.0, b: 4.0 });
    request.metadata_mut().insert("authorization", token);
    Ok(client.divide(request).await?.into_inner().result)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = ferry::Server::builder()
        .add_service(calculator::service())
        .layer(AuthLayer)
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    let show = |result: Result<f64, Status>| match result {
        Ok(value) => value.to_string(),
        Err(status) => status.to_string(),
    };
    for scheme in ["ferry", "grpc"] {
        let target = format!("{scheme}://{addr}");
        println!("{target}");
        let anonymous = add(&target, None).await;
        println!("  add without a token:    {}", show(anonymous.clone()));
        assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
        let wrong = add(&target, Some("Bearer nope")).await;
        println!("  add with a wrong token: {}", show(wrong.clone()));
        assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);
        let admin = add(&target, Some("Bearer demo-token")).await;
        println!("  add with demo-token:    {}", show(admin.clone()));
        assert_eq!(admin?, 3.0);
        let reader = add(&target, Some("Bearer read-only")).await;
        println!("  add with read-only:     {}", show(reader.clone()));
        assert_eq!(reader?, 3.0);
        let denied = divide(&target, "Bearer read-only").await;
        println!("  divide with read-only:  {}", show(denied.clone()));
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }
    server.shutdown().await?;
    Ok(())
}
