//! `ferry call`, `list`, `describe` and `health`, run as the real binary against servers on
//! 127.0.0.1:0: a Ferry calculator (over ferry://, grpc:// and http://), a Ferry server with a
//! streaming service, and a tonic calculator. Every check looks at the exit code and at what
//! was printed.

mod support;

use std::time::{Duration, Instant};

use support::{
    NUMBERS_PROTO_ARGS, PROTO_ARGS, ferry, ferry_calculator, ferry_calculator_with, ferry_numbers,
    tonic_calculator, tonic_calculator_with,
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
        let run = ferry(&["call", &url, ADD, "{}", "-v", "--compact"], None);
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), "{}", "over {scheme}");
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
fn deadlines_end_slow_calls_on_time() {
    // The server sleeps 5 s before answering (`x-sleep-ms`); the call is sent with a 300 ms
    // deadline and must end with DEADLINE_EXCEEDED near it, far from the 5 s. (Descriptors come
    // from the .proto: reflection calls carry -H metadata too, so they would sleep as well.)
    let server = ferry_numbers();
    let tonic = tonic_calculator();
    let targets = SCHEMES
        .map(|scheme| (scheme, server.url(scheme)))
        .into_iter()
        .chain([("tonic", tonic.url("grpc"))]);
    for (scheme, url) in targets {
        let mut args = vec![
            "call",
            &url,
            ADD,
            "{}",
            "-H",
            "x-sleep-ms: 5000",
            "--timeout",
            "300ms",
        ];
        args.extend(PROTO_ARGS);
        let started = Instant::now();
        let run = ferry(&args, None);
        let took = started.elapsed();
        // 64 + DEADLINE_EXCEEDED (4).
        run.expect_code(68);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert_eq!(
            run.stderr.trim(),
            "deadline_exceeded: the deadline passed before the call finished",
            "over {scheme}"
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(4),
            "over {scheme}: the call took {took:?}"
        );
    }
}

#[test]
fn a_zero_timeout_is_refused_before_sending() {
    let server = ferry_calculator();
    for scheme in SCHEMES {
        let url = server.url(scheme);
        let run = ferry(&["call", &url, ADD, "{}", "--timeout", "0ms"], None);
        run.expect_code(68);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        // The client's own refusal: nothing was sent.
        assert_eq!(
            run.stderr.trim(),
            "deadline_exceeded: the deadline passed before the call was sent",
            "over {scheme}"
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
    assert!(
        run.stderr
            .contains("should look like package.Service/Method"),
        "{}",
        run.stderr
    );
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
    assert!(
        run.stderr
            .contains("does not know the symbol \"calculator.v1.Nothing\""),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
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
        assert_eq!(run.stderr.trim(), "calculator.v1.Calculator is NOT_SERVING");
        let run = ferry(&["health", &url, "no.Such"], None);
        // 64 + NOT_FOUND (5).
        run.expect_code(69);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert!(
            run.stderr.starts_with("not_found:") && run.stderr.contains("no.Such"),
            "over {scheme}: {}",
            run.stderr
        );
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
    assert!(
        run.stdout
            .contains("http://HOST:PORT    the Connect protocol"),
        "{}",
        run.stdout
    );
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
    // `ferry bench` drives unary methods only.
    let mut args = vec![
        "bench",
        "ferry://127.0.0.1:1",
        "fixture.v1.Inventory/Watch",
        "{}",
    ];
    args.extend(fixture);
    let run = ferry(&args, None);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("is a streaming method; `ferry bench` drives unary calls only"),
        "{}",
        run.stderr
    );
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

// Streaming calls. The native and Connect clients do not stream yet (`Channel` answers
// UNIMPLEMENTED for them); ferry:// and http:// join this list when they do.
const STREAMING_SCHEMES: [&str; 3] = ["ferry", "grpc", "http"];
const COUNT: &str = "numbers.v1.Numbers/Count";
const SUM: &str = "numbers.v1.Numbers/Sum";
const RUNNING_SUM: &str = "numbers.v1.Numbers/RunningSum";

/// The values of `{"value": N}` documents printed one after another.
fn values(stdout: &str) -> Vec<f64> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<serde_json::Value>()
        .map(|doc| doc.unwrap()["value"].as_f64().unwrap())
        .collect()
}

#[test]
fn server_streaming_replies_print_one_document_each() {
    let server = ferry_numbers();
    for scheme in STREAMING_SCHEMES {
        let url = server.url(scheme);
        let run = ferry(
            &["call", &url, COUNT, r#"{"from": 1, "to": 3}"#, "--compact"],
            None,
        );
        run.expect_code(0);
        assert_eq!(
            run.stdout, "{\"value\":1}\n{\"value\":2}\n{\"value\":3}\n",
            "over {scheme}"
        );
        // Pretty-printed by default: still one JSON document per reply.
        let mut args = vec!["call", &url, COUNT, r#"{"from": 5, "to": 6}"#];
        args.extend(NUMBERS_PROTO_ARGS);
        let run = ferry(&args, None);
        run.expect_code(0);
        assert_eq!(values(&run.stdout), [5.0, 6.0], "over {scheme}");
        assert!(
            run.stdout.contains("{\n  \"value\": 5\n}\n"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn a_failing_stream_prints_the_replies_before_the_error() {
    let server = ferry_numbers();
    for scheme in STREAMING_SCHEMES {
        let url = server.url(scheme);
        let run = ferry(
            &[
                "call",
                &url,
                COUNT,
                r#"{"from": 1, "to": 9, "failAfter": 2}"#,
                "--compact",
            ],
            None,
        );
        // 64 + ABORTED (10).
        run.expect_code(74);
        assert_eq!(
            run.stdout, "{\"value\":1}\n{\"value\":2}\n",
            "over {scheme}"
        );
        assert_eq!(run.stderr.trim(), "aborted: counting stopped");
    }
}

#[test]
fn client_streaming_reads_requests_from_stdin_or_the_argument() {
    let server = ferry_numbers();
    for scheme in STREAMING_SCHEMES {
        let url = server.url(scheme);
        // Newline-delimited JSON on stdin.
        let run = ferry(
            &["call", &url, SUM, "--compact"],
            Some("{\"value\": 1}\n{\"value\": 2.5}\n{}\n"),
        );
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), r#"{"value":3.5}"#, "over {scheme}");
        // A JSON array as the argument.
        let run = ferry(
            &[
                "call",
                &url,
                SUM,
                r#"[{"value": 1}, {"value": 2}]"#,
                "--compact",
            ],
            None,
        );
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), r#"{"value":3}"#, "over {scheme}");
        // No requests at all.
        let run = ferry(
            &["call", &url, SUM, "-", "--compact", "--emit-defaults"],
            Some(""),
        );
        run.expect_code(0);
        assert_eq!(run.stdout.trim(), r#"{"value":0}"#, "over {scheme}");
    }
}

#[test]
fn bad_json_in_a_request_stream_fails_locally() {
    let server = ferry_numbers();
    for scheme in STREAMING_SCHEMES {
        let url = server.url(scheme);
        for input in [
            "{\"value\": 1}\n{\"nope\": 2}\n",
            "{\"value\": 1}\n{\"value\":",
        ] {
            let run = ferry(&["call", &url, SUM], Some(input));
            run.expect_code(1);
            assert!(run.stdout.is_empty(), "{}", run.stdout);
            assert!(
                run.stderr
                    .starts_with("invalid JSON for numbers.v1.Number:"),
                "over {scheme}, {input:?}: {}",
                run.stderr
            );
        }
        // In the argument it is refused before calling.
        let run = ferry(
            &["call", &url, SUM, r#"{"value": 1} [{"value": "x"}]"#],
            None,
        );
        run.expect_code(1);
        assert!(
            run.stderr
                .starts_with("invalid JSON for numbers.v1.Number:"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn bidi_streaming_answers_as_requests_arrive() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let server = ferry_numbers();
    for scheme in STREAMING_SCHEMES {
        let url = server.url(scheme);
        // All requests at once.
        let run = ferry(
            &["call", &url, RUNNING_SUM, "--compact"],
            Some("{\"value\": 1}\n{\"value\": 2}\n{\"value\": 3}\n"),
        );
        run.expect_code(0);
        assert_eq!(values(&run.stdout), [1.0, 3.0, 6.0], "over {scheme}");

        // One request at a time: each reply must come back while stdin is still open.
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["call", &url, RUNNING_SUM, "--compact"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the ferry binary");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let (lines, replies) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if lines.send(line.expect("read a reply")).is_err() {
                    break;
                }
            }
        });
        for (value, total) in [("10", "10"), ("5", "15"), ("0.5", "15.5")] {
            writeln!(stdin, "{{\"value\": {value}}}").expect("write a request");
            stdin.flush().expect("flush the request");
            // A bound against hanging forever, not a timing assertion.
            let reply = replies
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no reply to {value} over {scheme}"));
            assert_eq!(reply, format!("{{\"value\":{total}}}"));
        }
        drop(stdin);
        let output = child.wait_with_output().expect("wait for ferry");
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert!(replies.recv().is_err(), "no more replies");
    }
}

#[test]
fn the_runtime_reflection_service_is_callable_as_bidi() {
    // Ferry's own reflection service, driven by hand: two questions, two answers.
    let server = ferry_numbers();
    let url = server.url("grpc");
    let run = ferry(
        &[
            "call",
            &url,
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "--compact",
        ],
        Some("{\"listServices\": \"\"}\n{\"fileContainingSymbol\": \"numbers.v1.Number\"}\n"),
    );
    run.expect_code(0);
    let answers: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{}", run.stdout);
    let services = &answers[0]["listServicesResponse"]["service"];
    assert!(
        services
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "numbers.v1.Numbers"),
        "{services}"
    );
    let files = answers[1]["fileDescriptorResponse"]["fileDescriptorProto"]
        .as_array()
        .unwrap();
    assert_eq!(files.len(), 1, "{}", answers[1]);
}
