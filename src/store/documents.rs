//! Documents kept by a chosen id: the value's id field is stored as `_id` and moved back on
//! the way out. Shared by the jobs, the history and the catalog.

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{self, Document, doc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::{is_duplicate_key, malformed};
use super::{Inserted, StoreError, Written};

/// The string `_id`s a cursor yields.
pub(super) async fn string_ids(
    cursor: mongodb::Cursor<Document>,
) -> Result<Vec<String>, StoreError> {
    let documents: Vec<Document> = cursor.try_collect().await?;
    Ok(documents
        .into_iter()
        .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
        .collect())
}

/// Inserts `document`; `AlreadyExists` when its `_id` is taken.
pub(super) async fn insert(
    collection: &Collection<Document>,
    document: Document,
) -> Result<Inserted, StoreError> {
    match collection.insert_one(document).await {
        Ok(_) => Ok(Inserted::Created),
        Err(e) if is_duplicate_key(&e) => Ok(Inserted::AlreadyExists),
        Err(e) => Err(e.into()),
    }
}

/// The document with `_id` = `id`, its `_id` moved back to `id_field`.
pub(super) async fn get_by_id<T: DeserializeOwned>(
    collection: &Collection<Document>,
    id: &str,
    id_field: &str,
) -> Result<Option<T>, StoreError> {
    match collection.find_one(doc! {"_id": id}).await? {
        Some(document) => from_doc(document, id_field).map(Some),
        None => Ok(None),
    }
}

/// Creates or replaces the document with `_id` = `id`; returns which.
pub(super) async fn put_by_id(
    collection: &Collection<Document>,
    id: &str,
    document: Document,
) -> Result<Written, StoreError> {
    let result = collection
        .replace_one(doc! {"_id": id}, document)
        .upsert(true)
        .await?;
    Ok(if result.upserted_id.is_some() {
        Written::Created
    } else {
        Written::Replaced
    })
}

/// Deletes the document with `_id` = `id`; returns whether it existed.
pub(super) async fn delete_by_id(
    collection: &Collection<Document>,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(collection.delete_one(doc! {"_id": id}).await?.deleted_count == 1)
}

/// Serialises `value` and moves its `id_field` to `_id`.
pub(super) fn to_doc<T: Serialize>(value: &T, id_field: &str) -> Result<Document, StoreError> {
    let mut document = bson::to_document(value).map_err(|e| StoreError::Encode(e.to_string()))?;
    if let Some(id) = document.remove(id_field) {
        document.insert("_id", id);
    }
    Ok(document)
}

/// Moves `_id` back to `id_field` and deserialises.
pub(super) fn from_doc<T: DeserializeOwned>(
    mut document: Document,
    id_field: &str,
) -> Result<T, StoreError> {
    if let Some(id) = document.remove("_id") {
        document.insert(id_field, id);
    }
    bson::from_document(document).map_err(malformed)
}
