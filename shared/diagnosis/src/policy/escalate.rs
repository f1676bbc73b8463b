//! Growth and escalation of a notified group, pure.
//!
//! - **Growth**: a group that was notified and has grown *enough* since (its count multiplied by
//!   `renotify_on_growth`, or crossed a power of ten: 10, 100, 1,000, …) is notified again at
//!   `group_interval`, not only at `repeat_interval`. Growth by one more failure is not news.
//! - **Escalation**: a rule's `escalate` raises a group's severity once, when its count reaches
//!   `min_count` or its share of the job's tasks exceeds `min_job_percent`. The escalated message
//!   goes out at once and says why.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::classes::Severity;

/// The default `renotify_on_growth`: a notified group is announced again when its count has at
/// least doubled or crossed 10, 100, 1,000, … since the last message. A person on call hears
/// "1 failed" → "now 2" → "now 10" → "now 5,000" (at most one message per `group_interval`),
/// about log₂ of the count in all, never one per failure.
pub const DEFAULT_RENOTIFY_ON_GROWTH: f64 = 2.0;

/// A rule's escalation: the severity its groups take when they cross a threshold. At least one
/// threshold is set; either one crossed escalates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// The severity the group takes (higher than the diagnosis's own, usually `critical`).
    pub severity: Severity,
    /// Escalate when the group counts at least this many failures.
    pub min_count: Option<u64>,
    /// Escalate when the group's failures are more than this percentage of the job's tasks
    /// (active + running + completed, from the job's task counts).
    pub min_job_percent: Option<f64>,
}

impl Escalation {
    /// Why a group of `count` failures, in a job of `job_tasks` tasks (when known), escalates;
    /// `None` while no threshold is crossed. A share cannot be judged without the job's task
    /// counts, so it then does not escalate (the count threshold still can).
    pub fn reason(&self, count: u64, job_tasks: Option<u64>) -> Option<String> {
        let severity = self.severity.as_str();
        if let Some(min) = self.min_count {
            if count >= min {
                return Some(format!(
                    "{count} failures reached min_count = {min}: now {severity}"
                ));
            }
        }
        let (min, total) = (self.min_job_percent?, job_tasks?);
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let percent = count as f64 * 100.0 / total as f64;
        (percent > min).then(|| {
            // One decimal, or two when one would show the threshold itself (20.02% of 20%).
            let shown = if format!("{percent:.1}").parse::<f64>() == Ok(min) {
                format!("{percent:.2}")
            } else {
                format!("{percent:.1}")
            };
            format!(
                "{count} of the job's {total} tasks failed this way ({shown}%, more than {min}%): now {severity}"
            )
        })
    }
}

/// A group's escalation, once it happened (kept in the group state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Escalated {
    /// The severity it took.
    pub severity: Severity,
    /// Why, for people (the threshold and the counts).
    pub reason: String,
    /// When it escalated.
    #[serde(with = "super::group::rfc3339")]
    pub at: OffsetDateTime,
    /// A notification already announced it (escalation is announced once per group).
    pub announced: bool,
}

/// Whether a group that counted `last` failures at its last message and `count` now has grown
/// enough to say so: by `factor` (`count >= last × factor`) or across a power of ten.
pub fn grew_enough(count: u64, last: u64, factor: f64) -> bool {
    if count <= last {
        return false;
    }
    #[allow(clippy::cast_precision_loss)]
    let multiplied = count as f64 >= last as f64 * factor;
    multiplied || decade(count) > decade(last)
}

/// The number of digits minus one (0 for 0..=9, 1 for 10..=99, …).
fn decade(n: u64) -> u32 {
    n.checked_ilog10().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_counts_doubling_and_powers_of_ten_not_every_increment() {
        assert!(grew_enough(2, 1, 2.0));
        assert!(!grew_enough(3, 2, 2.0));
        assert!(grew_enough(10, 6, 2.0), "crossed 10");
        assert!(!grew_enough(19, 10, 2.0));
        assert!(grew_enough(100, 99, 2.0), "crossed 100");
        assert!(grew_enough(5000, 1, 2.0));
        assert!(!grew_enough(5000, 5000, 2.0));
        assert!(!grew_enough(4000, 5000, 2.0), "shrinking is not growth");
        assert!(!grew_enough(1500, 1001, 2.0));
        // A big factor leaves only the powers of ten.
        assert!(!grew_enough(90, 20, 10.0));
        assert!(grew_enough(100, 20, 10.0));
        assert!(grew_enough(u64::MAX, u64::MAX / 3, 2.0));
    }

    #[test]
    fn escalation_by_count_or_by_share_of_the_job() {
        let e = Escalation {
            severity: Severity::Critical,
            min_count: Some(1000),
            min_job_percent: Some(20.0),
        };
        assert_eq!(e.reason(999, None), None);
        assert!(e.reason(1000, None).unwrap().contains("min_count = 1000"));
        // 200 of 1,000 is 20%: not more than 20%.
        assert_eq!(e.reason(200, Some(1000)), None);
        let why = e.reason(201, Some(1000)).unwrap();
        assert!(why.contains("201 of the job's 1000 tasks") && why.contains("20.1%"));
        assert!(why.ends_with("now critical"));
        assert_eq!(
            e.reason(5, Some(0)),
            None,
            "a job with no tasks is no share"
        );
        let share_only = Escalation {
            min_count: None,
            ..e
        };
        assert_eq!(share_only.reason(1_000_000, None), None);
    }
}
