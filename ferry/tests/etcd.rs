//! Registration and discovery through a real etcd started by the test (loopback, temp dir).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::Channel;
use ferry::discovery::{Discovery, EndpointChange, EtcdRegistry};
use ferry_test_support::backend::SERVICE;
use ferry_test_support::*;
use futures_util::StreamExt;

/// Instance id → address, as a discovery stream left it.
type Instances = Arc<Mutex<BTreeMap<String, String>>>;

/// Applies one discovery change to `set`.
fn apply(set: &Instances, change: &Result<EndpointChange, ferry::Status>) {
    match change {
        Ok(EndpointChange::Insert(id, addr)) => {
            set.lock().unwrap().insert(id.clone(), addr.clone());
        }
        Ok(EndpointChange::Remove(id)) => {
            set.lock().unwrap().remove(id);
        }
        Err(status) => eprintln!("discovery error: {status}"),
    }
}

/// Follows a discovery stream into a shared set of instance addresses.
fn follow(discovery: impl Discovery) -> Instances {
    let set = Instances::default();
    let shared = set.clone();
    let mut stream = discovery.watch();
    tokio::spawn(async move {
        while let Some(change) = stream.next().await {
            apply(&shared, &change);
        }
    });
    set
}

/// A discovery that passes another's changes on and keeps the set they add up to, so a test
/// sees exactly what the channel consuming it was told, when it was told.
struct Tap<D> {
    inner: D,
    seen: Instances,
}

impl<D: Discovery> Discovery for Tap<D> {
    fn watch(&self) -> ferry::discovery::DiscoveryStream {
        let seen = self.seen.clone();
        Box::pin(
            self.inner
                .watch()
                .inspect(move |change| apply(&seen, change)),
        )
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn addresses(set: &Mutex<BTreeMap<String, String>>) -> Vec<String> {
    set.lock().unwrap().values().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_register_and_clients_follow_them() {
    let etcd = Etcd::start().await;
    // b0 and b2 leave gracefully: their leases outlive the test's patience, so only a
    // deregistration can remove them in time. b1 crashes: its short lease must expire.
    let lasting = Duration::from_secs(60);
    let ttl = Duration::from_secs(2);
    let registry = EtcdRegistry::connect([etcd.endpoint.as_str()])
        .await
        .expect("connect to etcd")
        .ttl(lasting);

    let mut backends = Vec::new();
    for i in 0..3 {
        let registry = if i == 1 {
            registry.clone().ttl(ttl)
        } else {
            registry.clone()
        };
        backends.push(Backend::start_with(&format!("b{i}"), |s| s.register(registry)).await);
    }
    // What the channel's discovery told it, as it told it.
    let seen = Instances::default();
    let channel = Channel::builder("etcd")
        .discovery(Tap {
            inner: registry.discovery(SERVICE),
            seen: seen.clone(),
        })
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    let all: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();

    // Steady calls through the balanced channel for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (channel, stop, ok, failed) =
            (channel.clone(), stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match who(&channel, None).await {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(status) => {
                        failed.lock().unwrap().push(status);
                        0
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    assert!(eventually(PATIENCE, async || ok.load(Ordering::SeqCst) > 100).await);
    assert!(
        eventually(PATIENCE, async || addresses(&seen) == sorted(&all)).await,
        "the client sees {:?}, expected {all:?}",
        addresses(&seen)
    );
    // The channel follows etcd on its own watch, which may still be catching up (a watch that
    // breaks is re-read after 500 ms), so give every instance a bounded time to get calls.
    assert!(
        eventually(PATIENCE, async || backends.iter().all(|b| b.calls() > 0)).await,
        "not every instance got calls: {:?}",
        backends.iter().map(|b| b.calls()).collect::<Vec<_>>()
    );

    // Graceful shutdown deregisters: b0 is gone long before its lease could expire.
    let start = Instant::now();
    backends[0].shutdown().await;
    let expected = sorted(&all[1..]);
    assert!(
        eventually(PATIENCE, async || addresses(&seen) == expected).await,
        "b0 still listed {PATIENCE:?} after a graceful shutdown: {:?}",
        addresses(&seen)
    );
    eprintln!(
        "graceful shutdown: gone from the client's set after {:?}",
        start.elapsed()
    );

    // A crash right after (the lease expires after its TTL). Calls still in flight to b0 when
    // it left must not hold on to the pool's one ejection, or the crashed b1 could not be
    // ejected and calls would fail.
    let start = Instant::now();
    backends[1].kill();
    let expected = sorted(&all[2..]);
    assert!(
        eventually(ttl + PATIENCE, async || addresses(&seen) == expected).await,
        "b1 still listed {:?} after it crashed: {:?}",
        ttl + PATIENCE,
        addresses(&seen)
    );
    eprintln!(
        "crash: gone from the client's set after {:?} (TTL {ttl:?})",
        start.elapsed()
    );

    // Calls kept succeeding throughout, and keep succeeding on the survivor.
    let now = ok.load(Ordering::SeqCst);
    assert!(eventually(PATIENCE, async || ok.load(Ordering::SeqCst) > now + 100).await);
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    eprintln!(
        "{} calls succeeded, {} failed",
        ok.load(Ordering::SeqCst),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} calls failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    backends[2].shutdown().await;
    assert!(eventually(PATIENCE, async || addresses(&seen).is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_guard_deregisters_and_a_dropped_one_expires() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::connect([etcd.endpoint.as_str()])
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let seen = follow(registry.discovery("demo.v1.Demo"));
    // `a` is deregistered: its lease outlives the test's patience, so only the deregistration
    // can remove it in time. `b` is dropped: its short lease must expire.
    let a = registry
        .clone()
        .ttl(Duration::from_secs(60))
        .register("demo.v1.Demo", "127.0.0.1:1001")
        .await
        .unwrap();
    let b = registry
        .clone()
        .ttl(ttl)
        .register("demo.v1.Demo", "127.0.0.1:1002")
        .await
        .unwrap();
    let both = vec!["127.0.0.1:1001".to_owned(), "127.0.0.1:1002".to_owned()];
    assert!(eventually(PATIENCE, async || addresses(&seen) == both).await);
    // Keep-alives (every third of the TTL) hold the short lease well past its TTL.
    tokio::time::sleep(ttl * 5 / 2).await;
    assert_eq!(addresses(&seen), both, "a kept-alive registration expired");
    a.deregister().await.unwrap();
    assert!(eventually(PATIENCE, async || addresses(&seen) == ["127.0.0.1:1002"]).await);
    drop(b);
    assert!(eventually(ttl + PATIENCE, async || addresses(&seen).is_empty()).await);
}

fn sorted(addrs: &[String]) -> Vec<String> {
    let mut v = addrs.to_vec();
    v.sort();
    v
}
