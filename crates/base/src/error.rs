//! The kinds of failure every perch crate's errors fall into. Each crate
//! keeps its own error type (thiserror) and says which kind each variant is
//! through [`HasKind`]; the HTTP layer turns a kind into a status code and
//! a response body in one place, so no other crate knows about HTTP.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input is malformed or refused as given: fix the request (400).
    InvalidArgument,
    /// The input is valid but cannot be carried out, such as a query that
    /// would read more samples than allowed (422).
    Unprocessable,
    /// No credentials, or wrong ones (401).
    Unauthenticated,
    /// The credentials are good but their role may not do this (403).
    PermissionDenied,
    /// What was named does not exist (404).
    NotFound,
    /// It exists already, or is in a state that forbids the change (409).
    Conflict,
    /// The body is larger than allowed (413).
    PayloadTooLarge,
    /// Too many attempts from one client; try later (429).
    RateLimited,
    /// Busy or not running at the moment; retrying shortly may work (503).
    Unavailable,
    /// The work ran out of its time (503).
    DeadlineExceeded,
    /// The disk is full or failing (507).
    InsufficientStorage,
    /// Stored data is damaged (500).
    DataLoss,
    /// A fault of perch or of the machine (500).
    Internal,
}

impl ErrorKind {
    /// Whether the caller caused it (and should change the request).
    pub fn is_client_error(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidArgument
                | ErrorKind::Unprocessable
                | ErrorKind::Unauthenticated
                | ErrorKind::PermissionDenied
                | ErrorKind::NotFound
                | ErrorKind::Conflict
                | ErrorKind::PayloadTooLarge
                | ErrorKind::RateLimited
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error that knows its [`ErrorKind`].
pub trait HasKind: std::error::Error {
    fn kind(&self) -> ErrorKind;
}
