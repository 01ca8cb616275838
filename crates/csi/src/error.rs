//! The driver's error type and its gRPC status codes, in one place, so
//! that every RPC answers a kind of failure with the same code.

use tonic::{Code, Status};

/// Why a CSI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// A field is missing or unacceptable (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// The volume, path or directory does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// Something incompatible is already there (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// Another call on the same volume is in progress (ABORTED).
    #[error("{0}")]
    Aborted(String),
    /// The request is valid but the system is not in a state to do it (FAILED_PRECONDITION).
    #[error("{0}")]
    Precondition(String),
    /// A capacity this driver cannot give (OUT_OF_RANGE).
    #[error("{0}")]
    OutOfRange(String),
    /// The FUSE session or the plugin is not ready; retrying may help (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The namespace did not answer in time (DEADLINE_EXCEEDED).
    #[error("{0}")]
    Deadline(String),
    /// The RPC is not offered (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl CsiError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            CsiError::Invalid(_) => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::Precondition(_) => Code::FailedPrecondition,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::Unavailable(_) => Code::Unavailable,
            CsiError::Deadline(_) => Code::DeadlineExceeded,
            CsiError::Unimplemented(_) => Code::Unimplemented,
            CsiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<crate::paths::PathError> for CsiError {
    fn from(e: crate::paths::PathError) -> CsiError {
        CsiError::Invalid(e.to_string())
    }
}

impl From<crate::state::StateError> for CsiError {
    fn from(e: crate::state::StateError) -> CsiError {
        CsiError::Internal(e.to_string())
    }
}

/// A required string field, or INVALID_ARGUMENT naming it.
pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, CsiError> {
    if value.is_empty() {
        Err(CsiError::Invalid(format!("{field} is required")))
    } else {
        Ok(value)
    }
}
