//! Microsoft Teams through a Workflows webhook: the `message` envelope carrying an Adaptive Card
//! 1.4 (PEERS §1.7), byte-budgeted so the whole payload always fits in Teams' 28 KB limit.
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

use batch_client::{Deadline, Secret};
use serde_json::{Value, json};

use crate::alert::{Alert, AlertState};
use crate::egress::{Delivery, Egress};
use crate::error::NotifyError;
use crate::text::{keep_end, keep_start};

/// Teams refuses messages over 28 KB; we stay under 28,000 bytes so either reading of "KB" holds.
pub const MAX_PAYLOAD_BYTES: usize = 28_000;

/// Picks one cap out of [`Caps`].
type Field = fn(&mut Caps) -> &mut usize;

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

/// A wrapped text block.
fn text_block(text: &str) -> Value {
    json!({"type": "TextBlock", "text": text, "wrap": true})
}

/// A bold section heading.
fn heading(text: &str) -> Value {
    json!({"type": "TextBlock", "text": text, "weight": "bolder", "wrap": true, "spacing": "medium"})
}

/// The card itself, with every field under `caps`.
fn card(alert: &Alert, caps: Caps) -> Value {
    let d = &alert.diagnosis;
    let color = match (alert.state, d.severity.as_str()) {
        (AlertState::Resolved, _) => "good",
        (_, "critical" | "error") => "attention",
        (_, "warning") => "warning",
        _ => "default",
    };
    let title = match alert.state {
        AlertState::Resolved => format!("RESOLVED · {} · {}", d.class.as_str(), alert.headline()),
        AlertState::Repeat => format!(
            "{} (still failing) · {} · {}",
            d.severity.as_str().to_uppercase(),
            d.class.as_str(),
            alert.headline()
        ),
        AlertState::Firing => format!(
            "{} · {} · {}",
            d.severity.as_str().to_uppercase(),
            d.class.as_str(),
            alert.headline()
        ),
    };
    let mut body = vec![
        json!({"type": "TextBlock", "text": keep_start(&title, caps.summary.max(80)), "weight": "bolder",
               "size": "medium", "color": color, "wrap": true}),
        text_block(&keep_start(
            &diagnosis::redact::redact(&d.summary),
            caps.summary,
        )),
    ];
    let facts: Vec<Value> = alert
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"title": label, "value": keep_start(&value, caps.fact)}))
        .collect();
    body.push(json!({"type": "FactSet", "facts": facts}));
    if caps.cause > 0 && !d.cause.is_empty() {
        body.push(heading("Cause"));
        body.push(text_block(&keep_start(
            &diagnosis::redact::redact(&d.cause),
            caps.cause,
        )));
    }
    if caps.hints > 0 && !d.hints.is_empty() {
        let hints = d
            .hints
            .iter()
            .map(|h| format!("- {}", diagnosis::redact::redact(h)))
            .collect::<Vec<_>>()
            .join("\n");
        body.push(heading("What to do"));
        body.push(text_block(&keep_start(&hints, caps.hints)));
    }
    if let Some(tail) = alert.safe_stderr_tail().filter(|_| caps.stderr > 0) {
        body.push(heading("stderr (tail, redacted)"));
        body.push(
            json!({"type": "TextBlock", "text": keep_end(&tail, caps.stderr),
                         "fontType": "monospace", "wrap": true, "size": "small"}),
        );
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
        body.push(text_block(&other_logs.join("\n\n")));
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
        "fallbackText": keep_start(&title, 300),
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    card
}

/// Posts the alert's card to a Workflows trigger URL, retrying throttling (429, honouring
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
