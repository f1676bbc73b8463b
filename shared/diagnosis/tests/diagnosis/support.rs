//! Loading fixtures and their evidence.

use std::path::{Path, PathBuf};

use batch_triage_diagnosis::payload::read_slice;
use batch_triage_diagnosis::wire::{BatchJob, IsoDuration, Timestamp};
use batch_triage_diagnosis::{Diagnosis, Evidence, Item, diagnose_item, prep_failed_nodes};

pub(crate) fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data")
}

/// Every item of a payload in memory.
pub(crate) fn items(bytes: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    read_slice(bytes, &mut |item| items.push(item))
        .unwrap_or_else(|e| panic!("fixture does not parse: {e}"));
    items
}

/// The facts of `NAME.evidence.json` that are not payloads: the time, and what is known about a
/// pool.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct FixtureEvidence {
    now: Option<String>,
    pool_id: Option<String>,
    pool_active_jobs: Option<u32>,
    delete_stuck_after: Option<String>,
}

/// Diagnoses fixture `name` (test_data/NAME.json) with its evidence: `NAME.job.json` (the job),
/// `NAME.prep.json` (prep/release status), `NAME.stderr.txt` (stderr tail) and
/// `NAME.evidence.json` (time and pool facts), when present.
pub(crate) fn diagnose_fixture(name: &str) -> Vec<Diagnosis> {
    let dir = test_data();
    let read = |suffix: &str| std::fs::read(dir.join(format!("{name}{suffix}"))).ok();
    let bytes = read(".json").unwrap_or_else(|| panic!("no fixture {name}.json"));
    let job: Option<BatchJob> = read(".job.json").map(|b| {
        items(&b)
            .into_iter()
            .find_map(|i| if let Item::Job(j) = i { Some(*j) } else { None })
            .expect("job fixture holds a job")
    });
    let statuses: Vec<_> = read(".prep.json")
        .map(|b| {
            items(&b)
                .into_iter()
                .filter_map(|i| {
                    if let Item::PrepReleaseStatus(s) = i {
                        Some(*s)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let failed_nodes = prep_failed_nodes(&statuses);
    let stderr =
        read(".stderr.txt").map(|b| String::from_utf8(b).expect("stderr fixture is UTF-8"));
    let facts: FixtureEvidence = read(".evidence.json")
        .map(|b| serde_json::from_slice(&b).expect("evidence fixture"))
        .unwrap_or_default();
    let evidence = Evidence {
        job: job.as_ref(),
        prep_failed_nodes: &failed_nodes,
        stderr_tail: stderr.as_deref(),
        now: facts
            .now
            .as_deref()
            .map(|t| Timestamp::parse(t).expect("evidence now")),
        pool_id: facts.pool_id.as_deref(),
        pool_active_jobs: facts.pool_active_jobs,
        delete_stuck_after: facts.delete_stuck_after.as_deref().map(|d| {
            IsoDuration::parse(d)
                .and_then(IsoDuration::finite)
                .expect("evidence deleteStuckAfter")
        }),
        ..Evidence::default()
    };
    items(&bytes)
        .iter()
        .filter_map(|i| diagnose_item(i, &evidence))
        .collect()
}

/// Names of all fixtures (payload files, not their evidence).
pub(crate) fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(test_data())
        .expect("test_data exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".json")
                && !n.ends_with(".job.json")
                && !n.ends_with(".prep.json")
                && !n.ends_with(".evidence.json")
        })
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    names
}
