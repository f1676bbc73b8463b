//! Listing Blob Storage a page at a time: one List Blobs request per page, with `maxresults`
//! and the service's own continuation marker as the cursor, so a page holds at most `max`
//! entries however many blobs share the prefix.

use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use futures::StreamExt;

use crate::blob::{etag_of, map_err};
use crate::{ListCursor, ListPage, MAX_PAGE, ObjectInfo, ObjectKey, StoreError};

/// One page of blobs under `prefix` after `from`. Names that are not valid keys (written by
/// something else) are left out, so a page may be shorter than `max` while more remain.
pub(crate) async fn page(
    client: &BlobContainerClient,
    prefix: &str,
    from: Option<&ListCursor>,
    max: usize,
) -> Result<ListPage, StoreError> {
    let options = BlobContainerClientListBlobsOptions {
        prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
        marker: from.map(|c| c.as_str().to_owned()),
        // At most 5,000, so the cast cannot truncate.
        maxresults: Some(max.clamp(1, MAX_PAGE) as i32),
        ..Default::default()
    };
    let mut pages = client
        .list_blobs(Some(options))
        .map_err(|e| map_err(prefix, &e))?
        .into_pages();
    let Some(response) = pages.next().await else {
        return Ok(ListPage::default());
    };
    let body = response
        .and_then(|r| r.into_model())
        .map_err(|e| map_err(prefix, &e))?;
    let mut objects = Vec::with_capacity(body.blob_items.len());
    for item in body.blob_items {
        let Some(name) = item.name else {
            continue;
        };
        let Ok(key) = ObjectKey::new(name) else {
            continue;
        };
        let properties = item.properties.as_ref();
        objects.push(ObjectInfo {
            key,
            size: properties.and_then(|p| p.content_length).unwrap_or(0),
            etag: etag_of(properties.and_then(|p| p.etag.clone())),
        });
    }
    // The service lists in key order already; sorting keeps the promise whatever it does.
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let next = body
        .next_marker
        .filter(|marker| !marker.is_empty())
        .map(ListCursor::new);
    Ok(ListPage { objects, next })
}
