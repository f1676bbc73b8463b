//! Paged listings, the same on every backend: run by `suite::all` against each one.

use artifact_store::{
    ArtifactStore, Condition, ListCursor, ListPage, Listing, ObjectKey, PagedDrain, count,
};
use bytes::Bytes;

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// Names allowed by `ObjectKey` that a URL, a query string or a naive sort gets wrong: spaces,
/// `%`, `+`, `&`, `=`, `#`, `?`, non-ASCII, and `-` and `.`, which sort before `/`, so a
/// directory's keys come after its `-`/`.` siblings.
const NAMES: [&str; 14] = [
    "a",
    "a b",
    "a%20b",
    "a+b",
    "a&b=c",
    "a#b",
    "a?b",
    "ab",
    "é/日本",
    "z-0",
    "z.5",
    "z/1",
    "z/2",
    "y/deep/er/x",
];

fn names(objects: &[artifact_store::ObjectInfo], p: &str) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.key.as_str().strip_prefix(p).unwrap().to_owned())
        .collect()
}

/// Every page of `prefix` in pages of `max`: each at most `max`, and at most one (empty) page
/// after the last key.
async fn walk(store: &dyn ArtifactStore, prefix: &str, max: usize) -> Vec<ListPage> {
    let mut pages = Vec::new();
    let mut from: Option<ListCursor> = None;
    loop {
        let page = store.list_page(prefix, from.as_ref(), max).await.unwrap();
        assert!(page.objects.len() <= max, "{max}: {page:?}");
        let next = page.next.clone();
        pages.push(page);
        match next {
            Some(next) => from = Some(next),
            None => break,
        }
        assert!(pages.len() <= 64, "the listing does not end");
    }
    let (last, before) = pages.split_last().unwrap();
    assert!(before.iter().all(|p| !p.objects.is_empty()), "{pages:?}");
    assert!(last.next.is_none());
    pages
}

pub(crate) async fn all(store: &dyn ArtifactStore, p: &str) {
    let root = format!("{p}/pages/");
    for name in NAMES {
        store
            .put(
                &key(&format!("{root}{name}")),
                Bytes::from(name.to_owned()),
                Condition::Always,
            )
            .await
            .unwrap();
    }
    let mut sorted: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
    sorted.sort();
    assert_eq!(
        names(&store.list(&root).await.unwrap(), &root),
        sorted,
        "list"
    );

    // Any page size gives every key once, in order, and the sizes and versions of `list`.
    for max in [1, 2, 3, 5, 14, 100] {
        let pages = walk(store, &root, max).await;
        let objects: Vec<_> = pages.into_iter().flat_map(|p| p.objects).collect();
        assert_eq!(names(&objects, &root), sorted, "max {max}");
        assert_eq!(objects, store.list(&root).await.unwrap(), "max {max}");
    }

    // More remain: the first page of 4 says so; a page holding everything says not.
    let first = store.list_page(&root, None, 4).await.unwrap();
    assert_eq!(names(&first.objects, &root), sorted[..4]);
    assert!(first.next.is_some());
    let whole = store.list_page(&root, None, 100).await.unwrap();
    assert_eq!(whole.objects.len(), NAMES.len());
    assert!(whole.next.is_none());
    // A `max` of 0 is one.
    assert_eq!(
        store.list_page(&root, None, 0).await.unwrap().objects.len(),
        1
    );

    // A prefix that is not a directory, one with nothing under it, and one that is no path.
    let z = store
        .list_page(&format!("{root}z"), None, 100)
        .await
        .unwrap();
    assert_eq!(names(&z.objects, &root), ["z-0", "z.5", "z/1", "z/2"]);
    for nothing in [
        format!("{root}nothing/"),
        format!("{root}q"),
        format!("{p}/../x/"),
    ] {
        let page = store.list_page(&nothing, None, 10).await.unwrap();
        assert!(page.objects.is_empty() && page.next.is_none(), "{nothing}");
    }
    // The whole store: at most the page, with more behind it.
    let everything = store.list_page("", None, 3).await.unwrap();
    assert_eq!(everything.objects.len(), 3);
    assert!(everything.next.is_some());

    // Draining: the next page after the objects of the first were deleted still has the rest.
    let second = store
        .list_page(&root, first.next.as_ref(), 4)
        .await
        .unwrap();
    for object in &first.objects {
        store.delete(&object.key, Condition::Always).await.unwrap();
    }
    let mut rest = second.objects.clone();
    let mut from = second.next;
    while let Some(cursor) = from {
        let page = store.list_page(&root, Some(&cursor), 4).await.unwrap();
        rest.extend(page.objects);
        from = page.next;
    }
    assert_eq!(names(&rest, &root), sorted[4..]);

    // `Listing` and `count` walk a prefix page by page.
    let mut listing = Listing::new(store, root.clone(), 3);
    let mut walked = Vec::new();
    while let Some(object) = listing.next().await.unwrap() {
        walked.push(object);
    }
    assert_eq!(names(&walked, &root), sorted[4..]);
    assert!(listing.next().await.unwrap().is_none(), "stays finished");
    assert_eq!(count(store, &root).await.unwrap(), NAMES.len() - 4);

    paged_drain(store, p).await;
}

/// A drain a page per tick goes on where the last tick stopped and starts over after the end.
async fn paged_drain(store: &dyn ArtifactStore, p: &str) {
    let root = format!("{p}/drain/");
    let keys: Vec<String> = (0..10).map(|i| format!("{root}{i:02}")).collect();
    for k in &keys {
        store
            .put(&key(k), Bytes::from_static(b"x"), Condition::Always)
            .await
            .unwrap();
    }
    let state = key(&format!("{p}/drain-position"));
    let drain = PagedDrain::new(root.clone(), state.clone());
    let mut seen = Vec::new();
    for tick in 0..3 {
        let page = drain.page(store, 4).await.unwrap();
        seen.extend(page.objects.iter().map(|o| o.key.as_str().to_owned()));
        assert_eq!(page.more, tick < 2, "tick {tick}");
        drain.finish(store, &page).await.unwrap();
    }
    assert_eq!(seen, keys, "every key once, in order, over three ticks");
    assert!(
        store.get(&state).await.unwrap().is_none(),
        "the position is forgotten at the end"
    );
    // Not finished (its deadline came): the next tick works the same page again.
    let page = drain.page(store, 4).await.unwrap();
    assert_eq!(page.objects[0].key.as_str(), keys[0]);
    let again = drain.page(store, 4).await.unwrap();
    assert_eq!(again.objects, page.objects);
    drain.finish(store, &again).await.unwrap();
    // Past the end with the objects behind the position gone: back to the beginning at once.
    for k in &keys[4..] {
        store.delete(&key(k), Condition::Always).await.unwrap();
    }
    let wrapped = drain.page(store, 4).await.unwrap();
    assert_eq!(wrapped.objects[0].key.as_str(), keys[0]);
    assert_eq!(wrapped.objects.len(), 4);
}
