//! One folder's run: the keys of its files, their sizes and the caps, the copies (a few at a
//! time), then `diagnosis.json` and, last, the manifest.

use artifact_store::{ArtifactStore, Condition, ObjectKey, StoreError};
use batch_client::{BatchApi, Deadline, FileInfo};
use bytes::Bytes;
use futures::StreamExt;

use crate::copy::{RESUME_RECORD_MIN_BYTES, copy_one};
use crate::manifest::Manifest;
use crate::sources::{Probe, Source, probe};
use crate::{FileOutcome, FileReport, PreserveError, PreserveOptions, PreserveReport, names};

/// What a folder is for.
pub(crate) struct Folder<'a> {
    pub(crate) kind: &'static str,
    pub(crate) account: &'a str,
    pub(crate) job_id: &'a str,
    pub(crate) task_id: Option<&'a str>,
    pub(crate) attempt: Option<i32>,
    pub(crate) node_id: Option<&'a str>,
    pub(crate) prefix: ObjectKey,
}

/// The copies a folder will make, and the files already settled without one.
struct Plan {
    copies: Vec<(Source, FileInfo)>,
    settled: Vec<FileReport>,
    /// A copied file is large enough to get a resume record, so there may be records to clean.
    resumable: bool,
}

/// Copies `sources` into `folder`, then writes `diagnosis_json` (if any) and the manifest.
pub(crate) async fn run(
    api: &dyn BatchApi,
    store: &dyn ArtifactStore,
    folder: Folder<'_>,
    sources: Vec<Source>,
    diagnosis_json: Option<Bytes>,
    options: &PreserveOptions,
    deadline: Deadline,
) -> Result<PreserveReport, PreserveError> {
    let mut report = report_base(store, &folder);
    let (sources, unkeyed) = give_keys(&folder.prefix, sources);
    let probes = probe_all(api, &sources, options, deadline).await;
    let mut plan = decide(sources, probes, options);
    plan.settled.extend(unkeyed);
    report.files = plan.settled;
    let copies = futures::stream::iter(plan.copies.into_iter().map(|(source, info)| {
        futures::FutureExt::boxed(copy_one(
            api,
            store,
            &folder.prefix,
            source,
            info,
            options,
            deadline,
        ))
    }))
    .buffer_unordered(options.concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    for copy in copies {
        let copy = copy?;
        report.bytes_copied += copy.downloaded;
        match copy.tail_of.as_deref() {
            Some("stderr.txt") => report.stderr_tail = copy.tail,
            Some("stdout.txt") => report.stdout_tail = copy.tail,
            _ => {}
        }
        report.files.push(copy.report);
    }
    report.files.sort_by(|a, b| a.name.cmp(&b.name));
    if report
        .files
        .iter()
        .any(|f| matches!(f.outcome, FileOutcome::Failed { .. }))
    {
        return Ok(report);
    }
    finish(store, &folder, report, diagnosis_json, plan.resumable).await
}

/// Gives every source its key in the folder ([`names::folder_keys`]); a source that gets none is
/// settled as not stored.
fn give_keys(prefix: &ObjectKey, sources: Vec<Source>) -> (Vec<Source>, Vec<FileReport>) {
    let raw: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let keys = names::folder_keys(prefix, &raw);
    let mut keyed = Vec::with_capacity(sources.len());
    let mut unkeyed = Vec::new();
    for (mut source, key) in sources.into_iter().zip(keys) {
        match key {
            Some(key) => {
                source.name = key;
                keyed.push(source);
            }
            None => unkeyed.push(FileReport {
                name: names::relative_path(&source.name),
                source: source.source,
                outcome: FileOutcome::NotStored {
                    reason: "no key the store can hold beside the folder's other files".into(),
                },
            }),
        }
    }
    (keyed, unkeyed)
}

/// Every source's size (from the listing, or a HEAD for the sources it did not cover), in the
/// sources' order, so the caps are decided in a stable order.
async fn probe_all(
    api: &dyn BatchApi,
    sources: &[Source],
    options: &PreserveOptions,
    deadline: Deadline,
) -> Vec<Probe> {
    // Each future is boxed as Send at a concrete lifetime: without it, callers that must be
    // Send (axum handlers) hit rustc's "`Send` is not general enough" (rust-lang/rust#102211).
    // The futures are collected first (they are lazy, so this is cheap): a closure borrowing
    // `&Source` inside the stream's type is what trips the lifetime check.
    let probe_futures: Vec<_> = sources
        .iter()
        .map(|s| match &s.known {
            Some(known) => futures::FutureExt::boxed(futures::future::ready(known.clone())),
            None => futures::FutureExt::boxed(probe(api, s, deadline)),
        })
        .collect();
    futures::stream::iter(probe_futures)
        .buffered(options.concurrency.max(1))
        .collect()
        .await
}

/// Which files to copy, and the outcome of the others: gone, failed, or over a cap.
fn decide(sources: Vec<Source>, probes: Vec<Probe>, options: &PreserveOptions) -> Plan {
    let mut budget = options.max_task_bytes;
    let mut plan = Plan {
        copies: Vec::new(),
        settled: Vec::new(),
        resumable: false,
    };
    for (source, probe) in sources.into_iter().zip(probes) {
        let outcome = match probe {
            Probe::Absent => continue,
            Probe::Gone(code) => FileOutcome::Missing { code },
            Probe::Failed(error) => FileOutcome::Failed { error },
            Probe::Present(info) if info.size > options.max_file_bytes => FileOutcome::Skipped {
                bytes: info.size,
                reason: "maxFileBytes".into(),
            },
            Probe::Present(info) if info.size > budget => FileOutcome::Skipped {
                bytes: info.size,
                reason: "maxTaskBytes".into(),
            },
            Probe::Present(info) => {
                budget -= info.size;
                plan.resumable |= info.size >= RESUME_RECORD_MIN_BYTES;
                plan.copies.push((source, info));
                continue;
            }
        };
        plan.settled.push(FileReport {
            name: source.name,
            source: source.source,
            outcome,
        });
    }
    plan
}

/// Writes `diagnosis.json` and the manifest (create-only) of a folder whose files are all
/// settled, then removes the resume records.
async fn finish(
    store: &dyn ArtifactStore,
    folder: &Folder<'_>,
    mut report: PreserveReport,
    diagnosis_json: Option<Bytes>,
    resumable: bool,
) -> Result<PreserveReport, PreserveError> {
    if let Some(json) = diagnosis_json {
        let key = folder.prefix.join("diagnosis.json")?;
        store.put(&key, json, Condition::Always).await?;
    }
    let created_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let manifest = Manifest::from_reports(folder, &report.files, created_at);
    let manifest_key = folder.prefix.join("manifest.json")?;
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest)?);
    match store.put(&manifest_key, body, Condition::IfAbsent).await {
        Ok(_) => {
            report.complete = true;
            report.manifest = Some(manifest);
        }
        // Another instance finished the same folder meanwhile: its manifest wins.
        Err(StoreError::ConditionFailed { .. }) => {
            if let Some(mut other) = existing(store, folder).await? {
                other.stderr_tail = report.stderr_tail.take();
                other.stdout_tail = report.stdout_tail.take();
                other.bytes_copied = report.bytes_copied;
                return Ok(other);
            }
        }
        Err(e) => return Err(e.into()),
    }
    // Progress records are only needed until the manifest exists.
    if resumable && let Ok(records) = store.list(&format!("{}/.progress/", folder.prefix)).await {
        for record in records {
            let _ = store.delete(&record.key, Condition::Always).await;
        }
    }
    Ok(report)
}

pub(crate) fn report_base(store: &dyn ArtifactStore, folder: &Folder<'_>) -> PreserveReport {
    PreserveReport {
        prefix: folder.prefix.to_string(),
        link: store.link(&folder.prefix),
        already_preserved: false,
        complete: false,
        files: Vec::new(),
        manifest: None,
        stderr_tail: None,
        stdout_tail: None,
        bytes_copied: 0,
    }
}

/// The report of a folder whose manifest already exists.
pub(crate) async fn existing(
    store: &dyn ArtifactStore,
    folder: &Folder<'_>,
) -> Result<Option<PreserveReport>, PreserveError> {
    let key = folder.prefix.join("manifest.json")?;
    let Some(found) = store.get(&key).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&found.bytes)?;
    let mut report = report_base(store, folder);
    report.already_preserved = true;
    report.complete = true;
    report.files = manifest.file_reports();
    report.manifest = Some(manifest);
    Ok(Some(report))
}
