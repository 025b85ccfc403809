//! tonic and Ferry call each other over gRPC: unary calls, metadata, errors and deadlines.

use std::time::Duration;

use ferry::{Channel, Code, Request};
use ferry_test_support::calculator::{self, pb::CalculateRequest};
use ferry_test_support::tonic;
use ferry_test_support::tonic_calculator::pb::CalculateRequest as TonicRequest;
use ferry_test_support::{PATIENCE, start_echo_calculator, start_tonic, tonic_client};

#[tokio::test]
async fn tonic_calls_ferry() {
    let server = start_echo_calculator().await;
    let mut client = tonic_client(server.local_addr()).await;

    let answer = client.add(TonicRequest { a: 1.0, b: 2.0 }).await.unwrap();
    assert_eq!(answer.into_inner().result, 3.0);

    let mut request = tonic::Request::new(TonicRequest { a: 6.0, b: 3.0 });
    request
        .metadata_mut()
        .insert("x-echo-user", "tonic".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-echo-token-bin",
        tonic::metadata::MetadataValue::from_bytes(b"\x00\x01\xfe"),
    );
    let response = client.divide(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-echo-user").unwrap(),
        "tonic",
        "ASCII metadata round-trips"
    );
    assert_eq!(
        response
            .metadata()
            .get_bin("x-echo-token-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        b"\x00\x01\xfe",
        "binary metadata round-trips"
    );
    assert_eq!(response.into_inner().result, 2.0);

    let error = client
        .divide(TonicRequest { a: 1.0, b: 0.0 })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("divide 1 by zero"), "{error:?}");

    // The deadline travels as `grpc-timeout`. The call would sleep a minute, so answering
    // within the test's patience shows the deadline cut it short.
    let mut slow = tonic::Request::new(TonicRequest { a: 1.0, b: 1.0 });
    slow.metadata_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    slow.metadata_mut()
        .insert("x-sleep-ms", "60000".parse().unwrap());
    let error = tokio::time::timeout(PATIENCE, client.add(slow))
        .await
        .expect("the deadline cut the call short")
        .unwrap_err();
    // tonic also runs the deadline as a client-side timer, which reports CANCELLED "Timeout
    // expired" when it fires first; the server's own enforcement is tested in grpc.rs.
    let tonic_timer = error.code() == tonic::Code::Cancelled && error.message().contains("Timeout");
    assert!(
        error.code() == tonic::Code::DeadlineExceeded || tonic_timer,
        "{error:?}"
    );

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ferry_calls_tonic() {
    let addr = start_tonic().await;
    // tonic speaks gRPC (grpc://); http:// means the Connect protocol, which tonic does not.
    for scheme in ["grpc"] {
        let channel = Channel::connect(format!("{scheme}://{addr}"))
            .await
            .unwrap();
        let calc = calculator::Calculator::new(channel.clone());
        assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0);
        assert_eq!(calc.multiply(4.0, 2.5).await.unwrap(), 10.0);

        let error = calc.divide(1.0, 0.0).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.message(), "division by zero");

        let mut request = Request::new(CalculateRequest { a: 2.0, b: 2.0 });
        request.metadata_mut().insert("x-echo-who", "ferry");
        request
            .metadata_mut()
            .insert_bin("x-echo-raw-bin", bytes::Bytes::from_static(b"\xff\x00"));
        let response = calc.client().add(request).await.unwrap();
        assert_eq!(response.metadata().get("x-echo-who"), Some("ferry"));
        assert_eq!(
            response.metadata().get_bin("x-echo-raw-bin"),
            Some(&b"\xff\x00"[..])
        );
        assert_eq!(response.into_inner().result, 4.0);

        let mut slow = Request::new(CalculateRequest { a: 1.0, b: 1.0 })
            .with_timeout(Duration::from_millis(100));
        slow.metadata_mut().insert("x-sleep-ms", "60000");
        let error = calc.client().add(slow).await.unwrap_err();
        assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");

        let mut unknown = Request::new(ferry::call::Body::empty());
        unknown.set_method("/calculator.v1.Calculator/Modulo");
        let error = channel.call(unknown).await.unwrap_err();
        assert_eq!(error.code(), Code::Unimplemented, "{error}");
    }
}
