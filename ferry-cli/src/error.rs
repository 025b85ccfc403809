//! The CLI's one error type and its exit codes.

use std::fmt;

use ferry::Status;

/// Exit code for local mistakes: bad arguments, bad JSON, unknown symbols, unreadable files.
pub const EXIT_USAGE: u8 = 1;
/// Exit code of `ferry health` when the service is not serving.
pub const EXIT_NOT_SERVING: u8 = 3;
/// Failed calls exit with this plus the status code (`invalid_argument` = 3 → 67), as grpcurl does.
pub const EXIT_STATUS_BASE: u8 = 64;

/// Why a command failed: the line printed to stderr and the process exit code.
#[derive(Debug)]
pub struct Failure {
    /// Printed to stderr as is.
    pub message: String,
    /// The process exit code (never 0).
    pub exit_code: u8,
}

impl Failure {
    /// A local error (exit code 1).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure {
            message: status.to_string(),
            exit_code: EXIT_STATUS_BASE + status.code().as_i32().clamp(1, 16) as u8,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The result of every command.
pub type CliResult<T = ()> = Result<T, Failure>;
