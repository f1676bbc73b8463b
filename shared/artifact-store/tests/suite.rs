//! The behaviour every backend must have, run against each backend by `tests/store.rs`.

use std::sync::Arc;

use artifact_store::{ArtifactStore, Condition, ETag, ObjectKey, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

pub(crate) async fn conditional_create(store: &dyn ArtifactStore, p: &str) {
    let k = key(&format!("{p}/create/manifest.json"));
    assert!(store.get(&k).await.unwrap().is_none());
    assert!(store.head(&k).await.unwrap().is_none());
    let e1 = store
        .put(&k, Bytes::from_static(b"one"), Condition::IfAbsent)
        .await
        .unwrap();
    let err = store
        .put(&k, Bytes::from_static(b"two"), Condition::IfAbsent)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err:?}");
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(&got.bytes[..], b"one");
    assert_eq!(got.etag, e1);
    let head = store.head(&k).await.unwrap().unwrap();
    assert_eq!((head.size, &head.etag), (3, &e1));
    // Unconditional overwrite changes the ETag.
    let e2 = store
        .put(&k, Bytes::from_static(b"three"), Condition::Always)
        .await
        .unwrap();
    assert_ne!(e1, e2);
    assert_eq!(&store.get(&k).await.unwrap().unwrap().bytes[..], b"three");
}

pub(crate) async fn compare_and_swap(store: &dyn ArtifactStore, p: &str) {
    let k = key(&format!("{p}/cas/state.json"));
    // IfMatch on a missing object fails.
    let err = store
        .put(
            &k,
            Bytes::from_static(b"x"),
            Condition::IfMatch(ETag("\"nope\"".into())),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err:?}");
    let e1 = store
        .put(&k, Bytes::from_static(b"v1"), Condition::IfAbsent)
        .await
        .unwrap();
    let e2 = store
        .put(
            &k,
            Bytes::from_static(b"v2"),
            Condition::IfMatch(e1.clone()),
        )
        .await
        .unwrap();
    assert_ne!(e1, e2);
    // A stale ETag loses.
    let err = store
        .put(&k, Bytes::from_static(b"v3"), Condition::IfMatch(e1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err:?}");
    assert_eq!(&store.get(&k).await.unwrap().unwrap().bytes[..], b"v2");
}

pub(crate) async fn concurrent_cas(store: Arc<dyn ArtifactStore>, p: &str) {
    let k = key(&format!("{p}/race/counter"));
    let e0 = store
        .put(&k, Bytes::from_static(b"0"), Condition::IfAbsent)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, k, e0) = (store.clone(), k.clone(), e0.clone());
        tasks.push(tokio::spawn(async move {
            store
                .put(
                    &k,
                    Bytes::from(format!("winner-{i}")),
                    Condition::IfMatch(e0),
                )
                .await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one CAS winner, got {winners:?}");
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.bytes, Bytes::from(format!("winner-{}", winners[0])));

    // Many concurrent creators: exactly one.
    let k2 = key(&format!("{p}/race/once"));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, k2) = (store.clone(), k2.clone());
        tasks.push(tokio::spawn(async move {
            store
                .put(&k2, Bytes::from(format!("{i}")), Condition::IfAbsent)
                .await
                .is_ok()
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, 1);
}

/// A deterministic pseudo-random stream of `len` bytes in `chunk`-sized pieces, made lazily so
/// the test itself does not hold the object in memory.
pub(crate) fn generated(len: u64, chunk: usize) -> (artifact_store::ByteStream, String) {
    let mut hasher = Sha256::new();
    let mut remaining = len;
    let mut seed = 0x9e37_79b9_u32;
    let mut block = vec![0u8; chunk];
    while remaining > 0 {
        let n = remaining.min(chunk as u64) as usize;
        for b in &mut block[..n] {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        hasher.update(&block[..n]);
        remaining -= n as u64;
    }
    let digest = hex::encode(hasher.finalize());
    let stream = futures::stream::unfold(
        (len, 0x9e37_79b9_u32),
        move |(remaining, mut seed)| async move {
            if remaining == 0 {
                return None;
            }
            let n = remaining.min(chunk as u64) as usize;
            let mut block = vec![0u8; n];
            for b in &mut block {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
            Some((Ok(Bytes::from(block)), (remaining - n as u64, seed)))
        },
    );
    (stream.boxed(), digest)
}

pub(crate) async fn streaming(store: &dyn ArtifactStore, p: &str, len: u64) {
    let k = key(&format!("{p}/stream/stdout.txt"));
    let (body, digest) = generated(len, 64 * 1024 + 7);
    let info = store.put_stream(&k, body).await.unwrap();
    assert_eq!(info.size, len);
    assert_eq!(info.key, k);
    let head = store.head(&k).await.unwrap().unwrap();
    assert_eq!(head.size, len);
    assert_eq!(head.etag, info.etag);
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(hex::encode(Sha256::digest(&got.bytes)), digest);

    // A stream that fails leaves nothing (new key) and keeps the old version (existing key).
    let failing = || {
        futures::stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "source dropped",
            )),
        ])
        .boxed()
    };
    let fresh = key(&format!("{p}/stream/never.txt"));
    assert!(store.put_stream(&fresh, failing()).await.is_err());
    assert!(store.head(&fresh).await.unwrap().is_none());
    assert!(store.put_stream(&k, failing()).await.is_err());
    assert_eq!(store.head(&k).await.unwrap().unwrap().size, len);

    // An empty stream makes an empty object.
    let empty = key(&format!("{p}/stream/empty.txt"));
    let info = store
        .put_stream(&empty, futures::stream::empty().boxed())
        .await
        .unwrap();
    assert_eq!(info.size, 0);
    assert_eq!(store.get(&empty).await.unwrap().unwrap().bytes.len(), 0);
}

pub(crate) async fn list_and_delete(store: &dyn ArtifactStore, p: &str) {
    for name in ["a/1.txt", "a/2.txt", "a/b/3.txt", "ab/4.txt", "c.txt"] {
        store
            .put(
                &key(&format!("{p}/list/{name}")),
                Bytes::from(name.to_owned()),
                Condition::Always,
            )
            .await
            .unwrap();
    }
    let names = |v: Vec<artifact_store::ObjectInfo>| {
        v.into_iter()
            .map(|o| o.key.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list(&format!("{p}/list/a/")).await.unwrap()),
        [
            format!("{p}/list/a/1.txt"),
            format!("{p}/list/a/2.txt"),
            format!("{p}/list/a/b/3.txt")
        ]
    );
    assert_eq!(store.list(&format!("{p}/list/a")).await.unwrap().len(), 4);
    assert_eq!(store.list(&format!("{p}/list/")).await.unwrap().len(), 5);
    assert!(
        store
            .list(&format!("{p}/nothing/"))
            .await
            .unwrap()
            .is_empty()
    );
    let all = store.list(&format!("{p}/list/c")).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].size, 5);

    let k = key(&format!("{p}/list/c.txt"));
    let etag = store.head(&k).await.unwrap().unwrap().etag;
    let err = store
        .delete(&k, Condition::IfMatch(ETag("\"stale\"".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err:?}");
    store.delete(&k, Condition::IfMatch(etag)).await.unwrap();
    assert!(store.head(&k).await.unwrap().is_none());
    // Idempotent.
    store.delete(&k, Condition::Always).await.unwrap();
    let k = key(&format!("{p}/list/a/1.txt"));
    store.delete(&k, Condition::Always).await.unwrap();
    assert!(store.get(&k).await.unwrap().is_none());
    assert_eq!(store.list(&format!("{p}/list/")).await.unwrap().len(), 3);
}

pub(crate) fn invalid_keys() {
    for bad in [
        "../escape",
        "/abs",
        "a/../../b",
        "a\\b",
        "a\u{7}b",
        "a//b",
        "",
    ] {
        assert!(
            matches!(ObjectKey::new(bad), Err(StoreError::InvalidKey { .. })),
            "{bad:?}"
        );
    }
}

pub(crate) fn link_has_no_secret(store: &dyn ArtifactStore, p: &str, secrets: &[&str]) {
    let link = store
        .link(&key(&format!("{p}/x/stdout.txt")))
        .expect("a link");
    assert!(link.ends_with("x/stdout.txt"), "{link}");
    let debug = format!("{store:?}");
    for secret in secrets {
        assert!(!link.contains(secret), "link leaks a secret: {link}");
        assert!(!debug.contains(secret), "Debug leaks a secret: {debug}");
    }
    assert!(!link.contains("sig="), "{link}");
}

pub(crate) async fn all(store: Arc<dyn ArtifactStore>, p: &str, secrets: &[&str]) {
    invalid_keys();
    conditional_create(&*store, p).await;
    compare_and_swap(&*store, p).await;
    concurrent_cas(store.clone(), p).await;
    streaming(&*store, p, 20 * 1024 * 1024 + 3).await;
    list_and_delete(&*store, p).await;
    crate::suite_pages::all(&*store, p).await;
    link_has_no_secret(&*store, p, secrets);
}
