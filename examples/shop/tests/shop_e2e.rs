//! The shop end to end: static discovery and etcd discovery over loopback.

use std::time::Duration;

use ferry::Code;
use ferry::discovery::EtcdRegistry;
use ferry_test_support::{Etcd, PATIENCE, eventually};
use shop::{Demo, pb};

async fn quote(client: &pb::ShopClient, item: &str, quantity: u32) -> Result<f64, ferry::Status> {
    let request = pb::QuoteRequest {
        item: item.to_owned(),
        quantity,
    };
    Ok(client.quote(request).await?.into_inner().total)
}

fn client(demo: &Demo) -> pb::ShopClient {
    let channel = ferry::Channel::builder(format!("ferry://{}", demo.front.local_addr()))
        .timeout(PATIENCE)
        .lazy()
        .unwrap();
    pb::ShopClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_with_static_discovery() {
    let demo = Demo::start(None).await.unwrap();
    let client = client(&demo);
    let total = quote(&client, "coffee", 3).await.unwrap();
    assert!((total - 11.7).abs() < 1e-9, "{total}");
    let status = quote(&client, "unicorn", 1).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = quote(&client, "apple", 0).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A crashed calculator does not fail quotes: retries and ejection route around it.
    let mut demo = demo;
    demo.calculators.remove(0).abort();
    for _ in 0..50 {
        quote(&client, "book", 2).await.unwrap();
    }
    demo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_lookups_are_cached_and_coalesced() {
    let demo = Demo::start(None).await.unwrap();
    let client = client(&demo);
    let lookups = || {
        demo.pricing_lookups
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // 20 identical quotes at once: one lookup, the rest joined it or hit the cache.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(
            async move { quote(&client, "coffee", 3).await },
        ));
    }
    for task in tasks {
        let total = task.await.unwrap().unwrap();
        assert!((total - 11.7).abs() < 1e-9, "{total}");
    }
    assert_eq!(lookups(), 1);
    for _ in 0..10 {
        quote(&client, "book", 1).await.unwrap();
    }
    assert_eq!(lookups(), 2);
    // NOT_FOUND is remembered briefly, too.
    for _ in 0..3 {
        let status = quote(&client, "unicorn", 1).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    assert_eq!(lookups(), 3);
    let stats = demo.price_cache.stats();
    assert_eq!(stats.misses, 3 + stats.coalesced, "{stats:?}");
    assert_eq!(stats.hits + stats.misses, 33, "{stats:?}");
    demo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_with_etcd_discovery() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::connect([etcd.endpoint.as_str()])
        .await
        .unwrap()
        // Longer than the test waits, so only deregistration can empty etcd in time.
        .ttl(Duration::from_secs(60));
    let mut demo = Demo::start(Some(&registry)).await.unwrap();
    let client = client(&demo);
    let total = quote(&client, "apple", 4).await.unwrap();
    assert!((total - 2.4).abs() < 1e-9, "{total}");
    // A calculator leaves gracefully; quotes keep working.
    demo.calculators.remove(0).shutdown().await.unwrap();
    for _ in 0..50 {
        quote(&client, "coffee", 1).await.unwrap();
    }
    demo.shutdown().await.unwrap();
    // Everything deregistered on the way out.
    let mut etcd_client = registry.client().clone();
    let empty = eventually(PATIENCE, async || {
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        match etcd_client.get("/ferry/services/", Some(options)).await {
            Ok(reply) => reply.count() == 0,
            Err(_) => false,
        }
    })
    .await;
    assert!(empty, "registrations left behind in etcd");
}
