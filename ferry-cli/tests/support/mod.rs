//! Helpers for the CLI tests: the runner for the real `ferry` binary, on top of the servers
//! every test crate shares (`ferry-test-support`).

// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

use std::process::{Command, Output, Stdio};

pub use ferry_test_support::{
    EchoLayer, TestServer, ferry_calculator, ferry_calculator_with, tonic_calculator,
    tonic_calculator_with, workspace_root,
};

/// The calculator's proto arguments (`--proto … -I …`), relative to the workspace root.
pub const PROTO_ARGS: [&str; 4] = [
    "--proto",
    "examples/calculator/proto/calculator/v1/calculator.proto",
    "-I",
    "examples/calculator/proto",
];

/// What a run of `ferry` printed and how it exited.
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs the `ferry` binary from the workspace root, with `stdin` if given.
pub fn ferry(args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(args)
        .current_dir(workspace_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run the ferry binary");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait for ferry");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
