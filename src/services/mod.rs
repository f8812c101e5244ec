//! The services the REST handlers call besides the coordinator (docs/README.md, "The parts and
//! how they depend on each other"): [`Catalog`] registers pipelines and machines, [`Queries`]
//! answers the read side, [`Results`] records results posted for a job. Both hold a [`crate::store::Store`] and keep the domain's rules on
//! the way in, so a handler only translates HTTP to a call and the outcome back to a status.
//!
//! Edges point inwards: `http` calls these, these call `domain` and `store`, and nothing here
//! knows of HTTP.

pub mod catalog;
pub mod queries;
pub mod results;

pub use catalog::{Catalog, CatalogError, Written};
pub use queries::{HistoryRecord, HistoryView, ListFilter, Listing, Page, PageCursor, Queries};
pub use results::{Recorded, Results, ResultsError};

use crate::store::StoreError;

/// Why the store could not do what a service asked, in the two classes a caller tells apart
/// (docs/consistency.md, "Transient and permanent errors").
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// MongoDB is unavailable, busy, or holds a document that does not decode: the server's
    /// problem, not the request's; a retry later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The database refuses the value as it was sent; the same request fails again.
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Refused(_) | StoreError::Encode(_) => Self::Refused(error.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_split_into_refused_and_unavailable() {
        let refused = Failure::from(StoreError::Refused("too large".into()));
        assert!(matches!(refused, Failure::Refused(ref m) if m.contains("too large")));
        let encode = Failure::from(StoreError::Encode("bad".into()));
        assert!(matches!(encode, Failure::Refused(_)));
        for unavailable in [
            StoreError::Malformed("x".into()),
            StoreError::Contention("y".into()),
            StoreError::Permanent("z".into()),
        ] {
            assert!(matches!(
                Failure::from(unavailable),
                Failure::Unavailable(_)
            ));
        }
    }
}
