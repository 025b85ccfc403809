//! `ferry bench` against the calculator: report counts, server timing, open-loop rate, and the
//! HTML report rendered by headless Chromium.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{ferry, ferry_calculator, tonic_calculator};

const ADD: &str = "calculator.v1.Calculator/Add";

/// How long (in seconds) calls in flight may take to finish on a busy machine.
const PATIENCE_S: f64 = ferry_test_support::PATIENCE.as_secs_f64();

/// A scratch directory, removed when the test passes (kept for a look when it fails).
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn temp_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("ferry-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    Scratch(dir)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the JSON report is written");
    serde_json::from_str(&text).expect("the JSON report parses")
}

fn u(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

/// Checks the invariants every report keeps; returns `(total, ok, errors)`.
fn check_counts(report: &Value) -> (u64, u64, u64) {
    let (total, ok, errors) = (u(report, "total"), u(report, "ok"), u(report, "errors"));
    assert_eq!(ok + errors, total, "ok + errors = total");
    let by_code: u64 = report["errors_by_code"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_code, errors, "errors by code add up");
    let histogram: u64 = report["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram, ok, "histogram counts = ok");
    let timeline = report["timeline"].as_array().unwrap();
    let slotted: u64 = timeline
        .iter()
        .map(|p| p["ok"].as_u64().unwrap() + p["errors"].as_u64().unwrap())
        .sum();
    assert_eq!(slotted, total, "every call is on the timeline");
    (total, ok, errors)
}

/// Timeline points that have a latency (one `circle.p50` each in the HTML).
fn points_with_latency(report: &Value) -> usize {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["p50_ms"].is_number())
        .count()
}

#[test]
fn closed_loop_report_adds_up_on_every_protocol() {
    let server = ferry_calculator();
    let dir = temp_dir("closed");
    for scheme in ["ferry", "grpc", "http"] {
        let url = server.url(scheme);
        let json = dir.join(&format!("{scheme}.json"));
        let html = dir.join(&format!("{scheme}.html"));
        let run = ferry(
            &[
                "bench",
                &url,
                ADD,
                r#"{"a": 1, "b": 2}"#,
                "--requests",
                "300",
                "--concurrency",
                "8",
                "--connections",
                "2",
                "--output",
                json.to_str().unwrap(),
                "--html",
                html.to_str().unwrap(),
            ],
            None,
        );
        run.expect_code(0);
        assert!(
            run.stdout
                .contains("Calls       300 sent, 300 ok, 0 errors"),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("  L total"), "{}", run.stdout);
        // No progress bar when stdout is not a terminal.
        assert!(!run.stderr.contains("calls/s"), "{}", run.stderr);
        let report = read_report(&json);
        assert_eq!(check_counts(&report), (300, 300, 0), "over {scheme}");
        // http:// is the Connect protocol (protobuf bodies), as in `ferry::Channel`.
        let protocol = match scheme {
            "ferry" => "native",
            "http" => "connect",
            other => other,
        };
        assert_eq!(report["protocol"], protocol);
        assert_eq!(report["mode"], "closed");
        assert_eq!(report["connections"], 2);
        let latency = &report["latency_ms"];
        for key in ["min", "p50", "p90", "p99", "p999", "max"] {
            assert!(latency[key].as_f64().unwrap() > 0.0, "{key}: {latency}");
        }
        assert!(latency["min"].as_f64() <= latency["p50"].as_f64());
        assert!(latency["p99"].as_f64() <= latency["max"].as_f64());
        // The server reported its processing time on every call, so L splits into P and T.
        assert_eq!(u(&report, "server_timed"), 300, "over {scheme}");
        let p = report["server_processing_ms"]["p50"].as_f64().unwrap();
        let t = report["transmission_ms"]["p50"].as_f64().unwrap();
        assert!(p > 0.0 && t > 0.0, "P {p} T {t}");
        assert!(run.stdout.contains("  P server") && run.stdout.contains("  T = L - P"));

        let page = std::fs::read_to_string(&html).expect("the HTML report is written");
        assert!(page.contains("<svg id=\"histogram\""));
        assert!(page.contains("<svg id=\"timeline\""));
        assert_eq!(
            page.matches("<circle class=\"p50\"").count(),
            points_with_latency(&report)
        );
        assert_eq!(
            page.matches("<rect class=\"bar\"").count(),
            report["histogram"].as_array().unwrap().len()
        );
        assert!(!page.contains("<script"), "no JavaScript");
        assert!(!page.contains("src=\"http"), "no network fetches");
    }
}

#[test]
fn without_server_timing_latency_is_not_split() {
    // tonic does not answer `ferry-timing: 1`, so there is no P and no T.
    let server = tonic_calculator();
    let dir = temp_dir("tonic");
    let json = dir.join("report.json");
    let run = ferry(
        &[
            "bench",
            &server.url("grpc"),
            ADD,
            r#"{"a": 1, "b": 2}"#,
            "-n",
            "200",
            "-o",
            json.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(0);
    assert!(
        run.stdout.contains("the server sent no server-timing"),
        "{}",
        run.stdout
    );
    let report = read_report(&json);
    assert_eq!(check_counts(&report), (200, 200, 0));
    assert_eq!(u(&report, "server_timed"), 0);
    assert!(report["server_processing_ms"].is_null());
    assert!(report["transmission_ms"].is_null());
    assert!(report["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn errors_are_counted_by_code() {
    let server = ferry_calculator();
    let dir = temp_dir("errors");
    let json = dir.join("report.json");
    let run = ferry(
        &[
            "bench",
            &server.url("grpc"),
            "calculator.v1.Calculator/Divide",
            r#"{"a": 1, "b": 0}"#,
            "-n",
            "200",
            "-c",
            "4",
            "-o",
            json.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(0);
    assert!(
        run.stdout.contains("Errors      invalid_argument: 200"),
        "{}",
        run.stdout
    );
    let report = read_report(&json);
    assert_eq!(check_counts(&report), (200, 0, 200));
    assert_eq!(report["errors_by_code"]["invalid_argument"], 200);
    assert!(report["latency_ms"].is_null());
}

#[test]
fn open_loop_reaches_the_requested_rate() {
    let server = ferry_calculator();
    let dir = temp_dir("open");
    let json = dir.join("report.json");
    let run = ferry(
        &[
            "bench",
            &server.url("ferry"),
            ADD,
            r#"{"a": 1}"#,
            "--rate",
            "200",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
            "-o",
            json.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(0);
    let report = read_report(&json);
    let (total, ok, _) = check_counts(&report);
    assert_eq!(report["mode"], "open");
    // The schedule is 200/s for 2 s: every one of its 400 calls is sent, however late a busy
    // machine sends them (lateness is `max_send_lag_ms`, a figure, and counts against latency).
    assert!((399..=401).contains(&total), "sent {total}");
    assert_eq!(ok, total);
    let rate = report["send_rate"].as_f64().unwrap();
    assert!((199.0..=201.0).contains(&rate), "send rate {rate}");
    assert!(report["max_send_lag_ms"].as_f64().unwrap() >= 0.0);
    // The run lasts the schedule, plus however long the last replies take.
    let duration = report["duration_s"].as_f64().unwrap();
    assert!(
        (2.0..2.0 + PATIENCE_S).contains(&duration),
        "duration {duration}"
    );
}

#[test]
fn duration_mode_stops_on_time() {
    let server = ferry_calculator();
    let dir = temp_dir("duration");
    let json = dir.join("report.json");
    let run = ferry(
        &[
            "bench",
            &server.url("http"),
            ADD,
            "{}",
            "-d",
            "500ms",
            "-c",
            "2",
            "-o",
            json.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(0);
    let report = read_report(&json);
    let (total, _, errors) = check_counts(&report);
    assert!(total > 10, "{total}");
    // Over HTTP/1.1 each caller gets its own connection unless told otherwise.
    assert_eq!(report["connections"], 2);
    assert_eq!(errors, 0);
    // It stops when the 500 ms are up: what runs later is only the calls in flight finishing.
    let duration = report["duration_s"].as_f64().unwrap();
    assert!(
        (0.5..0.5 + PATIENCE_S).contains(&duration),
        "duration {duration}"
    );
}

/// Finds Chromium, or fails with what to do.
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "headless Chromium is needed to check the HTML report: install it with \
         scripts/install-test-deps (apt-get install chromium), or run scripts/test"
    );
}

fn chromium_command(profile: &Path) -> Command {
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let server = ferry_calculator();
    let dir = temp_dir("chromium");
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let run = ferry(
        &[
            "bench",
            &server.url("ferry"),
            ADD,
            r#"{"a": 1, "b": 2}"#,
            "--rate",
            "400",
            "--duration",
            "1s",
            "-o",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(0);
    let report = read_report(&json);
    let points = points_with_latency(&report);
    assert!(points >= 5, "{points} points");
    let url = format!("file://{}", html.display());

    let shot = dir.join("shot.png");
    let status = chromium_command(&dir.join("profile-shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,900")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        status.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a non-trivial picture: {} bytes",
        png.len()
    );

    let dom = chromium_command(&dir.join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(dom.status.success(), "chromium --dump-dom failed");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<svg id=\"timeline\""), "{dom}");
    assert!(dom.contains("<svg id=\"histogram\""));
    assert_eq!(dom.matches("<circle class=\"p50\"").count(), points);
    assert_eq!(dom.matches("<circle class=\"p99\"").count(), points);
}
