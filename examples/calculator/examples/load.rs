//! A quick closed-loop load run: N concurrent `add` calls over one connection for a few seconds,
//! against a calculator server started in-process (or `--target` an external one).
//!
//! ```text
//! cargo run --release -p calculator --example load -- --concurrency 64 --seconds 5
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

/// Measure calculator calls/s over one connection.
#[derive(Parser)]
struct Args {
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// An external server; by default one is started in this process.
    #[arg(long)]
    target: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (target, server) = match args.target {
        Some(target) => (target, None),
        None => {
            let server = ferry::Server::builder()
                .add_service(calculator::service())
                .bind("127.0.0.1:0")
                .await?;
            (format!("ferry://{}", server.local_addr()), Some(server))
        }
    };
    let calc = calculator::Calculator::connect(&target).await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (calc, done) = (calc.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    calc.add(1.0, 2.0).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, ferry::Status>(())
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        worker.await??;
    }
    let calls = done.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{calls} calls in {secs:.2} s at concurrency {}: {:.0} calls/s",
        args.concurrency,
        calls as f64 / secs
    );
    if let Some(server) = server {
        server.shutdown().await?;
    }
    Ok(())
}
