//! The host library's one error type, with TensorFlow/gRPC-style codes.
//!
//! Every error names what it is about (op, variable, device, task, shape,
//! module). [`Error::code`] gives the status code that crosses into guests
//! (as the WIT `error` variant) and, later, onto the wire (as `tonic::Status`).

use std::fmt;

/// A TensorFlow/gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Malformed request: bad op, dtype, shape, device string, module.
    InvalidArgument,
    /// A named thing does not exist.
    NotFound,
    /// Not in a state to do this yet (e.g. an uninitialized variable).
    FailedPrecondition,
    /// A task needed for this is not reachable.
    Unavailable,
    /// A deadline passed.
    DeadlineExceeded,
    /// Aborted by a concurrent change.
    Aborted,
    /// A limit was hit.
    ResourceExhausted,
    /// The caller may not do this.
    PermissionDenied,
    /// Not implemented by this host.
    Unimplemented,
    /// A host bug.
    Internal,
}

impl Code {
    /// The code's kebab-case name, as in the WIT `error` variant.
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

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the weft host library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === Graph construction and execution (reach guests as WIT errors) ===
    /// A request a program can fix: see [`Code`].
    #[error("{code}: {message}")]
    Status {
        /// The status code.
        code: Code,
        /// What went wrong, naming the thing at fault.
        message: String,
    },

    // === Modules and programs ===
    /// Bytes that cannot be run as a weft worker component.
    #[error("invalid module {module}: {reason}")]
    InvalidModule {
        /// The module's name (file name or hash).
        module: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Building a guest crate for wasm32-wasip2 failed (test harness).
    #[error("building guest {package} failed: {reason}")]
    GuestBuild {
        /// The crate that failed to build.
        package: String,
        /// Cargo's diagnostics, or the missing toolchain piece.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// wasmtime failed outside a guest's control (engine setup, instantiation).
    #[error("{context}: {message}")]
    Wasm {
        /// What was being done.
        context: String,
        /// wasmtime's error chain.
        message: String,
    },
}

impl Error {
    /// An error with the given code and message.
    pub fn status(code: Code, message: impl Into<String>) -> Self {
        Error::Status { code, message: message.into() }
    }

    /// `invalid-argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::status(Code::InvalidArgument, message)
    }

    /// `failed-precondition`.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::status(Code::FailedPrecondition, message)
    }

    /// `not-found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::status(Code::NotFound, message)
    }

    /// `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::status(Code::Unavailable, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::status(Code::Internal, message)
    }

    /// An I/O error with context naming the path or action.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// A wasmtime error with context; keeps the whole cause chain.
    pub fn wasm(context: impl Into<String>, err: &wasmtime::Error) -> Self {
        Error::Wasm { context: context.into(), message: format!("{err:#}") }
    }

    /// The status code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::Status { code, .. } => *code,
            Error::InvalidModule { .. } => Code::InvalidArgument,
            Error::GuestBuild { .. } => Code::FailedPrecondition,
            Error::Io { .. } | Error::Wasm { .. } => Code::Internal,
        }
    }

    /// The message without the code prefix.
    pub fn message(&self) -> String {
        match self {
            Error::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// `Result` with the host library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
