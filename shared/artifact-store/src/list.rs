//! Listings a page at a time, so memory is bounded by a page size, never by the number of keys
//! under a prefix.
//!
//! - [`ArtifactStore::list_page`] is the one listing primitive: up to `max` objects, sorted by
//!   key, after a [`ListCursor`], and the cursor of the next page when more remain.
//! - [`Listing`] walks a whole prefix one page at a time (reports, counts, flushes): it holds
//!   one page, however many keys there are.
//! - [`PagedDrain`] is for drains that work a bounded page per tick and leave the rest to the
//!   next tick: it keeps its position in the store, so the next tick (on any instance) continues
//!   after the page the last one worked, and starts again at the beginning after the end. Items a
//!   drain leaves in place (a retry that failed again) therefore never starve the ones behind
//!   them.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::{ArtifactStore, Condition, ObjectInfo, ObjectKey, StoreError};

/// The largest page a backend returns (Blob Storage's own cap on `maxresults`); a larger `max`
/// is clamped to it.
pub const MAX_PAGE: usize = 5000;

/// The page size [`ArtifactStore::list`] and [`count`] read with.
pub const DEFAULT_PAGE: usize = 1000;

/// Where a listing continues: a page's [`ListPage::next`]. Opaque: on Blob Storage it is the
/// service's continuation marker, on a directory the last key returned. Only meaningful for the
/// store and prefix that gave it; it holds no secret, so it may be kept in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListCursor(String);

impl ListCursor {
    /// A cursor kept earlier (see [`ListCursor::as_str`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The cursor as text, to keep it between runs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// At most the `max` asked for, sorted by key.
    pub objects: Vec<ObjectInfo>,
    /// Where the next page starts; `None` when the listing is finished. A backend may say more
    /// remain and then return an empty last page (Blob Storage does when the keys end exactly at
    /// a page boundary); the local directory looks one key ahead, so its `None` is exact.
    pub next: Option<ListCursor>,
}

/// Every object under a prefix, read a page at a time: memory holds one page of at most the
/// given size, however many keys there are.
pub struct Listing<'a> {
    store: &'a dyn ArtifactStore,
    prefix: String,
    page: usize,
    buffered: VecDeque<ObjectInfo>,
    next: Option<ListCursor>,
    finished: bool,
}

impl<'a> Listing<'a> {
    /// A listing of `prefix` (a plain string prefix, `""` for all) in pages of `page` (clamped
    /// to `1..=MAX_PAGE`).
    pub fn new(store: &'a dyn ArtifactStore, prefix: impl Into<String>, page: usize) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            page: page.clamp(1, MAX_PAGE),
            buffered: VecDeque::new(),
            next: None,
            finished: false,
        }
    }

    /// The next object in key order, `None` at the end. A store error ends nothing: calling
    /// again retries the same page.
    pub async fn next(&mut self) -> Result<Option<ObjectInfo>, StoreError> {
        loop {
            if let Some(object) = self.buffered.pop_front() {
                return Ok(Some(object));
            }
            if self.finished {
                return Ok(None);
            }
            let page = self
                .store
                .list_page(&self.prefix, self.next.as_ref(), self.page)
                .await?;
            self.buffered.extend(page.objects);
            self.finished = page.next.is_none();
            self.next = page.next;
        }
    }
}

/// How many objects are under `prefix`, counted a page at a time.
pub async fn count(store: &dyn ArtifactStore, prefix: &str) -> Result<usize, StoreError> {
    let mut listing = Listing::new(store, prefix, DEFAULT_PAGE);
    let mut n = 0;
    while listing.next().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// A drain's position in a listing, kept in the store between ticks (see the module docs).
///
/// The first page is always listed: when it holds the whole area, it is the tick's page, and
/// the position is neither read nor written (an empty or small area costs one listing, as a
/// plain `list` did). Only a larger area reads the position, lists the page after it, and writes
/// the next position, holding at most two pages. The position is a hint, written
/// unconditionally: two instances draining at once may work a page twice or skip one for a
/// tick, which idempotent drains tolerate, and a stale one only changes where a pass starts.
#[derive(Debug, Clone)]
pub struct PagedDrain {
    prefix: String,
    state: ObjectKey,
}

/// The page a tick works, and what [`PagedDrain::finish`] needs to move on.
#[derive(Debug, Clone, Default)]
pub struct DrainPage {
    /// The objects to work.
    pub objects: Vec<ObjectInfo>,
    /// Whether objects remain after this page (they wait for the next tick).
    pub more: bool,
    /// The position this page was listed from (`None`: the beginning), when it was read.
    started_at: Option<Option<ListCursor>>,
    next: Option<ListCursor>,
}

impl PagedDrain {
    /// A drain of `prefix` that keeps its position at `state` (a key outside `prefix`).
    pub fn new(prefix: impl Into<String>, state: ObjectKey) -> Self {
        Self {
            prefix: prefix.into(),
            state,
        }
    }

    /// At most `max` objects: the whole area when it fits in one page; otherwise the page after
    /// the one the last tick worked whole, or the first page when there is no position, the kept
    /// one cannot be used, or it was at the end (so a tick never comes up empty while objects
    /// wait before the position).
    pub async fn page(
        &self,
        store: &dyn ArtifactStore,
        max: usize,
    ) -> Result<DrainPage, StoreError> {
        let first = store.list_page(&self.prefix, None, max).await?;
        if first.next.is_none() {
            return Ok(DrainPage {
                objects: first.objects,
                ..DrainPage::default()
            });
        }
        let saved = match store.get(&self.state).await? {
            Some(found) => std::str::from_utf8(&found.bytes)
                .ok()
                .filter(|text| !text.is_empty())
                .map(ListCursor::new),
            None => None,
        };
        if let Some(cursor) = &saved {
            match store.list_page(&self.prefix, Some(cursor), max).await {
                Ok(page) if !page.objects.is_empty() => {
                    return Ok(DrainPage {
                        more: page.next.is_some(),
                        objects: page.objects,
                        started_at: Some(saved),
                        next: page.next,
                    });
                }
                Ok(_) => {}
                Err(error) if error.is_retryable() => return Err(error),
                // A position the store no longer takes (another backend's, damaged): start over.
                Err(error) => {
                    tracing::warn!(state = %self.state, error = %error, "drain position not usable; starting at the beginning");
                }
            }
        }
        Ok(DrainPage {
            more: true,
            objects: first.objects,
            started_at: Some(saved),
            next: first.next,
        })
    }

    /// Records that `page` was worked whole: the next tick continues after it. A drain stopped
    /// partway (its deadline) does not call this, so the next tick works the same page again.
    pub async fn finish(
        &self,
        store: &dyn ArtifactStore,
        page: &DrainPage,
    ) -> Result<(), StoreError> {
        let Some(started_at) = &page.started_at else {
            // The whole area in one page: no position involved.
            return Ok(());
        };
        if page.next == *started_at {
            return Ok(());
        }
        match &page.next {
            Some(next) => store
                .put(
                    &self.state,
                    Bytes::from(next.as_str().to_owned()),
                    Condition::Always,
                )
                .await
                .map(|_| ()),
            None => store.delete(&self.state, Condition::Always).await,
        }
    }
}
