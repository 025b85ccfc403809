//! DNS discovery against a small in-test DNS server on loopback (A and SRV records).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::Channel;
use ferry::discovery::DnsDiscovery;
use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use support::*;

/// Answers A queries with 127.0.0.1 and SRV queries with one record per port in `ports`
/// (target `node.test.`), all with TTL 0.
async fn fake_dns(ports: Arc<Mutex<Vec<u16>>>) -> SocketAddr {
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
                match q.query_type() {
                    RecordType::A => {
                        let a = RData::A(A(Ipv4Addr::LOCALHOST));
                        reply.add_answer(Record::from_rdata(q.name().clone(), 0, a));
                    }
                    RecordType::SRV => {
                        let target = Name::from_ascii("node.test.").unwrap();
                        for port in ports.lock().unwrap().iter() {
                            let srv = RData::SRV(SRV::new(0, 0, *port, target.clone()));
                            reply.add_answer(Record::from_rdata(q.name().clone(), 0, srv));
                        }
                    }
                    _ => {}
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_are_followed_as_they_change() {
    let backends = backends(3).await;
    let ports = Arc::new(Mutex::new(vec![
        backends[0].addr.port(),
        backends[1].addr.port(),
    ]));
    let dns = fake_dns(ports.clone()).await;
    let discovery = DnsDiscovery::srv("_ferry._tcp.shop.test.")
        .nameserver(dns)
        .interval(Duration::from_millis(100));
    let channel = Channel::builder("dns")
        .discovery(discovery)
        .balancer(ferry::client::balance::Balancer::RoundRobin)
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    let (failures, first) = load(&channel, 100, 2).await;
    assert_eq!(failures, 0, "{first:?}");
    assert!(backends[0].calls() > 0 && backends[1].calls() > 0);
    assert_eq!(backends[2].calls(), 0, "b2 is not in DNS yet");
    // b2 appears in DNS, b0 disappears.
    *ports.lock().unwrap() = vec![backends[1].addr.port(), backends[2].addr.port()];
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_give_one_endpoint_per_address() {
    let backends = backends(1).await;
    let ports = Arc::new(Mutex::new(Vec::new()));
    let dns = fake_dns(ports).await;
    let discovery = DnsDiscovery::new("calculator.test.", backends[0].addr.port()).nameserver(dns);
    let channel = Channel::balanced(discovery);
    assert_eq!(who(&channel, None).await.unwrap(), "b0");
}
