//! Real clients from the npm registry against a Ferry server (packages pinned in
//! `tests/node/package-lock.json`, installed and built by `scripts/install-test-deps`):
//! `@grpc/grpc-js` over gRPC, `@connectrpc/connect-node` over the Connect protocol (unary,
//! GET, gzip, every streaming shape), gRPC-Web and gRPC, and a page bundled from
//! `@connectrpc/connect-web` running in headless Chromium over Connect and gRPC-Web, loaded
//! from another origin (CORS) and from `file://`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/node")
}

/// Runs a script of `tests/node` and checks that it passed every check it names.
async fn run(script: &str, args: &[&str], expected_checks: usize) {
    let dir = node_dir();
    assert!(
        dir.join("node_modules").exists() && dir.join("dist/app.js").exists(),
        "tests/node is not installed and built: run scripts/install-test-deps"
    );
    let mut command = Command::new("node");
    command.current_dir(&dir).arg(script).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let passed = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert!(
        passed >= expected_checks && !stdout.contains("FAIL"),
        "{script} {args:?}: {passed} checks passed, expected {expected_checks}\n{stdout}"
    );
}

async fn start() -> ferry::ServerHandle {
    ferry::Server::builder()
        .add_service(calculator::service())
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_calls_every_method_shape() {
    let server = start().await;
    run("grpc-js-client.mjs", &[&server.local_addr().to_string()], 6).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_calls_over_connect_grpc_web_and_grpc() {
    let server = start().await;
    let url = format!("http://{}", server.local_addr());
    run("connect-node-client.mjs", &[&url], 10).await;
    run(
        "connect-node-client.mjs",
        &[&url, "--protocol", "grpc-web"],
        6,
    )
    .await;
    run("connect-node-client.mjs", &[&url, "--protocol", "grpc"], 6).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_calls_over_connect_and_grpc_web() {
    let server = start().await;
    let url = format!("http://{}", server.local_addr());
    // Both origins: another http:// origin (CORS preflights) and file:// (`Origin: null`).
    run("page-test.mjs", &[&url, "--origin", "both"], 20).await;
    server.shutdown().await.unwrap();
}
