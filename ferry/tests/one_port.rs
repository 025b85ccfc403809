//! Native, gRPC (h2c) and HTTP/1.1 JSON clients hit the same port at the same time.

use ferry::Channel;
use ferry_test_support::calculator;
use ferry_test_support::tonic_calculator::pb::CalculateRequest as TonicRequest;
use ferry_test_support::{start_echo_calculator, tonic_client};

const CALLS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_protocols_share_one_port_concurrently() {
    let server = start_echo_calculator().await;
    let addr = server.local_addr();

    let native = async {
        let calc = calculator::Calculator::new(Channel::connect(format!("ferry://{addr}")).await?);
        let calls = (0..CALLS).map(|i| {
            let calc = calc.clone();
            async move { calc.add(i as f64, 1.0).await.map(|r| (i, r)) }
        });
        let results = futures_util::future::try_join_all(calls).await?;
        for (i, r) in results {
            assert_eq!(r, i as f64 + 1.0);
        }
        Ok::<_, ferry::Status>("native")
    };
    let ferry_grpc = async {
        let calc = calculator::Calculator::new(Channel::connect(format!("grpc://{addr}")).await?);
        let calls = (0..CALLS).map(|i| {
            let calc = calc.clone();
            async move { calc.multiply(i as f64, 2.0).await.map(|r| (i, r)) }
        });
        for (i, r) in futures_util::future::try_join_all(calls).await? {
            assert_eq!(r, i as f64 * 2.0);
        }
        Ok::<_, ferry::Status>("ferry gRPC")
    };
    let tonic = async {
        let client = tonic_client(addr).await;
        let calls = (0..CALLS).map(|i| {
            let mut client = client.clone();
            async move {
                let r = client
                    .subtract(TonicRequest {
                        a: i as f64,
                        b: 1.0,
                    })
                    .await;
                (i, r.map(|r| r.into_inner().result))
            }
        });
        for (i, r) in futures_util::future::join_all(calls).await {
            assert_eq!(r.unwrap(), i as f64 - 1.0);
        }
        Ok::<_, ferry::Status>("tonic gRPC")
    };
    let http1 = async {
        let client = reqwest::Client::builder().http1_only().build().unwrap();
        let calls = (0..CALLS / 4).map(|i| {
            let client = client.clone();
            async move {
                let response = client
                    .post(format!("http://{addr}/add"))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"a":{i},"b":10}}"#))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let json: serde_json::Value = response.json().await.unwrap();
                assert_eq!(json["result"].as_f64().unwrap(), i as f64 + 10.0);
            }
        });
        futures_util::future::join_all(calls).await;
        Ok::<_, ferry::Status>("HTTP/1.1 JSON")
    };
    let (a, b, c, d) = tokio::join!(native, ferry_grpc, tonic, http1);
    for done in [a, b, c, d] {
        done.unwrap();
    }
    server.shutdown().await.unwrap();
}
