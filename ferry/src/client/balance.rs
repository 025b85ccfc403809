//! Load balancing over the endpoints a [`Discovery`] reports.
//!
//! - [`Balancer::PowerOfTwoChoices`] (default): tower's `balance::p2c` over
//!   `load::PeakEwma` — pick two ready endpoints at random and call the one with the lower
//!   peak-EWMA latency × (calls in flight + 1). Slow instances get little traffic quickly.
//! - [`Balancer::RoundRobin`]: each ready endpoint in turn.
//! - [`Balancer::ConsistentHash`]: requests with the same value of a metadata key go to the
//!   same endpoint (a hash ring with virtual nodes), so an instance's cache stays warm; when an
//!   instance leaves only its share of keys moves. Requests without the key go round robin.
//!
//! Ejected endpoints (see [`outlier`](super::outlier)) are skipped by every policy.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tower::discover::Change;
use tower::ready_cache::ReadyCache;

use super::endpoint::{Endpoint, EndpointConfig};
use super::outlier::{HealthCheck, Node, OutlierConfig, PoolStats};
use crate::call::{Body, BoxFuture};
use crate::discovery::{Discovery, EndpointChange};
use crate::{Request, Response, Status};

/// How a balanced channel picks an endpoint for each call.
///
/// ```
/// use ferry::client::balance::Balancer;
/// let by_tenant = Balancer::consistent_hash("x-tenant");
/// assert!(matches!(Balancer::default(), Balancer::PowerOfTwoChoices));
/// ```
#[derive(Clone, Debug, Default)]
pub enum Balancer {
    /// Power of two choices over peak-EWMA latency (tower `p2c` + `PeakEwma`).
    #[default]
    PowerOfTwoChoices,
    /// Each ready endpoint in turn.
    RoundRobin,
    /// Hash the value of metadata `key` onto a ring of endpoints.
    ConsistentHash {
        /// The metadata key whose value picks the endpoint, e.g. `x-user-id`.
        key: String,
    },
}

impl Balancer {
    /// Consistent hashing on the metadata value under `key`.
    pub fn consistent_hash(key: impl Into<String>) -> Balancer {
        Balancer::ConsistentHash { key: key.into() }
    }
}

/// The peak-EWMA latency assumed for an endpoint before it has answered.
pub const DEFAULT_RTT: Duration = Duration::from_millis(5);
/// How fast peak-EWMA forgets an old latency (its decay time constant).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

pub(crate) type BoxError = tower::BoxError;
type RawFuture = BoxFuture<Result<Response<Body>, BoxError>>;
/// The balancer as the buffer's worker owns it.
pub(crate) type BoxBalancer = tower::util::BoxService<Request<Body>, Response<Body>, BoxError>;

/// What every balancer needs to turn discovery changes into endpoints.
pub(crate) struct NodeFactory {
    pub(crate) endpoint: EndpointConfig,
    pub(crate) outlier: Arc<OutlierConfig>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) pool: Arc<PoolStats>,
    /// Publishes how many instances discovery knows.
    pub(crate) instances: tokio::sync::watch::Sender<usize>,
}

type NodeStream<S> = Pin<Box<dyn Stream<Item = Result<Change<String, S>, Status>> + Send>>;

/// Maps discovery changes to services built by `wrap(Node)`; drops (and logs) bad addresses
/// and discovery errors, which must not fail the balancer.
///
/// Discovery runs on its own task, so the set of instances stays current (and their count is
/// published) even while no call polls the balancer; the task ends with the balancer.
fn nodes<S: Send + 'static>(
    discovery: &dyn Discovery,
    factory: NodeFactory,
    wrap: impl Fn(Node) -> S + Send + 'static,
) -> NodeStream<S> {
    let name = discovery.describe();
    let mut changes = discovery.watch();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<EndpointChange>();
    let instances = factory.instances.clone();
    tokio::spawn(async move {
        let mut ids = HashSet::new();
        loop {
            let change = tokio::select! {
                _ = tx.closed() => return,
                change = changes.next() => change,
            };
            let change = match change {
                None => return,
                Some(Err(status)) => {
                    tracing::warn!(%name, "discovery error: {}", status.message());
                    continue;
                }
                Some(Ok(change)) => change,
            };
            match &change {
                EndpointChange::Insert(id, address) => {
                    tracing::debug!(%name, %id, %address, "instance added");
                    ids.insert(id.clone());
                }
                EndpointChange::Remove(id) => {
                    tracing::debug!(%name, %id, "instance removed");
                    ids.remove(id);
                }
            }
            if tx.send(change).is_err() {
                return;
            }
            instances.send_replace(ids.len());
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|change| (change, rx))
    })
    .filter_map(move |change| {
        let out = match change {
            EndpointChange::Insert(id, address) => {
                match Endpoint::new(&address, factory.endpoint.clone()) {
                    Ok(endpoint) => {
                        let node = Node::new(
                            endpoint,
                            factory.outlier.clone(),
                            factory.pool.clone(),
                            factory.health_check.as_ref(),
                        );
                        Some(Ok(Change::Insert(id, wrap(node))))
                    }
                    Err(status) => {
                        tracing::warn!(%id, "ignoring a bad address: {}", status.message());
                        None
                    }
                }
            }
            EndpointChange::Remove(id) => Some(Ok(Change::Remove(id))),
        };
        std::future::ready(out)
    });
    Box::pin(stream)
}

/// Builds the balancer for `balancer` over `discovery`.
pub(crate) fn build(
    balancer: &Balancer,
    discovery: &dyn Discovery,
    factory: NodeFactory,
) -> BoxBalancer {
    match balancer {
        Balancer::PowerOfTwoChoices => {
            let decay = EWMA_DECAY.as_nanos() as f64;
            let stream = nodes(discovery, factory, move |node| {
                tower::load::PeakEwma::new(
                    node,
                    DEFAULT_RTT,
                    decay,
                    tower::load::CompleteOnResponse::default(),
                )
            });
            let balance = tower::balance::p2c::Balance::new(stream);
            BoxBalancer::new(tower::ServiceExt::map_future(balance, |f| {
                Box::pin(f) as RawFuture
            }))
        }
        Balancer::RoundRobin => BoxBalancer::new(Pool::new(nodes(discovery, factory, |n| n), None)),
        Balancer::ConsistentHash { key } => BoxBalancer::new(Pool::new(
            nodes(discovery, factory, |n| n),
            Some(key.clone()),
        )),
    }
}

/// Round robin, or consistent hashing when `hash_key` is set, over ready [`Node`]s.
struct Pool {
    discover: NodeStream<Node>,
    services: ReadyCache<String, Node, Request<Body>>,
    ring: Ring,
    hash_key: Option<String>,
    next: usize,
}

impl Pool {
    fn new(discover: NodeStream<Node>, hash_key: Option<String>) -> Pool {
        Pool {
            discover,
            services: ReadyCache::default(),
            ring: Ring::default(),
            hash_key,
            next: 0,
        }
    }

    fn round_robin(&mut self) -> Option<String> {
        let ids = self.ring.ids();
        for i in 0..ids.len() {
            let id = &ids[(self.next + i) % ids.len()];
            if self.services.get_ready(id).is_some() {
                self.next = (self.next + i + 1) % ids.len();
                return Some(id.clone());
            }
        }
        None
    }
}

impl tower::Service<Request<Body>> for Pool {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = RawFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        while let Poll::Ready(Some(change)) = self.discover.poll_next_unpin(cx) {
            match change {
                Ok(Change::Insert(id, node)) => {
                    self.ring.insert(&id);
                    self.services.push(id, node);
                }
                Ok(Change::Remove(id)) => {
                    self.ring.remove(&id);
                    self.services.evict(&id);
                }
                Err(status) => tracing::warn!("discovery error: {}", status.message()),
            }
        }
        loop {
            match self.services.poll_pending(cx) {
                Poll::Ready(Ok(())) | Poll::Pending => break,
                Poll::Ready(Err(failed)) => tracing::debug!("dropping failed endpoint: {failed}"),
            }
        }
        if self.services.ready_len() == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let by_key = self
            .hash_key
            .as_deref()
            .and_then(|key| request.metadata().get(key))
            .map(hash);
        let chosen = match by_key {
            Some(h) => self
                .ring
                .walk(h)
                .find(|id| self.services.get_ready(*id).is_some())
                .cloned(),
            None => self.round_robin(),
        };
        match chosen {
            Some(id) => Box::pin(futures_util::TryFutureExt::map_err(
                self.services.call_ready(&id, request),
                BoxError::from,
            )),
            None => Box::pin(std::future::ready(Err(BoxError::from(
                Status::unavailable("no endpoint is ready"),
            )))),
        }
    }
}

/// Virtual nodes per endpoint on the hash ring.
const VNODES: u32 = 100;

/// FNV-1a, finished with a splitmix64 mix so nearby strings spread over the ring.
fn hash(value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A consistent-hash ring: every id owns `VNODES` points; a key belongs to the first point at or
/// after its hash (wrapping around).
#[derive(Default, Debug)]
struct Ring {
    points: Vec<(u64, Arc<str>)>,
    ids: Vec<String>,
}

impl Ring {
    fn insert(&mut self, id: &str) {
        if self.ids.iter().any(|i| i == id) {
            return;
        }
        self.ids.push(id.to_owned());
        self.ids.sort();
        let shared: Arc<str> = Arc::from(id);
        for v in 0..VNODES {
            self.points
                .push((hash(&format!("{id}#{v}")), shared.clone()));
        }
        self.points.sort_unstable();
    }

    fn remove(&mut self, id: &str) {
        self.ids.retain(|i| i != id);
        self.points.retain(|(_, i)| &**i != id);
    }

    fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Distinct ids in ring order starting at `h`.
    fn walk(&self, h: u64) -> impl Iterator<Item = &String> {
        let start = self.points.partition_point(|(p, _)| *p < h);
        let n = self.points.len();
        let mut seen: Vec<&str> = Vec::new();
        (0..n)
            .map(move |i| &*self.points[(start + i) % n].1)
            .filter(move |id| {
                if seen.contains(id) {
                    false
                } else {
                    seen.push(id);
                    true
                }
            })
            .filter_map(|id| self.ids.iter().find(|i| i.as_str() == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ring: &Ring, key: &str) -> String {
        ring.walk(hash(key)).next().unwrap().clone()
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let mut ring = Ring::default();
        for id in ["a", "b", "c", "d"] {
            ring.insert(id);
        }
        let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| owner(&ring, k)).collect();
        for id in ["a", "b", "c", "d"] {
            let share = before.iter().filter(|o| *o == id).count();
            assert!((300..=700).contains(&share), "{id} owns {share} of 2000");
        }
        ring.remove("c");
        let mut moved = 0;
        for (k, old) in keys.iter().zip(&before) {
            let new = owner(&ring, k);
            if &new != old {
                assert_eq!(old, "c", "{k} moved from {old} though c left");
                moved += 1;
            }
        }
        assert!(moved <= 700, "{moved} keys moved");
        // Walking visits every id once.
        let all: Vec<_> = ring.walk(42).collect();
        assert_eq!(all.len(), 3);
    }
}
