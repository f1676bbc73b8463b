//! The report from a store: built from what the pipeline writes, bounded on a large store, and
//! safe with hostile ids.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifact_store::{
    ArtifactStore, ByteStream, Condition, ETag, ListCursor, ListPage, ObjectInfo, ObjectKey,
    StoreError, Versioned,
};
use batch_triage_report::{Limits, ReportOptions, build};
use bytes::Bytes;
use diagnosis::{Diagnosis, FailureClass, Subject};
use futures::StreamExt;
use pipeline::history::{FailureRecord, record_failure};
use pipeline::silences::{NewSilence, SilenceStore};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-12-05 12:30 UTC);

/// A store in memory: fast enough for a 100,000-failure store in a test.
#[derive(Debug, Default)]
struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Bytes, u64)>>,
    version: std::sync::atomic::AtomicU64,
    /// The most objects one listing held at once (a page, or a whole `list`).
    largest_listing: AtomicUsize,
}

#[async_trait::async_trait]
impl ArtifactStore for MemoryStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned>, StoreError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key.as_str())
            .map(|(b, v)| Versioned {
                bytes: b.clone(),
                etag: ETag(v.to_string()),
            }))
    }
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key.as_str())
            .map(|(b, v)| ObjectInfo {
                key: key.clone(),
                size: b.len() as u64,
                etag: ETag(v.to_string()),
            }))
    }
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        condition: Condition,
    ) -> Result<ETag, StoreError> {
        let mut objects = self.objects.lock().unwrap();
        let current = objects.get(key.as_str()).map(|(_, v)| *v);
        let ok = match (&condition, current) {
            (Condition::Always, _) => true,
            (Condition::IfAbsent, current) => current.is_none(),
            (Condition::IfMatch(etag), Some(v)) => etag.0 == v.to_string(),
            (Condition::IfMatch(_), None) => false,
        };
        if !ok {
            return Err(StoreError::ConditionFailed {
                key: key.to_string(),
            });
        }
        let version = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        objects.insert(key.as_str().to_owned(), (body, version));
        Ok(ETag(version.to_string()))
    }
    async fn put_stream(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
    ) -> Result<ObjectInfo, StoreError> {
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.map_err(|e| StoreError::Other {
                message: e.to_string(),
            })?);
        }
        let size = all.len() as u64;
        let etag = self.put(key, Bytes::from(all), Condition::Always).await?;
        Ok(ObjectInfo {
            key: key.clone(),
            size,
            etag,
        })
    }
    async fn list_page(
        &self,
        prefix: &str,
        from: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        let max = max.clamp(1, artifact_store::MAX_PAGE);
        // The cursor is the last key of the previous page.
        let start = match from {
            Some(after) => std::ops::Bound::Excluded(after.as_str().to_owned()),
            None => std::ops::Bound::Included(prefix.to_owned()),
        };
        let objects = self.objects.lock().unwrap();
        let mut page: Vec<ObjectInfo> = objects
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(max + 1)
            .map(|(k, (b, v))| ObjectInfo {
                key: ObjectKey::new(k.clone()).unwrap(),
                size: b.len() as u64,
                etag: ETag(v.to_string()),
            })
            .collect();
        let next = (page.len() > max).then(|| {
            page.truncate(max);
            ListCursor::new(page[max - 1].key.as_str())
        });
        self.largest_listing.fetch_max(page.len(), Ordering::SeqCst);
        Ok(ListPage {
            objects: page,
            next,
        })
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut all = Vec::new();
        let mut from = None;
        loop {
            let page = self.list_page(prefix, from.as_ref(), 1000).await?;
            all.extend(page.objects);
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        // A whole listing held at once.
        self.largest_listing.fetch_max(all.len(), Ordering::SeqCst);
        Ok(all)
    }
    async fn delete(&self, key: &ObjectKey, _condition: Condition) -> Result<(), StoreError> {
        self.objects.lock().unwrap().remove(key.as_str());
        Ok(())
    }
    fn link(&self, _key: &ObjectKey) -> Option<String> {
        None
    }
}

fn diagnosis(job: &str, task: &str, class: FailureClass) -> Diagnosis {
    Diagnosis {
        subject: Subject {
            account: Some("devbatch1".into()),
            job_id: Some(job.into()),
            task_id: Some(task.into()),
            attempt: Some(0),
            pool_id: Some("pool".into()),
            node_id: None,
        },
        class,
        severity: class.severity(),
        summary: format!("task {task} failed"),
        cause: "the process was killed".into(),
        hints: vec!["raise the memory".into()],
        exit_code: Some(137),
        exit_code_hex: None,
        exit_meaning: None,
        failure: None,
        impact: None,
        logs: vec![],
        fingerprint: "fp".into(),
    }
}

async fn failure(
    store: &Arc<dyn ArtifactStore>,
    job: &str,
    task: &str,
    class: FailureClass,
    at: OffsetDateTime,
) {
    let record = FailureRecord {
        time: at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        subject: format!("devbatch1/{job}/{task}"),
        preserved: vec![
            format!(
                "https://acct.blob.core.windows.net/c/devbatch1/{job}/{task}/attempt-0?sig=SECRET"
            ),
            format!("/var/store/devbatch1/{job}/{task}/attempt-0"),
        ],
        muted_by: None,
        action: None,
        diagnosis: diagnosis(job, task, class),
    };
    record_failure(store, &record, at).await.unwrap();
}

fn options(since_hours: u64) -> ReportOptions {
    ReportOptions {
        since: Duration::from_secs(since_hours * 3600),
        account: None,
        now: NOW,
        limits: Limits::default(),
    }
}

fn class(name: &str) -> FailureClass {
    FailureClass::parse(name).unwrap()
}

#[tokio::test]
async fn counts_by_class_job_and_hour_and_shows_the_newest() {
    let store: Arc<dyn ArtifactStore> = Arc::new(MemoryStore::default());
    let exit = class("task.exit_code");
    let other = FailureClass::ALL
        .iter()
        .copied()
        .find(|c| c.is_failure() && *c != exit)
        .unwrap();
    for i in 0..15 {
        let at = NOW - Duration::from_secs(600 + i * 60);
        failure(&store, "etl", &format!("t{i:02}"), exit, at).await;
    }
    failure(
        &store,
        "train",
        "t1",
        other,
        NOW - Duration::from_secs(3 * 3600),
    )
    .await;
    // The same subject indexed again in a later hour counts once.
    failure(&store, "etl", "t00", exit, NOW + Duration::from_secs(1800)).await;
    // Outside the window.
    failure(
        &store,
        "old",
        "t1",
        exit,
        NOW - Duration::from_secs(48 * 3600),
    )
    .await;
    let silence = SilenceStore::new(store.clone())
        .add(
            NewSilence {
                matchers: vec!["job=etl".into()],
                duration: Duration::from_secs(3600),
                author: "alice".into(),
                comment: "known".into(),
            },
            NOW - Duration::from_secs(60),
        )
        .await
        .unwrap();

    for (key, n) in [
        ("parked/eventhubs/hub/0/1.json", 2),
        ("poisoned/lambda/x.json", 1),
    ] {
        for i in 0..n {
            store
                .put(
                    &ObjectKey::new(key.replace(".json", &format!("{i}.json"))).unwrap(),
                    Bytes::from_static(b"{}"),
                    Condition::IfAbsent,
                )
                .await
                .unwrap();
        }
    }

    let mut opts = options(24);
    opts.now = NOW + Duration::from_secs(1800);
    let report = build(store, &opts).await.unwrap();
    assert_eq!(report.total_failures, 16, "{report:#?}");
    assert_eq!(
        (report.parked, report.poisoned),
        (2, 1),
        "the parking area is counted"
    );
    let etl = report
        .classes
        .iter()
        .find(|c| c.class == "task.exit_code")
        .unwrap();
    assert_eq!(etl.count, 15);
    assert_eq!(etl.failures.len(), 10, "the newest 10 of the class");
    assert_eq!(report.jobs[0].job, "etl");
    assert_eq!(report.jobs[0].count, 15);
    assert_eq!(report.timeline.iter().map(|h| h.count).sum::<u64>(), 16);
    assert_eq!(report.silences[0].silence.id, silence.id);

    let html = report.html();
    assert!(html.contains("task.exit_code"));
    assert!(html.contains("2 parked for the next sweep"), "{html}");
    assert!(!html.contains("SECRET"), "links lose their query");
    assert!(
        html.contains("href=\"https://acct.blob.core.windows.net/c/devbatch1/etl/t00/attempt-0\"")
    );
    assert!(
        !html.contains("href=\"/var/store"),
        "local paths are text, not links"
    );
    // Every in-page link has its target.
    let mut links = 0;
    for fragment in html.split("href=\"#").skip(1) {
        let id = &fragment[..fragment.find('"').unwrap()];
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "#{id} has no target"
        );
        links += 1;
    }
    assert!(links >= 9, "{links}");
}

#[tokio::test]
async fn hostile_ids_are_text_in_the_page() {
    let store: Arc<dyn ArtifactStore> = Arc::new(MemoryStore::default());
    let hostile = "<script>alert(1)</script><img src=x onerror=y>";
    failure(
        &store,
        hostile,
        hostile,
        class("task.exit_code"),
        NOW - Duration::from_secs(60),
    )
    .await;
    let html = build(store, &options(1)).await.unwrap().html();
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    assert!(
        !html.contains(" src=\""),
        "no resource is loaded from anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_failure_store_gives_a_report_of_bounded_size() {
    let classes: Vec<FailureClass> = FailureClass::ALL
        .iter()
        .copied()
        .filter(|c| c.is_failure())
        .take(8)
        .collect();
    let mut sizes = Vec::new();
    for n in [1_000usize, 100_000] {
        let memory = Arc::new(MemoryStore::default());
        let store: Arc<dyn ArtifactStore> = memory.clone();
        for i in 0..n {
            let class = classes[i % classes.len()];
            let at = NOW - Duration::from_secs((i as u64 * 7) % (23 * 3600));
            let job = format!("job-{}", i % 5_000);
            failure(&store, &job, &format!("task-{i}"), class, at).await;
        }
        memory.largest_listing.store(0, Ordering::SeqCst);
        let report = build(store, &options(24)).await.unwrap();
        assert_eq!(report.total_failures, n as u64);
        // About 4,350 failures an hour at 100,000: never listed at once, a page at a time.
        let largest = memory.largest_listing.load(Ordering::SeqCst);
        assert!(largest <= artifact_store::DEFAULT_PAGE, "{n}: {largest}");
        assert_eq!(
            report.classes.iter().map(|c| c.count).sum::<u64>(),
            n as u64
        );
        assert!(report.classes.iter().all(|c| c.failures.len() <= 10));
        assert!(report.jobs.len() <= 20);
        let json = serde_json::to_vec(&report).unwrap().len();
        let html = report.html().len();
        sizes.push((n, json, html));
    }
    let (_, small_json, small_html) = sizes[0];
    let (_, big_json, big_html) = sizes[1];
    assert!(big_json < 256 * 1024 && big_html < 256 * 1024, "{sizes:?}");
    // A hundred times the failures, about the same report.
    assert!(
        big_json < small_json * 2 && big_html < small_html * 2,
        "{sizes:?}"
    );
}

/// Past `Limits::distinct`, the report forgets subjects and stops ranking new jobs rather than
/// grow, still counts every failure, and says what it did.
#[tokio::test]
async fn past_the_distinct_bound_the_report_counts_without_remembering_and_says_so() {
    let store: Arc<dyn ArtifactStore> = Arc::new(MemoryStore::default());
    let exit = class("task.exit_code");
    // Five subjects of five jobs, each failing in two hours.
    for job in 0..5 {
        for at in [
            NOW - Duration::from_secs(3 * 3600),
            NOW - Duration::from_secs(600),
        ] {
            failure(&store, &format!("job-{job}"), "t", exit, at).await;
        }
    }
    let mut options = options(24);
    let exact = build(store.clone(), &options).await.unwrap();
    assert_eq!(exact.total_failures, 5, "a subject counts once");
    assert_eq!(exact.jobs.len(), 5);
    assert!(exact.truncated.is_empty(), "{:?}", exact.truncated);

    options.limits.distinct = 2;
    let bounded = build(store, &options).await.unwrap();
    assert_eq!(
        bounded.total_failures, 8,
        "the three subjects forgotten count in both hours"
    );
    assert_eq!(bounded.jobs.len(), 2, "only the jobs remembered are ranked");
    let notes = bounded.truncated.join("\n");
    assert!(
        notes.contains("more than 2 distinct failed subjects"),
        "{notes}"
    );
    assert!(notes.contains("more than 2 jobs failed"), "{notes}");
}
