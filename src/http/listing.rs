//! The query parameters of `GET /jobs` and `GET /history`, and their streamed or paged answers
//! (README.md, "Listing queries"). The reading is `Queries::ids` and `Queries::page`.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::http::header::{CONTENT_TYPE, LINK};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::domain::{JobStatus, Timestamp};
use crate::openapi::{Param, Response as Doc, schema_of};
use crate::services::{ListFilter, Listing, PageCursor};

/// Largest `limit` of one page.
pub const MAX_PAGE: u32 = 10_000;

/// Query parameters of a listing. Without `limit` the whole listing streams as one JSON array,
/// as in the seed; with it, one page, and a `Link: <…>; rel="next"` header when more follow.
#[derive(Debug, Default, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Comma-separated statuses, e.g. `finished,failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    /// `created` at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// `created` before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Page size, 1 to 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The opaque cursor from the previous page's `Link` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

fn time(name: &str, value: &Option<String>) -> Result<Option<Timestamp>, ApiError> {
    value
        .as_deref()
        .map(|text| {
            Timestamp::parse(text).map_err(|_| {
                bad(format!(
                    "'{name}' must be an RFC 3339 time such as 2020-07-16T10:15:53Z"
                ))
            })
        })
        .transpose()
}

impl ListParams {
    /// Checks the parameters and turns them into a listing filter.
    pub fn filter(&self) -> Result<ListFilter, ApiError> {
        let mut statuses = Vec::new();
        for name in self
            .status
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let status: JobStatus = serde_json::from_value(serde_json::Value::String(
                name.to_owned(),
            ))
            .map_err(|_| {
                bad(format!(
                    "unknown status '{}'; use pending, running, paused, held, finished, failed or aborted",
                    name.chars().take(40).collect::<String>()
                ))
            })?;
            statuses.push(status);
        }
        if let Some(limit) = self.limit
            && !(1..=MAX_PAGE).contains(&limit)
        {
            return Err(bad(format!("'limit' must be between 1 and {MAX_PAGE}")));
        }
        let after = match &self.after {
            Some(text) => Some(
                PageCursor::decode(text)
                    .ok_or_else(|| bad("'after' is not a cursor this service issued".into()))?,
            ),
            None => None,
        };
        for (name, value) in [
            ("machine_id", &self.machine_id),
            ("pipeline_id", &self.pipeline_id),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > 1024) {
                return Err(bad(format!("'{name}' is too long")));
            }
        }
        Ok(ListFilter {
            statuses,
            machine_id: self.machine_id.clone(),
            pipeline_id: self.pipeline_id.clone(),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            after,
            limit: self.limit,
        })
    }
}

/// Answers a listing request.
pub async fn respond(
    state: &AppState,
    listing: Listing,
    params: Result<Query<ListParams>, QueryRejection>,
    uri: &OriginalUri,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| bad(format!("invalid query: {}", e.body_text())))?;
    let filter = params.filter()?;
    let Some(limit) = filter.limit else {
        // The seed's behaviour: every id, as one JSON array, streamed from the cursor.
        let ids = state.queries.ids(listing, &filter).await?;
        let items = ids.enumerate().map(|(i, item)| {
            item.map(|id| {
                let comma = if i == 0 { "" } else { "," };
                Bytes::from(format!("{comma}{}", serde_json::Value::String(id)))
            })
        });
        let body = stream::once(async { Ok(Bytes::from_static(b"[")) })
            .chain(items)
            .chain(stream::once(async { Ok(Bytes::from_static(b"]")) }));
        return Ok((
            [(CONTENT_TYPE, "application/json")],
            Body::from_stream(body),
        )
            .into_response());
    };
    let page = state.queries.page(listing, filter, limit).await?;
    let mut response = axum::Json(&page.ids).into_response();
    if let Some(after) = page.next {
        let next = ListParams {
            after: Some(after),
            ..params
        };
        let query = serde_urlencoded::to_string(&next).unwrap_or_default();
        let link = format!("<{}?{query}>; rel=\"next\"", uri.0.path());
        if let Ok(value) = link.parse() {
            response.headers_mut().insert(LINK, value);
        }
    }
    Ok(response)
}

/// The documentation of the query parameters of [`ListParams`].
pub fn params() -> Vec<Param> {
    vec![
        Param::query(
            "status",
            "comma-separated statuses: pending, running, paused, held, finished, failed, aborted",
            json!({"type": "string"}),
        ),
        Param::query(
            "machine_id",
            "only jobs of this machine",
            json!({"type": "string", "maxLength": 1024}),
        ),
        Param::query(
            "pipeline_id",
            "only jobs of this pipeline",
            json!({"type": "string", "maxLength": 1024}),
        ),
        Param::query(
            "since",
            "created at or after (RFC 3339)",
            json!({"type": "string", "format": "date-time"}),
        ),
        Param::query(
            "until",
            "created before (RFC 3339)",
            json!({"type": "string", "format": "date-time"}),
        ),
        Param::query(
            "limit",
            "page size; without it every id is returned in one streamed array",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        ),
        Param::query(
            "after",
            "the cursor from the previous page's Link header",
            json!({"type": "string"}),
        ),
    ]
}

/// The documentation of a listing's answer.
pub fn ids_response() -> Doc {
    Doc::new("job ids, newest first")
        .json(schema_of::<Vec<String>>)
        .header(
            "Link",
            "with `limit`: `<…&after=…>; rel=\"next\"` when more follow",
            json!({"type": "string"}),
        )
}

/// `GET /jobs`.
pub async fn active(
    State(state): State<AppState>,
    uri: OriginalUri,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    respond(&state, Listing::Active, params, &uri).await
}

/// `GET /history`.
pub async fn history(
    State(state): State<AppState>,
    uri: OriginalUri,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    respond(&state, Listing::History, params, &uri).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_a_filter() {
        let params = ListParams {
            status: Some("finished, failed".into()),
            since: Some("2020-07-16T10:15:53Z".into()),
            limit: Some(10),
            ..ListParams::default()
        };
        let filter = params.filter().expect("valid");
        assert_eq!(
            filter.statuses,
            vec![JobStatus::Finished, JobStatus::Failed]
        );
        assert_eq!(filter.limit, Some(10));
        assert!(filter.since.is_some());
    }

    #[test]
    fn bad_parameters_are_refused() {
        for params in [
            ListParams {
                status: Some("done".into()),
                ..ListParams::default()
            },
            ListParams {
                limit: Some(0),
                ..ListParams::default()
            },
            ListParams {
                limit: Some(MAX_PAGE + 1),
                ..ListParams::default()
            },
            ListParams {
                since: Some("yesterday".into()),
                ..ListParams::default()
            },
            ListParams {
                after: Some("zzz".into()),
                ..ListParams::default()
            },
        ] {
            assert!(params.filter().is_err(), "{params:?}");
        }
    }
}
