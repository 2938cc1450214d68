//! Errors returned by the host, with TensorFlow/gRPC-style codes.

use std::fmt;

use crate::wit::types::Error as WitError;

/// The kind of an [`Error`], as TensorFlow and gRPC name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Something malformed: a bad op, dtype, shape or device string.
    InvalidArgument,
    /// A named thing does not exist.
    NotFound,
    /// Not possible yet, e.g. reading an uninitialized variable.
    FailedPrecondition,
    /// A task needed for this is not reachable.
    Unavailable,
    /// A deadline passed.
    DeadlineExceeded,
    /// Aborted by a concurrent change.
    Aborted,
    /// A quota or limit was hit.
    ResourceExhausted,
    /// Not allowed.
    PermissionDenied,
    /// Not implemented by the host.
    Unimplemented,
    /// A host bug.
    Internal,
}

impl Code {
    /// The code's name, e.g. `failed-precondition`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid-argument",
            Code::NotFound => "not-found",
            Code::FailedPrecondition => "failed-precondition",
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded => "deadline-exceeded",
            Code::Aborted => "aborted",
            Code::ResourceExhausted => "resource-exhausted",
            Code::PermissionDenied => "permission-denied",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
        }
    }
}

/// An error from the host, or from a conversion in the SDK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    code: Code,
    message: String,
}

impl Error {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    /// Its code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// Its message, which names what it is about.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<WitError> for Error {
    fn from(e: WitError) -> Self {
        let (code, message) = match e {
            WitError::InvalidArgument(m) => (Code::InvalidArgument, m),
            WitError::NotFound(m) => (Code::NotFound, m),
            WitError::FailedPrecondition(m) => (Code::FailedPrecondition, m),
            WitError::Unavailable(m) => (Code::Unavailable, m),
            WitError::DeadlineExceeded(m) => (Code::DeadlineExceeded, m),
            WitError::Aborted(m) => (Code::Aborted, m),
            WitError::ResourceExhausted(m) => (Code::ResourceExhausted, m),
            WitError::PermissionDenied(m) => (Code::PermissionDenied, m),
            WitError::Unimplemented(m) => (Code::Unimplemented, m),
            WitError::Internal(m) => (Code::Internal, m),
        };
        Error { code, message }
    }
}

impl Error {
    /// The WIT form of the error.
    pub fn into_raw(self) -> WitError {
        let m = self.message;
        match self.code {
            Code::InvalidArgument => WitError::InvalidArgument(m),
            Code::NotFound => WitError::NotFound(m),
            Code::FailedPrecondition => WitError::FailedPrecondition(m),
            Code::Unavailable => WitError::Unavailable(m),
            Code::DeadlineExceeded => WitError::DeadlineExceeded(m),
            Code::Aborted => WitError::Aborted(m),
            Code::ResourceExhausted => WitError::ResourceExhausted(m),
            Code::PermissionDenied => WitError::PermissionDenied(m),
            Code::Unimplemented => WitError::Unimplemented(m),
            Code::Internal => WitError::Internal(m),
        }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
