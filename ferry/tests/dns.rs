//! DNS discovery against a small in-test DNS server on loopback (A, AAAA and SRV records).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::Channel;
use ferry::discovery::{Discovery, DnsDiscovery, EndpointChange};
use ferry_test_support::*;
use futures_util::StreamExt;
use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// What the fake DNS server answers, changeable while it runs.
#[derive(Default)]
struct Zone {
    /// Every A query gets these.
    a: Vec<Ipv4Addr>,
    /// Every AAAA query gets these.
    aaaa: Vec<Ipv6Addr>,
    /// Every SRV query gets one record per port, target `node.test.`.
    srv_ports: Vec<u16>,
}

/// A DNS server on loopback UDP answering from `zone`, all records with TTL 0.
async fn fake_dns(zone: Arc<Mutex<Zone>>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            for q in &query.queries {
                reply.add_query(q.clone());
                let zone = zone.lock().unwrap();
                let answers: Vec<RData> = match q.query_type() {
                    RecordType::A => zone.a.iter().map(|ip| RData::A(A(*ip))).collect(),
                    RecordType::AAAA => zone.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect(),
                    RecordType::SRV => {
                        let target = Name::from_ascii("node.test.").unwrap();
                        zone.srv_ports
                            .iter()
                            .map(|port| RData::SRV(SRV::new(0, 0, *port, target.clone())))
                            .collect()
                    }
                    _ => Vec::new(),
                };
                for rdata in answers {
                    reply.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// A round-robin channel over what `discovery` finds.
fn round_robin(discovery: DnsDiscovery) -> Channel {
    Channel::builder("dns")
        .discovery(discovery)
        .balancer(ferry::client::balance::Balancer::RoundRobin)
        .timeout(PATIENCE)
        .lazy()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_are_followed_as_they_change() {
    let backends = backends(3).await;
    let zone = Arc::new(Mutex::new(Zone {
        a: vec![Ipv4Addr::LOCALHOST],
        srv_ports: vec![backends[0].addr.port(), backends[1].addr.port()],
        ..Zone::default()
    }));
    let dns = fake_dns(zone.clone()).await;
    let discovery = DnsDiscovery::srv("_ferry._tcp.shop.test.")
        .nameserver(dns)
        .interval(Duration::from_millis(100));
    let channel = round_robin(discovery);
    let (failures, first) = load(&channel, 100, 2).await;
    assert_eq!(failures, 0, "{first:?}");
    assert!(backends[0].calls() > 0 && backends[1].calls() > 0);
    assert_eq!(backends[2].calls(), 0, "b2 is not in DNS yet");
    // b2 appears in DNS, b0 disappears.
    zone.lock().unwrap().srv_ports = vec![backends[1].addr.port(), backends[2].addr.port()];
    let switched = eventually(PATIENCE, async || {
        let _ = load(&channel, 30, 1).await;
        backends[2].calls() > 0
    })
    .await;
    assert!(switched, "the new SRV record was never used");
    let b0 = backends[0].calls();
    let (failures, first) = load(&channel, 100, 2).await;
    assert_eq!(failures, 0, "{first:?}");
    assert_eq!(backends[0].calls(), b0, "b0 left DNS but still gets calls");
}

/// Backends on one port at several loopback addresses: 127.0.0.1, 127.0.0.2, 127.0.0.3 and,
/// where the machine has IPv6, ::1. Returns them and whether ::1 is among them.
async fn backends_on_one_port() -> (Vec<Backend>, bool) {
    for _ in 0..20 {
        let first = Backend::start("127.0.0.1").await;
        let port = first.addr.port();
        let mut all = vec![first];
        let mut clash = false;
        for ip in [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)] {
            let addr = SocketAddr::new(IpAddr::V4(ip), port);
            match Backend::start_at(&ip.to_string(), addr, |s| s).await {
                Ok(backend) => all.push(backend),
                Err(_) => clash = true,
            }
        }
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
        let has_v6 = match Backend::start_at("::1", v6, |s| s).await {
            Ok(backend) => {
                all.push(backend);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                clash = true;
                false
            }
            Err(e) => {
                eprintln!("no IPv6 loopback here ({e}): AAAA is checked through discovery only");
                false
            }
        };
        if !clash {
            return (all, has_v6);
        }
        // The port is taken at another loopback address: try another.
        for b in &mut all {
            b.kill();
        }
    }
    panic!("no port was free at 127.0.0.1, 127.0.0.2, 127.0.0.3 and ::1 at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_and_aaaa_records_give_one_endpoint_per_address() {
    let (backends, has_v6) = backends_on_one_port().await;
    let port = backends[0].addr.port();
    let zone = Arc::new(Mutex::new(Zone {
        a: vec![
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 0, 0, 2),
            Ipv4Addr::new(127, 0, 0, 3),
        ],
        aaaa: vec![Ipv6Addr::LOCALHOST],
        ..Zone::default()
    }));
    let dns = fake_dns(zone).await;
    let discovery = DnsDiscovery::new("calculator.test.", port).nameserver(dns);

    // Discovery reports every address of both families as an endpoint.
    let expected: BTreeSet<String> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "[::1]"]
        .iter()
        .map(|ip| format!("{ip}:{port}"))
        .collect();
    let mut stream = discovery.watch();
    let mut seen = BTreeSet::new();
    let complete = tokio::time::timeout(PATIENCE, async {
        while seen != expected {
            match stream.next().await {
                Some(Ok(EndpointChange::Insert(_, addr))) => {
                    seen.insert(addr);
                }
                Some(Ok(EndpointChange::Remove(id))) => panic!("{id} removed"),
                Some(Err(status)) => panic!("discovery failed: {status}"),
                None => break,
            }
        }
    })
    .await;
    assert!(
        complete.is_ok() && seen == expected,
        "discovered {seen:?}, expected {expected:?}"
    );

    // And each endpoint takes calls.
    let channel = round_robin(discovery);
    let (failures, first) = load(&channel, 200, 2).await;
    let served: Vec<usize> = backends.iter().map(Backend::calls).collect();
    eprintln!("calls per address: {served:?} (IPv6 backend: {has_v6})");
    // Without a server at ::1, calls there fail and are retried elsewhere.
    assert_eq!(failures, 0, "{first:?}");
    for b in &backends {
        assert!(
            b.calls() > 0,
            "{} ({}) got no calls: {served:?}",
            b.name,
            b.addr
        );
    }
}
