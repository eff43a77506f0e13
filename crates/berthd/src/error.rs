//! What the engine fails with, and the one place where that becomes a gRPC status.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong: which field, and why.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// Not found, said with its context (which object needed it).
    #[error("{0}")]
    NotFoundIn(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else: a runtime, shim, store or host failure, with its context.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn pod_not_found(id: &str) -> Error {
        Error::NotFound {
            kind: "pod sandbox",
            id: id.to_string(),
        }
    }

    pub fn container_not_found(id: &str) -> Error {
        Error::NotFound {
            kind: "container",
            id: id.to_string(),
        }
    }

    pub fn internal(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{context}: {e}"))
    }
}

impl From<berth_engine::Error> for Error {
    fn from(e: berth_engine::Error) -> Error {
        use berth_engine::Error as E;
        match e {
            E::ImageNotFound(name) => Error::NotFound {
                kind: "image",
                id: name,
            },
            E::ImageInUse { .. } => Error::FailedPrecondition(e.to_string()),
            E::InvalidArgument { .. } => Error::InvalidArgument(e.to_string()),
            other => Error::Internal(chain(&other)),
        }
    }
}

impl From<berth_image::images::ImageError> for Error {
    fn from(e: berth_image::images::ImageError) -> Error {
        berth_engine::Error::from(e).into()
    }
}

/// An error and its sources on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound { .. } | Error::NotFoundIn(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_keeps_its_message() {
        let s: Status = Error::pod_not_found("abc").into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "pod sandbox \"abc\" not found");
        let s: Status = Error::InvalidArgument("config.metadata: missing".into()).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = Error::from(berth_engine::Error::ImageNotFound("busybox".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("busybox"));
    }
}
