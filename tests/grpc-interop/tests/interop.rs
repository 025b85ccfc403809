//! The gRPC interop cases across implementations: Python grpcio's client against Ferry's
//! interop server, Ferry's client against grpcio's server, and Ferry against itself over gRPC,
//! the native protocol and the Connect protocol.
//!
//! Every server listens on 127.0.0.1 with a port the OS picks, every process is stopped (and
//! waited for) even when a test fails, and every wait is bounded. The Python peers need grpcio:
//! `$FERRY_PYTHON`, else the project's `.venv` (`scripts/install-test-deps`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grpc_interop::client::CASES;

/// How long a server may take to print `listening on PORT` (grpcio compiles the protos first).
const SERVER_START: Duration = Duration::from_secs(60);
/// How long a whole client run (every case) may take.
const CLIENT_RUN: Duration = Duration::from_secs(180);
/// How long a server may take to stop after SIGTERM.
const SERVER_STOP: Duration = Duration::from_secs(15);

/// The Python with grpcio installed: `$FERRY_PYTHON`, else the project's `.venv`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("FERRY_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with grpcio: run scripts/install-test-deps (or set FERRY_PYTHON)"
    );
    venv
}

fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// A running interop server; dropping it stops it (SIGTERM, then SIGKILL if it lingers).
struct Server {
    name: &'static str,
    child: Option<Child>,
    port: u16,
    /// What the server wrote to stderr, collected in the background.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Starts `command` (which must take `--port 0` and print `listening on PORT`).
    fn start(name: &'static str, mut command: Command) -> Server {
        command
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} server: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || read_all(stderr));
        let mut server = Server {
            name,
            child: Some(child),
            port: 0,
            stderr: Some(stderr),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("listening on ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        match rx.recv_timeout(SERVER_START) {
            Ok(Some(port)) => server.port = port,
            outcome => {
                let why = match outcome {
                    Ok(_) => "printed a malformed port".to_owned(),
                    Err(_) => format!("did not print 'listening on PORT' within {SERVER_START:?}"),
                };
                let stderr = server.stop().1;
                panic!("the {name} server {why}\n--- its stderr\n{stderr}");
            }
        }
        server
    }

    /// Stops the server: SIGTERM, a bounded wait, then SIGKILL. Returns whether it exited well
    /// on SIGTERM, and its stderr.
    fn stop(&mut self) -> (bool, String) {
        let Some(mut child) = self.child.take() else {
            return (true, String::new());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let graceful = match wait_bounded(&mut child, SERVER_STOP) {
            Some(status) => status.success(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        (graceful, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_all(mut from: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = from.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits for `child` to exit, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// What a client run printed.
struct Run {
    stdout: String,
    stderr: String,
    success: bool,
}

/// Runs a client to completion (killing it after [`CLIENT_RUN`]).
fn run_client(name: &str, mut command: Command) -> Run {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {name} client: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || read_all(stdout));
    let stderr = std::thread::spawn(move || read_all(stderr));
    let status = wait_bounded(&mut child, CLIENT_RUN);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        success: status.is_some_and(|s| s.success()),
    };
    assert!(
        status.is_some(),
        "the {name} client did not finish within {CLIENT_RUN:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// The per-case verdicts a run printed: `(case, "PASS" | "FAIL" | "SKIP")`.
fn verdicts(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (verdict, rest) = line.split_once(' ')?;
            let case = rest.split(':').next()?.trim();
            matches!(verdict, "PASS" | "FAIL" | "SKIP")
                .then(|| (case.to_owned(), verdict.to_owned()))
        })
        .collect()
}

/// Asserts that the run passed every case but `skipped`, which it skipped.
fn assert_cases(what: &str, run: &Run, skipped: &[&str]) {
    let expected: Vec<(String, String)> = CASES
        .iter()
        .map(|case| {
            let verdict = if skipped.contains(case) {
                "SKIP"
            } else {
                "PASS"
            };
            ((*case).to_owned(), verdict.to_owned())
        })
        .collect();
    assert_eq!(
        verdicts(&run.stdout),
        expected,
        "{what}: not every case passed\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.success,
        "{what}: the client exited with an error\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout, run.stderr
    );
}

fn ferry_server() -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_interop-server"));
    command.args(["--host", "127.0.0.1"]);
    Server::start("Ferry", command)
}

fn python_server() -> Server {
    let mut command = Command::new(python());
    command
        .arg(python_script("interop_server.py"))
        .args(["--host", "127.0.0.1"]);
    Server::start("grpcio", command)
}

fn ferry_client(server: &Server, transport: &str) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_interop-client"));
    command.args([
        "--server_host",
        "127.0.0.1",
        "--server_port",
        &server.port.to_string(),
        "--test_case",
        "all",
        "--transport",
        transport,
    ]);
    run_client("Ferry", command)
}

/// Stops a Ferry server and checks that SIGTERM stopped it gracefully.
fn stop_gracefully(mut server: Server) {
    let name = server.name;
    let (graceful, stderr) = server.stop();
    assert!(
        graceful,
        "the {name} server did not exit with status 0 on SIGTERM\n--- its stderr\n{stderr}"
    );
}

/// The cases the native protocol cannot express: it has no message compression.
const NOT_NATIVE: [&str; 4] = [
    "client_compressed_unary",
    "server_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_streaming",
];

#[test]
fn grpcio_client_passes_every_case_against_ferrys_server() {
    let server = ferry_server();
    let mut command = Command::new(python());
    command.arg(python_script("interop_client.py")).args([
        "--server_host",
        "127.0.0.1",
        "--server_port",
        &server.port.to_string(),
        "--test_case",
        "all",
    ]);
    let run = run_client("grpcio", command);
    assert_cases("grpcio client -> Ferry server", &run, &[]);
    stop_gracefully(server);
}

#[test]
fn ferrys_client_passes_every_case_against_grpcios_server() {
    let server = python_server();
    let run = ferry_client(&server, "grpc");
    assert_cases("Ferry client (gRPC) -> grpcio server", &run, &[]);
}

#[test]
fn ferry_against_itself_over_grpc() {
    let server = ferry_server();
    let run = ferry_client(&server, "grpc");
    assert_cases("Ferry client (gRPC) -> Ferry server", &run, &[]);
    stop_gracefully(server);
}

#[test]
fn ferry_against_itself_over_the_native_protocol() {
    let server = ferry_server();
    let run = ferry_client(&server, "ferry");
    assert_cases("Ferry client (native) -> Ferry server", &run, &NOT_NATIVE);
    stop_gracefully(server);
}

#[test]
fn ferry_against_itself_over_connect() {
    let server = ferry_server();
    let run = ferry_client(&server, "connect");
    assert_cases("Ferry client (Connect) -> Ferry server", &run, &[]);
    stop_gracefully(server);
}
