//! Service discovery: where the instances of a service are, as a stream of changes.
//!
//! Every source implements one trait, [`Discovery`], whose stream yields
//! [`tower::discover::Change`]s keyed by an instance id with the instance's address as the
//! value. A balanced [`Channel`](crate::Channel) turns each inserted address into an
//! [`Endpoint`](crate::client::Endpoint) and each removal into a closed one.
//!
//! - [`StaticDiscovery`]: a fixed list, e.g. `ferry://10.0.0.1:8000,10.0.0.2:8000`.
//! - [`ManualDiscovery`]: a list changed at run time through a handle (tests, custom sources).
//! - [`DnsDiscovery`]: A/AAAA or SRV records, re-resolved on an interval.
//! - `EtcdDiscovery` and `EtcdRegistry` (feature `etcd`): the distributed registry.
//!
//! ```
//! use ferry::discovery::StaticDiscovery;
//! let discovery = StaticDiscovery::parse("ferry://10.0.0.1:8000,10.0.0.2:8000").unwrap();
//! assert_eq!(discovery.addresses(), ["10.0.0.1:8000", "10.0.0.2:8000"]);
//! ```

mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::Status;
use crate::call::BoxFuture;

pub use dns::DnsDiscovery;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdDiscovery, EtcdRegistry};

/// One change to a service's set of instances: `Insert(id, address)` or `Remove(id)`.
///
/// The id is stable for an instance (for most sources it is the address itself); the address
/// is `host:port`.
pub type EndpointChange = tower::discover::Change<String, String>;

/// The stream a [`Discovery`] yields. It should not end while the source is alive; an `Err`
/// item is logged and the set of instances is kept as it was.
pub type DiscoveryStream = Pin<Box<dyn Stream<Item = Result<EndpointChange, Status>> + Send>>;

/// A source of instances for one service.
///
/// Implement it to plug in a registry Ferry does not ship; balanced channels call
/// [`Discovery::watch`] once when they are built.
pub trait Discovery: Send + Sync + 'static {
    /// Starts watching: the stream first yields an `Insert` for every instance known now, then
    /// every later change.
    fn watch(&self) -> DiscoveryStream;

    /// A short description for logs and errors, e.g. `static[10.0.0.1:8000, …]`.
    fn describe(&self) -> String;
}

impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn watch(&self) -> DiscoveryStream {
        (**self).watch()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Strips an optional `ferry://` scheme and checks for `host:port`.
pub(crate) fn parse_address(target: &str) -> Result<String, Status> {
    let address = match target.trim().split_once("://") {
        None => target.trim(),
        Some(("ferry", rest)) => rest,
        Some((scheme, _)) => {
            return Err(Status::invalid_argument(format!(
                "unsupported scheme {scheme:?} in {target:?}; use ferry://host:port"
            )));
        }
    };
    let address = address.trim_end_matches('/');
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(address.to_owned())
        }
        _ => Err(Status::invalid_argument(format!(
            "address {target:?} needs a host and a port, e.g. 10.0.0.1:8000"
        ))),
    }
}

/// A fixed list of instances.
///
/// ```
/// let discovery = ferry::discovery::StaticDiscovery::new(["10.0.0.1:8000", "10.0.0.2:8000"]);
/// assert_eq!(discovery.unwrap().addresses().len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct StaticDiscovery {
    addresses: Vec<String>,
}

impl StaticDiscovery {
    /// A list of `host:port` (or `ferry://host:port`) addresses.
    pub fn new<I, S>(addresses: I) -> Result<StaticDiscovery, Status>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for address in addresses {
            let address = parse_address(address.as_ref())?;
            if !list.contains(&address) {
                list.push(address);
            }
        }
        if list.is_empty() {
            return Err(Status::invalid_argument(
                "a static list needs at least one address",
            ));
        }
        Ok(StaticDiscovery { addresses: list })
    }

    /// Parses a comma list: `ferry://10.0.0.1:8000,10.0.0.2:8000` (the scheme is optional and
    /// may be repeated on each address).
    pub fn parse(target: &str) -> Result<StaticDiscovery, Status> {
        let target = target.trim();
        let rest = target.strip_prefix("ferry://").unwrap_or(target);
        StaticDiscovery::new(rest.split(',').filter(|s| !s.trim().is_empty()))
    }

    /// The addresses, in the order given.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }
}

impl Discovery for StaticDiscovery {
    fn watch(&self) -> DiscoveryStream {
        let inserts: Vec<Result<EndpointChange, Status>> = self
            .addresses
            .iter()
            .map(|a| Ok(EndpointChange::Insert(a.clone(), a.clone())))
            .collect();
        // The list never changes, so the stream stays open without yielding more.
        Box::pin(futures_util::stream::iter(inserts).chain(futures_util::stream::pending()))
    }

    fn describe(&self) -> String {
        format!("static[{}]", self.addresses.join(", "))
    }
}

/// A list of instances changed at run time through [`ManualDiscovery::insert`] and
/// [`ManualDiscovery::remove`]; clones share the list.
///
/// ```
/// # #[tokio::main] async fn main() {
/// let discovery = ferry::discovery::ManualDiscovery::new();
/// discovery.insert("127.0.0.1:8000");
/// let channel = ferry::Channel::balanced(discovery.clone());
/// discovery.remove("127.0.0.1:8000");
/// # drop(channel); }
/// ```
#[derive(Clone, Default)]
pub struct ManualDiscovery {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Default)]
struct ManualInner {
    current: BTreeMap<String, String>,
    watchers: Vec<mpsc::UnboundedSender<EndpointChange>>,
}

impl ManualDiscovery {
    /// An empty list.
    pub fn new() -> ManualDiscovery {
        ManualDiscovery::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, change: EndpointChange) {
        let mut inner = self.lock();
        match &change {
            EndpointChange::Insert(id, addr) => {
                inner.current.insert(id.clone(), addr.clone());
            }
            EndpointChange::Remove(id) => {
                inner.current.remove(id);
            }
        }
        inner
            .watchers
            .retain(|w| w.send(clone_change(&change)).is_ok());
    }

    /// Adds (or replaces) an instance whose id is its address.
    pub fn insert(&self, address: impl Into<String>) {
        let address = address.into();
        self.publish(EndpointChange::Insert(address.clone(), address));
    }

    /// Adds an instance, e.g. a [`SocketAddr`].
    pub fn insert_addr(&self, address: SocketAddr) {
        self.insert(address.to_string());
    }

    /// Removes the instance with this id (its address), if present.
    pub fn remove(&self, id: impl AsRef<str>) {
        self.publish(EndpointChange::Remove(id.as_ref().to_owned()));
    }

    /// The ids of the instances listed now.
    pub fn ids(&self) -> Vec<String> {
        self.lock().current.keys().cloned().collect()
    }
}

fn clone_change(change: &EndpointChange) -> EndpointChange {
    match change {
        EndpointChange::Insert(id, addr) => EndpointChange::Insert(id.clone(), addr.clone()),
        EndpointChange::Remove(id) => EndpointChange::Remove(id.clone()),
    }
}

impl Discovery for ManualDiscovery {
    fn watch(&self) -> DiscoveryStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        for (id, addr) in &inner.current {
            let _ = tx.send(EndpointChange::Insert(id.clone(), addr.clone()));
        }
        inner.watchers.push(tx);
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|change| (Ok(change), rx))
        }))
    }

    fn describe(&self) -> String {
        format!("manual[{}]", self.ids().join(", "))
    }
}

impl std::fmt::Debug for ManualDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualDiscovery")
            .field("ids", &self.ids())
            .finish()
    }
}

/// Where a server announces itself, e.g. `EtcdRegistry` (feature `etcd`).
///
/// [`Server::register`](crate::Server::register) calls it once per served service when the
/// server starts, and [`Registration::deregister`] on graceful shutdown.
pub trait Registry: Send + Sync + 'static {
    /// Announces that `service` (e.g. `calculator.v1.Calculator`) is served at `address`.
    fn register(
        &self,
        service: &str,
        address: SocketAddr,
    ) -> BoxFuture<Result<Registration, Status>>;
}

/// A live registration: kept alive in the background until it is deregistered or dropped.
///
/// [`Registration::deregister`] removes it at once (graceful shutdown). Dropping it only stops
/// the keep-alive, so the registry forgets the instance when its lease runs out, exactly as
/// after a crash.
pub struct Registration {
    description: String,
    keep_alive: Option<tokio::task::JoinHandle<()>>,
    deregister: Option<Deregister>,
}

/// The action that removes a registration.
type Deregister = Box<dyn FnOnce() -> BoxFuture<Result<(), Status>> + Send>;

impl Registration {
    /// A registration from its parts: a background keep-alive task (aborted on drop) and the
    /// action that removes it.
    pub fn new(
        description: impl Into<String>,
        keep_alive: Option<tokio::task::JoinHandle<()>>,
        deregister: impl FnOnce() -> BoxFuture<Result<(), Status>> + Send + 'static,
    ) -> Registration {
        Registration {
            description: description.into(),
            keep_alive,
            deregister: Some(Box::new(deregister)),
        }
    }

    /// What was registered, e.g. `etcd /ferry/services/calculator.v1.Calculator/127.0.0.1:8000`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Removes the registration now and stops keeping it alive.
    pub async fn deregister(mut self) -> Result<(), Status> {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
        match self.deregister.take() {
            Some(action) => action().await,
            None => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("description", &self.description)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_lists_parse() {
        let d = StaticDiscovery::parse("ferry://10.0.0.1:8000,10.0.0.2:8000").unwrap();
        assert_eq!(d.addresses(), ["10.0.0.1:8000", "10.0.0.2:8000"]);
        let d = StaticDiscovery::parse("ferry://a:1, ferry://b:2,a:1").unwrap();
        assert_eq!(d.addresses(), ["a:1", "b:2"]);
        assert!(StaticDiscovery::parse("ferry://").is_err());
        assert!(StaticDiscovery::parse("a:1,nohost").is_err());
    }

    #[tokio::test]
    async fn manual_discovery_streams_changes() {
        let d = ManualDiscovery::new();
        d.insert("a:1");
        let mut stream = d.watch();
        d.insert("b:2");
        d.remove("a:1");
        let mut seen = Vec::new();
        for _ in 0..3 {
            match stream.next().await.unwrap().unwrap() {
                EndpointChange::Insert(id, _) => seen.push(format!("+{id}")),
                EndpointChange::Remove(id) => seen.push(format!("-{id}")),
            }
        }
        assert_eq!(seen, ["+a:1", "+b:2", "-a:1"]);
    }
}
