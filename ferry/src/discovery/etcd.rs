//! etcd: servers register under `<prefix><service>/<address>` with a lease kept alive;
//! clients watch the prefix (feature `etcd`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions, WatchStream};

use super::{Discovery, DiscoveryStream, EndpointChange, Registration, Registry};
use crate::Status;
use crate::call::BoxFuture;

/// Where registrations live unless [`EtcdRegistry::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "/ferry/services/";

/// How long a registration outlives its server's last keep-alive, unless configured (10 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// How long deregistering waits for etcd.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);

fn etcd_error(what: &str, e: etcd_client::Error) -> Status {
    Status::unavailable(format!("etcd: {what} failed: {e}"))
}

/// A connection to etcd used to register servers and to discover them.
///
/// ```no_run
/// # async fn demo(calculator: impl ferry::ServiceHandler) -> Result<(), Box<dyn std::error::Error>> {
/// use ferry::discovery::EtcdRegistry;
/// let registry = EtcdRegistry::connect(["http://127.0.0.1:2379"]).await?;
/// // A server registers every service it serves, and deregisters on graceful shutdown:
/// ferry::Server::builder().add_service(calculator).register(registry.clone());
/// // A client balances over whatever is registered now:
/// let channel = ferry::Channel::balanced(registry.discovery("calculator.v1.Calculator"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    prefix: String,
    ttl: Duration,
}

impl EtcdRegistry {
    /// Connects to the etcd cluster at `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect<E: AsRef<str>>(
        endpoints: impl AsRef<[E]>,
    ) -> Result<EtcdRegistry, Status> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| etcd_error("connect", e))?;
        Ok(EtcdRegistry::new(client))
    }

    /// A registry over an existing etcd client.
    pub fn new(client: Client) -> EtcdRegistry {
        EtcdRegistry {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_TTL,
        }
    }

    /// The key prefix registrations live under (default `/ferry/services/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> EtcdRegistry {
        self.prefix = prefix.into();
        if !self.prefix.ends_with('/') {
            self.prefix.push('/');
        }
        self
    }

    /// The lease TTL of registrations (default 10 s, at least 1 s): how long an instance that
    /// stopped without deregistering stays listed.
    pub fn ttl(mut self, ttl: Duration) -> EtcdRegistry {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The underlying etcd client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn service_prefix(&self, service: &str) -> String {
        format!("{}{service}/", self.prefix)
    }

    /// Registers `address` for `service` under a lease kept alive in the background.
    ///
    /// Drop the returned guard to stop the keep-alive (the entry expires with the lease), or
    /// call [`Registration::deregister`] to remove it at once.
    pub async fn register(
        &self,
        service: &str,
        address: impl std::fmt::Display,
    ) -> Result<Registration, Status> {
        let address = address.to_string();
        let key = format!("{}{address}", self.service_prefix(service));
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let mut client = self.client.clone();
        let lease = put_with_lease(&mut client, &key, &address, ttl_secs).await?;
        let current = lease.clone();
        let keep_alive = tokio::spawn(keep_alive(
            client.clone(),
            key.clone(),
            address.clone(),
            ttl_secs,
            lease,
        ));
        let description = format!("etcd {key}");
        Ok(Registration::new(
            description,
            Some(keep_alive),
            move || {
                Box::pin(async move {
                    let id = current.load(std::sync::atomic::Ordering::Acquire);
                    // Bounded, so an unreachable etcd cannot hold up a server's shutdown; the
                    // lease then expires on its own.
                    match tokio::time::timeout(REVOKE_TIMEOUT, client.lease_revoke(id)).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(etcd_error("lease revoke", e)),
                        Err(_) => Err(Status::unavailable(format!(
                            "etcd: lease revoke timed out after {REVOKE_TIMEOUT:?}; \
                             the entry expires with its lease"
                        ))),
                    }
                }) as BoxFuture<_>
            },
        ))
    }

    /// A [`Discovery`] of the instances registered for `service`.
    pub fn discovery(&self, service: &str) -> EtcdDiscovery {
        EtcdDiscovery {
            client: self.client.clone(),
            prefix: self.service_prefix(service),
        }
    }
}

type LeaseId = std::sync::Arc<std::sync::atomic::AtomicI64>;

async fn put_with_lease(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl_secs: i64,
) -> Result<LeaseId, Status> {
    let lease = client
        .lease_grant(ttl_secs, None)
        .await
        .map_err(|e| etcd_error("lease grant", e))?
        .id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(|e| etcd_error("put", e))?;
    Ok(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
        lease,
    )))
}

/// Refreshes the lease every third of its TTL; if the lease is lost (etcd restarted, network
/// partition longer than the TTL), registers again under a new one.
async fn keep_alive(mut client: Client, key: String, value: String, ttl_secs: i64, lease: LeaseId) {
    use std::sync::atomic::Ordering;
    let period = Duration::from_millis(u64::try_from(ttl_secs).unwrap_or(1) * 1000 / 3);
    loop {
        let id = lease.load(Ordering::Acquire);
        let outcome: Result<(), Status> = async {
            let (mut keeper, mut stream) = client
                .lease_keep_alive(id)
                .await
                .map_err(|e| etcd_error("lease keep-alive", e))?;
            loop {
                keeper
                    .keep_alive()
                    .await
                    .map_err(|e| etcd_error("lease keep-alive", e))?;
                match stream.message().await {
                    Ok(Some(reply)) if reply.ttl() > 0 => {}
                    Ok(_) => return Err(Status::unavailable("etcd: the lease expired")),
                    Err(e) => return Err(etcd_error("lease keep-alive", e)),
                }
                tokio::time::sleep(period).await;
            }
        }
        .await;
        if let Err(status) = outcome {
            tracing::warn!(%key, "{}; registering again", status.message());
        }
        tokio::time::sleep(period.min(Duration::from_secs(1))).await;
        match put_with_lease(&mut client, &key, &value, ttl_secs).await {
            Ok(new) => lease.store(new.load(Ordering::Acquire), Ordering::Release),
            Err(status) => tracing::warn!(%key, "cannot register again: {}", status.message()),
        }
    }
}

impl Registry for EtcdRegistry {
    fn register(
        &self,
        service: &str,
        address: SocketAddr,
    ) -> BoxFuture<Result<Registration, Status>> {
        let registry = self.clone();
        let service = service.to_owned();
        Box::pin(async move { EtcdRegistry::register(&registry, &service, address).await })
    }
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The instances registered in etcd under one service's prefix, watched live.
///
/// Built by [`EtcdRegistry::discovery`]. It reads the prefix, then watches it from the next
/// revision, so changes arrive as etcd commits them; after a broken watch it reads the prefix
/// again and reports the difference.
#[derive(Clone)]
pub struct EtcdDiscovery {
    client: Client,
    prefix: String,
}

impl EtcdDiscovery {
    /// Instances registered under `<prefix><service>/` (see [`DEFAULT_PREFIX`]).
    pub fn new(client: Client, prefix: &str, service: &str) -> EtcdDiscovery {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdDiscovery {
            client,
            prefix: format!("{prefix}{service}/"),
        }
    }
}

struct WatchState {
    client: Client,
    prefix: String,
    known: BTreeMap<String, String>,
    watch: Option<WatchStream>,
    failed: bool,
}

impl WatchState {
    /// Reads the whole prefix, reports what changed since `known`, and starts a watch.
    async fn resync(&mut self) -> Result<Vec<EndpointChange>, Status> {
        let reply = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd_error("get", e))?;
        let revision = reply.header().map_or(0, |h| h.revision());
        let mut found = BTreeMap::new();
        for kv in reply.kvs() {
            if let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) {
                found.insert(key.to_owned(), value.to_owned());
            }
        }
        let mut changes = Vec::new();
        for key in self.known.keys() {
            if !found.contains_key(key) {
                changes.push(EndpointChange::Remove(key.clone()));
            }
        }
        for (key, value) in &found {
            if self.known.get(key) != Some(value) {
                changes.push(EndpointChange::Insert(key.clone(), value.clone()));
            }
        }
        self.known = found;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let stream = self
            .client
            .watch(self.prefix.as_str(), Some(options))
            .await
            .map_err(|e| etcd_error("watch", e))?;
        self.watch = Some(stream);
        Ok(changes)
    }

    async fn next_batch(&mut self) -> Result<Vec<EndpointChange>, Status> {
        if self.failed {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let Some(watch) = self.watch.as_mut() else {
            return self.resync().await;
        };
        let reply = match watch.message().await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                self.watch = None;
                return Err(Status::unavailable("etcd: the watch ended"));
            }
            Err(e) => {
                self.watch = None;
                return Err(etcd_error("watch", e));
            }
        };
        if reply.canceled() {
            self.watch = None;
            return Err(Status::unavailable(format!(
                "etcd: the watch was cancelled: {}",
                reply.cancel_reason()
            )));
        }
        let mut changes = Vec::new();
        for event in reply.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Ok(value) = kv.value_str() {
                        self.known.insert(key.to_owned(), value.to_owned());
                        changes.push(EndpointChange::Insert(key.to_owned(), value.to_owned()));
                    }
                }
                EventType::Delete => {
                    self.known.remove(key);
                    changes.push(EndpointChange::Remove(key.to_owned()));
                }
            }
        }
        Ok(changes)
    }
}

impl Discovery for EtcdDiscovery {
    fn watch(&self) -> DiscoveryStream {
        let state = WatchState {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            known: BTreeMap::new(),
            watch: None,
            failed: false,
        };
        let batches = futures_util::stream::unfold(state, |mut state| async move {
            let batch = match state.next_batch().await {
                Ok(changes) => {
                    state.failed = false;
                    changes.into_iter().map(Ok).collect()
                }
                Err(status) => {
                    state.failed = true;
                    vec![Err(status)]
                }
            };
            Some((batch, state))
        });
        Box::pin(futures_util::StreamExt::flat_map(
            batches,
            futures_util::stream::iter,
        ))
    }

    fn describe(&self) -> String {
        format!("etcd[{}]", self.prefix)
    }
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("prefix", &self.prefix)
            .finish()
    }
}
