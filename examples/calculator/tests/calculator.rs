//! The calculator's own behaviour: its four operations, its error for a zero divisor, and
//! which of its methods the proto marks safe to hedge. (How the runtime carries calls is
//! tested in `ferry/tests/`.)

use calculator::Calculator;
use calculator::pb;
use ferry::Code;
use ferry_test_support::start_calculator;

#[tokio::test]
async fn the_four_operations() {
    let server = start_calculator().await;
    for scheme in ["ferry", "grpc", "http"] {
        let calc = Calculator::connect(&format!("{scheme}://{}", server.local_addr()))
            .await
            .unwrap();
        assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0, "over {scheme}");
        assert_eq!(
            calc.subtract(1.0, 2.0).await.unwrap(),
            -1.0,
            "over {scheme}"
        );
        assert_eq!(
            calc.multiply(-3.0, 2.5).await.unwrap(),
            -7.5,
            "over {scheme}"
        );
        assert_eq!(calc.divide(7.0, 2.0).await.unwrap(), 3.5, "over {scheme}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dividing_by_zero_is_invalid_argument() {
    let server = start_calculator().await;
    let calc = Calculator::connect(&format!("ferry://{}", server.local_addr()))
        .await
        .unwrap();
    let status = calc.divide(1.0, 0.0).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("divide 1 by zero"),
        "unexpected message: {}",
        status.message()
    );
    // The connection is still good after an error.
    assert_eq!(calc.add(2.0, 2.0).await.unwrap(), 4.0);
}

#[test]
fn methods_marked_no_side_effects_are_listed_for_hedging() {
    assert_eq!(
        pb::CalculatorClient::SIDE_EFFECT_FREE_METHODS,
        [
            "/calculator.v1.Calculator/Add",
            "/calculator.v1.Calculator/Subtract",
            "/calculator.v1.Calculator/Multiply",
            "/calculator.v1.Calculator/Divide",
        ]
    );
}
