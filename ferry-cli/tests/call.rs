//! `ferry call`, `list`, `describe` and `health`, run as the real binary against servers on
//! 127.0.0.1:0: a Ferry calculator (over ferry://, grpc:// and http://) and a tonic one.

mod support;

use support::{
    PROTO_ARGS, ferry, ferry_calculator, ferry_calculator_with, tonic_calculator,
    tonic_calculator_with,
};

const ADD: &str = "calculator.v1.Calculator/Add";
const SCHEMES: [&str; 3] = ["ferry", "grpc", "http"];

#[test]
fn call_over_every_protocol_with_reflection() {
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(
            &["call", &url, ADD, r#"{"a": 1, "b": 2}"#, "--compact"],
            None,
        );
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), r#"{"result":3}"#, "over {scheme}");
    }
}

#[test]
fn call_over_every_protocol_with_proto_files() {
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let mut args = vec!["call", &url, "calculator.v1.Calculator.Multiply"];
        args.extend(PROTO_ARGS);
        args.extend([r#"{"a": -3, "b": 2.5}"#, "--compact"]);
        let run = ferry(&args, None);
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), r#"{"result":-7.5}"#, "over {scheme}");
    }
}

#[test]
fn request_json_comes_from_stdin() {
    let server = ferry_calculator();
    let url = server.url("ferry");
    let run = ferry(
        &["call", &url, ADD, "--compact"],
        Some(r#"{"a": 40, "b": 2}"#),
    );
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), r#"{"result":42}"#);
    let run = ferry(
        &["call", &url, ADD, "-", "--compact"],
        Some(r#"{"a": 0.5}"#),
    );
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), r#"{"result":0.5}"#);
}

#[test]
fn metadata_reaches_the_server_and_timing_comes_back() {
    // `-H ferry-timing:1` asks the server to time the handler; `-v` prints response metadata.
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(
            &["call", &url, ADD, "{}", "-v", "-H", "ferry-timing: 1"],
            None,
        );
        run.expect_code(0);
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("< server-timing: app;dur="))
            .unwrap_or_else(|| panic!("no server-timing over {scheme}: {}", run.stderr));
        let ms: f64 = line["< server-timing: app;dur=".len()..].parse().unwrap();
        assert!((0.0..1000.0).contains(&ms), "{line}");
        // Without the header there is no timing.
        let run = ferry(&["call", &url, ADD, "{}", "-v"], None);
        assert!(!run.stderr.contains("server-timing"), "{}", run.stderr);
    }
}

#[test]
fn failed_calls_print_code_and_message_and_exit_non_zero() {
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(
            &[
                "call",
                &url,
                "calculator.v1.Calculator/Divide",
                r#"{"a": 1, "b": 0}"#,
            ],
            None,
        );
        // 64 + INVALID_ARGUMENT (3).
        run.expect_code(67);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert!(
            run.stderr
                .starts_with("invalid_argument: cannot divide 1 by zero"),
            "over {scheme}: {}",
            run.stderr
        );
    }
}

#[test]
fn deadlines_apply() {
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(&["call", &url, ADD, "{}", "--timeout", "0ms"], None);
        // 64 + DEADLINE_EXCEEDED (4).
        assert_eq!(run.code, 68, "over {scheme}: {} {}", run.stdout, run.stderr);
        assert!(
            run.stderr.starts_with("deadline_exceeded"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn bad_json_names_the_message_type() {
    let server = ferry_calculator();
    let url = server.url("ferry");
    for json in [r#"{"a": 1,"#, r#"{"c": 1}"#, r#"{"a": "one"}"#, "[1]"] {
        let run = ferry(&["call", &url, ADD, json], None);
        run.expect_code(1);
        assert!(
            run.stderr
                .starts_with("invalid JSON for calculator.v1.CalculateRequest:"),
            "{json}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("fields: a (double), b (double)"));
    }
}

#[test]
fn unknown_methods_and_services_are_named() {
    let server = ferry_calculator();
    let url = server.url("grpc");
    let run = ferry(&["call", &url, "calculator.v1.Calculator/Nope", "{}"], None);
    run.expect_code(1);
    assert!(
        run.stderr.contains("has no method \"Nope\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Add, Subtract, Multiply, Divide"));
    let run = ferry(&["call", &url, "nope.Svc/Do", "{}"], None);
    run.expect_code(1);
    assert!(run.stderr.contains("nope.Svc"), "{}", run.stderr);
    let run = ferry(&["call", &url, "NoDots", "{}"], None);
    run.expect_code(1);
}

#[test]
fn unreachable_servers_are_unavailable() {
    let run = ferry(&["call", "ferry://127.0.0.1:1", ADD, "{}"], None);
    // 64 + UNAVAILABLE (14).
    run.expect_code(78);
    assert!(run.stderr.starts_with("unavailable:"), "{}", run.stderr);
}

#[test]
fn calls_a_tonic_server_through_its_reflection() {
    let server = tonic_calculator();
    let url = server.url("grpc");
    let run = ferry(
        &["call", &url, ADD, r#"{"a": 1, "b": 2}"#, "--compact"],
        None,
    );
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), r#"{"result":3}"#);
    let run = ferry(
        &[
            "call",
            &url,
            "calculator.v1.Calculator.Divide",
            r#"{"a": 1}"#,
        ],
        None,
    );
    run.expect_code(67);
    assert_eq!(run.stderr.trim(), "invalid_argument: division by zero");
    let run = ferry(&["list", &url], None);
    run.expect_code(0);
    assert!(
        run.stdout.lines().any(|l| l == "calculator.v1.Calculator"),
        "{}",
        run.stdout
    );
    let run = ferry(&["describe", &url, "calculator.v1.CalculateResponse"], None);
    run.expect_code(0);
    assert!(run.stdout.contains("double result = 1;"), "{}", run.stdout);
}

#[test]
fn falls_back_to_v1alpha_reflection() {
    let server = tonic_calculator_with(tonic_calculator::Reflection::V1AlphaOnly);
    let url = server.url("grpc");
    let run = ferry(&["list", &url], None);
    run.expect_code(0);
    assert!(
        run.stdout.lines().any(|l| l == "calculator.v1.Calculator"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("grpc.reflection.v1.ServerReflection"));
    let run = ferry(
        &["call", &url, ADD, r#"{"a": 2, "b": 2}"#, "--compact"],
        None,
    );
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), r#"{"result":4}"#);
}

#[test]
fn list_services_and_methods() {
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(&["list", &url], None);
        run.expect_code(0);
        let services: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(
            services,
            [
                "calculator.v1.Calculator",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"
            ],
            "over {scheme}"
        );
    }
    let url = server.url("ferry");
    let run = ferry(&["list", &url, "calculator.v1.Calculator"], None);
    run.expect_code(0);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "calculator.v1.Calculator.Add",
            "calculator.v1.Calculator.Subtract",
            "calculator.v1.Calculator.Multiply",
            "calculator.v1.Calculator.Divide",
            "calculator.v1.Calculator.Count",
            "calculator.v1.Calculator.Sum",
            "calculator.v1.Calculator.RunningSum"
        ]
    );
    let mut args = vec!["list", &url];
    args.extend(PROTO_ARGS);
    let run = ferry(&args, None);
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "calculator.v1.Calculator");
}

#[test]
fn describe_renders_proto_source() {
    let server = ferry_calculator();
    let url = server.url("ferry");
    let run = ferry(&["describe", &url, "calculator.v1.Calculator"], None);
    run.expect_code(0);
    assert!(
        run.stdout.contains("service Calculator {"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(
        "  rpc Add(.calculator.v1.CalculateRequest) returns (.calculator.v1.CalculateResponse);"
    ));
    assert!(run.stdout.contains("// Returns a + b."), "comments survive");
    let run = ferry(&["describe", &url, "calculator.v1.CalculateRequest"], None);
    run.expect_code(0);
    assert!(run.stdout.contains("message CalculateRequest {"));
    assert!(run.stdout.contains("  double a = 1;\n  double b = 2;\n}"));
    let run = ferry(
        &[
            "describe",
            &url,
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
        ],
        None,
    );
    run.expect_code(0);
    assert!(
        run.stdout.contains("enum ServingStatus {"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  NOT_SERVING = 2;"));
    let run = ferry(&["describe", &url, "calculator.v1.Nothing"], None);
    run.expect_code(1);
}

#[test]
fn health_reports_serving_and_not_serving() {
    let server = ferry_calculator_with(|server| {
        server
            .health_reporter()
            .set_not_serving("calculator.v1.Calculator");
        server
    });
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(&["health", &url], None);
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), "SERVING", "over {scheme}");
        let run = ferry(&["health", &url, "calculator.v1.Calculator"], None);
        run.expect_code(3);
        assert_eq!(run.stdout.trim(), "NOT_SERVING", "over {scheme}");
        let run = ferry(&["health", &url, "no.Such"], None);
        // 64 + NOT_FOUND (5).
        run.expect_code(69);
    }
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for command in ["call", "list", "describe", "health", "bench"] {
        let run = ferry(&[command, "--help"], None);
        run.expect_code(0);
        assert!(run.stdout.contains("Example"), "{command}: {}", run.stdout);
        assert!(run.stdout.contains("ferry "), "{command}");
    }
    let run = ferry(&["--help"], None);
    run.expect_code(0);
    assert!(run.stdout.contains("http://HOST:PORT    HTTP/1.1 + JSON"));
}

#[test]
fn describe_renders_every_field_shape_from_proto_files() {
    // With --proto nothing is asked of the server, so no server is needed.
    let fixture = [
        "--proto",
        "tests/codegen/proto/fixture/v1/fixture.proto",
        "-I",
        "tests/codegen/proto",
    ];
    let mut args = vec!["describe", "ferry://127.0.0.1:1", "fixture.v1.Item"];
    args.extend(fixture);
    let run = ferry(&args, None);
    run.expect_code(0);
    for line in [
        "message Item {  // fixture.v1.Item",
        "  // How the item is labelled: a oneof with scalar, message and enum arms.\n  oneof label {\n    string text = 4;",
        "  map<string, .fixture.v1.Item.Dimensions> parts = 7;",
        "  repeated int64 counts = 9;",
        "  optional uint32 quantity = 14;",
        "  .google.protobuf.Timestamp created_at = 15;",
        "    message Unit {  // fixture.v1.Item.Dimensions.Unit",
        "    enum Axis {  // fixture.v1.Item.Dimensions.Axis",
        "      AXIS_HEIGHT = 2;",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in\n{}", run.stdout);
    }
    let mut args = vec![
        "describe",
        "ferry://127.0.0.1:1",
        "fixture.v1.Inventory.Watch",
    ];
    args.extend(fixture);
    let run = ferry(&args, None);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("rpc Watch(.fixture.v1.WatchRequest) returns (stream .fixture.v1.Item);"),
        "{}",
        run.stdout
    );
    // Streaming methods cannot be called.
    let mut args = vec![
        "call",
        "ferry://127.0.0.1:1",
        "fixture.v1.Inventory/Watch",
        "{}",
    ];
    args.extend(fixture);
    let run = ferry(&args, None);
    run.expect_code(1);
    assert!(run.stderr.contains("streaming method"), "{}", run.stderr);
}

#[test]
fn without_reflection_the_error_suggests_proto_files() {
    let server = ferry_calculator_with(|server| server.reflection(false));
    let url = server.url("grpc");
    let run = ferry(&["list", &url], None);
    // 64 + UNIMPLEMENTED (12).
    run.expect_code(76);
    assert!(
        run.stderr.contains("pass --proto FILE -I DIR"),
        "{}",
        run.stderr
    );
    // The same call works from the .proto file.
    let mut args = vec!["call", &url, ADD, r#"{"a": 1, "b": 2}"#, "--compact"];
    args.extend(PROTO_ARGS);
    let run = ferry(&args, None);
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), r#"{"result":3}"#);
}

#[test]
fn bad_headers_are_refused() {
    let run = ferry(
        &["call", "ferry://127.0.0.1:1", ADD, "{}", "-H", "novalue"],
        None,
    );
    run.expect_code(1);
    assert!(run.stderr.contains("key:value"), "{}", run.stderr);
    let run = ferry(
        &[
            "call",
            "ferry://127.0.0.1:1",
            ADD,
            "{}",
            "-H",
            "trace-bin:%%%",
        ],
        None,
    );
    run.expect_code(1);
    assert!(run.stderr.contains("base64"), "{}", run.stderr);
}

#[test]
fn text_and_binary_metadata_travel_every_protocol() {
    let server = ferry_calculator_with(|server| server.layer(support::EchoLayer));
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(
            &[
                "call",
                &url,
                ADD,
                "{}",
                "-v",
                "-H",
                "x-echo-text: hello",
                "-H",
                "x-echo-data-bin: AQID/w==",
            ],
            None,
        );
        run.expect_code(0);
        assert!(
            run.stderr.contains("< x-echo-text: hello\n"),
            "over {scheme}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("< x-echo-data-bin: AQID/w==\n"),
            "over {scheme}: {}",
            run.stderr
        );
    }
}
