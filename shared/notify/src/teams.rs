//! Microsoft Teams through a Workflows webhook: the `message` envelope carrying an Adaptive Card
//! 1.4, byte-budgeted so the whole payload always fits in Teams' 28 KB limit.
//!
//! # The byte budget
//! Every field starts under a generous cap (stderr tail 8 KB, hints 4 KB, cause 3 KB, fact
//! values 600 bytes each...). The card is rendered and its serialized length measured; while it is
//! over [`MAX_PAYLOAD_BYTES`], the first field with room in the order stderr tail, hints, cause,
//! links (each first down to a floor of 2 KB / 1 KB / 1 KB / 512 B, then to nothing), fact
//! values, summary is cut by the excess (JSON escaping only ever
//! makes text longer, so cutting `n` source bytes removes at least `n` payload bytes) and the card
//! is rendered again. Cuts land on character boundaries and are marked with `…`; the stderr tail
//! keeps its end (the last lines say the most), everything else keeps its beginning. Rendering
//! goes through `serde_json`, so the result is always valid JSON.
//!
//! # Untrusted text
//! Teams renders markdown in `TextBlock`s and `FactSet`s, so ids, Batch messages, stderr, policy
//! names and log names go only into `TextRun`s of `RichTextBlock`s, which it shows as written.
//! `TextBlock`s hold our own words (the banner and the section headings).

use foundation::{Deadline, Secret};
use serde_json::{Value, json};

use crate::alert::{Alert, AlertState};
use crate::egress::{Delivery, Egress};
use crate::error::NotifyError;
use crate::text::{keep_end, keep_start};

/// Teams refuses messages over 28 KB; we stay under 28,000 bytes so either reading of "KB" holds.
pub const MAX_PAYLOAD_BYTES: usize = 28_000;

/// Picks one cap out of [`Caps`].
type Field = fn(&mut Caps) -> &mut usize;

/// The spacing between posts to one Teams host: Teams throttles more than 4 requests a second.
pub const TEAMS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Per-field caps in bytes; shrunk in order until the payload fits.
#[derive(Debug, Clone, Copy)]
struct Caps {
    stderr: usize,
    hints: usize,
    cause: usize,
    lists: usize,
    fact: usize,
    summary: usize,
}

impl Caps {
    const START: Self = Self {
        stderr: 8 * 1024,
        hints: 4 * 1024,
        cause: 3 * 1024,
        lists: 2 * 1024,
        fact: 600,
        summary: 1024,
    };

    /// Cuts `excess` bytes from the first field that still has room; `false` when all are empty.
    /// The long free-text fields first shrink to a floor (so a huge stderr does not wipe out the
    /// hints), then to nothing, before the facts and the summary are touched.
    fn shrink(&mut self, excess: usize) -> bool {
        let step = excess.max(64);
        let stages: [(Field, usize); 8] = [
            (|c| &mut c.stderr, 2048),
            (|c| &mut c.hints, 1024),
            (|c| &mut c.cause, 1024),
            (|c| &mut c.lists, 512),
            (|c| &mut c.stderr, 0),
            (|c| &mut c.hints, 0),
            (|c| &mut c.cause, 0),
            (|c| &mut c.lists, 0),
        ];
        for (field, floor) in stages {
            let cap = field(self);
            if *cap > floor {
                *cap = cap.saturating_sub(step).max(floor);
                return true;
            }
        }
        // Fact values appear many times over, so halve them rather than subtract.
        if self.fact > 0 {
            self.fact /= 2;
            return true;
        }
        if self.summary > 0 {
            self.summary = self.summary.saturating_sub(step);
            return true;
        }
        false
    }
}

/// Renders the Workflows payload for an alert, always within [`MAX_PAYLOAD_BYTES`].
pub fn render(alert: &Alert) -> Vec<u8> {
    let alert = &pre_trim(alert);
    let mut caps = Caps::START;
    loop {
        let bytes = serde_json::to_vec(&envelope(card(alert, caps))).unwrap_or_default();
        if bytes.len() <= MAX_PAYLOAD_BYTES {
            return bytes;
        }
        if !caps.shrink(bytes.len() - MAX_PAYLOAD_BYTES) {
            // Unreachable in practice (an all-empty card is a few hundred bytes); keep a valid,
            // minimal message rather than fail.
            let minimal = json!({"type": "TextBlock", "text": "batch-triage alert (content too large)", "wrap": true});
            return serde_json::to_vec(&envelope(json!({
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard", "version": "1.4", "body": [minimal]
            })))
            .unwrap_or_default();
        }
    }
}

/// A copy of the alert with every text cut to a size no card could show, once, so the render
/// loop (which redacts as it goes) never rescans megabytes.
fn pre_trim(alert: &Alert) -> Alert {
    const TEXT: usize = 16 * 1024;
    let cut = |text: &str| keep_start(text, TEXT);
    let cut_opt = |text: &Option<String>| text.as_deref().map(cut);
    let mut trimmed = alert.clone();
    let d = &mut trimmed.diagnosis;
    d.summary = cut(&d.summary);
    d.cause = cut(&d.cause);
    d.hints.truncate(50);
    d.hints = d.hints.iter().map(|h| cut(h)).collect();
    let s = &mut d.subject;
    for field in [
        &mut s.account,
        &mut s.job_id,
        &mut s.task_id,
        &mut s.pool_id,
        &mut s.node_id,
    ] {
        *field = cut_opt(field);
    }
    if let Some(failure) = &mut d.failure {
        failure.category = cut_opt(&failure.category);
        failure.code = cut_opt(&failure.code);
        failure.message = cut_opt(&failure.message);
    }
    trimmed.rule = cut_opt(&trimmed.rule);
    trimmed.group.examples.truncate(50);
    trimmed.group.examples = trimmed.group.examples.iter().map(|e| cut(e)).collect();
    trimmed.links.logs.truncate(50);
    trimmed.links.logs = trimmed.links.logs.iter().map(|l| cut(l)).collect();
    trimmed.links.portal = cut_opt(&trimmed.links.portal);
    trimmed.stderr_tail = trimmed
        .stderr_tail
        .as_deref()
        .map(|t| keep_end(t, 4 * TEXT));
    trimmed
}

/// The Workflows `message` envelope around a card.
fn envelope(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

/// A block of untrusted text. Teams renders markdown in a `TextBlock` (and in `FactSet` values),
/// so a task id `[click](https://evil.example)` would become a link; a `TextRun` in a
/// `RichTextBlock` is never parsed as markdown, so the text shows as written.
fn plain_block(runs: Vec<Value>) -> Value {
    json!({"type": "RichTextBlock", "inlines": runs})
}

/// One run of untrusted text, shown verbatim.
fn run(text: &str) -> Value {
    json!({"type": "TextRun", "text": text})
}

/// A bold section heading. Only ever our own constant text: it is a `TextBlock`.
fn heading(text: &'static str) -> Value {
    json!({"type": "TextBlock", "text": text, "weight": "bolder", "wrap": true, "spacing": "medium"})
}

/// The card itself, with every field under `caps`. Everything that comes from Batch, the task or
/// the policy is in a `TextRun`; `TextBlock`s hold only our own words.
fn card(alert: &Alert, caps: Caps) -> Value {
    let d = &alert.diagnosis;
    let color = match (alert.state, d.severity.as_str()) {
        (AlertState::Resolved, _) => "good",
        (_, "critical" | "error") => "attention",
        (_, "warning") => "warning",
        _ => "default",
    };
    // The first element is a TextBlock of our own words: the schema the card is validated
    // against checks the first element's type, and a client that knows no RichTextBlock still
    // shows what kind of alert this is.
    let banner = match alert.state {
        AlertState::Resolved => "batch-triage · RESOLVED".to_owned(),
        AlertState::Repeat => format!(
            "batch-triage · {} (still failing)",
            d.severity.as_str().to_uppercase()
        ),
        AlertState::Firing => format!("batch-triage · {}", d.severity.as_str().to_uppercase()),
    };
    let title = format!("{} · {}", d.class.as_str(), alert.headline());
    // The plain-text line a notification shows (never rendered as markdown): the whole title.
    let state = banner.trim_start_matches("batch-triage · ");
    let fallback = format!("{state} · {title}");
    let mut body = vec![
        json!({"type": "TextBlock", "text": banner, "weight": "bolder", "color": color, "wrap": true}),
        plain_block(vec![
            json!({"type": "TextRun", "text": keep_start(&title, caps.summary.max(80)),
            "weight": "bolder", "size": "medium", "color": color}),
        ]),
        plain_block(vec![run(&keep_start(
            &diagnosis::redact::redact(&d.summary),
            caps.summary,
        ))]),
    ];
    for (label, value) in alert.facts() {
        body.push(
            json!({"type": "RichTextBlock", "spacing": "none", "inlines": [
                {"type": "TextRun", "text": format!("{label}: "), "weight": "bolder"},
                run(&keep_start(&value, caps.fact)),
            ]}),
        );
    }
    if caps.cause > 0 && !d.cause.is_empty() {
        body.push(heading("Cause"));
        body.push(plain_block(vec![run(&keep_start(
            &diagnosis::redact::redact(&d.cause),
            caps.cause,
        ))]));
    }
    if caps.hints > 0 && !d.hints.is_empty() {
        body.push(heading("What to do"));
        let mut budget = caps.hints;
        for hint in &d.hints {
            if budget == 0 {
                break;
            }
            let hint = keep_start(&format!("• {}", diagnosis::redact::redact(hint)), budget);
            budget = budget.saturating_sub(hint.len());
            body.push(
                json!({"type": "RichTextBlock", "spacing": "small", "inlines": [run(&hint)]}),
            );
        }
    }
    if let Some(tail) = alert.safe_stderr_tail().filter(|_| caps.stderr > 0) {
        body.push(heading("stderr (tail, redacted)"));
        body.push(plain_block(vec![
            json!({"type": "TextRun", "text": keep_end(&tail, caps.stderr),
            "fontType": "monospace", "size": "small"}),
        ]));
    }
    let mut actions = Vec::new();
    let mut other_logs = Vec::new();
    let mut budget = caps.lists;
    for log in &alert.links.logs {
        let log = diagnosis::redact::strip_query(log);
        if log.len() > budget {
            break;
        }
        budget -= log.len();
        if (log.starts_with("https://") || log.starts_with("http://")) && actions.len() < 3 {
            let name = log.rsplit('/').next().unwrap_or("logs");
            actions.push(
                json!({"type": "Action.OpenUrl", "title": format!("Log: {name}"), "url": log}),
            );
        } else {
            other_logs.push(log.to_owned());
        }
    }
    if !other_logs.is_empty() {
        body.push(heading("Preserved logs"));
        for log in &other_logs {
            body.push(plain_block(vec![run(log)]));
        }
    }
    if let Some(portal) = alert.safe_portal() {
        if portal.len() <= caps.lists.max(512) {
            actions.push(
                json!({"type": "Action.OpenUrl", "title": "Open job in Azure portal", "url": portal}),
            );
        }
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "fallbackText": keep_start(&fallback, 300),
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    card
}

/// Posts the alert's card to a Workflows trigger URL, paced to at most 4 posts a second per
/// host (across clones of `egress`), retrying throttling (429, honouring
/// `Retry-After`), server errors and connection failures within `deadline`.
///
/// Note: a Workflows trigger answers 202 as soon as the flow starts, even if posting to the
/// channel later fails; that failure is only visible in the flow's run history.
pub async fn send(
    egress: &Egress,
    url: &Secret,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let payload = bytes::Bytes::from(render(alert));
    tracing::debug!(bytes = payload.len(), "teams payload rendered");
    let host = crate::egress::parse_url(url)?
        .host_str()
        .unwrap_or_default()
        .to_owned();
    egress.pace(&host, TEAMS_INTERVAL, deadline).await;
    egress
        .post(
            url,
            &move |request| {
                request
                    .header("content-type", "application/json")
                    .body(payload.clone())
            },
            deadline,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Group, Links};

    fn alert(size: usize, filler: &str) -> Alert {
        let big = filler.repeat(size / filler.len().max(1) + 1);
        let mut diagnosis = diagnosis::Diagnosis {
            subject: diagnosis::Subject {
                account: Some(big.clone()),
                job_id: Some(big.clone()),
                task_id: Some(big.clone()),
                attempt: Some(3),
                pool_id: Some(big.clone()),
                node_id: Some(big.clone()),
            },
            class: diagnosis::FailureClass::parse("task.exit_code").unwrap(),
            severity: diagnosis::Severity::Error,
            summary: big.clone(),
            cause: big.clone(),
            hints: vec![big.clone(); 5],
            exit_code: Some(-1_073_741_819),
            exit_code_hex: Some("0xC0000005".into()),
            exit_meaning: None,
            failure: None,
            impact: None,
            logs: vec![],
            fingerprint: "fp".into(),
        };
        diagnosis.failure = Some(diagnosis::Failure {
            category: Some(big.clone()),
            code: Some(big.clone()),
            message: Some(big.clone()),
            details: vec![],
        });
        Alert {
            diagnosis,
            group: Group {
                key: "k".into(),
                count: 5,
                examples: vec![big.clone(); 20],
                previous_count: Some(1),
                first_seen: Some(big.clone()),
                last_seen: Some(big.clone()),
                escalation: Some(big.clone()),
            },
            stderr_tail: Some(big.clone()),
            links: Links::new(
                [
                    format!("https://x.blob.core.windows.net/{big}").as_str(),
                    big.as_str(),
                ],
                Some(format!("https://portal.azure.com/#{big}")),
            ),
            rule: Some(big),
            state: AlertState::Repeat,
            sequence: 1,
        }
    }

    #[test]
    fn every_size_and_alphabet_fits_and_parses() {
        for filler in ["a", "é", "😀", "\"", "\u{1}", "<&>", "a\\b\n"] {
            for size in [0, 10, 1_000, 10_000, 100_000, 300_000] {
                let payload = render(&alert(size, filler));
                assert!(
                    payload.len() <= MAX_PAYLOAD_BYTES,
                    "{filler:?} × {size}: {} bytes",
                    payload.len()
                );
                let value: Value = serde_json::from_slice(&payload).expect("valid JSON");
                assert_eq!(value["attachments"][0]["content"]["version"], "1.4");
            }
        }
    }

    #[test]
    fn small_alerts_are_not_truncated() {
        let mut small = alert(100, "x");
        small.group.examples.truncate(3);
        let payload = render(&small);
        assert!(
            !String::from_utf8(payload)
                .unwrap()
                .contains(crate::text::CUT)
        );
    }

    #[test]
    fn a_growing_escalated_group_says_now_and_was_and_why() {
        let mut grown = alert(10, "x");
        grown.group.count = 5000;
        grown.group.escalation = Some("5000 of the job's 5000 tasks failed this way".into());
        grown.state = AlertState::Firing;
        let card = String::from_utf8(render(&grown)).unwrap();
        assert!(card.contains("now 5,000 tasks, was 1"), "{card}");
        assert!(
            card.contains("now 5,000 tasks (was 1), same cause"),
            "{card}"
        );
        assert!(card.contains("Escalated: "), "{card}");
        assert!(card.contains("5000 of the job's 5000 tasks failed this way"));
    }

    /// Every string of the card that contains `marker`, with the path of keys that led to it and
    /// the `type` of the object holding it.
    fn strings_with<'a>(
        value: &'a Value,
        marker: &str,
        parent_type: &'a str,
        key: &'a str,
        found: &mut Vec<(String, String)>,
    ) {
        match value {
            Value::String(text) if text.contains(marker) => {
                found.push((parent_type.to_owned(), key.to_owned()))
            }
            Value::Array(items) => {
                for item in items {
                    strings_with(item, marker, parent_type, key, found);
                }
            }
            Value::Object(map) => {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
                for (k, v) in map {
                    strings_with(v, marker, kind, k, found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn untrusted_text_is_never_in_a_markdown_field() {
        let hostile = "HOSTILE[click me](https://evil.example) **bold** <b>x</b> _i_ # h";
        let mut alert = alert(10, "x");
        alert.diagnosis.subject.job_id = Some(hostile.into());
        alert.diagnosis.subject.task_id = Some(hostile.into());
        alert.diagnosis.summary = hostile.into();
        alert.diagnosis.cause = hostile.into();
        alert.diagnosis.hints = vec![hostile.into(), hostile.into()];
        alert.stderr_tail = Some(format!("{hostile}\nnext line"));
        alert.rule = Some(hostile.into());
        alert.group.examples = vec![hostile.into()];
        alert.links = crate::alert::Links::new([hostile], None);
        let card: Value = serde_json::from_slice(&render(&alert)).unwrap();
        let mut found = Vec::new();
        strings_with(&card, "HOSTILE", "", "", &mut found);
        // Each piece of hostile text shows, and only as a TextRun's text or the plain
        // notification fallback: never in a TextBlock, a FactSet or an action's URL.
        assert!(found.len() >= 8, "{found:?}");
        for (kind, key) in &found {
            assert!(
                (kind == "TextRun" && key == "text") || key == "fallbackText",
                "untrusted text in {kind}.{key}: {card}"
            );
        }
        let text = card.to_string();
        assert!(
            !text.contains("\"FactSet\""),
            "FactSet values render markdown"
        );
    }
}
