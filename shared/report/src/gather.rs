//! Reading the store for a report, with bounded work and memory: listings read a page at a time
//! to count, a fixed number of reads to show, and at most [`Limits::distinct`] subjects and jobs
//! remembered while counting, however many keys the store holds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use artifact_store::{ArtifactStore, DEFAULT_PAGE, Listing, ObjectKey, StoreError};
use diagnosis::FailureClass;
use notify::OutboxEntry;
use notify::outbox::{DEAD_PREFIX, OUTBOX_PREFIX};
use pipeline::audit::AuditRecord;
use pipeline::grouping::GroupStore;
use pipeline::history::{FailureRecord, HISTORY_PREFIX, HistoryKey, account_segment, hour_segment};
use pipeline::silences::{MUTED_PREFIX, MutedAlert, SilenceStore};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{ClassSection, GroupRow, HourCount, JobCount, OutboxRow, StoreReport};

/// How much a report reads and shows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures shown per class (the newest).
    pub per_class: usize,
    /// Jobs shown (the most failures).
    pub jobs: usize,
    /// Alert groups read.
    pub groups: usize,
    /// Outbox entries read.
    pub outbox: usize,
    /// Audit records read (the newest).
    pub actions: usize,
    /// Muted alerts read per silence.
    pub muted_per_silence: usize,
    /// The longest window, in hours (one listing per hour).
    pub max_hours: u64,
    /// Distinct subjects, and jobs, remembered while counting (the report's memory). Past it, a
    /// subject that failed in two hours of the window counts in each, and jobs not seen before
    /// are counted but not ranked; the report says so.
    pub distinct: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_class: 10,
            jobs: 20,
            groups: 200,
            outbox: 50,
            actions: 100,
            muted_per_silence: 10,
            max_hours: 31 * 24,
            distinct: 100_000,
        }
    }
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The window, back from `now`.
    pub since: Duration,
    /// Only this account (its name, any case).
    pub account: Option<String>,
    /// The end of the window and the report's time.
    pub now: OffsetDateTime,
    /// The bounds.
    pub limits: Limits,
}

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The silences could not be read.
    #[error(transparent)]
    Silences(#[from] pipeline::silences::SilenceError),
    /// The alert groups could not be read.
    #[error(transparent)]
    Groups(#[from] pipeline::grouping::GroupError),
}

/// Builds the report of `store` over the window of `options`.
pub async fn build(
    store: Arc<dyn ArtifactStore>,
    options: &ReportOptions,
) -> Result<StoreReport, ReportError> {
    let limits = options.limits;
    let window = options
        .since
        .min(Duration::from_secs(limits.max_hours * 3600));
    let since = options.now - window;
    let mut truncated = Vec::new();
    if window < options.since {
        truncated.push(format!("the window was cut to {} hours", limits.max_hours));
    }
    let account = options.account.as_deref().map(account_segment);
    let failures = failures(&store, since, options.now, account.as_deref(), &limits).await?;
    let wanted_account = |a: Option<&str>| match (&account, a) {
        (None, _) => true,
        (Some(want), Some(a)) => account_segment(a) == *want,
        (Some(_), None) => false,
    };

    let (summaries, groups_total) = GroupStore::new(store.clone())
        .summaries(since, limits.groups)
        .await?;
    if groups_total > limits.groups {
        truncated.push(format!(
            "{} alert groups read of {groups_total}",
            limits.groups
        ));
    }
    let groups = summaries
        .into_iter()
        .filter(|g| wanted_account(g.example.subject.account.as_deref()))
        .map(|g| GroupRow {
            receiver: g.receiver,
            rule: g.rule,
            group_key: g.state.group_key.clone(),
            count: g.state.count,
            sends: g.state.sends,
            waiting_until: g.state.flush_at.map(rfc3339),
            last_seen: rfc3339(g.state.last_seen),
            example: g.example,
        })
        .collect();

    let (outbox, outbox_total) = outbox_rows(&store, limits.outbox, &wanted_account).await?;
    let dead_letters = artifact_store::count(store.as_ref(), DEAD_PREFIX).await?;
    let (parked, poisoned) = parking_counts(&store).await?;

    let (actions, actions_total) =
        actions(&store, since, options.now, &limits, &mut truncated).await?;
    let actions = actions
        .into_iter()
        .filter(|a| wanted_account(Some(&a.account)))
        .collect();

    let silence_store = SilenceStore::new(store.clone());
    let since_text = rfc3339(since);
    let silences: Vec<_> = silence_store
        .list(options.now, true, true)
        .await?
        .into_iter()
        .filter(|s| s.active || s.silence.ends >= since_text)
        .collect();
    let mut muted = Vec::new();
    for listed in &silences {
        let prefix = format!("{MUTED_PREFIX}{}/", pipeline_digest(&listed.silence.id));
        let mut listing = Listing::new(store.as_ref(), prefix, limits.muted_per_silence);
        for _ in 0..limits.muted_per_silence {
            let Some(info) = listing.next().await? else {
                break;
            };
            if let Some(found) = store.get(&info.key).await?
                && let Ok(alert) = serde_json::from_slice::<MutedAlert>(&found.bytes)
                && alert.time >= since_text
            {
                muted.push(alert);
            }
        }
    }
    muted.sort_by(|a, b| b.time.cmp(&a.time));

    truncated.extend(failures.truncated);
    Ok(StoreReport {
        generated: rfc3339(options.now),
        since: since_text,
        account: options.account.clone(),
        total_failures: failures.total,
        classes: failures.classes,
        jobs: failures.jobs,
        timeline: failures.timeline,
        groups,
        groups_total,
        outbox,
        outbox_total,
        dead_letters,
        parked,
        poisoned,
        actions,
        actions_total,
        silences,
        muted,
        truncated,
    })
}

/// The first `limit` outbox entries of the wanted accounts, and how many entries wait in all.
async fn outbox_rows(
    store: &Arc<dyn ArtifactStore>,
    limit: usize,
    wanted_account: &impl Fn(Option<&str>) -> bool,
) -> Result<(Vec<OutboxRow>, usize), StoreError> {
    let mut outbox_keys = Listing::new(store.as_ref(), OUTBOX_PREFIX, DEFAULT_PAGE);
    let mut outbox_total = 0;
    let mut outbox = Vec::new();
    while let Some(info) = outbox_keys.next().await? {
        outbox_total += 1;
        if outbox_total <= limit
            && let Some(found) = store.get(&info.key).await?
            && let Ok(entry) = serde_json::from_slice::<OutboxEntry>(&found.bytes)
            && wanted_account(entry.alert.diagnosis.subject.account.as_deref())
        {
            outbox.push(OutboxRow {
                receiver: entry.receiver,
                headline: entry.alert.headline(),
                last_error: entry.last_error,
            });
        }
    }
    Ok((outbox, outbox_total))
}

/// How many deliveries wait in the parking area, and how many are kept as poison.
async fn parking_counts(store: &Arc<dyn ArtifactStore>) -> Result<(usize, usize), StoreError> {
    Ok((
        artifact_store::count(store.as_ref(), pipeline::parking::PARKED_PREFIX).await?,
        artifact_store::count(store.as_ref(), pipeline::parking::POISONED_PREFIX).await?,
    ))
}

/// The failure part of a report.
struct Failures {
    total: u64,
    classes: Vec<ClassSection>,
    jobs: Vec<JobCount>,
    timeline: Vec<HourCount>,
    truncated: Vec<String>,
}

/// Counts failures from the index's listings (one per hour of the window), then reads the newest
/// few per class and one record per shown job.
async fn failures(
    store: &Arc<dyn ArtifactStore>,
    since: OffsetDateTime,
    now: OffsetDateTime,
    account: Option<&str>,
    limits: &Limits,
) -> Result<Failures, StoreError> {
    // Distinct subjects: a subject seen in two hours counts once, in its first hour.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut per_class: BTreeMap<String, (u64, VecDeque<ObjectKey>)> = BTreeMap::new();
    let mut per_job: HashMap<(String, String), (u64, ObjectKey)> = HashMap::new();
    let mut timeline = Vec::new();
    let mut total = 0;
    let (mut forgot_subjects, mut unranked_jobs) = (false, false);
    let mut hour = since;
    while hour <= now + Duration::from_secs(3599) {
        let segment = hour_segment(hour);
        hour += Duration::from_secs(3600);
        if segment > hour_segment(now) {
            break;
        }
        let prefix = match account {
            Some(account) => format!("{HISTORY_PREFIX}{segment}/{account}/"),
            None => format!("{HISTORY_PREFIX}{segment}/"),
        };
        let mut in_hour = 0;
        let mut listing = Listing::new(store.as_ref(), prefix, DEFAULT_PAGE);
        while let Some(info) = listing.next().await? {
            let Some(key) = HistoryKey::parse(info.key.as_str()) else {
                continue;
            };
            let subject = (key.class.clone(), key.subject.clone());
            if seen.contains(&subject) {
                continue;
            }
            if seen.len() < limits.distinct {
                seen.insert(subject);
            } else {
                forgot_subjects = true;
            }
            in_hour += 1;
            total += 1;
            let (count, newest) = per_class.entry(key.class.clone()).or_default();
            *count += 1;
            newest.push_back(info.key.clone());
            if newest.len() > limits.per_class {
                newest.pop_front();
            }
            let job_key = (key.account.clone(), key.job.clone());
            if per_job.len() < limits.distinct || per_job.contains_key(&job_key) {
                per_job.entry(job_key).or_insert((0, info.key.clone())).0 += 1;
            } else {
                unranked_jobs = true;
            }
        }
        timeline.push(HourCount {
            hour: segment,
            count: in_hour,
        });
    }
    let mut classes = Vec::new();
    for (class, (count, keys)) in per_class {
        let mut failures = Vec::new();
        for key in keys.iter().rev() {
            if let Some(record) = read_record(store, key).await? {
                failures.push(record);
            }
        }
        let severity = FailureClass::parse(&class)
            .map(|c| c.severity().as_str().to_owned())
            .unwrap_or_default();
        classes.push(ClassSection {
            class,
            severity,
            count,
            failures,
        });
    }
    // Most urgent first, then the most failures.
    classes.sort_by_key(|c| {
        (
            std::cmp::Reverse(severity_rank(&c.severity)),
            std::cmp::Reverse(c.count),
        )
    });
    let mut truncated = Vec::new();
    if forgot_subjects {
        truncated.push(format!(
            "more than {} distinct failed subjects: past them, a subject that failed in two hours counts in each",
            limits.distinct
        ));
    }
    if unranked_jobs {
        truncated.push(format!(
            "more than {} jobs failed: jobs past them are counted but not ranked",
            limits.distinct
        ));
    }
    let jobs = top_jobs(store, per_job, limits, &mut truncated).await?;
    Ok(Failures {
        total,
        classes,
        jobs,
        timeline,
        truncated,
    })
}

/// The jobs with the most failures, each named from one of its records.
async fn top_jobs(
    store: &Arc<dyn ArtifactStore>,
    per_job: HashMap<(String, String), (u64, ObjectKey)>,
    limits: &Limits,
    truncated: &mut Vec<String>,
) -> Result<Vec<JobCount>, StoreError> {
    let mut ranked: Vec<_> = per_job.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    if ranked.len() > limits.jobs {
        truncated.push(format!(
            "the {} jobs with the most failures of {}",
            limits.jobs,
            ranked.len()
        ));
    }
    let mut jobs = Vec::new();
    for ((account, _), (count, key)) in ranked.into_iter().take(limits.jobs) {
        let job = read_record(store, &key)
            .await?
            .and_then(|r| r.diagnosis.subject.job_id)
            .unwrap_or_default();
        jobs.push(JobCount {
            account,
            job,
            count,
        });
    }
    Ok(jobs)
}

async fn read_record(
    store: &Arc<dyn ArtifactStore>,
    key: &ObjectKey,
) -> Result<Option<FailureRecord>, StoreError> {
    Ok(store
        .get(key)
        .await?
        .and_then(|found| serde_json::from_slice(&found.bytes).ok()))
}

/// The newest audit records of the window's days.
async fn actions(
    store: &Arc<dyn ArtifactStore>,
    since: OffsetDateTime,
    now: OffsetDateTime,
    limits: &Limits,
    truncated: &mut Vec<String>,
) -> Result<(Vec<AuditRecord>, usize), StoreError> {
    // Only the newest `limits.actions` keys are kept while all are counted.
    let mut keys = VecDeque::with_capacity(limits.actions + 1);
    let mut total = 0;
    let mut day = since;
    while day.date() <= now.date() {
        let prefix = format!(
            "audit/{:04}-{:02}-{:02}/",
            day.year(),
            u8::from(day.month()),
            day.day()
        );
        let mut listing = Listing::new(store.as_ref(), prefix, DEFAULT_PAGE);
        while let Some(info) = listing.next().await? {
            total += 1;
            keys.push_back(info.key);
            if keys.len() > limits.actions {
                keys.pop_front();
            }
        }
        day += Duration::from_secs(86_400);
    }
    if total > limits.actions {
        truncated.push(format!(
            "the newest {} job-action records of {total}",
            limits.actions
        ));
    }
    let since_text = rfc3339(since);
    let mut records = Vec::new();
    // Ids start with the time, so the last keys are the newest.
    for key in keys.iter().rev().take(limits.actions) {
        if let Some(found) = store.get(key).await?
            && let Ok(record) = serde_json::from_slice::<AuditRecord>(&found.bytes)
            && record.time >= since_text
        {
            records.push(record);
        }
    }
    Ok((records, total))
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "error" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The digest the pipeline names muted-alert folders with.
fn pipeline_digest(text: &str) -> String {
    pipeline::silences::muted_folder(text)
}
