//! Status codes and the [`Status`] error every Ferry call returns on failure.

use std::fmt;

use bytes::Bytes;

use super::Metadata;

/// The 17 canonical status codes shared with gRPC.
///
/// The numeric values are the gRPC wire values, so a code survives every protocol unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    /// Not an error; returned on success.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error, e.g. an error from another address space with no mapping.
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller does not have permission to execute the operation.
    PermissionDenied = 7,
    /// Some resource has been exhausted (quota, message size, concurrency).
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation's execution.
    FailedPrecondition = 9,
    /// The operation was aborted, typically due to a concurrency issue.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented or not supported.
    Unimplemented = 12,
    /// An invariant expected by the system has been broken.
    Internal = 13,
    /// The service is currently unavailable; retrying may succeed.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request does not have valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// All codes, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a wire value; values outside 0..=16 map to [`Code::Unknown`], as gRPC requires.
    pub fn from_i32(value: i32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's wire value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The snake_case name used by the Connect protocol and in JSON errors, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// Parses a snake_case name as produced by [`Code::as_str`] (`cancelled` is accepted too).
    pub fn from_name(name: &str) -> Option<Code> {
        if name == "cancelled" {
            return Some(Code::Cancelled);
        }
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a failed call: a [`Code`], a human-readable message and optional binary details.
///
/// ```
/// use ferry::{Code, Status};
/// let status = Status::invalid_argument("division by zero");
/// assert_eq!(status.code(), Code::InvalidArgument);
/// assert_eq!(status.to_string(), "invalid_argument: division by zero");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
    metadata: Metadata,
}

macro_rules! status_ctors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: Bytes::new(),
            metadata: Metadata::new(),
        }
    }

    status_ctors! {
        /// [`Code::Cancelled`] with a message.
        cancelled => Cancelled,
        /// [`Code::Unknown`] with a message.
        unknown => Unknown,
        /// [`Code::InvalidArgument`] with a message.
        invalid_argument => InvalidArgument,
        /// [`Code::DeadlineExceeded`] with a message.
        deadline_exceeded => DeadlineExceeded,
        /// [`Code::NotFound`] with a message.
        not_found => NotFound,
        /// [`Code::AlreadyExists`] with a message.
        already_exists => AlreadyExists,
        /// [`Code::PermissionDenied`] with a message.
        permission_denied => PermissionDenied,
        /// [`Code::ResourceExhausted`] with a message.
        resource_exhausted => ResourceExhausted,
        /// [`Code::FailedPrecondition`] with a message.
        failed_precondition => FailedPrecondition,
        /// [`Code::Aborted`] with a message.
        aborted => Aborted,
        /// [`Code::OutOfRange`] with a message.
        out_of_range => OutOfRange,
        /// [`Code::Unimplemented`] with a message.
        unimplemented => Unimplemented,
        /// [`Code::Internal`] with a message.
        internal => Internal,
        /// [`Code::Unavailable`] with a message.
        unavailable => Unavailable,
        /// [`Code::DataLoss`] with a message.
        data_loss => DataLoss,
        /// [`Code::Unauthenticated`] with a message.
        unauthenticated => Unauthenticated,
    }

    /// Attaches binary details (for example an encoded `google.rpc.Status`).
    pub fn with_details(mut self, details: Bytes) -> Status {
        self.details = details;
        self
    }

    /// Attaches trailing metadata, sent with the status (gRPC trailers, the native STATUS
    /// frame, Connect's error metadata).
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.metadata = metadata;
        self
    }

    /// The trailing metadata sent with this status.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The trailing metadata sent with this status, mutably.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The binary details, empty when none were attached.
    pub fn details(&self) -> &Bytes {
        &self.details
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if !self.details.is_empty() {
            d.field("details", &self.details);
        }
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

impl From<std::io::Error> for Status {
    fn from(err: std::io::Error) -> Status {
        use std::io::ErrorKind::*;
        let code = match err.kind() {
            TimedOut => Code::DeadlineExceeded,
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
            | UnexpectedEof | AddrNotAvailable => Code::Unavailable,
            PermissionDenied => Code::PermissionDenied,
            NotFound => Code::NotFound,
            InvalidInput | InvalidData => Code::InvalidArgument,
            _ => Code::Unknown,
        };
        Status::new(code, err.to_string())
    }
}

impl From<prost::DecodeError> for Status {
    fn from(err: prost::DecodeError) -> Status {
        Status::invalid_argument(format!("malformed protobuf message: {err}"))
    }
}

impl From<tokio::time::error::Elapsed> for Status {
    fn from(_: tokio::time::error::Elapsed) -> Status {
        Status::deadline_exceeded("deadline exceeded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_number_and_name() {
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), code);
            assert_eq!(Code::from_name(code.as_str()), Some(code));
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::from_name("bogus"), None);
    }

    #[test]
    fn io_errors_map_to_sensible_codes() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Status::from(refused).code(), Code::Unavailable);
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(Status::from(timeout).code(), Code::DeadlineExceeded);
    }
}
