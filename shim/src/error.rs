//! The shim's one error type and its single mapping to ttrpc wire codes.

use ttrpc::Code;

/// Every failure the shim library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named container, exec or process does not exist (wire: NOT_FOUND).
    #[error("{0}: not found")]
    NotFound(String),
    /// The named object exists already (wire: ALREADY_EXISTS).
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The object is in the wrong state for the call (wire: FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request or a bundle file carries a bad value (wire: INVALID_ARGUMENT).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The RPC has no meaning for host processes (wire: UNIMPLEMENTED).
    #[error("{0}: not implemented")]
    Unimplemented(String),
    /// An operating-system call failed (wire: UNKNOWN).
    #[error("{context}: {source}")]
    Io {
        /// What the shim was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Anything else (wire: UNKNOWN).
    #[error("{0}")]
    Other(String),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an `io::Error` with what the shim was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a `nix` errno with what the shim was doing.
    pub fn errno(context: impl Into<String>, errno: nix::Error) -> Self {
        Error::io(context, std::io::Error::from_raw_os_error(errno as i32))
    }

    /// The ttrpc code this error is sent with.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Io { .. } | Error::Other(_) => Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(e: Error) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn not_found_maps_to_not_found() {
        let (code, msg) = wire(Error::NotFound("container c1".into()));
        assert_eq!(code, Code::NOT_FOUND);
        assert_eq!(msg, "container c1: not found");
    }

    #[test]
    fn already_exists_maps_to_already_exists() {
        let (code, msg) = wire(Error::AlreadyExists("exec e1".into()));
        assert_eq!(code, Code::ALREADY_EXISTS);
        assert!(msg.contains("e1"), "{msg}");
    }

    #[test]
    fn failed_precondition_maps_to_failed_precondition() {
        let (code, _) = wire(Error::FailedPrecondition(
            "cannot delete a running process".into(),
        ));
        assert_eq!(code, Code::FAILED_PRECONDITION);
    }

    #[test]
    fn invalid_argument_maps_to_invalid_argument() {
        let (code, msg) = wire(Error::InvalidArgument("signal 99".into()));
        assert_eq!(code, Code::INVALID_ARGUMENT);
        assert!(msg.contains("signal 99"), "{msg}");
    }

    #[test]
    fn unimplemented_maps_to_unimplemented() {
        let (code, msg) = wire(Error::Unimplemented("checkpoint".into()));
        assert_eq!(code, Code::UNIMPLEMENTED);
        assert!(msg.contains("checkpoint"), "{msg}");
    }

    #[test]
    fn io_and_other_map_to_unknown() {
        let (code, msg) = wire(Error::io(
            "open /x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        ));
        assert_eq!(code, Code::UNKNOWN);
        assert!(msg.starts_with("open /x: "), "{msg}");
        assert_eq!(wire(Error::Other("boom".into())).0, Code::UNKNOWN);
    }
}
