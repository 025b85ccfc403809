//! Faults, retries, budgets, ejection, deadlines across hops and hedging, over loopback.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry::call::{Body, BoxFuture, CallResult, MethodKind};
use ferry::client::hedge::HedgeConfig;
use ferry::client::outlier::OutlierConfig;
use ferry::client::retry::{RetryBudget, RetryConfig};
use ferry::{Channel, Code, Request, Server, ServiceHandler, Status};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_under_load_fails_no_call() {
    let mut backends = backends(3).await;
    for b in &backends {
        b.behavior.delay_ms.store(1, Ordering::SeqCst);
    }
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for _ in 0..32 {
        let (channel, stop, done, failed) =
            (channel.clone(), stop.clone(), done.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                n += 1;
                match who(&channel, None).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => failed.lock().unwrap().push(status),
                }
            }
        }));
    }
    // Steady load first, then a crash of b0, then more load on the survivors.
    assert!(eventually(PATIENCE, async || done.load(Ordering::SeqCst) >= 500).await);
    backends[0].kill();
    let at_kill = done.load(Ordering::SeqCst);
    assert!(
        eventually(PATIENCE, async || done.load(Ordering::SeqCst)
            >= at_kill + 1500)
        .await,
        "calls stalled after the kill"
    );
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap();
    let retried: usize = backends
        .iter()
        .map(|b| b.stats.retries.load(Ordering::SeqCst))
        .sum();
    eprintln!(
        "{} calls, {} failed, {retried} retries seen by servers",
        done.load(Ordering::SeqCst),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_always_fails_is_ejected() {
    let backends = backends(3).await;
    backends[0]
        .behavior
        .fail_code
        .store(Code::Unavailable as u32, Ordering::SeqCst);
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .outlier_detection(OutlierConfig {
            base_ejection: Duration::from_secs(30),
            ..OutlierConfig::default()
        })
        .lazy()
        .unwrap();
    let (failures, first) = load(&channel, 200, 4).await;
    assert_eq!(
        failures, 0,
        "retries should hide the failing instance: {first:?}"
    );
    let before = backends[0].calls();
    assert!(before >= 5, "the failing instance was never tried");
    let (failures, first) = load(&channel, 500, 4).await;
    assert_eq!(failures, 0, "{first:?}");
    let after = backends[0].calls();
    eprintln!(
        "failing instance: {before} attempts before ejection, {} after",
        after - before
    );
    assert_eq!(after, before, "an ejected instance still received calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_instance_fails_retries_stay_within_the_budget() {
    let backends = backends(3).await;
    for b in &backends {
        b.behavior
            .fail_code
            .store(Code::Unavailable as u32, Ordering::SeqCst);
    }
    // 20 % of calls, plus 1 retry a second (10 in the 10 s window).
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .retry_budget(RetryBudget::new(Duration::from_secs(10), 1, 0.2))
        .lazy()
        .unwrap();
    let calls = 300;
    let mut slowest = Duration::ZERO;
    let mut last = None;
    for _ in 0..calls {
        let start = Instant::now();
        let status = who(&channel, None).await.unwrap_err();
        slowest = slowest.max(start.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        last = Some(status);
    }
    let attempts: usize = backends.iter().map(Backend::calls).sum();
    let retries = attempts - calls;
    eprintln!(
        "{calls} calls made {attempts} attempts ({retries} retries); slowest {slowest:?}; last: {last:?}"
    );
    let tagged: usize = backends
        .iter()
        .map(|b| b.stats.retries.load(Ordering::SeqCst))
        .sum();
    assert_eq!(tagged, retries, "every retry carries retry-attempts");
    let allowed = (calls as f64 * 0.2) as usize + 10 + 5;
    assert!(
        retries <= allowed,
        "{retries} retries exceed the budget ({allowed})"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a failing call took {slowest:?}"
    );
    let last = last.unwrap();
    assert!(
        last.message().contains("retry budget is spent") || last.message().contains("gave up"),
        "unclear error: {last:?}"
    );
}

/// Relays every call to the backends over `inner`, with `request.child(..)`, after `pause`.
#[derive(Clone)]
struct Relay {
    inner: Channel,
    pause: Duration,
    seen: Arc<std::sync::Mutex<Vec<Arrival>>>,
}

impl ServiceHandler for Relay {
    fn name(&self) -> &'static str {
        "test.Relay"
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        &[]
    }

    fn methods(&self) -> &'static [(&'static str, MethodKind)] {
        &[("Go", MethodKind::Unary)]
    }

    fn call(&self, _method: &str, request: Request<Body>) -> BoxFuture<CallResult> {
        let this = self.clone();
        Box::pin(async move {
            tokio::time::sleep(this.pause).await;
            let mut outgoing = request.child(Body::empty());
            outgoing.set_method(WHO);
            this.seen
                .lock()
                .unwrap()
                .push((request.deadline(), Instant::now()));
            this.inner.call(outgoing).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_propagate_across_two_hops() {
    let backends = backends(2).await;
    // The relay's own channel has a generous default timeout that the child must not use.
    let inner = Channel::builder(comma_list(&backends))
        .timeout(Duration::from_secs(60))
        .lazy()
        .unwrap();
    let relay = Relay {
        inner,
        pause: Duration::from_millis(50),
        seen: Arc::default(),
    };
    let seen = relay.seen.clone();
    let front = Server::builder()
        .add_service(relay)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Channel::builder(format!("ferry://{}", front.local_addr()))
        .timeout(Duration::from_secs(2))
        .lazy()
        .unwrap();
    for _ in 0..5 {
        let mut request = Request::new(Body::empty());
        request.set_method("/test.Relay/Go");
        client.call(request).await.unwrap();
    }
    let outer = seen.lock().unwrap().clone();
    let inner: Vec<_> = backends
        .iter()
        .flat_map(|b| b.stats.deadlines.lock().unwrap().clone())
        .collect();
    assert_eq!(outer.len(), 5);
    assert_eq!(inner.len(), 5);
    // Pair them by time: the i-th relayed call is the i-th arrival at the backends.
    let mut inner = inner;
    inner.sort_by_key(|(_, arrived)| *arrived);
    for ((outer_deadline, sent), (inner_deadline, arrived)) in outer.iter().zip(&inner) {
        let outer_deadline = outer_deadline.expect("the front call has a deadline");
        let inner_deadline = inner_deadline.expect("the relayed call inherits a deadline");
        // The remaining time is measured when the call is sent, so the inner deadline can only
        // be later by the time the call spent in transit.
        let transit = arrived.saturating_duration_since(*sent);
        assert!(
            inner_deadline <= outer_deadline + transit,
            "inner deadline is {:?} past the outer one (transit {transit:?})",
            inner_deadline.saturating_duration_since(outer_deadline)
        );
        // And it is the caller's 2 s minus the relay's pause, not the relay's 60 s default.
        let granted = inner_deadline.saturating_duration_since(*arrived);
        assert!(
            granted < Duration::from_millis(1960),
            "inner call granted {granted:?}"
        );
    }
    front.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_bounds_retries_and_waits() {
    let backends = backends(1).await;
    backends[0].behavior.delay_ms.store(2000, Ordering::SeqCst);
    let channel = Channel::builder(comma_list(&backends))
        .timeout(Duration::from_millis(200))
        .lazy()
        .unwrap();
    let start = Instant::now();
    let status = who(&channel, None).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_calls_all_succeed_and_losers_are_cancelled() {
    let backends = backends(3).await;
    for b in &backends {
        b.behavior.delay_ms.store(5, Ordering::SeqCst);
    }
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .balancer(ferry::client::balance::Balancer::RoundRobin)
        .retry(RetryConfig::disabled())
        .hedge(
            WHO,
            HedgeConfig {
                min_data_points: 10,
                period: Duration::from_millis(300),
                ..HedgeConfig::default()
            },
        )
        .lazy()
        .unwrap();
    // Fill the latency histogram (it is read one period after it is written).
    let warm_up_until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < warm_up_until {
        let (failures, first) = load(&channel, 20, 4).await;
        assert_eq!(failures, 0, "{first:?}");
    }
    // Now b0 is slow on every 5th call (20 % of its calls).
    backends[0].behavior.slow_ms.store(1000, Ordering::SeqCst);
    backends[0].behavior.slow_every.store(5, Ordering::SeqCst);
    let (failures, first) = load(&channel, 300, 4).await;
    assert_eq!(failures, 0, "{first:?}");
    let stats = &backends[0].stats;
    let hedged: usize = backends
        .iter()
        .map(|b| b.stats.hedged.load(Ordering::SeqCst))
        .sum();
    assert!(hedged > 0, "no call was hedged");
    // Every slow call either finished (only during warm-up) or was cancelled once its hedge
    // won; wait for the cancellations to arrive.
    let settled = eventually(PATIENCE, async || {
        let started = stats.slow_started.load(Ordering::SeqCst);
        started
            == stats.slow_finished.load(Ordering::SeqCst)
                + stats.slow_cancelled.load(Ordering::SeqCst)
    })
    .await;
    assert!(settled, "slow calls neither finished nor were cancelled");
    let cancelled = stats.slow_cancelled.load(Ordering::SeqCst);
    eprintln!(
        "hedged {hedged} calls; slow calls: {} started, {} finished, {cancelled} cancelled",
        stats.slow_started.load(Ordering::SeqCst),
        stats.slow_finished.load(Ordering::SeqCst)
    );
    assert!(cancelled > 0, "no losing attempt was cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_without_instances_is_clear_and_quick() {
    let discovery = ferry::discovery::ManualDiscovery::new();
    let channel = Channel::builder("nobody")
        .discovery(discovery)
        .connect_timeout(Duration::from_millis(300))
        .lazy()
        .unwrap();
    let start = Instant::now();
    let status: Status = who(&channel, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("no instances"), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// Fails for one address, succeeds for the rest.
struct FailFor(String, Arc<AtomicUsize>);

impl ferry::client::outlier::Probe for FailFor {
    fn probe(&self, endpoint: &ferry::client::Endpoint) -> BoxFuture<Result<(), Status>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        let fail = endpoint.authority() == self.0;
        Box::pin(async move {
            if fail {
                Err(Status::unavailable("probe says no"))
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_probe_ejects_an_instance() {
    let backends = backends(3).await;
    let probes = Arc::new(AtomicUsize::new(0));
    let probe = FailFor(backends[0].addr.to_string(), probes.clone());
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .health_check(ferry::client::outlier::HealthCheck::new(
            probe,
            Duration::from_millis(50),
        ))
        .lazy()
        .unwrap();
    // The first call creates the endpoints; probes start then.
    who(&channel, None).await.unwrap();
    assert!(eventually(PATIENCE, async || probes.load(Ordering::SeqCst) >= 6).await);
    let before = backends[0].calls();
    let (failures, first) = load(&channel, 300, 4).await;
    assert_eq!(failures, 0, "{first:?}");
    assert_eq!(
        backends[0].calls(),
        before,
        "the instance failing its health check still got calls"
    );
    assert!(backends[1].calls() > 0 && backends[2].calls() > 0);
}

/// A `grpc.health.v1.Health` service answering `NOT_SERVING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_health_probe_reads_the_health_service() {
    use ferry::client::outlier::{GrpcHealthProbe, Probe};
    let plain = backends(1).await;
    // A real backend whose built-in health service reports NOT_SERVING.
    let mut reporter = None;
    let mut sick = Backend::start_with("sick", |server| {
        server.health_reporter().set_not_serving("");
        reporter = Some(server.health_reporter());
        server
    })
    .await;
    let probe = GrpcHealthProbe::new("");
    let endpoint = |addr: std::net::SocketAddr| {
        ferry::client::Endpoint::new(&addr.to_string(), ferry::client::EndpointConfig::default())
            .unwrap()
    };
    // The built-in health service reports SERVING.
    probe.probe(&endpoint(plain[0].addr)).await.unwrap();
    let status = probe.probe(&endpoint(sick.addr)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("NOT_SERVING"), "{status:?}");
    // It recovers when the server reports SERVING again.
    reporter.expect("the reporter").set_serving("");
    probe.probe(&endpoint(sick.addr)).await.unwrap();
    sick.shutdown().await;
}
