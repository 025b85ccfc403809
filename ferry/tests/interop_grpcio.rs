//! Python grpcio (the reference gRPC implementation) calls Ferry's calculator.

use std::process::Command;

use ferry_test_support::python::{python, script};
use ferry_test_support::{start_echo_calculator, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_drives_the_calculator() {
    let server = start_echo_calculator().await;
    let root = workspace_root();
    let out = std::env::temp_dir().join(format!("ferry-grpcio-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut command = Command::new(python());
    command
        .arg(script("grpcio_client.py"))
        .arg(server.local_addr().to_string())
        .arg(root.join("examples/calculator/proto"))
        .arg(root.join("ferry-build/proto"))
        .arg(&out);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the grpcio client");
    let _ = std::fs::remove_dir_all(&out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio client failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for check in [
        "ok: Divide(1, 0) is INVALID_ARGUMENT",
        "ok: a slow call is DEADLINE_EXCEEDED",
        "ok: binary metadata is echoed back",
        "ok: the calculator is SERVING",
        "ok: reflection serves calculator.proto",
        "all grpcio checks passed",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in\n{stdout}");
    }
    server.shutdown().await.unwrap();
}
