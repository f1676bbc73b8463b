//! PagerDuty through the Events API v2 (`POST /v2/enqueue`).
//!
//! - A firing or repeated alert is a `trigger` whose `dedup_key` is derived from the alert
//!   group's key ([`dedup_key`]), so every message of a group lands on one incident.
//! - A resolved group is a `resolve` with the same `dedup_key`.
//! - `payload.severity` is the diagnosis severity (`critical`, `error`, `warning`, `info`: the
//!   same four words PagerDuty uses); `payload.summary` is at most 1,024 characters;
//!   `payload.source` names the account, pool and node; `custom_details` carries the facts, the
//!   diagnosis (docs/diagnosis-json.md) and the stderr tail; `links` point at the preserved logs
//!   and the portal (never with a query string).
//!
//! The routing key travels in the body. It is a [`Secret`]: never logged, never in an error (an
//! answer that echoes it is scrubbed before it becomes a [`NotifyError`]).

use foundation::{Deadline, Secret};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::alert::{Alert, AlertState};
use crate::egress::{Delivery, Egress};
use crate::error::NotifyError;
use crate::text::{keep_end, keep_start};

/// PagerDuty's enqueue URL (US service region); `events_url` overrides it.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty refuses a `summary` over 1,024 characters; bytes are never fewer.
pub const MAX_SUMMARY: usize = 1024;
/// PagerDuty refuses a `dedup_key` over 255 characters.
pub const MAX_DEDUP_KEY: usize = 255;
/// PagerDuty refuses an event over 512 KB; the renderer stays well under it.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Longest link `href` (a longer one stays in `custom_details.logs` only).
const MAX_LINK_BYTES: usize = 2048;
/// Longest stderr tail put in `custom_details`.
const STDERR_BYTES: usize = 16 * 1024;
/// Longest `source`, `component`, `group` or `class` value (PagerDuty shows them in lists).
const FIELD_BYTES: usize = 255;

/// The incident key of a group: the group's key when it fits PagerDuty's 255 characters and is
/// printable ASCII, else `batch-triage:` and the SHA-256 of the key. Either way it is the same
/// for every message of the group, so repeats and the resolve reach one incident.
pub fn dedup_key(group_key: &str) -> String {
    let printable = group_key.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable && !group_key.is_empty() && group_key.len() <= MAX_DEDUP_KEY {
        group_key.to_owned()
    } else {
        format!(
            "batch-triage:{}",
            hex::encode(Sha256::digest(group_key.as_bytes()))
        )
    }
}

/// The event for an alert: `resolve` for a resolved group, else `trigger`. The routing key is
/// put in by [`send`] only, so a rendered event can be shown or stored.
pub fn event(alert: &Alert) -> Value {
    let dedup = dedup_key(&alert.group.key);
    if alert.state == AlertState::Resolved {
        return json!({
            "event_action": "resolve",
            "dedup_key": dedup,
        });
    }
    // Every text was already cut to 16 KB, but there are many: if the whole does not fit, cut
    // each text harder and drop the bulky parts rather than be refused.
    let alert = &crate::teams::pre_trim(alert);
    let attempts = [
        Bounds {
            stderr: STDERR_BYTES,
            text: 8 * 1024,
            diagnosis: true,
        },
        Bounds {
            stderr: 2 * 1024,
            text: 1024,
            diagnosis: false,
        },
        Bounds {
            stderr: 0,
            text: 128,
            diagnosis: false,
        },
    ];
    let mut event = Value::Null;
    for bounds in attempts {
        event = trigger(alert, bounds);
        if serde_json::to_vec(&event).map_or(0, |b| b.len()) <= MAX_EVENT_BYTES {
            break;
        }
    }
    event
}

/// How much of each part a `trigger` carries.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// The stderr tail's bytes.
    stderr: usize,
    /// Bytes of every other free text (facts, cause, each hint and example, the group key).
    text: usize,
    /// Whether the whole diagnosis goes in too.
    diagnosis: bool,
}

/// A `trigger` event within `bounds`.
fn trigger(alert: &Alert, bounds: Bounds) -> Value {
    let cut = |text: &str| keep_start(text, bounds.text);
    let d = &alert.diagnosis;
    let s = &d.subject;
    let redact = diagnosis::redact::redact;
    let state = match alert.state {
        AlertState::Repeat => " (still failing)",
        _ => "",
    };
    let summary = keep_start(
        &diagnosis::inert::one_line(&redact(&format!(
            "[{}] {}: {}{state} — {}",
            d.severity.as_str().to_uppercase(),
            d.class.as_str(),
            alert.headline(),
            d.summary
        ))),
        MAX_SUMMARY,
    );
    let field = |value: Option<&str>| {
        value
            .filter(|v| !v.is_empty())
            .map(|v| keep_start(&diagnosis::inert::one_line(&redact(v)), FIELD_BYTES))
    };
    let source = [
        s.account.as_deref(),
        s.pool_id.as_deref(),
        s.node_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("/");
    let source = field(Some(&source)).unwrap_or_else(|| "azure-batch".to_owned());
    let facts: serde_json::Map<String, Value> = alert
        .facts()
        .into_iter()
        .map(|(label, value)| (label.to_owned(), Value::String(cut(&value))))
        .collect();
    let logs: Vec<&str> = alert.safe_logs().collect();
    let mut links: Vec<Value> = logs
        .iter()
        .filter_map(|l| Some((crate::text::web_link(l)?, *l)))
        .filter(|(href, _)| href.len() <= MAX_LINK_BYTES)
        .take(10)
        .map(|(href, l)| {
            let name = l.rsplit('/').next().unwrap_or("log");
            json!({"href": href, "text": keep_start(&format!("Log: {name}"), FIELD_BYTES)})
        })
        .collect();
    if let Some(portal) = alert
        .safe_portal()
        .as_deref()
        .and_then(crate::text::web_link)
    {
        links.push(json!({"href": portal, "text": "Job in the Azure portal"}));
    }
    let mut details = json!({
        "facts": facts,
        "cause": cut(&redact(&d.cause)),
        "hints": d.hints.iter().map(|h| cut(&redact(h))).collect::<Vec<_>>(),
        "count": alert.group.count,
        "examples": alert.group.examples.iter().map(|e| cut(e)).collect::<Vec<_>>(),
        "rule": alert.rule.as_deref().map(cut),
        "state": alert.state,
        "group": cut(&alert.group.key),
        "logs": logs.iter().map(|l| cut(l)).collect::<Vec<_>>(),
    });
    if bounds.stderr > 0 {
        details["stderrTail"] = json!(
            alert
                .safe_stderr_tail()
                .map(|t| keep_end(&t, bounds.stderr))
        );
    }
    if bounds.diagnosis {
        details["diagnosis"] = serde_json::to_value(d).unwrap_or(Value::Null);
    }
    let mut payload = json!({
        "summary": summary,
        "source": source,
        "severity": d.severity.as_str(),
        "class": d.class.as_str(),
        "custom_details": details,
    });
    if let Some(job) = field(s.job_id.as_deref()) {
        payload["component"] = json!(job);
    }
    if let Some(pool) = field(s.pool_id.as_deref()) {
        payload["group"] = json!(pool);
    }
    json!({
        "event_action": "trigger",
        "dedup_key": dedup_key(&alert.group.key),
        "payload": payload,
        "links": links,
        "client": "batch-triage",
    })
}

/// Enqueues the alert's event with the routing key, retrying throttling (429), server errors
/// and connection failures within `deadline`. PagerDuty answers 202 once the event is queued.
pub async fn send(
    egress: &Egress,
    routing_key: &Secret,
    events_url: &str,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let mut event = event(alert);
    event["routing_key"] = json!(routing_key.expose());
    let body = serde_json::to_vec(&event).unwrap_or_default();
    tracing::debug!(bytes = body.len(), "pagerduty event rendered");
    egress
        .post_json(&Secret::new(events_url), body, deadline, Some(routing_key))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys_are_stable_and_bounded() {
        assert_eq!(
            dedup_key("rule=oom;receiver=pd;job=etl"),
            "rule=oom;receiver=pd;job=etl"
        );
        for hostile in [
            "a".repeat(256),
            "job\nnew".into(),
            "é".into(),
            String::new(),
        ] {
            let key = dedup_key(&hostile);
            assert!(
                key.starts_with("batch-triage:") && key.len() <= MAX_DEDUP_KEY,
                "{key}"
            );
            assert_eq!(key, dedup_key(&hostile));
        }
        assert_ne!(dedup_key(&"a".repeat(256)), dedup_key(&"a".repeat(257)));
    }

    #[test]
    fn scrub_removes_the_key_everywhere() {
        let error = NotifyError::DeadlineExceeded {
            attempts: 2,
            last: Box::new(NotifyError::Status {
                status: 400,
                retry_after: None,
                detail: Some("routing_key KEY123 is invalid".into()),
            }),
        };
        let text = error.scrub("KEY123").to_string();
        assert!(
            !text.contains("KEY123") && text.contains("[REDACTED]"),
            "{text}"
        );
    }
}
