//! Faults, retries, budgets, ejection, deadlines across hops and hedging, over loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry::call::{Body, BoxFuture, CallResult, MethodKind};
use ferry::client::hedge::HedgeConfig;
use ferry::client::outlier::{GrpcHealthProbe, HealthCheck, OutlierConfig};
use ferry::client::retry::{RetryBudget, RetryConfig};
use ferry::{Channel, Code, Request, Server, ServiceHandler, Status};
use ferry_test_support::backend::{Arrival, SLOW_UNLESS_HEDGED, WHO};
use ferry_test_support::*;

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
    backends[0].behavior.fail_with(Code::Unavailable);
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
        b.behavior.fail_with(Code::Unavailable);
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
    // A failing call is answered after its few short backoffs, not held until the channel's
    // 10 s timeout (which would end it DEADLINE_EXCEEDED, caught above); how long it takes is
    // a figure for a benchmark, so the bound here is only "well before the timeout".
    assert!(slowest < PATIENCE / 2, "a failing call took {slowest:?}");
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

/// A backend that always answers UNAVAILABLE, a retry policy that would try 1000 times with
/// 20–50 ms backoffs (half a minute in all), and a 1 s deadline: retries and their waits
/// really happen, and the deadline ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_bounds_retries_and_waits() {
    const MAX_ATTEMPTS: usize = 1000;
    let timeout = Duration::from_secs(1);
    let backends = backends(1).await;
    backends[0].behavior.fail_with(Code::Unavailable);
    let channel = Channel::builder(comma_list(&backends))
        .timeout(timeout)
        .retry(
            RetryConfig::default()
                .max_attempts(MAX_ATTEMPTS as u32)
                .backoff(Duration::from_millis(20), Duration::from_millis(50)),
        )
        .retry_budget(RetryBudget::new(Duration::from_secs(10), 10_000, 1000.0))
        .lazy()
        .unwrap();
    let start = Instant::now();
    let status = tokio::time::timeout(PATIENCE, who(&channel, None))
        .await
        .expect("the deadline ends the call")
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        !status.message().contains("gave up"),
        "the attempts ran out before the deadline: {status:?}"
    );
    let attempts = backends[0].calls();
    let tagged = backends[0].stats.retries.load(Ordering::SeqCst);
    eprintln!("{attempts} attempts in {elapsed:?} before the 1 s deadline ended the call");
    // Retries happened, each tagged with `retry-attempts`.
    assert!(attempts >= 3, "only {attempts} attempt(s): {status:?}");
    assert_eq!(tagged, attempts - 1, "every retry carries retry-attempts");
    // And they waited between attempts: without backoffs a loopback server answers hundreds
    // of attempts a second; with them (25 ms on average) a second holds a few dozen.
    assert!(
        attempts < MAX_ATTEMPTS / 10,
        "{attempts} attempts in one second: the backoffs did not wait"
    );
    // Every attempt was sent within the call's deadline (as the server saw it, which can only
    // be later than the client's by the time in transit).
    let arrivals = backends[0].stats.arrivals();
    let first_deadline = arrivals[0].0.expect("the call carries its deadline");
    for (deadline, arrived) in &arrivals {
        assert!(deadline.is_some(), "a retry without the call's deadline");
        assert!(
            *arrived <= first_deadline,
            "an attempt arrived {:?} after the deadline",
            arrived.duration_since(first_deadline)
        );
    }
    // The caller had its answer at the deadline, not after the 25 s the policy would allow.
    assert!(
        elapsed < timeout + PATIENCE / 2,
        "the call took {elapsed:?}"
    );
}

/// Hedging: calls whose first attempt hangs for a minute all succeed, because their hedge
/// wins; and every losing first attempt that reached a server was cancelled there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_calls_all_succeed_and_every_loser_is_cancelled() {
    const CALLS: usize = 100;
    // Hedging needs latencies recorded in the previous period (at least `min_data_points`).
    let period = Duration::from_secs(1);
    let backends = backends(3).await;
    for b in &backends {
        b.behavior.delay_ms.store(5, Ordering::SeqCst);
        b.behavior.slow_ms.store(60_000, Ordering::SeqCst);
    }
    let channel = Channel::builder(comma_list(&backends))
        // A call that is not hedged fails after this instead of waiting a minute.
        .timeout(PATIENCE / 2)
        .balancer(ferry::client::balance::Balancer::RoundRobin)
        .retry(RetryConfig::disabled())
        .hedge(
            WHO,
            HedgeConfig {
                min_data_points: 10,
                period,
                ..HedgeConfig::default()
            },
        )
        .lazy()
        .unwrap();
    // Plain calls (5 ms each) fill the latency histogram before, and keep it filled while,
    // the marked calls run: every period has data, so hedging never pauses.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (channel, stop) = (channel.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = who(&channel, None).await;
            }
        })
    };
    let warm_up_until = Instant::now() + period * 5 / 2;
    while Instant::now() < warm_up_until {
        let (failures, first) = load(&channel, 20, 2).await;
        assert_eq!(failures, 0, "{first:?}");
    }
    // Calls whose first attempt takes a minute (far past the channel's timeout): each can
    // only succeed if its hedge wins.
    let failures = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (channel, failures) = (channel.clone(), failures.clone());
            tokio::spawn(async move {
                for _ in 0..CALLS / 4 {
                    if let Err(status) = who(&channel, Some((SLOW_UNLESS_HEDGED, "1"))).await {
                        eprintln!("a marked call failed: {status:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    feeder.await.unwrap();
    let sum = |f: &dyn Fn(&Stats) -> usize| backends.iter().map(|b| f(&b.stats)).sum::<usize>();
    assert_eq!(failures.load(Ordering::SeqCst), 0, "calls were not rescued");
    let hedges = sum(&|s| s.rescued.load(Ordering::SeqCst));
    assert_eq!(hedges, CALLS, "one hedge per call reached a server");
    // Every losing first attempt was dropped by the client, and the server must cancel its
    // handler: wait (bounded) for the cancellations still in flight to land.
    let started = || sum(&|s| s.slow_started.load(Ordering::SeqCst));
    let cancelled = || sum(&|s| s.slow_cancelled.load(Ordering::SeqCst));
    let settled = eventually(PATIENCE, async || cancelled() == started()).await;
    let finished = sum(&|s| s.slow_finished.load(Ordering::SeqCst));
    eprintln!(
        "{CALLS} calls, {hedges} hedges; losing first attempts: {} reached a server, {} were \
         cancelled, {finished} finished",
        started(),
        cancelled()
    );
    // A first attempt dropped before it was written never reaches a server; the rest must.
    assert!(started() > 0, "no losing attempt reached a server");
    assert!(started() <= CALLS, "more losers ({}) than calls", started());
    assert!(
        settled,
        "{} losing attempts reached a server but only {} were cancelled",
        started(),
        cancelled()
    );
    assert_eq!(finished, 0, "a losing attempt ran to the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_without_instances_is_clear_and_quick() {
    let discovery = ferry::discovery::ManualDiscovery::new();
    let channel = Channel::builder("nobody")
        .discovery(discovery)
        .connect_timeout(Duration::from_millis(300))
        .lazy()
        .unwrap();
    let status: Status = tokio::time::timeout(PATIENCE, who(&channel, None))
        .await
        .expect("a call without instances fails rather than hangs")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("no instances"), "{status:?}");
    // Quick: it waited the configured 300 ms, not the default 5 s connect timeout.
    assert!(status.message().contains("300ms"), "{status:?}");
}

/// Fails for one address, succeeds for the rest; counts the probes of each address.
#[derive(Clone)]
struct FailFor(String, Arc<std::sync::Mutex<HashMap<String, usize>>>);

impl FailFor {
    /// Probes of `authority` so far.
    fn probes(&self, authority: &str) -> usize {
        self.1.lock().unwrap().get(authority).copied().unwrap_or(0)
    }
}

impl ferry::client::outlier::Probe for FailFor {
    fn probe(&self, endpoint: &ferry::client::Endpoint) -> BoxFuture<Result<(), Status>> {
        let authority = endpoint.authority().to_owned();
        *self.1.lock().unwrap().entry(authority.clone()).or_default() += 1;
        let fail = authority == self.0;
        Box::pin(async move {
            if fail {
                Err(Status::unavailable("probe says no"))
            } else {
                Ok(())
            }
        })
    }
}

/// Waits until the balanced `channel` has an endpoint for every address in `addrs` (each one
/// probed, as `probes` tells), then until `watched` has been probed twice more, so that one
/// probe that ran with the whole pool known has been acted on.
///
/// The balancer creates an endpoint, and starts probing it, when a call finds it in discovery;
/// until every endpoint exists, the ejection cap (a share of the endpoints known) may forbid
/// ejecting anything. So this keeps calling while it waits.
async fn probed_with_the_whole_pool(
    channel: &Channel,
    addrs: &[String],
    watched: &str,
    probes: impl Fn(&str) -> usize,
) {
    let all = eventually(PATIENCE, async || {
        let _ = who(channel, None).await;
        addrs.iter().all(|a| probes(a) > 0)
    })
    .await;
    assert!(all, "not every endpoint was probed");
    let seen = probes(watched);
    let again = eventually(PATIENCE, async || probes(watched) >= seen + 2).await;
    assert!(again, "{watched} was not probed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_probe_ejects_an_instance() {
    let backends = backends(3).await;
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let probe = FailFor(addrs[0].clone(), Arc::default());
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        // A failed probe holds the ejection for two intervals; a long interval leaves a busy
        // machine time to run the next probe before the ejection lapses.
        .health_check(HealthCheck::new(probe.clone(), Duration::from_secs(1)))
        .lazy()
        .unwrap();
    probed_with_the_whole_pool(&channel, &addrs, &addrs[0], |a| probe.probes(a)).await;
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
    use ferry::client::outlier::Probe;
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

/// The real `GrpcHealthProbe`, plugged into a balanced channel: a backend whose health service
/// says NOT_SERVING is ejected (gets no calls) and comes back once it says SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_health_probe_ejects_a_not_serving_backend_from_a_channel() {
    const CHECK: &str = "/grpc.health.v1.Health/Check";
    // Each backend counts the health checks it answers.
    let mut all = Vec::new();
    let mut checks = Vec::new();
    let mut reporter = None;
    for name in ["b0", "b1", "sick"] {
        let counter = CountingLayer::default();
        checks.push(counter.clone());
        all.push(
            Backend::start_with(name, |server| {
                reporter = Some(server.health_reporter());
                server.layer(counter)
            })
            .await,
        );
    }
    // The last reporter is the sick backend's.
    let reporter = reporter.expect("the reporter");
    reporter.set_not_serving("");
    let addrs: Vec<String> = all.iter().map(|b| b.addr.to_string()).collect();
    let channel = Channel::builder(comma_list(&all))
        .timeout(PATIENCE)
        // A failed probe holds the ejection for two intervals; a long interval leaves a busy
        // machine time to run the next probe before the ejection lapses.
        .health_check(HealthCheck {
            interval: Duration::from_secs(1),
            timeout: PATIENCE,
            probe: Arc::new(GrpcHealthProbe::new("")),
        })
        .lazy()
        .unwrap();
    let checks_of = |addr: &str| {
        let i = addrs.iter().position(|a| a == addr).expect("a backend");
        checks[i].calls(CHECK)
    };
    probed_with_the_whole_pool(&channel, &addrs, &addrs[2], checks_of).await;
    let sick = &all[2];
    let before = sick.calls();
    let (failures, first) = load(&channel, 300, 4).await;
    assert_eq!(failures, 0, "{first:?}");
    assert_eq!(sick.calls(), before, "the NOT_SERVING backend got calls");
    assert!(all[0].calls() > 0 && all[1].calls() > 0);
    // SERVING again: the next probe passes and the ejection runs out.
    reporter.set_serving("");
    let back = eventually(PATIENCE, async || {
        let _ = load(&channel, 30, 2).await;
        sick.calls() > before
    })
    .await;
    assert!(
        back,
        "the backend never came back after it reported SERVING: {} calls, {} probes; others: {:?}",
        sick.calls(),
        checks[2].calls(CHECK),
        [all[0].calls(), all[1].calls()]
    );
}
