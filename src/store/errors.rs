//! Driver errors as [`StoreError`]s: which failures a retry may pass and which it never will
//! (docs/consistency.md, "Transient and permanent errors").

use mongodb::error::{ErrorKind, WriteFailure};

use super::StoreError;

/// Server error codes that refuse an operation as sent, so a retry of the same operation is
/// refused again: a bad or unparsable value, a key the server will not store, a duplicate key, a
/// document over the size limit, a failed validation. Any other server error (a primary
/// stepping down, a shutdown, an interrupted or timed-out operation, a stale routing table, …)
/// may pass on a retry; those are bounded by the consumer's tries.
pub(super) const PERMANENT_CODES: [i32; 16] = [
    2, 4, 9, 14, 22, 52, 55, 56, 57, 66, 121, 10334, 11000, 11001, 17419, 17420,
];

/// A driver error as a store error: a document that does not decode is malformed, a value
/// the driver cannot encode is an encoding error, anything a retry may pass is unavailable,
/// and the rest is permanent. `Refused` (the server refuses a value as sent) is kept for the
/// write errors of a job's compare-and-set, where the value is the request's (`jobs.rs`): a
/// driver error elsewhere is the server's answer to an operation, and is not blamed on what a
/// client sent (over HTTP it stays a 503, as before the store had its own error type).
impl From<mongodb::error::Error> for StoreError {
    fn from(error: mongodb::error::Error) -> Self {
        let text = format!("mongodb: {error}");
        match error.kind.as_ref() {
            ErrorKind::BsonDeserialization(_) => Self::Malformed(text),
            ErrorKind::BsonSerialization(_) => Self::Encode(text),
            _ if is_transient(&error) => Self::Unavailable(text),
            _ => Self::Permanent(text),
        }
    }
}

fn is_transient(error: &mongodb::error::Error) -> bool {
    if error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError")
    {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::BsonSerialization(_)
        | ErrorKind::BsonDeserialization(_)
        | ErrorKind::InvalidArgument { .. } => false,
        ErrorKind::Command(_) | ErrorKind::Write(WriteFailure::WriteError(_)) => {
            server_code(error).is_none_or(|code| !PERMANENT_CODES.contains(&code))
        }
        _ => true,
    }
}

/// The server's error code, when the server answered with one.
pub(super) fn server_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        _ => None,
    }
}

pub(super) fn malformed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed(error.to_string())
}

/// A stored job that does not decode is malformed, not a connection problem.
pub(super) fn typed_error(error: mongodb::error::Error) -> StoreError {
    match error.kind.as_ref() {
        ErrorKind::BsonDeserialization(e) => malformed(e),
        _ => error.into(),
    }
}

pub(super) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    server_code(error) == Some(11000)
}

#[cfg(test)]
mod tests {
    use mongodb::error::{Error, ErrorKind};

    use super::*;

    #[test]
    fn driver_errors_keep_their_retry_class_and_are_not_blamed_on_the_request() {
        let io = Error::from(ErrorKind::Io(std::sync::Arc::new(std::io::Error::other(
            "reset",
        ))));
        assert!(matches!(StoreError::from(io), StoreError::Unavailable(_)));
        let reply = mongodb::bson::doc! {"code": 2, "codeName": "BadValue", "errmsg": "bad"};
        let command = mongodb::bson::from_document(reply).expect("a command error");
        let bad = StoreError::from(Error::from(ErrorKind::Command(command)));
        assert!(matches!(bad, StoreError::Permanent(_)), "{bad:?}");
        assert!(!bad.is_transient());
        let busy =
            mongodb::bson::doc! {"code": 11600, "codeName": "InterruptedAtShutdown", "errmsg": "x"};
        let command = mongodb::bson::from_document(busy).expect("a command error");
        let busy = StoreError::from(Error::from(ErrorKind::Command(command)));
        assert!(busy.is_transient(), "{busy:?}");
    }
}
