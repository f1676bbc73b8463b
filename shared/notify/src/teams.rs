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
pub(crate) struct Caps {
    pub(crate) stderr: usize,
    pub(crate) hints: usize,
    pub(crate) cause: usize,
    pub(crate) lists: usize,
    pub(crate) fact: usize,
    pub(crate) summary: usize,
}

impl Caps {
    pub(crate) const START: Self = Self {
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
    pub(crate) fn shrink(&mut self, excess: usize) -> bool {
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
    fit(
        |caps| envelope(card(alert, caps)),
        || {
            let minimal = json!({"type": "TextBlock", "text": "batch-triage alert (content too large)", "wrap": true});
            envelope(json!({
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard", "version": "1.4", "body": [minimal]
            }))
        },
    )
}

/// The JSON of `payload` under the largest caps (shrunk in [`Caps::shrink`]'s order) that bring
/// it within [`MAX_PAYLOAD_BYTES`]. Should even all-empty fields not fit (unreachable in
/// practice: an empty card or message is a few hundred bytes), the JSON of `minimal`: a valid,
/// minimal message rather than a failure.
pub(crate) fn fit(payload: impl Fn(Caps) -> Value, minimal: impl FnOnce() -> Value) -> Vec<u8> {
    let mut caps = Caps::START;
    loop {
        let bytes = serde_json::to_vec(&payload(caps)).unwrap_or_default();
        if bytes.len() <= MAX_PAYLOAD_BYTES {
            return bytes;
        }
        if !caps.shrink(bytes.len() - MAX_PAYLOAD_BYTES) {
            return serde_json::to_vec(&minimal()).unwrap_or_default();
        }
    }
}

/// A copy of the alert with every text cut to a size no card could show, once, so the render
/// loop (which redacts as it goes) never rescans megabytes.
pub(crate) fn pre_trim(alert: &Alert) -> Alert {
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

/// The card's last blocks: the command that mutes this group (none for a resolved alert). Last,
/// so the operator finds it at the end; its values are sanitised and single-quoted by
/// `silence_command`, and it is a TextRun (never markdown).
fn mute_blocks(alert: &Alert) -> Vec<Value> {
    if alert.state == AlertState::Resolved {
        return Vec::new();
    }
    vec![
        heading("Mute this group"),
        plain_block(vec![json!({"type": "TextRun",
            "text": diagnosis::policy::silence_command(&alert.diagnosis),
            "fontType": "monospace", "size": "small"})]),
    ]
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
    for log in alert.safe_logs_within(caps.lists) {
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
    body.extend(mute_blocks(alert));
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
    let payload = render(alert);
    tracing::debug!(bytes = payload.len(), "teams payload rendered");
    let host = crate::egress::parse_url(url)?
        .host_str()
        .unwrap_or_default()
        .to_owned();
    egress.pace(&host, TEAMS_INTERVAL, deadline).await;
    egress.post_json(url, payload, deadline, None).await
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

    /// The links lists of Teams and Slack share one budget rule: logs in order, without query
    /// strings, until the first that does not fit.
    #[test]
    fn logs_are_listed_within_the_budget_in_order() {
        let mut alert = alert(0, "a");
        alert.links.logs = vec![
            "https://x.blob.core.windows.net/c/a.txt?sig=secret".into(),
            "C:\\logs\\bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.txt".into(),
            "/logs/c.txt".into(),
        ];
        let all: Vec<&str> = alert.safe_logs().collect();
        assert_eq!(all[0], "https://x.blob.core.windows.net/c/a.txt");
        assert_eq!(alert.safe_logs_within(usize::MAX).count(), 3);
        // The second does not fit, so the third, which would, is not listed either.
        let first = all[0].len();
        let within: Vec<&str> = alert.safe_logs_within(first + 20).collect();
        assert_eq!(within, vec![all[0]]);
        assert_eq!(alert.safe_logs_within(first - 1).count(), 0);
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
    fn a_resolved_group_is_a_green_card_marked_resolved() {
        let mut resolved = alert(100, "x");
        resolved.state = AlertState::Resolved;
        let card: Value = serde_json::from_slice(&render(&resolved)).unwrap();
        let banner = &card["attachments"][0]["content"]["body"][0];
        assert_eq!(banner["text"], "batch-triage · RESOLVED");
        assert_eq!(banner["color"], "good");
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
    fn the_card_ends_with_the_command_that_mutes_the_group_and_resolved_has_none() {
        let mut alert = alert(10, "x");
        alert.diagnosis.subject.job_id = Some("etl'; rm -rf ~ #[x](https://evil)".into());
        let card: Value = serde_json::from_slice(&render(&alert)).unwrap();
        let body = card["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        let last = &body[body.len() - 1];
        assert_eq!(body[body.len() - 2]["text"], "Mute this group");
        assert_eq!(last["type"], "RichTextBlock");
        let command = last["inlines"][0]["text"].as_str().unwrap();
        assert_eq!(
            command,
            diagnosis::policy::silence_command(&alert.diagnosis)
        );
        assert!(
            command.contains("--match 'job=etl???rm?-rf?????x??https://evil?'"),
            "{command}"
        );
        alert.state = AlertState::Resolved;
        let card = String::from_utf8(render(&alert)).unwrap();
        assert!(!card.contains("silence add"), "{card}");
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
