//! Outlier ejection (a per-endpoint circuit breaker) and active health checks.
//!
//! Every endpoint of a balanced channel counts its consecutive failures (by default calls that
//! end `UNAVAILABLE`). At [`OutlierConfig::consecutive_failures`] in a row — or at the first
//! failure that leaves it without a connection (refused, reset, connect timeout) — it is
//! *ejected*: the balancer skips it for [`OutlierConfig::base_ejection`] times the
//! number of times it has been ejected, capped at [`OutlierConfig::max_ejection`]. When the time
//! is up it gets traffic again, half-open: one more failure ejects it again, for longer.
//! At most [`OutlierConfig::max_ejected_share`] of the endpoints (default half) are ejected at
//! once, so a fault that hits every instance never empties the pool.
//!
//! Active checks ([`HealthCheck`]) probe each endpoint on an interval with a pluggable
//! [`Probe`]: [`ConnectProbe`] (the connection opens) or [`GrpcHealthProbe`]
//! (`grpc.health.v1.Health/Check` answers `SERVING`; a server without the health service
//! counts as healthy). A failed probe ejects the endpoint like failed calls do.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use crate::call::{Body, BoxFuture, CallResult};
use crate::services::health::{ServingStatus, pb as health};
use crate::{Code, Request, Status};

/// When an endpoint is ejected, and for how long. The defaults suit most services.
///
/// ```
/// use std::time::Duration;
/// let config = ferry::client::outlier::OutlierConfig {
///     consecutive_failures: 3,
///     base_ejection: Duration::from_millis(500),
///     ..Default::default()
/// };
/// assert_eq!(config.max_ejected_share, 0.5);
/// ```
#[derive(Clone, Debug)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// Status codes that count as failures of the endpoint (default `UNAVAILABLE`).
    pub failure_codes: Vec<Code>,
    /// The first ejection lasts this long; the n-th lasts n times as long (default 1 s).
    pub base_ejection: Duration,
    /// No ejection lasts longer (default 30 s).
    pub max_ejection: Duration,
    /// The largest share of endpoints ejected at once (default 0.5).
    pub max_ejected_share: f64,
}

impl Default for OutlierConfig {
    fn default() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 5,
            failure_codes: vec![Code::Unavailable],
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            max_ejected_share: 0.5,
        }
    }
}

/// Checks whether one endpoint is healthy; used by [`HealthCheck`].
pub trait Probe: Send + Sync + 'static {
    /// Resolves to `Ok` when `endpoint` is fit to take calls.
    fn probe(&self, endpoint: &Endpoint) -> BoxFuture<Result<(), Status>>;
}

/// Healthy when a connection to the endpoint is open or can be opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectProbe;

impl Probe for ConnectProbe {
    fn probe(&self, endpoint: &Endpoint) -> BoxFuture<Result<(), Status>> {
        let endpoint = endpoint.clone();
        Box::pin(async move { endpoint.connect().await })
    }
}

/// Calls `/grpc.health.v1.Health/Check` for one service name (empty: the whole server).
///
/// Healthy when the answer is `SERVING`, or when the server does not offer the health service
/// (`UNIMPLEMENTED`), so pointing it at any Ferry server is safe.
#[derive(Clone, Debug, Default)]
pub struct GrpcHealthProbe {
    service: String,
}

impl GrpcHealthProbe {
    /// Probes the health of `service` (`""` asks about the server as a whole).
    pub fn new(service: impl Into<String>) -> GrpcHealthProbe {
        GrpcHealthProbe {
            service: service.into(),
        }
    }
}

impl Probe for GrpcHealthProbe {
    fn probe(&self, endpoint: &Endpoint) -> BoxFuture<Result<(), Status>> {
        let endpoint = endpoint.clone();
        let request = health::HealthCheckRequest {
            service: self.service.clone(),
        };
        Box::pin(async move {
            let channel = crate::Channel::from_service(
                endpoint.authority(),
                crate::call::BoxService::new(endpoint.clone()),
            );
            match health::HealthClient::new(channel).check(request).await {
                Ok(response) => {
                    let reply = response.into_inner();
                    if reply.status() == ServingStatus::Serving {
                        Ok(())
                    } else {
                        Err(Status::unavailable(format!(
                            "{} reports health status {}",
                            endpoint.authority(),
                            reply.status().as_str_name()
                        )))
                    }
                }
                Err(status) if status.code() == Code::Unimplemented => Ok(()),
                Err(status) => Err(status),
            }
        })
    }
}

/// Active health checking: probe each endpoint every `interval`; a probe that fails or takes
/// longer than `timeout` ejects the endpoint (within the ejection cap).
#[derive(Clone)]
pub struct HealthCheck {
    /// Time between probes of one endpoint (default 5 s).
    pub interval: Duration,
    /// A probe slower than this fails (default 1 s).
    pub timeout: Duration,
    /// What a probe does (default [`ConnectProbe`]).
    pub probe: Arc<dyn Probe>,
}

impl Default for HealthCheck {
    fn default() -> HealthCheck {
        HealthCheck {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            probe: Arc::new(ConnectProbe),
        }
    }
}

impl HealthCheck {
    /// Probes with `probe` every `interval`.
    pub fn new(probe: impl Probe, interval: Duration) -> HealthCheck {
        HealthCheck {
            interval,
            probe: Arc::new(probe),
            ..HealthCheck::default()
        }
    }
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How many endpoints a pool has and how many are ejected; shared by its nodes.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    counts: Mutex<(usize, usize)>,
}

impl PoolStats {
    fn counts(&self) -> MutexGuard<'_, (usize, usize)> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `(endpoints, ejected)` right now.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> (usize, usize) {
        *self.counts()
    }
}

#[derive(Debug, Default)]
struct NodeState {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    restored_at: Option<Instant>,
    /// The endpoint left the pool; calls still in flight on it must not eject it (that would
    /// take an ejection from the pool that nothing ever gives back).
    removed: bool,
}

/// The health bookkeeping of one endpoint.
struct NodeHealth {
    authority: String,
    config: Arc<OutlierConfig>,
    pool: Arc<PoolStats>,
    state: Mutex<NodeState>,
}

impl NodeHealth {
    fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome of one call; `connected` tells whether the endpoint still has a
    /// usable connection afterwards.
    fn record(&self, code: Option<Code>, connected: bool) {
        let failed = code.is_some_and(|c| self.config.failure_codes.contains(&c));
        let mut state = self.state();
        // Failing without a connection (refused, reset, timed out) is not worth waiting for
        // more evidence: the endpoint is ejected at once (within the cap).
        if failed && !connected && self.config.consecutive_failures > 0 {
            state.consecutive = state.consecutive.saturating_add(1);
            if state.ejected_until.is_none() {
                self.eject(&mut state, Duration::ZERO, "cannot connect");
            }
            return;
        }
        if !failed {
            state.consecutive = 0;
            // A long healthy stretch forgets earlier ejections.
            if state
                .restored_at
                .is_some_and(|t| t.elapsed() > self.config.max_ejection)
            {
                state.ejections = 0;
                state.restored_at = None;
            }
            return;
        }
        state.consecutive = state.consecutive.saturating_add(1);
        let threshold = self.config.consecutive_failures;
        if threshold > 0 && state.consecutive >= threshold && state.ejected_until.is_none() {
            self.eject(&mut state, Duration::ZERO, "consecutive failures");
        }
    }

    /// Ejects if the cap allows; the ejection lasts at least `at_least`.
    fn eject(&self, state: &mut NodeState, at_least: Duration, why: &str) {
        if state.removed {
            return;
        }
        let mut counts = self.pool.counts();
        let (total, ejected) = *counts;
        let allowed = (self.config.max_ejected_share * total as f64).floor() as usize;
        if ejected >= allowed {
            tracing::debug!(endpoint = %self.authority, "not ejecting ({why}): {ejected} of {total} already out");
            return;
        }
        counts.1 += 1;
        state.ejections = state.ejections.saturating_add(1);
        let duration = self
            .config
            .base_ejection
            .saturating_mul(state.ejections)
            .min(self.config.max_ejection)
            .max(at_least);
        state.ejected_until = Some(Instant::now() + duration);
        tracing::info!(endpoint = %self.authority, ?duration, "ejected ({why})");
    }

    /// `Some(until)` while ejected; restores the endpoint (half-open) once the time is up.
    fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let until = state.ejected_until?;
        if until > now {
            return Some(until);
        }
        state.ejected_until = None;
        state.restored_at = Some(now);
        // Half-open: the next failure ejects again.
        state.consecutive = self.config.consecutive_failures.saturating_sub(1);
        let mut counts = self.pool.counts();
        counts.1 = counts.1.saturating_sub(1);
        tracing::info!(endpoint = %self.authority, "restored after ejection");
        None
    }

    /// A failed probe ejects the endpoint, or keeps it ejected while probes keep failing.
    fn probe_failed(&self, interval: Duration, status: &Status) {
        let mut state = self.state();
        let hold = Instant::now() + interval.saturating_mul(2);
        match state.ejected_until {
            Some(until) if until < hold => state.ejected_until = Some(hold),
            Some(_) => {}
            None => {
                let why = format!("health check: {}", status.message());
                self.eject(&mut state, interval.saturating_mul(2), &why);
            }
        }
    }
}

/// One endpoint as a balancer sees it: ready unless ejected; records every call's outcome.
pub(crate) struct Node {
    endpoint: Endpoint,
    health: Arc<NodeHealth>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    probe: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub(crate) fn new(
        endpoint: Endpoint,
        config: Arc<OutlierConfig>,
        pool: Arc<PoolStats>,
        health_check: Option<&HealthCheck>,
    ) -> Node {
        pool.counts().0 += 1;
        let health = Arc::new(NodeHealth {
            authority: endpoint.authority().to_owned(),
            config,
            pool,
            state: Mutex::new(NodeState::default()),
        });
        let probe = health_check.map(|check| {
            let check = check.clone();
            let endpoint = endpoint.clone();
            let health = Arc::downgrade(&health);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(check.interval).await;
                    let outcome =
                        tokio::time::timeout(check.timeout, check.probe.probe(&endpoint)).await;
                    let Some(health) = health.upgrade() else {
                        return;
                    };
                    let outcome = outcome.unwrap_or_else(|_| {
                        Err(Status::unavailable(format!(
                            "health check timed out after {:?}",
                            check.timeout
                        )))
                    });
                    if let Err(status) = outcome {
                        health.probe_failed(check.interval, &status);
                    }
                }
            })
        });
        Node {
            endpoint,
            health,
            sleep: None,
            probe,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(task) = self.probe.take() {
            task.abort();
        }
        let mut state = self.health.state();
        state.removed = true;
        let was_ejected = state.ejected_until.take().is_some();
        let mut counts = self.health.pool.counts();
        counts.0 = counts.0.saturating_sub(1);
        if was_ejected {
            counts.1 = counts.1.saturating_sub(1);
        }
    }
}

impl tower::Service<Request<Body>> for Node {
    type Response = crate::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        loop {
            let Some(until) = self.health.ejected_until(Instant::now()) else {
                self.sleep = None;
                return Poll::Ready(Ok(()));
            };
            let deadline = tokio::time::Instant::from_std(until);
            match &mut self.sleep {
                Some(sleep) if sleep.deadline() == deadline => {}
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            if let Some(sleep) = &mut self.sleep
                && sleep.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let endpoint = self.endpoint.clone();
        let health = self.health.clone();
        Box::pin(async move {
            let result = endpoint.call(request).await;
            health.record(
                result.as_ref().err().map(Status::code),
                endpoint.is_connected(),
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::EndpointConfig;

    fn node(pool: &Arc<PoolStats>, config: &Arc<OutlierConfig>, port: u16) -> Node {
        let endpoint = Endpoint::new(&format!("127.0.0.1:{port}"), EndpointConfig::default())
            .expect("valid address");
        Node::new(endpoint, config.clone(), pool.clone(), None)
    }

    #[test]
    fn ejection_is_capped_and_grows() {
        let pool = Arc::new(PoolStats::default());
        let config = Arc::new(OutlierConfig {
            consecutive_failures: 2,
            ..OutlierConfig::default()
        });
        let nodes: Vec<Node> = (1..=4).map(|p| node(&pool, &config, p)).collect();
        for n in &nodes {
            for _ in 0..2 {
                n.health.record(Some(Code::Unavailable), true);
            }
        }
        // Half of four may be out.
        assert_eq!(pool.snapshot(), (4, 2));
        let now = Instant::now();
        let first = nodes[0].health.ejected_until(now).expect("ejected");
        assert!(first - now <= Duration::from_secs(1));
        // Once restored, one failure ejects again, for twice as long.
        let restored = nodes[0].health.ejected_until(now + Duration::from_secs(2));
        assert!(restored.is_none(), "should be restored");
        let failed_at = Instant::now();
        nodes[0].health.record(Some(Code::Unavailable), true);
        let again = nodes[0]
            .health
            .state()
            .ejected_until
            .expect("ejected again");
        assert!(again >= failed_at + Duration::from_secs(2));
        // At the cap, not even a lost connection ejects a third endpoint.
        nodes[3].health.record(Some(Code::Unavailable), false);
        assert_eq!(pool.snapshot(), (4, 2));
        assert!(nodes[3].health.state().ejected_until.is_none());
        drop(nodes);
        assert_eq!(pool.snapshot(), (0, 0));
    }

    #[test]
    fn a_call_that_ends_after_its_endpoint_left_takes_no_ejection() {
        let pool = Arc::new(PoolStats::default());
        let config = Arc::new(OutlierConfig::default());
        let nodes: Vec<Node> = (1..=3).map(|p| node(&pool, &config, p)).collect();
        let mut nodes = nodes.into_iter();
        let gone = nodes.next().expect("three nodes");
        let rest: Vec<Node> = nodes.collect();
        // A call in flight holds the endpoint's health; discovery removes the endpoint.
        let in_flight = gone.health.clone();
        drop(gone);
        assert_eq!(pool.snapshot(), (2, 0));
        // The call then fails without a connection (its server went away).
        in_flight.record(Some(Code::Unavailable), false);
        assert_eq!(
            pool.snapshot(),
            (2, 0),
            "a removed endpoint took an ejection"
        );
        // So the one ejection a pool of two allows is still there for a live endpoint.
        rest[0].health.record(Some(Code::Unavailable), false);
        assert_eq!(pool.snapshot(), (2, 1));
    }

    #[test]
    fn other_codes_do_not_count() {
        let pool = Arc::new(PoolStats::default());
        let config = Arc::new(OutlierConfig {
            consecutive_failures: 2,
            ..OutlierConfig::default()
        });
        // Four endpoints: two may be ejected, so the cap is never what stops an ejection here.
        let nodes: Vec<Node> = (1..=4).map(|p| node(&pool, &config, p)).collect();
        for _ in 0..10 {
            nodes[0].health.record(Some(Code::InvalidArgument), true);
            nodes[0].health.record(Some(Code::DeadlineExceeded), true);
        }
        assert_eq!(pool.snapshot(), (4, 0), "codes not listed ejected it");
        // Nor do they add up with listed ones: a success or another code in between resets.
        nodes[1].health.record(Some(Code::Unavailable), true);
        nodes[1].health.record(Some(Code::InvalidArgument), true);
        nodes[1].health.record(Some(Code::Unavailable), true);
        nodes[1].health.record(None, true);
        nodes[1].health.record(Some(Code::Unavailable), true);
        assert_eq!(
            pool.snapshot(),
            (4, 0),
            "failures that were not in a row ejected it"
        );
        // The listed code, twice in a row, does eject: the counting above was live.
        nodes[0].health.record(Some(Code::Unavailable), true);
        assert_eq!(pool.snapshot(), (4, 0));
        nodes[0].health.record(Some(Code::Unavailable), true);
        assert_eq!(pool.snapshot(), (4, 1));
        assert!(nodes[0].health.state().ejected_until.is_some());
    }

    #[test]
    fn losing_the_connection_ejects_at_once() {
        let pool = Arc::new(PoolStats::default());
        let config = Arc::new(OutlierConfig::default());
        // Four endpoints: two may be ejected, and none is yet.
        let nodes: Vec<Node> = (1..=4).map(|p| node(&pool, &config, p)).collect();
        nodes[0].health.record(Some(Code::Unavailable), true);
        assert_eq!(
            pool.snapshot(),
            (4, 0),
            "one answered failure is not enough"
        );
        // A failure that leaves no connection ejects on the first one.
        nodes[1].health.record(Some(Code::Unavailable), false);
        assert_eq!(pool.snapshot(), (4, 1));
        assert!(nodes[1].health.state().ejected_until.is_some());
        // Only a listed code counts, connection or not.
        nodes[2].health.record(Some(Code::InvalidArgument), false);
        assert_eq!(pool.snapshot(), (4, 1));
        // And it still works with room left under the cap.
        nodes[3].health.record(Some(Code::Unavailable), false);
        assert_eq!(pool.snapshot(), (4, 2));
    }
}
