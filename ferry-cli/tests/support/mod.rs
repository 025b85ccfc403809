//! Helpers for the CLI tests: the runner for the real `ferry` binary, on top of the servers
//! every test crate shares (`ferry-test-support`).

// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub use ferry_test_support::{
    EchoLayer, TestServer, ferry_calculator, ferry_calculator_with, tonic_calculator,
    tonic_calculator_with, workspace_root,
};

/// Messages of `tests/proto/numbers/v1/numbers.proto`, written out as prost would generate them.
pub mod numbers {
    /// Where counting starts and ends; `fail_after` > 0 fails after that many replies.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CountRequest {
        /// First number.
        #[prost(int64, tag = "1")]
        pub from: i64,
        /// Last number.
        #[prost(int64, tag = "2")]
        pub to: i64,
        /// Replies before failing with ABORTED (0: never).
        #[prost(int64, tag = "3")]
        pub fail_after: i64,
    }

    /// One number.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Number {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
    }
}

/// The `--proto` arguments for the numbers service, relative to the workspace root.
pub const NUMBERS_PROTO_ARGS: [&str; 4] = [
    "--proto",
    "ferry-cli/tests/proto/numbers/v1/numbers.proto",
    "-I",
    "ferry-cli/tests/proto",
];

/// The numbers service's descriptors, compiled from its `.proto` by `ferry-build`.
static NUMBERS_DESCRIPTORS: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proto");
    ferry_build::compile_descriptor_set(&[root.join("numbers/v1/numbers.proto")], &[&root])
        .expect("numbers.proto compiles")
});

/// `numbers.v1.Numbers`: one method of each streaming kind, written against the runtime's
/// encoded-call interface (no generated code in this crate).
pub struct Numbers;

impl ferry::ServiceHandler for Numbers {
    fn name(&self) -> &'static str {
        "numbers.v1.Numbers"
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        std::sync::LazyLock::force(&NUMBERS_DESCRIPTORS).as_slice()
    }

    fn methods(&self) -> &'static [(&'static str, ferry::call::MethodKind)] {
        use ferry::call::MethodKind;
        &[
            ("Count", MethodKind::ServerStreaming),
            ("Sum", MethodKind::ClientStreaming),
            ("RunningSum", MethodKind::BidiStreaming),
        ]
    }

    fn call(
        &self,
        method: &str,
        request: ferry::Request<ferry::call::Body>,
    ) -> ferry::call::BoxFuture<ferry::call::CallResult> {
        use ferry::call::{Body, MessageStream};
        use ferry::{Response, Status, Streaming};
        use futures_util::StreamExt;
        use numbers::{CountRequest, Number};
        use prost::Message;

        let encode = |n: f64| bytes::Bytes::from(Number { value: n }.encode_to_vec());
        match method {
            "Count" => Box::pin(async move {
                let bytes = request.into_inner().into_message().await?;
                let ask = CountRequest::decode(bytes)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let mut replies: Vec<Result<bytes::Bytes, Status>> = Vec::new();
                for n in ask.from..=ask.to {
                    if ask.fail_after > 0 && replies.len() as i64 == ask.fail_after {
                        replies.push(Err(Status::aborted("counting stopped")));
                        break;
                    }
                    replies.push(Ok(encode(n as f64)));
                }
                let stream = MessageStream::from_messages(futures_util::stream::iter(replies));
                Ok(Response::new(Body::Stream(stream)))
            }),
            "Sum" => Box::pin(async move {
                let mut numbers = Streaming::<Number>::new(request.into_inner().into_stream());
                let mut total = 0.0;
                while let Some(number) = numbers.message().await? {
                    total += number.value;
                }
                Ok(Response::new(Body::Message(encode(total))))
            }),
            "RunningSum" => Box::pin(async move {
                let numbers = Streaming::<Number>::new(request.into_inner().into_stream());
                let totals = numbers.scan(0.0, move |total, number| {
                    let item = number.map(|number| {
                        *total += number.value;
                        encode(*total)
                    });
                    std::future::ready(Some(item))
                });
                Ok(Response::new(Body::Stream(MessageStream::from_messages(
                    totals,
                ))))
            }),
            other => {
                let status = Status::unimplemented(format!("numbers.v1.Numbers has no {other}"));
                Box::pin(std::future::ready(Err(status)))
            }
        }
    }
}

/// The calculator and the numbers service behind [`EchoLayer`] on a Ferry server.
pub fn ferry_numbers() -> TestServer {
    ferry_calculator_with(|server| server.add_service(Numbers).layer(EchoLayer))
}

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
