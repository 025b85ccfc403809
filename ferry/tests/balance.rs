//! Load balancing over real loopback servers: p2c/peak-EWMA, round robin, consistent hashing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use ferry::Channel;
use ferry::client::balance::Balancer;
use ferry::discovery::ManualDiscovery;
use ferry_test_support::*;

fn shares(backends: &[Backend]) -> Vec<usize> {
    backends.iter().map(Backend::calls).collect()
}

/// Every count is within `tolerance` (a fraction) of the mean.
fn assert_even(counts: &[usize], tolerance: f64) {
    let total: usize = counts.iter().sum();
    let mean = total as f64 / counts.len() as f64;
    for c in counts {
        let off = (*c as f64 - mean).abs() / mean;
        assert!(
            off <= tolerance,
            "uneven spread {counts:?} (mean {mean:.0})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_load_over_equal_instances() {
    let backends = backends(3).await;
    // Long enough that scheduling noise on a busy machine stays small beside it.
    for b in &backends {
        b.behavior.delay_ms.store(10, Ordering::SeqCst);
    }
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    let (failures, first) = load(&channel, 3000, 32).await;
    assert_eq!(failures, 0, "{first:?}");
    let counts = shares(&backends);
    eprintln!("p2c spread over 3 equal instances: {counts:?}");
    // p2c by peak EWMA follows measured latency, which a busy machine makes noisy (a run here
    // once gave [860, 887, 1253]). What it promises is that equal instances all share the
    // load, none starved or swamped: each within half of an even share.
    assert_even(&counts, 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns() {
    let backends = backends(3).await;
    let channel = Channel::builder(comma_list(&backends))
        .balancer(Balancer::RoundRobin)
        .lazy()
        .unwrap();
    let (failures, first) = load(&channel, 900, 1).await;
    assert_eq!(failures, 0, "{first:?}");
    let counts = shares(&backends);
    eprintln!("round robin spread: {counts:?}");
    assert_even(&counts, 0.02);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_starves_a_slow_instance() {
    let backends = backends(3).await;
    backends[0].behavior.delay_ms.store(100, Ordering::SeqCst);
    let channel = Channel::builder(comma_list(&backends))
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    // Warm-up: every instance answers a few calls so its latency is known.
    let (failures, _) = load(&channel, 200, 8).await;
    assert_eq!(failures, 0);
    let before = shares(&backends);
    let (failures, first) = load(&channel, 2000, 8).await;
    assert_eq!(failures, 0, "{first:?}");
    let after = shares(&backends);
    let during: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: usize = during.iter().sum();
    eprintln!(
        "after warm-up, slow instance got {} of {total}: {during:?}",
        during[0]
    );
    // Starved: far below an even third. Latency noise on a busy machine can hand the slow
    // instance a few more calls, so the bound is half an even share, not a fixed 10 %.
    assert!(
        (during[0] as f64) < total as f64 / 6.0,
        "the slow instance got {} of {total} calls",
        during[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_is_sticky_and_moves_few_keys() {
    let backends = backends(3).await;
    let discovery = ManualDiscovery::new();
    for b in &backends {
        discovery.insert_addr(b.addr);
    }
    let channel = Channel::builder("hash-test")
        .discovery(discovery.clone())
        .balancer(Balancer::consistent_hash("x-user"))
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    // Discovery reaches the balancer asynchronously: until all three instances are on the ring,
    // a key may rightly go to another one. Wait (bounded) until every instance took a call.
    let mut probe = 0;
    let everyone = eventually(PATIENCE, async || {
        probe += 1;
        let _ = who(&channel, Some(("x-user", &format!("warm-{probe}")))).await;
        backends.iter().all(|b| b.calls() > 0)
    })
    .await;
    assert!(everyone, "not every instance was discovered");
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut owner = HashMap::new();
    for key in &keys {
        let first = who(&channel, Some(("x-user", key))).await.unwrap();
        for _ in 0..2 {
            let again = who(&channel, Some(("x-user", key))).await.unwrap();
            assert_eq!(again, first, "{key} went to {first}, then to {again}");
        }
        owner.insert(key.clone(), first);
    }
    for b in &backends {
        let owned = owner.values().filter(|o| **o == b.name).count();
        assert!(owned >= 50, "{} owns only {owned} of 300 keys", b.name);
    }
    // b1 leaves: only its keys may move.
    discovery.remove(backends[1].addr.to_string());
    let b1_key = owner
        .iter()
        .find(|(_, o)| *o == "b1")
        .map(|(k, _)| k.clone())
        .unwrap();
    let gone = eventually(PATIENCE, async || {
        who(&channel, Some(("x-user", &b1_key))).await.unwrap() != "b1"
    })
    .await;
    assert!(gone, "the removed instance still gets its keys");
    let mut moved = 0;
    for key in &keys {
        let now = who(&channel, Some(("x-user", key))).await.unwrap();
        assert_ne!(now, "b1", "{key} still routed to the removed instance");
        if now != owner[key] {
            assert_eq!(owner[key], "b1", "{key} moved from {} to {now}", owner[key]);
            moved += 1;
        }
    }
    eprintln!("keys moved when 1 of 3 instances left: {moved} of 300");
    assert!(moved <= 300 / 3 + 40, "{moved} of 300 keys moved");
}
