//! What a client-side cache hit costs compared with a call that goes to the server.
//!
//! ```text
//! cargo run --release -p ferry --example cache_latency
//! ```
//!
//! Starts a server on loopback with one side-effect-free method, then times, one call at a
//! time on one task: typed calls through a channel without a cache (every call a loopback round
//! trip), through a caching channel with the same request (every call a hit), and through a
//! caching channel with a new request each time (every call a miss that is then stored), plus
//! `Cache::call` alone on a hit (no encoding or decoding). Prints percentiles in microseconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry::cache::Cache;
use ferry::call::{Body, BoxFuture, CallResult, MethodKind};
use ferry::{Channel, Request, Response, Server, ServiceHandler};
use prost::Message;

const GET: &str = "/bench.Kv/Get";

#[derive(Clone, PartialEq, Message)]
struct Blob {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

/// Answers `Get` with a 64-byte value.
struct Kv;

impl ServiceHandler for Kv {
    fn name(&self) -> &'static str {
        "bench.Kv"
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        &[]
    }

    fn methods(&self) -> &'static [(&'static str, MethodKind)] {
        &[("Get", MethodKind::Unary)]
    }

    fn call(&self, _method: &str, _request: Request<Body>) -> BoxFuture<CallResult> {
        let reply = Blob {
            data: Bytes::from_static(&[7; 64]),
        };
        Box::pin(async move { Ok(Response::new(Body::Message(reply.encode_to_vec().into()))) })
    }
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / samples.len() as f64;
    println!(
        "{name:<44} n={:<7} mean {mean:>7.2} µs  p50 {:>7.2}  p90 {:>7.2}  p99 {:>7.2}  max {:>8.2}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

async fn time_calls(channel: &Channel, n: usize, key: impl Fn(usize) -> Bytes) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let request = Request::new(Blob { data: key(i) });
        let started = Instant::now();
        let reply = channel
            .unary::<Blob, Blob>(GET, request)
            .await
            .expect("Get");
        samples.push(started.elapsed());
        std::hint::black_box(reply);
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(Kv)
        .bind("127.0.0.1:0")
        .await?;
    let target = format!("ferry://{}", server.local_addr());
    let cache = || {
        Cache::builder()
            .side_effect_free(&[GET])
            .ttl(Duration::from_secs(3600))
            .max_entries(1_000_000)
            .build()
    };
    let plain = Channel::connect(target.as_str()).await?;
    let hit_cache = cache()?;
    let cached = Channel::builder(target.as_str())
        .cache(hit_cache.clone())
        .connect()
        .await?;
    let miss_cache = cache()?;
    let missing = Channel::builder(target.as_str())
        .cache(miss_cache.clone())
        .connect()
        .await?;
    let same = |_| Bytes::from_static(b"the-same-key");
    let fresh = |i: usize| Bytes::from(format!("key-{i}"));

    // Warm up connections, allocators and the CPU.
    time_calls(&plain, 20_000, same).await;
    time_calls(&cached, 20_000, same).await;
    time_calls(&missing, 20_000, |i| Bytes::from(format!("warm-{i}"))).await;

    report(
        "no cache (loopback round trip)",
        time_calls(&plain, 50_000, same).await,
    );
    report(
        "cache hit (typed call)",
        time_calls(&cached, 200_000, same).await,
    );
    report(
        "cache miss, then stored (typed call)",
        time_calls(&missing, 50_000, fresh).await,
    );

    let mut samples = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let mut request =
            Request::new(Body::Message(Blob { data: same(0) }.encode_to_vec().into()));
        request.set_method(GET);
        let started = Instant::now();
        let reply = hit_cache
            .call(request, |_| async {
                Err(ferry::Status::internal("not a hit"))
            })
            .await?;
        samples.push(started.elapsed());
        std::hint::black_box(reply);
    }
    report("cache hit (Cache::call, encoded bytes)", samples);
    let stats = hit_cache.stats();
    println!(
        "hit cache: {} hits, {} misses; miss cache: {:?}",
        stats.hits,
        stats.misses,
        miss_cache.stats()
    );
    server.shutdown().await?;
    Ok(())
}
