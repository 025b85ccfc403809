//! DNS discovery: A/AAAA or SRV records, re-resolved on an interval (hickory-resolver).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::{Discovery, DiscoveryStream, EndpointChange};
use crate::Status;

#[derive(Clone, Debug)]
enum Query {
    /// A and AAAA records of a host, all on one port.
    Host { host: String, port: u16 },
    /// SRV records (`_service._proto.name`), each naming a host and a port.
    Srv { name: String },
}

/// Instances from DNS: the A/AAAA records of a name with a fixed port, or SRV records.
///
/// The name is resolved when watching starts and again every [`DnsDiscovery::interval`]
/// (default 30 s); addresses that appear are inserted, those that vanish removed. A failed
/// lookup keeps the last known set.
///
/// ```no_run
/// use std::time::Duration;
/// use ferry::discovery::DnsDiscovery;
/// let by_host = DnsDiscovery::new("calculator.internal", 8000).interval(Duration::from_secs(10));
/// let by_srv = DnsDiscovery::srv("_ferry._tcp.calculator.internal");
/// let channel = ferry::Channel::balanced(by_host);
/// ```
#[derive(Clone, Debug)]
pub struct DnsDiscovery {
    query: Query,
    interval: Duration,
    nameserver: Option<SocketAddr>,
}

impl DnsDiscovery {
    /// The A and AAAA records of `host`, each reached on `port`.
    pub fn new(host: impl Into<String>, port: u16) -> DnsDiscovery {
        DnsDiscovery {
            query: Query::Host {
                host: host.into(),
                port,
            },
            interval: Duration::from_secs(30),
            nameserver: None,
        }
    }

    /// The SRV records of `name` (e.g. `_ferry._tcp.calculator.internal`); each target host is
    /// resolved to its addresses.
    pub fn srv(name: impl Into<String>) -> DnsDiscovery {
        DnsDiscovery {
            query: Query::Srv { name: name.into() },
            interval: Duration::from_secs(30),
            nameserver: None,
        }
    }

    /// How often to re-resolve (default 30 s).
    pub fn interval(mut self, interval: Duration) -> DnsDiscovery {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Asks this DNS server (UDP, then TCP) instead of the system's resolvers, e.g. a Consul
    /// agent's DNS interface at `127.0.0.1:8600`.
    pub fn nameserver(mut self, server: SocketAddr) -> DnsDiscovery {
        self.nameserver = Some(server);
        self
    }

    fn resolver(&self) -> Result<TokioResolver, Status> {
        let built = match self.nameserver {
            None => TokioResolver::builder_tokio().and_then(|b| b.build()),
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut ns.connections {
                    connection.port = server.port();
                }
                let config = ResolverConfig::from_name_servers(vec![ns]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build()
            }
        };
        built.map_err(|e| Status::unavailable(format!("cannot set up a DNS resolver: {e}")))
    }

    async fn resolve(&self, resolver: &TokioResolver) -> Result<BTreeSet<String>, Status> {
        let mut found = BTreeSet::new();
        match &self.query {
            Query::Host { host, port } => {
                let ips = resolver
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| Status::unavailable(format!("cannot resolve {host}: {e}")))?;
                for ip in ips.iter() {
                    found.insert(SocketAddr::new(ip, *port).to_string());
                }
            }
            Query::Srv { name } => {
                let lookup = resolver
                    .lookup(name.as_str(), RecordType::SRV)
                    .await
                    .map_err(|e| Status::unavailable(format!("cannot resolve SRV {name}: {e}")))?;
                for record in lookup.answers() {
                    let RData::SRV(srv) = &record.data else {
                        continue;
                    };
                    let target = srv.target.to_string();
                    match resolver.lookup_ip(target.as_str()).await {
                        Ok(ips) => {
                            for ip in ips.iter() {
                                found.insert(SocketAddr::new(ip, srv.port).to_string());
                            }
                        }
                        Err(e) => tracing::debug!(%target, "SRV target does not resolve: {e}"),
                    }
                }
            }
        }
        Ok(found)
    }
}

struct State {
    discovery: DnsDiscovery,
    resolver: Option<TokioResolver>,
    known: BTreeSet<String>,
    first: bool,
}

impl Discovery for DnsDiscovery {
    fn watch(&self) -> DiscoveryStream {
        let state = State {
            discovery: self.clone(),
            resolver: None,
            known: BTreeSet::new(),
            first: true,
        };
        let batches = futures_util::stream::unfold(state, |mut state| async move {
            if !state.first {
                tokio::time::sleep(state.discovery.interval).await;
            }
            state.first = false;
            if state.resolver.is_none() {
                match state.discovery.resolver() {
                    Ok(resolver) => state.resolver = Some(resolver),
                    Err(status) => return Some((vec![Err(status)], state)),
                }
            }
            let resolver = state.resolver.as_ref()?;
            let changes = match state.discovery.resolve(resolver).await {
                Ok(found) => {
                    let mut changes = Vec::new();
                    for gone in state.known.difference(&found) {
                        changes.push(Ok(EndpointChange::Remove(gone.clone())));
                    }
                    for new in found.difference(&state.known) {
                        changes.push(Ok(EndpointChange::Insert(new.clone(), new.clone())));
                    }
                    state.known = found;
                    changes
                }
                Err(status) => vec![Err(status)],
            };
            Some((changes, state))
        });
        Box::pin(futures_util::StreamExt::flat_map(
            batches,
            futures_util::stream::iter,
        ))
    }

    fn describe(&self) -> String {
        match &self.query {
            Query::Host { host, port } => format!("dns[{host}:{port}]"),
            Query::Srv { name } => format!("dns-srv[{name}]"),
        }
    }
}
