//! The status codes shims and containerd answer with (gRPC's, which ttrpc shares): one enum,
//! its kebab-case names as scenarios write them, and the conversions from ttrpc and tonic.

/// A gRPC status code (`google.rpc.Code`; ttrpc uses the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 0.
    Ok,
    /// 1.
    Cancelled,
    /// 2.
    Unknown,
    /// 3.
    InvalidArgument,
    /// 4.
    DeadlineExceeded,
    /// 5.
    NotFound,
    /// 6.
    AlreadyExists,
    /// 7.
    PermissionDenied,
    /// 8.
    ResourceExhausted,
    /// 9.
    FailedPrecondition,
    /// 10.
    Aborted,
    /// 11.
    OutOfRange,
    /// 12.
    Unimplemented,
    /// 13.
    Internal,
    /// 14.
    Unavailable,
    /// 15.
    DataLoss,
    /// 16.
    Unauthenticated,
}

impl Code {
    /// Every code, in numeric order (`ALL[n]` has the number `n`).
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

    /// The code with this number; numbers gRPC does not define are `Unknown` (as grpc-go reads
    /// them).
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The kebab-case name (`not-found`, `failed-precondition`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "cancelled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid-argument",
            Code::DeadlineExceeded => "deadline-exceeded",
            Code::NotFound => "not-found",
            Code::AlreadyExists => "already-exists",
            Code::PermissionDenied => "permission-denied",
            Code::ResourceExhausted => "resource-exhausted",
            Code::FailedPrecondition => "failed-precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out-of-range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data-loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }
}

impl From<ttrpc::Code> for Code {
    fn from(c: ttrpc::Code) -> Code {
        Code::from_i32(c as i32)
    }
}

impl From<Code> for ttrpc::Code {
    fn from(c: Code) -> ttrpc::Code {
        let n = Code::ALL.iter().position(|x| *x == c).unwrap_or(2);
        <ttrpc::Code as protobuf::Enum>::from_i32(n as i32).unwrap_or(ttrpc::Code::UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_follow_grpc() {
        for (n, c) in Code::ALL.iter().enumerate() {
            assert_eq!(
                Code::from(ttrpc::Code::from(*c)),
                *c,
                "{n} through ttrpc and back"
            );
            assert_eq!(Code::from_i32(n as i32), *c);
        }
        assert_eq!(Code::from(ttrpc::Code::NOT_FOUND).as_str(), "not-found");
        assert_eq!(
            Code::from(ttrpc::Code::UNAUTHENTICATED),
            Code::Unauthenticated
        );
        assert_eq!(Code::from_i32(9).as_str(), "failed-precondition");
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }
}
