//! Silences kept in the artifact store, so one written at the CLI on one machine mutes every
//! instance: `batch-triage silence add/list/expire` write and read them here, and the pipeline
//! reads them together with the policy's own silences.
//!
//! # Layout
//! - `silences/{id}.json`: one [`StoredSilence`], written create-only; expiring it is a
//!   compare-and-swap on its ETag that moves its end to now (the record stays, so the report and
//!   `silence list --all` still show it).
//! - `silences-muted/{id}/{digest}.json`: one [`MutedAlert`] per subject a silence muted,
//!   written create-only, so a redelivered payload is counted once. The count of a silence is
//!   the number of these objects.
//!
//! Silences mute notifications only: logs are still preserved and job actions still follow
//! their own rules (see [`diagnosis::policy::plan`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use artifact_store::{ArtifactStore, Condition, Listing, ObjectKey, StoreError};
use bytes::Bytes;
use diagnosis::Diagnosis;
use diagnosis::policy::{MatcherErrors, Policy, Silence, parse_matchers};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest;

/// Where silences are kept.
pub const SILENCES_PREFIX: &str = "silences/";
/// Where what each silence muted is counted.
pub const MUTED_PREFIX: &str = "silences-muted/";
/// How long the pipeline trusts the store silences it read: a silence added anywhere mutes every
/// instance within this time.
pub const SILENCE_CACHE_TTL: Duration = Duration::from_secs(30);
/// The longest a silence may last; a longer mute belongs in the policy file, reviewed.
pub const MAX_SILENCE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Compare-and-swap attempts when expiring a silence someone else is changing.
const MAX_CAS_ATTEMPTS: u32 = 16;
/// The most store silences read: more would be a runaway script, not operators.
pub const MAX_STORE_SILENCES: usize = 1000;

/// One silence as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSilence {
    /// `s-` and 12 hex digits; the key's last segment.
    pub id: String,
    /// The `key=value` matchers, as given (read with [`parse_matchers`]).
    pub matchers: Vec<String>,
    /// Who added it.
    pub author: String,
    /// Why.
    pub comment: String,
    /// When it was added (RFC 3339).
    pub starts: String,
    /// When it stops muting (RFC 3339); moved to the moment of `silence expire`.
    pub ends: String,
    /// Who expired it early, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_by: Option<String>,
}

impl StoredSilence {
    /// Whether it mutes at `now` (a record whose times cannot be read mutes nothing).
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        match (parse_time(&self.starts), parse_time(&self.ends)) {
            (Some(starts), Some(ends)) => starts <= now && now < ends,
            _ => false,
        }
    }

    /// The silence the policy's planner understands, or why not (a record written by hand).
    pub fn to_policy_silence(&self) -> Result<Silence, SilenceError> {
        let corrupt = |reason: String| SilenceError::Corrupt {
            id: self.id.clone(),
            reason,
        };
        let matchers = parse_matchers(&self.matchers).map_err(|e| corrupt(e.to_string()))?;
        let starts = parse_time(&self.starts).ok_or_else(|| corrupt("bad starts".into()))?;
        let expires = parse_time(&self.ends).ok_or_else(|| corrupt("bad ends".into()))?;
        Ok(Silence {
            id: self.id.clone(),
            matchers,
            starts: Some(starts),
            expires,
            comment: format!("{} ({})", self.comment, self.author),
        })
    }
}

/// What a silence muted: one subject's alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutedAlert {
    /// The silence.
    pub silence: String,
    /// `account/job/task`, as in the pipeline's reports.
    pub subject: String,
    /// The failure class.
    pub class: String,
    /// When it was muted (RFC 3339).
    pub time: String,
    /// The receivers that were not notified.
    pub receivers: Vec<String>,
}

/// Why a silence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A matcher is wrong (each message names its `--match`).
    #[error(transparent)]
    Matchers(#[from] MatcherErrors),
    /// The silence would not mute anything, or for too long.
    #[error("{0}")]
    Invalid(String),
    /// No silence has this id.
    #[error("no silence {0:?} in the store (see `batch-triage silence list --all`)")]
    NotFound(String),
    /// A stored record cannot be read.
    #[error("silence {id:?} in the store cannot be read: {reason}")]
    Corrupt {
        /// The silence.
        id: String,
        /// Why.
        reason: String,
    },
    /// Someone kept changing the silence while it was being expired.
    #[error("silence {0:?} kept changing; try again")]
    Contended(String),
}

/// A new silence, before it gets its id.
#[derive(Debug, Clone)]
pub struct NewSilence {
    /// `key=value` matchers.
    pub matchers: Vec<String>,
    /// How long it mutes, from now.
    pub duration: Duration,
    /// Who.
    pub author: String,
    /// Why.
    pub comment: String,
}

/// A silence with what it muted so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSilence {
    /// The silence.
    #[serde(flatten)]
    pub silence: StoredSilence,
    /// Whether it mutes now.
    pub active: bool,
    /// How many alerts it muted.
    pub muted: usize,
}

/// The store's silences.
#[derive(Debug, Clone)]
pub struct SilenceStore {
    store: Arc<dyn ArtifactStore>,
}

impl SilenceStore {
    /// Silences in `store`.
    pub fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self { store }
    }

    /// Checks and writes a new silence (create-only), starting at `now`.
    pub async fn add(
        &self,
        new: NewSilence,
        now: OffsetDateTime,
    ) -> Result<StoredSilence, SilenceError> {
        parse_matchers(&new.matchers)?;
        if new.comment.trim().is_empty() {
            return Err(SilenceError::Invalid(
                "a silence needs a --comment saying why".into(),
            ));
        }
        if new.duration.is_zero() || new.duration > MAX_SILENCE {
            return Err(SilenceError::Invalid(format!(
                "--for must be more than 0 and at most {} days",
                MAX_SILENCE.as_secs() / 86_400
            )));
        }
        let ends = now + new.duration;
        let mut silence = StoredSilence {
            id: String::new(),
            matchers: new.matchers,
            author: new.author,
            comment: new.comment,
            starts: rfc3339(now),
            ends: rfc3339(ends),
            expired_by: None,
        };
        // A fresh random id; on the (improbable) clash, another one: create-only never overwrites.
        for _ in 0..4 {
            silence.id = format!("s-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let body = serde_json::to_vec_pretty(&silence).map_err(|e| SilenceError::Corrupt {
                id: silence.id.clone(),
                reason: e.to_string(),
            })?;
            match self
                .store
                .put(
                    &silence_key(&silence.id)?,
                    Bytes::from(body),
                    Condition::IfAbsent,
                )
                .await
            {
                Ok(_) => return Ok(silence),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SilenceError::Contended(silence.id))
    }

    /// Every silence in the store (at most [`MAX_STORE_SILENCES`], oldest ids first are not
    /// promised: ids are random), active ones only unless `all`, each with its count of muted
    /// alerts when `with_counts`. A record that cannot be read is skipped with a warning.
    pub async fn list(
        &self,
        now: OffsetDateTime,
        all: bool,
        with_counts: bool,
    ) -> Result<Vec<ListedSilence>, SilenceError> {
        let mut out = Vec::new();
        // A page at a time, and no further than the bound.
        let mut listing = Listing::new(self.store.as_ref(), SILENCES_PREFIX, MAX_STORE_SILENCES);
        let mut listed = 0;
        while listed < MAX_STORE_SILENCES
            && let Some(info) = listing.next().await?
        {
            listed += 1;
            let Some(found) = self.store.get(&info.key).await? else {
                continue; // deleted between the listing and the read
            };
            let silence: StoredSilence = match serde_json::from_slice(&found.bytes) {
                Ok(silence) => silence,
                Err(error) => {
                    tracing::warn!(key = %info.key, error = %error, "unreadable silence skipped");
                    continue;
                }
            };
            let active = silence.is_active(now);
            if !active && !all {
                continue;
            }
            let muted = if with_counts {
                self.muted_count(&silence.id).await?
            } else {
                0
            };
            out.push(ListedSilence {
                silence,
                active,
                muted,
            });
        }
        out.sort_by(|a, b| {
            (&a.silence.starts, &a.silence.id).cmp(&(&b.silence.starts, &b.silence.id))
        });
        Ok(out)
    }

    /// Ends a silence now, by compare-and-swap (a concurrent change is re-read, not
    /// overwritten). Expiring an expired silence changes nothing and succeeds.
    pub async fn expire(
        &self,
        id: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<StoredSilence, SilenceError> {
        let key = silence_key(id)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(found) = self.store.get(&key).await? else {
                return Err(SilenceError::NotFound(id.to_owned()));
            };
            let mut silence: StoredSilence =
                serde_json::from_slice(&found.bytes).map_err(|e| SilenceError::Corrupt {
                    id: id.to_owned(),
                    reason: e.to_string(),
                })?;
            if !silence.is_active(now) && parse_time(&silence.ends).is_some_and(|e| e <= now) {
                return Ok(silence);
            }
            silence.ends = rfc3339(now);
            silence.expired_by = Some(by.to_owned());
            let body = serde_json::to_vec_pretty(&silence).map_err(|e| SilenceError::Corrupt {
                id: id.to_owned(),
                reason: e.to_string(),
            })?;
            match self
                .store
                .put(&key, Bytes::from(body), Condition::IfMatch(found.etag))
                .await
            {
                Ok(_) => return Ok(silence),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SilenceError::Contended(id.to_owned()))
    }

    /// The silences in force at `now`, as the planner takes them. Unreadable records are
    /// skipped (with a warning), so one bad record never unmutes the others.
    pub async fn active(&self, now: OffsetDateTime) -> Result<Vec<Silence>, SilenceError> {
        Ok(self
            .list(now, false, false)
            .await?
            .into_iter()
            .filter_map(|listed| match listed.silence.to_policy_silence() {
                Ok(silence) => Some(silence),
                Err(error) => {
                    tracing::warn!(error = %error, "silence skipped");
                    None
                }
            })
            .collect())
    }

    /// Counts an alert `silence` muted, once per subject and class (create-only).
    pub async fn record_muted(
        &self,
        silence: &str,
        subject: &str,
        diagnosis: &Diagnosis,
        receivers: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let muted = MutedAlert {
            silence: silence.to_owned(),
            subject: subject.to_owned(),
            class: diagnosis.class.as_str().to_owned(),
            time: rfc3339(now),
            receivers,
        };
        let key = ObjectKey::new(format!(
            "{MUTED_PREFIX}{}/{}.json",
            muted_folder(silence),
            digest(&format!("{subject}\n{}", muted.class))
        ))?;
        let body = serde_json::to_vec(&muted).unwrap_or_default();
        match self
            .store
            .put(&key, Bytes::from(body), Condition::IfAbsent)
            .await
        {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// How many alerts `silence` muted.
    pub async fn muted_count(&self, silence: &str) -> Result<usize, StoreError> {
        artifact_store::count(
            self.store.as_ref(),
            &format!("{MUTED_PREFIX}{}/", muted_folder(silence)),
        )
        .await
    }
}

/// The folder under [`MUTED_PREFIX`] that counts what `silence` muted.
pub fn muted_folder(silence: &str) -> String {
    digest(silence)
}

/// The key of a silence, refusing ids that are not ours (an id typed at the CLI is input).
fn silence_key(id: &str) -> Result<ObjectKey, SilenceError> {
    let ours = id.len() == 14
        && id.starts_with("s-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !ours {
        return Err(SilenceError::NotFound(id.escape_debug().to_string()));
    }
    Ok(ObjectKey::new(format!("{SILENCES_PREFIX}{id}.json"))?)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The policy with the store's silences added, re-read at most once per
/// [`SILENCE_CACHE_TTL`]: what the pipeline plans with. When the store cannot be read, the last
/// silences read stay in force (and the policy's always do).
#[derive(Debug)]
pub struct SilenceCache {
    silences: SilenceStore,
    policy: Arc<Policy>,
    ttl: Duration,
    cached: futures::lock::Mutex<Option<(Instant, Arc<Policy>)>>,
}

impl SilenceCache {
    /// `policy` with the silences of `silences`, kept for `ttl`.
    pub fn new(silences: SilenceStore, policy: Arc<Policy>, ttl: Duration) -> Self {
        Self {
            silences,
            policy,
            ttl,
            cached: futures::lock::Mutex::new(None),
        }
    }

    /// The policy to plan with at `now`. Concurrent callers wait for one read.
    pub async fn policy(&self, now: OffsetDateTime) -> Arc<Policy> {
        let mut cached = self.cached.lock().await;
        if let Some((_, policy)) = cached
            .as_ref()
            .filter(|(read_at, _)| read_at.elapsed() < self.ttl)
        {
            return policy.clone();
        }
        let merged = match self.silences.active(now).await {
            Ok(stored) => {
                let mut policy = (*self.policy).clone();
                policy.silences.extend(stored);
                Arc::new(policy)
            }
            Err(error) => {
                tracing::warn!(error = %error, "store silences could not be read; the last ones read stay in force");
                match cached.as_ref() {
                    Some((_, last)) => last.clone(),
                    None => self.policy.clone(),
                }
            }
        };
        *cached = Some((Instant::now(), merged.clone()));
        merged
    }

    /// The store silences are written to.
    pub fn store(&self) -> &SilenceStore {
        &self.silences
    }
}
