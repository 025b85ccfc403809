//! Measures what hedging does to tail latency.
//!
//! Three calculators answer `multiply` in ~2 ms, but one of them takes 100 ms on every 5th call
//! (20 % of its calls). The same closed-loop load runs twice, without and with hedging of
//! `Multiply`, and prints the latency percentiles of each run.
//!
//! ```text
//! cargo run --release -p shop --example hedging -- --calls 3000 --concurrency 8
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use calculator::pb::{self, CalculateRequest, CalculateResponse};
use clap::Parser;
use ferry::client::hedge::HedgeConfig;
use ferry::{Channel, Request, Response, Server, Status};

/// Hedging benchmark.
#[derive(Parser)]
struct Args {
    /// Measured calls per run.
    #[arg(long, default_value_t = 3000)]
    calls: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Calculator instances; the first one is the uneven one.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// The hedge's latency percentile.
    #[arg(long, default_value_t = 0.95)]
    percentile: f32,
    /// Balance with round robin instead of p2c/peak-EWMA.
    #[arg(long)]
    round_robin: bool,
}

/// A calculator whose `multiply` is slow on every `slow_every`-th call.
struct Uneven {
    calls: AtomicU64,
    slow_every: u64,
}

const FAST: Duration = Duration::from_millis(2);
const SLOW: Duration = Duration::from_millis(100);

impl pb::Calculator for Uneven {
    async fn add(
        &self,
        r: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = r.into_inner();
        Ok(Response::new(CalculateResponse { result: a + b }))
    }
    async fn subtract(
        &self,
        r: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = r.into_inner();
        Ok(Response::new(CalculateResponse { result: a - b }))
    }
    async fn multiply(
        &self,
        r: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let slow = self.slow_every > 0 && n.is_multiple_of(self.slow_every);
        tokio::time::sleep(if slow { SLOW } else { FAST }).await;
        let CalculateRequest { a, b } = r.into_inner();
        Ok(Response::new(CalculateResponse { result: a * b }))
    }
    async fn divide(
        &self,
        r: Request<CalculateRequest>,
    ) -> Result<Response<CalculateResponse>, Status> {
        let CalculateRequest { a, b } = r.into_inner();
        Ok(Response::new(CalculateResponse { result: a / b }))
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

async fn run(client: &pb::CalculatorClient, calls: usize, concurrency: usize) -> Vec<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < calls {
                let start = Instant::now();
                let answer = client.multiply(CalculateRequest { a: 6.0, b: 7.0 }).await;
                match answer {
                    Ok(r) if r.get_ref().result == 42.0 => latencies.push(start.elapsed()),
                    other => panic!("bad answer: {other:?}"),
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, sorted: &[Duration]) {
    println!(
        "{name:>12}: {} calls  p50 {:>7.1?}  p95 {:>7.1?}  p99 {:>7.1?}  max {:>7.1?}",
        sorted.len(),
        percentile(sorted, 0.50),
        percentile(sorted, 0.95),
        percentile(sorted, 0.99),
        sorted[sorted.len() - 1]
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for i in 0..args.instances.max(1) {
        let slow_every = if i == 0 { 5 } else { 0 };
        let service = pb::CalculatorServer::new(Uneven {
            calls: AtomicU64::new(0),
            slow_every,
        });
        let server = Server::builder()
            .add_service(service)
            .bind("127.0.0.1:0")
            .await?;
        addrs.push(server.local_addr().to_string());
        servers.push(server);
    }
    let list = format!("ferry://{}", addrs.join(","));
    let balancer = if args.round_robin {
        ferry::client::balance::Balancer::RoundRobin
    } else {
        ferry::client::balance::Balancer::PowerOfTwoChoices
    };
    println!(
        "{} calculators ({balancer:?}); one takes {SLOW:?} on 20 % of its calls, else {FAST:?}; \
         hedging at p{}",
        args.instances,
        args.percentile * 100.0
    );
    let plain = Channel::builder(list.as_str())
        .balancer(balancer.clone())
        .lazy()?;
    let hedged = Channel::builder(list.as_str())
        .balancer(balancer)
        .hedge(
            "/calculator.v1.Calculator/Multiply",
            HedgeConfig {
                period: Duration::from_secs(1),
                latency_percentile: args.percentile,
                ..HedgeConfig::default()
            },
        )
        .lazy()?;
    let plain = pb::CalculatorClient::new(plain);
    let hedged = pb::CalculatorClient::new(hedged);

    let without = run(&plain, args.calls, args.concurrency).await;
    // Warm the hedge's latency histogram (read one period after it is written).
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(2200) {
        run(&hedged, 200, args.concurrency).await;
    }
    let with = run(&hedged, args.calls, args.concurrency).await;
    report("no hedging", &without);
    report("hedged", &with);
    for server in servers {
        server.shutdown().await?;
    }
    Ok(())
}
