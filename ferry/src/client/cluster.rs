//! Composes a balanced client stack from tower's building blocks:
//!
//! ```text
//! deadline ▸ retry (policy + budget) ▸ per-method hedge ▸ wait for instances ▸ buffer
//!          ▸ balancer (p2c/PeakEwma, round robin or consistent hash) ▸ outlier ejection ▸ Endpoint
//! ```
//!
//! Users configure it through [`ChannelBuilder`](crate::ChannelBuilder) methods
//! (`discovery`, `balancer`, `retry`, `hedge`, …) or [`Channel::balanced`](crate::Channel::balanced).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::ServiceExt;
use tower::buffer::Buffer;

use super::balance::{self, Balancer, BoxError, NodeFactory};
use super::endpoint::EndpointConfig;
use super::hedge::{HedgeConfig, HedgePolicy};
use super::outlier::{HealthCheck, OutlierConfig, PoolStats};
use super::retry::{RetryBudget, RetryConfig, RetryPolicy};
use crate::call::BoxService;
use crate::call::{Body, BoxFuture, CallResult};
use crate::discovery::{Discovery, StaticDiscovery};
use crate::{Request, Status};

/// Calls that may wait in the balancer's queue at once.
const QUEUE: usize = 4096;

/// Everything a balanced channel is built from; set through
/// [`ChannelBuilder`](crate::ChannelBuilder) methods.
#[derive(Clone, Default)]
pub(crate) struct ClusterConfig {
    pub(crate) discovery: Option<Arc<dyn Discovery>>,
    pub(crate) balancer: Balancer,
    pub(crate) retry: RetryConfig,
    pub(crate) retry_methods: HashMap<String, RetryConfig>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) hedge: HashMap<String, HedgeConfig>,
    pub(crate) outlier: OutlierConfig,
    pub(crate) health_check: Option<HealthCheck>,
    /// Set by any option that only a balanced stack honours.
    pub(crate) configured: bool,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("discovery", &self.discovery.as_ref().map(|d| d.describe()))
            .field("balancer", &self.balancer)
            .field("retry", &self.retry)
            .field("retry_methods", &self.retry_methods)
            .field("hedge", &self.hedge)
            .field("outlier", &self.outlier)
            .field("health_check", &self.health_check)
            .finish()
    }
}

impl ClusterConfig {
    /// The discovery to balance over for `target`, if the channel is balanced: an explicit
    /// one, a comma list in the target, or a single address when resilience was configured.
    pub(crate) fn discovery_for(&self, target: &str) -> Result<Option<Arc<dyn Discovery>>, Status> {
        if let Some(discovery) = &self.discovery {
            return Ok(Some(discovery.clone()));
        }
        if target.contains(',') || self.configured {
            return Ok(Some(Arc::new(StaticDiscovery::parse(target)?)));
        }
        Ok(None)
    }
}

/// Builds the balanced stack. Must run inside a Tokio runtime (the balancer runs on a task).
pub(crate) fn build(
    discovery: Arc<dyn Discovery>,
    endpoint: EndpointConfig,
    config: &ClusterConfig,
) -> BoxService {
    let name: Arc<str> = Arc::from(discovery.describe());
    let (instances_tx, instances) = tokio::sync::watch::channel(0);
    let factory = NodeFactory {
        endpoint: endpoint.clone(),
        outlier: Arc::new(config.outlier.clone()),
        health_check: config.health_check.clone(),
        pool: Arc::new(PoolStats::default()),
        instances: instances_tx,
    };
    let balancer = balance::build(&config.balancer, &*discovery, factory);
    let core = Balanced {
        buffer: Buffer::new(balancer, QUEUE),
        instances,
        wait: endpoint.connect_timeout,
        name,
    };
    let hedged = config
        .hedge
        .iter()
        .map(|(method, h)| {
            let hedge = tower::hedge::Hedge::new::<Request<Body>>(
                core.clone(),
                HedgePolicy,
                h.min_data_points,
                h.latency_percentile,
                h.period,
            );
            let hedge = Buffer::new(tower::util::BoxService::new(hedge), QUEUE);
            (method.clone(), hedge)
        })
        .collect();
    let split = MethodSplit {
        core,
        hedged: Arc::new(hedged),
    };
    let policy = RetryPolicy::new(
        config.retry.clone(),
        config.retry_methods.clone(),
        config.budget.clone().unwrap_or_default(),
    );
    BoxService::new(Deadline(tower::retry::Retry::new(policy, split)))
}

/// Turns a balancer's boxed error back into the [`Status`] inside it.
pub(crate) fn to_status(error: BoxError) -> Status {
    let error = match error.downcast::<Status>() {
        Ok(status) => return *status,
        Err(error) => error,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.clone();
        }
        source = e.source();
    }
    Status::unavailable(format!("load balancer: {error}"))
}

type BufferService = Buffer<Request<Body>, BoxFuture<Result<crate::Response<Body>, BoxError>>>;

/// The shared balancer behind a buffer; waits (up to the connect timeout) for discovery to
/// report a first instance rather than failing calls made right after start-up.
#[derive(Clone)]
struct Balanced {
    buffer: BufferService,
    instances: tokio::sync::watch::Receiver<usize>,
    wait: Duration,
    name: Arc<str>,
}

impl tower::Service<Request<Body>> for Balanced {
    type Response = crate::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let buffer = self.buffer.clone();
        let instances = self.instances.clone();
        let wait = request
            .remaining()
            .map_or(self.wait, |left| left.min(self.wait));
        let name = self.name.clone();
        let known = *instances.borrow() > 0;
        let call = futures_util::TryFutureExt::map_err(buffer.oneshot(request), to_status);
        if known {
            return Box::pin(call);
        }
        Box::pin(futures_util::TryFutureExt::and_then(
            wait_for_instances(instances, wait, name),
            move |()| call,
        ))
    }
}

/// Waits up to `wait` for discovery to report a first instance.
async fn wait_for_instances(
    mut instances: tokio::sync::watch::Receiver<usize>,
    wait: Duration,
    name: Arc<str>,
) -> Result<(), Status> {
    let found = tokio::time::timeout(wait, instances.wait_for(|n| *n > 0)).await;
    match found {
        Ok(Ok(_)) => Ok(()),
        _ => Err(Status::unavailable(format!(
            "no instances of {name} are known after waiting {wait:?}; \
             check that servers are running and registered"
        ))),
    }
}

/// A hedged method: tower's `Hedge` over the balancer, behind its own buffer (so it is `Clone`).
type HedgedService = BufferService;

/// Sends hedged methods through their [`tower::hedge::Hedge`], everything else straight on.
#[derive(Clone)]
struct MethodSplit {
    core: Balanced,
    hedged: Arc<HashMap<String, HedgedService>>,
}

impl tower::Service<Request<Body>> for MethodSplit {
    type Response = crate::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.hedged.get(request.method()) {
            Some(hedge) => {
                let hedge = hedge.clone();
                Box::pin(futures_util::TryFutureExt::map_err(
                    hedge.oneshot(request),
                    to_status,
                ))
            }
            None => self.core.call(request),
        }
    }
}

/// Bounds the whole call (queueing, retries and backoff included) by the request's deadline.
#[derive(Clone)]
struct Deadline<S>(S);

impl<S> tower::Service<Request<Body>> for Deadline<S>
where
    S: tower::Service<Request<Body>, Response = crate::Response<Body>, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = crate::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let deadline = request.deadline();
        let call = self.0.call(request);
        Box::pin(async move {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::deadline_exceeded(
                            "the deadline passed while the call waited for an endpoint or retried",
                        ))
                    }),
                None => call.await,
            }
        })
    }
}
