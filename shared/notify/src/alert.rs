//! The [`Alert`]: what the policy side hands to a channel. One alert speaks for a group of
//! diagnoses with the same cause, through one representative diagnosis.

use diagnosis::Diagnosis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One notification: a representative diagnosis plus what the channels need around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The representative diagnosis (docs/diagnosis-json.md); every channel renders its facts.
    pub diagnosis: Diagnosis,
    /// The group this alert speaks for, so 4,812 tasks with the same cause make one message.
    pub group: Group,
    /// The tail of stderr, already redacted by the caller (it is redacted again before sending,
    /// because a tail copied from a node is untrusted text).
    pub stderr_tail: Option<String>,
    /// Where the preserved logs and the job can be seen.
    pub links: Links,
    /// The policy rule that matched, so the reader knows why they were told.
    pub rule: Option<String>,
    /// Whether this is the first notice, a repeat, or the all-clear.
    pub state: AlertState,
    /// How many times this group was notified before (0 for the first notice); a repeat's
    /// message threads under the first one.
    pub sequence: u32,
}

/// The group of diagnoses an alert speaks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// The group key (usually the diagnosis fingerprint plus account and job): stable across
    /// repeats, so it names the thread and the idempotency key.
    pub key: String,
    /// How many subjects share the cause (1 for a lone failure).
    pub count: u64,
    /// A few example subjects (task ids, node ids), shown to the reader; keep it short.
    pub examples: Vec<String>,
    /// The count the group's previous message announced, when this one says it grew: the
    /// channels say "now 5,000 (was 1)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_count: Option<u64>,
    /// When the group's first failure was recorded (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// When its latest failure was recorded (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Why the group's severity was raised above its diagnosis's (a rule's `escalate`), when it
    /// was; the diagnosis's severity is then the raised one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
}

impl Group {
    /// The count it had before, when the group grew since its previous message.
    pub fn grew_from(&self) -> Option<u64> {
        self.previous_count.filter(|&was| was < self.count)
    }
}

/// Links shown with the alert. URLs here are shown to people, so they never carry a SAS token:
/// [`Links::new`] strips query strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Links {
    /// The preserved logs: blob URLs or paths, without query strings.
    pub logs: Vec<String>,
    /// The job in the Azure portal, when the subscription, resource group and account are known.
    pub portal: Option<String>,
}

impl Links {
    /// Links to preserved logs (query strings such as SAS tokens removed) and an optional
    /// portal link (kept whole: the portal puts the resource path in the fragment; it is
    /// redacted when rendered).
    pub fn new<'a>(logs: impl IntoIterator<Item = &'a str>, portal: Option<String>) -> Self {
        Self {
            logs: logs
                .into_iter()
                .map(|url| diagnosis::redact::strip_query(url).to_owned())
                .collect(),
            portal,
        }
    }
}

/// Builds the Azure portal link to a Batch job, from the facts that identify the account.
/// Every part is percent-encoded; the link carries no secret.
pub fn portal_job_url(
    subscription: &str,
    resource_group: &str,
    account: &str,
    job_id: &str,
) -> String {
    // Form encoding escapes everything but `*-._` and alphanumerics; a literal `+` becomes
    // `%2B`, so turning the space's `+` into `%20` gives path-safe text.
    let enc = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "https://portal.azure.com/#resource/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Batch/batchAccounts/{}/jobs/{}",
        enc(subscription),
        enc(resource_group),
        enc(account),
        enc(job_id)
    )
}

/// Where an alert stands in its group's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The first notice of a new or regressed cause.
    Firing,
    /// A reminder that the cause is still there.
    Repeat,
    /// The cause is gone.
    Resolved,
}

impl AlertState {
    /// The lower-case name used in subjects and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Repeat => "repeat",
            Self::Resolved => "resolved",
        }
    }
}

impl Alert {
    /// An alert for one diagnosis on its own (a group of one, keyed by its fingerprint).
    pub fn single(diagnosis: Diagnosis) -> Self {
        let example = diagnosis
            .subject
            .task_id
            .clone()
            .or_else(|| diagnosis.subject.node_id.clone());
        Self {
            group: Group {
                key: diagnosis.fingerprint.clone(),
                count: 1,
                examples: example.into_iter().collect(),
                ..Group::default()
            },
            diagnosis,
            stderr_tail: None,
            links: Links::default(),
            rule: None,
            state: AlertState::Firing,
            sequence: 0,
        }
    }

    /// The stable id of this notice: the same group, state and sequence always give the same key,
    /// so a retried or replayed send is recognised by receivers (ACS `Operation-Id`, email
    /// `Message-ID`, webhook `X-Batch-Triage-Id`). A UUID-shaped SHA-256 prefix.
    pub fn idempotency_key(&self) -> String {
        let digest = Sha256::digest(
            format!(
                "{}\n{}\n{}",
                self.group.key,
                self.state.as_str(),
                self.sequence
            )
            .as_bytes(),
        );
        let h = hex::encode(&digest[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The key of the group's thread: the first notice's idempotency key, so repeats and the
    /// resolved notice reply to it.
    pub fn thread_key(&self) -> String {
        Self {
            state: AlertState::Firing,
            sequence: 0,
            ..self.clone()
        }
        .idempotency_key()
    }

    /// The portal link as it may be shown: redacted (it never needs a query string).
    pub(crate) fn safe_portal(&self) -> Option<String> {
        self.links.portal.as_deref().map(diagnosis::redact::redact)
    }

    /// The preserved logs' locations as they may be shown: without query strings (a SAS token
    /// is a credential).
    pub(crate) fn safe_logs(&self) -> impl Iterator<Item = &str> {
        self.links
            .logs
            .iter()
            .map(|log| diagnosis::redact::strip_query(log))
    }

    /// [`Alert::safe_logs`] while their lengths add up to at most `budget` bytes: the first log
    /// that does not fit ends the list, so the order the logs were preserved in is kept.
    pub(crate) fn safe_logs_within(&self, budget: usize) -> impl Iterator<Item = &str> {
        let mut left = budget;
        self.safe_logs().take_while(move |log| {
            let fits = log.len() <= left;
            if fits {
                left -= log.len();
            }
            fits
        })
    }

    /// The stderr tail as it may leave the account: redacted again (idempotent).
    pub fn safe_stderr_tail(&self) -> Option<String> {
        self.stderr_tail
            .as_deref()
            .map(diagnosis::redact::redact)
            .filter(|tail| !tail.trim().is_empty())
    }

    /// What the group counts: tasks, nodes or subjects.
    fn group_noun(&self) -> &'static str {
        let s = &self.diagnosis.subject;
        if s.task_id.is_some() {
            "tasks"
        } else if s.node_id.is_some() {
            "nodes"
        } else {
            "subjects"
        }
    }

    /// One line naming the subject: `job genomics task t-17` or `job genomics (3 nodes)`.
    pub fn headline(&self) -> String {
        let s = &self.diagnosis.subject;
        let mut line = String::new();
        if let Some(job) = &s.job_id {
            line.push_str("job ");
            line.push_str(job);
        }
        if let Some(was) = self.group.grew_from() {
            let what = self.group_noun();
            line.push_str(&format!(
                " (now {} {what}, was {})",
                text::thousands(self.group.count),
                text::thousands(was)
            ));
        } else if self.group.count > 1 {
            let what = self.group_noun();
            line.push_str(&format!(" ({} {what})", text::thousands(self.group.count)));
        } else if let Some(task) = &s.task_id {
            line.push_str(" task ");
            line.push_str(task);
        } else if let Some(node) = &s.node_id {
            line.push_str(" node ");
            line.push_str(node);
        }
        // Nothing of a job's: a pool's failure, or a delivery kept as poison (account only).
        if line.trim().is_empty() {
            if let Some(pool) = &s.pool_id {
                line = format!("pool {pool}");
            } else if let Some(account) = &s.account {
                line = format!("account {account}");
            }
        }
        line.trim().to_owned()
    }

    /// The labelled facts every channel shows, in order: subject, class, severity, exit code,
    /// Batch's failure, impact, group and rule. Values are redacted; empty facts are left out.
    pub(crate) fn facts(&self) -> Vec<(&'static str, String)> {
        let d = &self.diagnosis;
        let s = &d.subject;
        let mut facts = Vec::new();
        let mut push = |label: &'static str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                facts.push((label, diagnosis::redact::redact(&value)));
            }
        };
        push("Account", s.account.clone());
        push("Job", s.job_id.clone());
        push("Task", s.task_id.clone());
        push("Attempt", s.attempt.map(|a| a.to_string()));
        push("Pool", s.pool_id.clone());
        push("Node", s.node_id.clone());
        push(
            "Class",
            Some(format!("{} ({})", d.class.as_str(), d.class.meaning())),
        );
        push("Severity", Some(d.severity.as_str().to_uppercase()));
        push(
            "Exit code",
            d.exit_code.map(|code| {
                let mut text = code.to_string();
                if let Some(hex) = &d.exit_code_hex {
                    text.push_str(&format!(" ({hex})"));
                }
                if let Some(meaning) = d.exit_meaning {
                    text.push_str(&format!(": {}", meaning.meaning()));
                }
                text
            }),
        );
        if let Some(failure) = &d.failure {
            push(
                "Batch failure",
                Some(
                    [failure.category.as_deref(), failure.code.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" / "),
                ),
            );
            push("Batch message", failure.message.clone());
        }
        push(
            "Impact",
            d.impact.as_ref().map(|impact| {
                let honoured = match impact.job_action_honoured {
                    Some(true) => " (Batch will do it)",
                    Some(false) => " (not honoured: job onTaskFailure is noaction)",
                    None => "",
                };
                format!(
                    "exitConditions: job action {}{honoured}; dependent tasks {}",
                    impact.job_action, impact.dependency_action
                )
            }),
        );
        push("Escalated", self.group.escalation.clone());
        if let Some(was) = self.group.grew_from() {
            push(
                "Affected",
                Some(format!(
                    "now {} {} (was {}), same cause",
                    text::thousands(self.group.count),
                    self.group_noun(),
                    text::thousands(was)
                )),
            );
        } else if self.group.count > 1 {
            push(
                "Affected",
                Some(format!(
                    "{} {}, same cause",
                    text::thousands(self.group.count),
                    self.group_noun()
                )),
            );
        }
        if let (Some(first), Some(last)) = (&self.group.first_seen, &self.group.last_seen) {
            push(
                "Seen",
                Some(if first == last {
                    first.clone()
                } else {
                    format!("first {first}, latest {last}")
                }),
            );
        }
        if !self.group.examples.is_empty() {
            push("Examples", Some(self.group.examples.join(", ")));
        }
        push("Rule", self.rule.clone());
        push("State", Some(self.state.as_str().to_owned()));
        facts
    }
}

use crate::text;
