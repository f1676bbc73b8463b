//! Diagnosing pools: a resize that did not reach its target (`pool.resize_failed`), an autoscale
//! formula that failed (`pool.autoscale_failed`) and a delete that does not end
//! (`pool.delete_stuck`), from a pool's REST body or its diagnostic events.
//!
//! Everything Batch relays here is untrusted text (the compute provider's error JSON above all):
//! it is bounded, parsed without trusting its depth, and redacted before it reaches a diagnosis.

use std::time::Duration;

use super::{Evidence, dedup, prose_duration};
use crate::classes::{
    ALLOCATION_CAUSES, FailureClass, Severity, autoscale_advice, is_quota_code, resize_advice,
};
use crate::fingerprint::fingerprint;
use crate::redact::redact;
use crate::report::{Detail, Diagnosis, Failure, Subject};
use crate::wire::{
    AutoScaleRunError, BatchPool, FailureInfo, NameValue, PoolEventBody, PoolEventKind, PoolState,
    ResizeError, account_from_url,
};

/// How long a pool may stay `deleting` before `pool.delete_stuck`, unless the evidence says
/// otherwise: a delete normally ends within minutes, and Batch retries a failing one silently.
pub const DEFAULT_DELETE_STUCK_AFTER: Duration = Duration::from_secs(60 * 60);

/// Longest piece of relayed text (a message, a detail value, the provider's message) kept in a
/// diagnosis; the rest is cut with `…`.
const MAX_TEXT: usize = 1_000;
/// Most details (`values`, `errorDetails`) kept in a diagnosis.
const MAX_DETAILS: usize = 20;
/// Most of the relayed provider error that is looked into; Batch itself truncates it.
const MAX_PROVIDER_JSON: usize = 64 << 10;
/// Most further errors named in hints besides the first.
const MAX_MORE_ERRORS: usize = 5;

/// Diagnoses one pool: one diagnosis per problem found (a stuck delete, resize errors, an
/// autoscale error), most urgent first; none for a healthy pool.
pub fn diagnose_pool(pool: &BatchPool, evidence: &Evidence<'_>) -> Vec<Diagnosis> {
    let subject = Subject {
        account: evidence
            .account
            .map(str::to_ascii_lowercase)
            .or_else(|| pool.url.as_deref().and_then(account_from_url)),
        pool_id: pool.id.clone(),
        ..Subject::default()
    };
    let mut found = Vec::new();
    if let Some(d) = delete_stuck(pool, &subject, evidence) {
        found.push(d);
    }
    let errors: Vec<&ResizeError> = pool.resize_errors().collect();
    if !errors.is_empty() {
        found.push(resize_failed(
            &subject,
            &errors,
            Sizes {
                current: pool.current_nodes(),
                target: pool.target_nodes(),
                vm_size: pool.vm_size.as_deref(),
            },
            evidence,
        ));
    }
    if let Some(error) = pool.auto_scale_error() {
        found.push(autoscale_failed(&subject, error));
    }
    found
}

/// Diagnoses a pool event: a `PoolResizeCompleteEvent` whose result is not success, or a
/// `PoolAutoScaleEvent` with an error. None when the event reports no failure.
pub fn diagnose_pool_event(
    kind: PoolEventKind,
    body: &PoolEventBody,
    evidence: &Evidence<'_>,
) -> Option<Diagnosis> {
    let subject = Subject {
        account: evidence.account.map(str::to_ascii_lowercase),
        pool_id: body.id.clone(),
        ..Subject::default()
    };
    match kind {
        PoolEventKind::ResizeComplete => {
            let error = body.resize_failure()?;
            let sum = |a: Option<i32>, b: Option<i32>| match (a, b) {
                (None, None) => None,
                (a, b) => Some(i64::from(a.unwrap_or(0)) + i64::from(b.unwrap_or(0))),
            };
            Some(resize_failed(
                &subject,
                &[&error],
                Sizes {
                    current: sum(
                        body.current_dedicated_nodes,
                        body.current_low_priority_nodes,
                    ),
                    target: sum(body.target_dedicated_nodes, body.target_low_priority_nodes),
                    vm_size: None,
                },
                evidence,
            ))
        }
        PoolEventKind::AutoScale => Some(autoscale_failed(&subject, body.auto_scale_failure()?)),
    }
}

struct Sizes<'a> {
    current: Option<i64>,
    target: Option<i64>,
    vm_size: Option<&'a str>,
}

fn pool_label(subject: &Subject) -> String {
    format!("Pool {}", subject.pool_id.as_deref().unwrap_or("(unnamed)"))
}

fn delete_stuck(pool: &BatchPool, subject: &Subject, evidence: &Evidence<'_>) -> Option<Diagnosis> {
    if pool.state != Some(PoolState::Deleting) {
        return None;
    }
    let since = pool.state_transition_time?;
    let now = evidence.now?;
    let after = evidence
        .delete_stuck_after
        .unwrap_or(DEFAULT_DELETE_STUCK_AFTER);
    let deleting_for = Duration::try_from(now.0 - since.0).ok()?;
    if deleting_for <= after {
        return None;
    }
    let class = FailureClass::PoolDeleteStuck;
    Some(Diagnosis {
        subject: subject.clone(),
        class,
        severity: class.severity(),
        summary: format!(
            "{} has been deleting for {} (more than {}).",
            pool_label(subject),
            prose_duration(deleting_for),
            prose_duration(after)
        ),
        cause: "Deleting a pool stops any resize, shrinks it to zero nodes and removes it; when a step fails Batch keeps retrying without reporting an error, and the pool stays in state deleting. The usual reasons are a resource lock on the resource group or on the network resources Batch created, your own resources depending on the network security group, public IP or load balancer Batch created, the Microsoft.Batch resource provider unregistered, or Batch having lost its Contributor or Owner role on the subscription (user subscription mode).".to_owned(),
        hints: vec![
            "Look for resource locks (the resource group, the virtual network and the resources Batch created for the pool) and remove them.".to_owned(),
            "Check that nothing of yours references the network security group, public IP or load balancer Batch created for the pool.".to_owned(),
            "Check that the Microsoft.Batch resource provider is registered and, in user subscription mode, that Microsoft Azure Batch still has the Contributor or Owner role; Batch finishes the delete by itself once the obstacle is gone.".to_owned(),
        ],
        exit_code: None,
        exit_code_hex: None,
        exit_meaning: None,
        failure: None,
        impact: None,
        logs: Vec::new(),
        fingerprint: fingerprint(class, None, None, None, None),
    })
}

/// What a pool without any node means for its jobs, when that is known.
fn no_node_note(evidence: &Evidence<'_>, cause: &mut String, hints: &mut Vec<String>) {
    match evidence.pool_active_jobs {
        Some(jobs) if jobs > 0 => cause.push_str(&format!(
            " The pool has no node, and {jobs} active {} on it: {} tasks cannot run.",
            if jobs == 1 { "job waits" } else { "jobs wait" },
            if jobs == 1 { "its" } else { "their" }
        )),
        Some(_) => {}
        None => hints.push(
            "The pool has no node: any job that runs on it waits until the pool grows.".to_owned(),
        ),
    }
}

/// The other errors (after the first) of a pool's resize or of a node, bounded, as hints.
pub(super) fn more_errors<'a>(errors: &'a [&FailureInfo]) -> impl Iterator<Item = String> + 'a {
    errors.iter().skip(1).take(MAX_MORE_ERRORS).map(|more| {
        format!(
            "Also: {}{}",
            bounded(&redact(more.code.as_deref().unwrap_or("(no code)")), 200),
            more.message
                .as_deref()
                .map(|m| format!(": \"{}\"", bounded(&redact(m.trim()), MAX_TEXT)))
                .unwrap_or_default()
        )
    })
}

fn resize_failed(
    subject: &Subject,
    errors: &[&ResizeError],
    sizes: Sizes<'_>,
    evidence: &Evidence<'_>,
) -> Diagnosis {
    let class = FailureClass::PoolResizeFailed;
    let first = errors[0];
    let code = first.code.as_deref();
    let who = pool_label(subject);
    let size_text = match (sizes.current, sizes.target) {
        (Some(current), Some(target)) => format!(", {current} of {target} nodes"),
        (Some(current), None) => format!(", {current} nodes"),
        _ => String::new(),
    };
    let summary = match code {
        Some(code) => format!(
            "{who} did not reach its target size: {}{size_text}.",
            bounded(&redact(code), 200)
        ),
        None => format!("{who} did not reach its target size{size_text}."),
    };

    let mut hints = Vec::new();
    let (mut cause, generic_hint) = match code.and_then(resize_advice) {
        Some((cause, hint)) => (cause.to_owned(), Some(hint)),
        None => (
            "The pool's last resize ended with an error batch-triage does not recognise."
                .to_owned(),
            None,
        ),
    };
    let relayed = relayed_error(first);
    let meaning = relayed.as_ref().and_then(|r| r.meaning);
    match meaning {
        // What the relayed reason means is more specific than what the code means.
        Some((_, relayed_cause, hint)) => {
            cause.push(' ');
            cause.push_str(relayed_cause);
            hints.push(hint.to_owned());
        }
        None => hints.extend(generic_hint.map(str::to_owned)),
    }
    if let (Some(code), Some(vm_size), Some(target)) = (code, sizes.vm_size, sizes.target) {
        if is_quota_code(code) {
            hints.push(format!(
                "The pool asks for {target} nodes of {}: the quota must cover their vCPUs besides the account's other pools.",
                bounded(&redact(vm_size), 100)
            ));
        }
    }
    if let Some(message) = &first.message {
        cause.push_str(&format!(
            " Batch says: \"{}\"",
            bounded(&redact(message.trim()), MAX_TEXT)
        ));
    }
    if let Some(relayed) = &relayed {
        if let Some(reason) = &relayed.reason {
            cause.push_str(&format!(" The reason it relays: \"{reason}\""));
        }
        match (&relayed.provider_code, &relayed.provider_message) {
            (Some(code), Some(message)) => cause.push_str(&format!(
                " The compute provider says: {code}: \"{message}\""
            )),
            (Some(code), None) => cause.push_str(&format!(" The compute provider says: {code}.")),
            (None, Some(message)) => {
                cause.push_str(&format!(" The compute provider says: \"{message}\""))
            }
            (None, None) => {}
        }
        if relayed.truncated {
            hints.push("Batch truncated the provider's error; its full text is in the pool's resize error in the Azure portal and in the subscription's activity log.".to_owned());
        }
    }
    if sizes.current == Some(0) {
        no_node_note(evidence, &mut cause, &mut hints);
    }
    hints.extend(more_errors(errors));
    let severity = if sizes.current == Some(0) && evidence.pool_active_jobs.is_some_and(|j| j > 0) {
        Severity::Critical
    } else {
        class.severity()
    };
    // The cause, not the pool: the same relayed reason groups across pools.
    let cause_key = [
        first.message.as_deref(),
        meaning.map(|m| m.0),
        relayed.as_ref().and_then(|r| r.reason.as_deref()),
        relayed.as_ref().and_then(|r| r.provider_code.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("\n");
    Diagnosis {
        subject: subject.clone(),
        class,
        severity,
        summary,
        cause,
        hints: dedup(hints),
        exit_code: None,
        exit_code_hex: None,
        exit_meaning: None,
        failure: Some(failure_of(
            first.code.as_deref(),
            first.message.as_deref(),
            &first.details,
        )),
        impact: None,
        logs: Vec::new(),
        fingerprint: fingerprint(class, code, None, Some(&cause_key), None),
    }
}

fn autoscale_failed(subject: &Subject, error: &AutoScaleRunError) -> Diagnosis {
    let class = FailureClass::PoolAutoScaleFailed;
    let code = error.code.as_deref();
    let who = pool_label(subject);
    let mut hints = Vec::new();
    let mut cause = match code.and_then(autoscale_advice) {
        Some((cause, hint)) => {
            hints.push(hint.to_owned());
            cause.to_owned()
        }
        None => "The autoscale formula could not be evaluated.".to_owned(),
    };
    if let Some(message) = &error.message {
        cause.push_str(&format!(
            " Batch says: \"{}\"",
            bounded(&redact(message.trim()), MAX_TEXT)
        ));
    }
    let detail = error.detail("Message");
    if let Some(detail) = detail {
        cause.push_str(&format!(
            " The evaluation says: \"{}\"",
            bounded(&redact(detail.trim()), MAX_TEXT)
        ));
    }
    hints.push("While the formula fails, the pool keeps its current size: it neither grows for waiting tasks nor shrinks when idle.".to_owned());
    let cause_key = [error.message.as_deref(), detail]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    Diagnosis {
        subject: subject.clone(),
        class,
        severity: class.severity(),
        summary: match code {
            Some(code) => format!(
                "{who}'s autoscale formula failed: {}.",
                bounded(&redact(code), 200)
            ),
            None => format!("{who}'s autoscale formula failed."),
        },
        cause,
        hints: dedup(hints),
        exit_code: None,
        exit_code_hex: None,
        exit_meaning: None,
        failure: Some(failure_of(code, error.message.as_deref(), &error.details)),
        impact: None,
        logs: Vec::new(),
        fingerprint: fingerprint(class, code, None, Some(&cause_key), None),
    }
}

/// A pool or node error as the diagnosis reports it: redacted, bounded.
pub(super) fn failure_of(
    code: Option<&str>,
    message: Option<&str>,
    details: &[NameValue],
) -> Failure {
    Failure {
        category: None,
        code: code.map(|c| bounded(&redact(c), 200)),
        message: message.map(|m| bounded(&redact(m), MAX_TEXT)),
        details: details
            .iter()
            .take(MAX_DETAILS)
            .map(|d| Detail {
                name: d.name.as_deref().map(|n| bounded(&redact(n), 200)),
                value: d.value.as_deref().map(|v| bounded(&redact(v), MAX_TEXT)),
            })
            .collect(),
    }
}

/// At most `max` characters of `text`, cut with `…`.
pub(super) fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// What an `AllocationFailed` relays from the compute provider, read from the error's `values`.
struct Relayed {
    /// `Reason`, redacted and bounded.
    reason: Option<String>,
    /// `error.code` of `Provider Error Json`.
    provider_code: Option<String>,
    /// `error.message` of `Provider Error Json`, redacted and bounded.
    provider_message: Option<String>,
    /// `Provider Error Json Truncated` is true, or the JSON could not be read whole.
    truncated: bool,
    /// The matching [`ALLOCATION_CAUSES`] entry: name, cause, hint.
    meaning: Option<(&'static str, &'static str, &'static str)>,
}

fn relayed_error(error: &ResizeError) -> Option<Relayed> {
    let reason = error.detail("Reason");
    let json = error.detail("Provider Error Json");
    if reason.is_none() && json.is_none() {
        return None;
    }
    let said_truncated = error
        .detail("Provider Error Json Truncated")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let json = json.map(|j| cut_at_char(j, MAX_PROVIDER_JSON));
    let parsed = json
        .filter(|_| !said_truncated)
        .and_then(parse_provider_json);
    let (provider_code, provider_message) = match (&parsed, json) {
        (Some((code, message)), _) => (code.clone(), message.clone()),
        // Truncated or malformed: the code and message may still be readable at its start.
        (None, Some(json)) => (
            scan_string_member(json, "code"),
            scan_string_member(json, "message"),
        ),
        (None, None) => (None, None),
    };
    let haystack = [reason, provider_code.as_deref(), json]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_lowercase();
    let meaning = ALLOCATION_CAUSES
        .iter()
        .find(|(fragment, ..)| haystack.contains(&fragment.to_ascii_lowercase()))
        .map(|(_, name, cause, hint)| (*name, *cause, *hint));
    Some(Relayed {
        reason: reason.map(|r| bounded(&redact(r.trim()), MAX_TEXT)),
        provider_code: provider_code.map(|c| bounded(&redact(c.trim()), 200)),
        provider_message: provider_message.map(|m| bounded(&redact(m.trim()), MAX_TEXT)),
        truncated: said_truncated || (json.is_some() && parsed.is_none()),
        meaning,
    })
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `{"error": {"code", "message"}}` (or the two members at the top). serde_json refuses nesting
/// deeper than its recursion limit, so a hostile document is an error here, not a crash.
fn parse_provider_json(json: &str) -> Option<(Option<String>, Option<String>)> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let error = value.get("error").unwrap_or(&value);
    let text = |key: &str| {
        error
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Some((text("code"), text("message")))
}

/// The first `"name": "value"` string member in JSON text that may be cut short.
fn scan_string_member(json: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\"");
    let mut from = 0;
    while let Some(at) = json[from..].find(&key) {
        let after = from + at + key.len();
        let rest = json[after..].trim_start();
        if let Some(rest) = rest.strip_prefix(':') {
            let rest = rest.trim_start();
            if let Some(rest) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = rest.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => return Some(out),
                        '\\' => match chars.next() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some(other) => out.push(other),
                            None => break,
                        },
                        c => out.push(c),
                    }
                    if out.len() > MAX_TEXT * 4 {
                        break;
                    }
                }
                // Cut off before the closing quote: what is there is still the start of it.
                return (!out.is_empty()).then_some(out);
            }
        }
        from = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_a_truncated_provider_error() {
        let cut = r#"{"error": {"code": "BadRequest", "message": "The selected VM size 'STANDARD_A1_V2' cannot boot Hyperv"#;
        assert_eq!(
            scan_string_member(cut, "code").as_deref(),
            Some("BadRequest")
        );
        assert_eq!(
            scan_string_member(cut, "message").as_deref(),
            Some("The selected VM size 'STANDARD_A1_V2' cannot boot Hyperv")
        );
        assert_eq!(scan_string_member(r#"{"code": 5}"#, "code"), None);
        assert_eq!(scan_string_member(r#"{"code""#, "code"), None);
        assert_eq!(
            scan_string_member(r#""code": "a\"b""#, "code").as_deref(),
            Some("a\"b")
        );
    }

    #[test]
    fn bounded_cuts_on_characters() {
        assert_eq!(bounded("héllo", 2), "hé…");
        assert_eq!(bounded("hé", 2), "hé");
        assert_eq!(cut_at_char("hé", 2), "h");
    }
}
