//! The closed-loop load generator shared by every RPC client: `concurrency` workers on one
//! connection, each issuing its next call as soon as the previous one returns.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Warming up: calls run but are not counted.
pub const WARMUP: u8 = 0;
/// Inside the measured window.
pub const MEASURE: u8 = 1;
/// Window over: workers finish their current call and stop.
pub const STOP: u8 = 2;

/// What a client measured over its window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Calls started and finished inside the window.
    pub calls: u64,
    /// Length of the window.
    pub secs: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Client CPU time (user + system) per call over the window.
    pub client_cpu_us_per_call: f64,
}

/// A latency histogram in nanoseconds, 1 ns .. 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency, saturating at the histogram's top.
pub fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    hist.saturating_record(elapsed.as_nanos().max(1) as u64);
}

/// Sleeps through the warm-up, opens the window (printing `WARM`), sleeps through it, closes it
/// (printing `DONE`) and returns its exact length. The orchestrator snapshots the server's
/// counters when it reads each line.
pub async fn run_window(phase: &AtomicU8, warmup: Duration, window: Duration) -> Window {
    tokio::time::sleep(warmup).await;
    phase.store(MEASURE, Ordering::SeqCst);
    let cpu_before = crate::proc::cpu_ns();
    let started = Instant::now();
    say("WARM");
    tokio::time::sleep(window).await;
    phase.store(STOP, Ordering::SeqCst);
    let secs = started.elapsed().as_secs_f64();
    let cpu_ns = crate::proc::cpu_ns() - cpu_before;
    say("DONE");
    Window { secs, cpu_ns }
}

/// The measured window: its length and the client's CPU time inside it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub secs: f64,
    pub cpu_ns: u64,
}

/// Prints one protocol line to the orchestrator.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `concurrency` workers calling `call` in a closed loop through warm-up and window.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    call: F,
) -> Result<Measured, String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, phase) = (call.clone(), phase.clone());
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut calls = 0u64;
                loop {
                    let before = phase.load(Ordering::Relaxed);
                    if before == STOP {
                        break;
                    }
                    let started = Instant::now();
                    call().await?;
                    let elapsed = started.elapsed();
                    if before == MEASURE && phase.load(Ordering::Relaxed) == MEASURE {
                        record(&mut hist, elapsed);
                        calls += 1;
                    }
                }
                Ok::<_, String>((calls, hist))
            })
        })
        .collect();
    let window = run_window(&phase, warmup, window).await;
    let mut total = histogram();
    let mut calls = 0;
    for worker in workers {
        let (n, hist) = worker.await.map_err(|e| e.to_string())??;
        calls += n;
        total.add(hist).map_err(|e| e.to_string())?;
    }
    Ok(summarize(calls, window, &total))
}

/// Turns a histogram into the reported figures.
pub fn summarize(calls: u64, window: Window, hist: &Histogram<u64>) -> Measured {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1_000.0;
    Measured {
        calls,
        secs: window.secs,
        client_cpu_us_per_call: window.cpu_ns as f64 / 1_000.0 / calls.max(1) as f64,
        p50_us: us(0.50),
        p99_us: us(0.99),
        p999_us: us(0.999),
    }
}

/// Reads `streams` (each yields the size of its next message) through warm-up and window;
/// counts messages inside the window, and records the gap before each as its latency.
pub async fn count_streams<S>(
    streams: Vec<S>,
    warmup: Duration,
    window: Duration,
) -> Result<Measured, String>
where
    S: futures_util::Stream<Item = Result<usize, String>> + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let phase = phase.clone();
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut messages = 0u64;
                let mut last = Instant::now();
                loop {
                    let before = phase.load(Ordering::Relaxed);
                    if before == STOP {
                        break;
                    }
                    stream.next().await.ok_or("the stream ended")??;
                    let now = Instant::now();
                    if before == MEASURE && phase.load(Ordering::Relaxed) == MEASURE {
                        record(&mut hist, now - last);
                        messages += 1;
                    }
                    last = now;
                }
                Ok::<_, String>((messages, hist))
            })
        })
        .collect();
    let window = run_window(&phase, warmup, window).await;
    let mut total = histogram();
    let mut messages = 0;
    for reader in readers {
        let (n, hist) = reader.await.map_err(|e| e.to_string())??;
        messages += n;
        total.add(hist).map_err(|e| e.to_string())?;
    }
    Ok(summarize(messages, window, &total))
}
