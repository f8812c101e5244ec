//! Listing job ids for `GET /jobs` and `GET /history`: filters, newest first, keyset pages,
//! streamed from a cursor so a listing is never held whole in memory.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{Stream, StreamExt};
use mongodb::bson::{Bson, Document, doc};

use super::{Store, StoreError};
use crate::domain::{JobStatus, Timestamp};

/// Ids a driver batch carries; bounds what a listing holds at once.
const BATCH_SIZE: u32 = 1000;

/// Which collection a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `jobs`, and only active jobs in it (pending, running, paused, held).
    Active,
    /// `history`.
    History,
}

impl Listing {
    /// The collection listed.
    pub fn collection(self) -> &'static str {
        match self {
            Self::Active => "jobs",
            Self::History => "history",
        }
    }
}

/// Where the previous page ended: the last `(created, id)` it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub created: String,
    pub id: String,
}

impl PageCursor {
    /// The opaque text form used in `after=`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\n{}", self.created, self.id))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (created, id) = text.split_once('\n')?;
        Timestamp::parse(created).ok()?;
        Some(Self {
            created: created.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// The filters of a listing. Empty fields filter nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub statuses: Vec<JobStatus>,
    pub machine_id: Option<String>,
    pub pipeline_id: Option<String>,
    /// `created` at or after.
    pub since: Option<Timestamp>,
    /// `created` before.
    pub until: Option<Timestamp>,
    pub after: Option<PageCursor>,
    pub limit: Option<u32>,
}

/// One listed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub created: String,
}

impl Listed {
    pub fn cursor(&self) -> PageCursor {
        PageCursor {
            created: self.created.clone(),
            id: self.id.clone(),
        }
    }
}

/// The MongoDB filter for `filter` over `listing`.
pub fn filter_document(listing: Listing, filter: &ListFilter) -> Document {
    let mut clauses: Vec<Document> = Vec::new();
    let mut statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    if listing == Listing::Active {
        // Never list an ended job as active, even between its archive and its delete.
        if statuses.is_empty() {
            statuses = super::ACTIVE_STATUSES.to_vec();
        }
        statuses.retain(|s| super::ACTIVE_STATUSES.contains(s));
        clauses.push(doc! {"status": {"$in": statuses}});
    } else if !statuses.is_empty() {
        clauses.push(doc! {"status": {"$in": statuses}});
    }
    if let Some(machine_id) = &filter.machine_id {
        clauses.push(doc! {"machine_id": machine_id});
    }
    if let Some(pipeline_id) = &filter.pipeline_id {
        clauses.push(doc! {"pipeline_id": pipeline_id});
    }
    if let Some(since) = filter.since {
        clauses.push(doc! {"created": {"$gte": since.to_string()}});
    }
    if let Some(until) = filter.until {
        clauses.push(doc! {"created": {"$lt": until.to_string()}});
    }
    if let Some(after) = &filter.after {
        clauses.push(doc! {"$or": [
            {"created": {"$lt": &after.created}},
            {"created": &after.created, "_id": {"$gt": &after.id}},
        ]});
    }
    match clauses.len() {
        0 => Document::new(),
        1 => clauses.remove(0),
        _ => doc! {"$and": clauses},
    }
}

impl Store {
    /// Streams the ids matching `filter`, newest `created` first (ties by id).
    pub async fn list(
        &self,
        listing: Listing,
        filter: &ListFilter,
    ) -> Result<impl Stream<Item = Result<Listed, StoreError>> + Send + 'static, StoreError> {
        let collection = match listing {
            Listing::Active => &self.jobs,
            Listing::History => &self.history,
        };
        let mut find = collection
            .find(filter_document(listing, filter))
            .projection(doc! {"_id": 1, "created": 1})
            .sort(doc! {"created": -1, "_id": 1})
            .batch_size(BATCH_SIZE);

        if let Some(limit) = filter.limit {
            find = find.limit(i64::from(limit));
        }
        let cursor = find.await?;
        // A document without a string `_id` and `created` is reported and skipped: one bad
        // document must not end everyone's listing.
        Ok(cursor.filter_map(move |document| {
            let listed = match document {
                Err(error) => Some(Err(error.into())),
                Ok(document) => match (document.get("_id"), document.get("created")) {
                    (Some(Bson::String(id)), Some(Bson::String(created))) => Some(Ok(Listed {
                        id: id.clone(),
                        created: created.clone(),
                    })),
                    other => {
                        crate::meter::undecodable(listing.collection());
                        tracing::warn!(document = ?other, "a listed document has no string _id and created; skipped");
                        None
                    }
                },
            };
            std::future::ready(listed)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = PageCursor {
            created: "2020-07-16T10:15:53.278087Z".into(),
            id: "UVpxMTeqgMijLlbmNI8A_A".into(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("!!!"), None);
        assert_eq!(
            PageCursor::decode(&URL_SAFE_NO_PAD.encode("no newline")),
            None
        );
        assert_eq!(
            PageCursor::decode(&URL_SAFE_NO_PAD.encode("not a time\nid")),
            None
        );
    }

    #[test]
    fn active_listing_never_shows_ended_jobs() {
        let filter = ListFilter {
            statuses: vec![JobStatus::Finished],
            ..ListFilter::default()
        };
        let document = filter_document(Listing::Active, &filter);
        assert_eq!(document, doc! {"status": {"$in": Vec::<&str>::new()}});
        let document = filter_document(Listing::Active, &ListFilter::default());
        assert_eq!(
            document,
            doc! {"status": {"$in": ["pending", "running", "paused", "held"]}}
        );
        assert_eq!(
            filter_document(Listing::History, &ListFilter::default()),
            doc! {}
        );
    }

    #[test]
    fn filters_combine_with_and() {
        let filter = ListFilter {
            machine_id: Some("m".into()),
            since: Timestamp::parse("2020-01-01T00:00:00Z").ok(),
            ..ListFilter::default()
        };
        let document = filter_document(Listing::History, &filter);
        assert_eq!(
            document,
            doc! {"$and": [{"machine_id": "m"}, {"created": {"$gte": "2020-01-01T00:00:00.000000Z"}}]}
        );
    }
}
