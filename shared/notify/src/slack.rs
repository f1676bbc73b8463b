//! Slack through an incoming webhook: Block Kit blocks with the same facts as the Teams card,
//! within the same byte budget ([`crate::teams::MAX_PAYLOAD_BYTES`]) and within Slack's own
//! per-block limits (a header's 150 characters, a section's 3,000, ten fields of 2,000, a
//! button's 75 and its URL's 3,000, 50 blocks).
//!
//! # Untrusted text
//! Slack's mrkdwn is as injectable as Teams markdown: `<!channel>` notifies a whole channel,
//! `<https://evil.example|click>` is a link, `*`, `_`, `~` and backticks format. So:
//! - ids, Batch messages, stderr, policy names and log names go only into `plain_text` objects
//!   (`emoji: false`), which Slack never reads as mrkdwn;
//! - `&`, `<` and `>` are escaped (`&amp;`, `&lt;`, `&gt;`) in every text, the notification
//!   fallback `text` included, so no control sequence survives even where Slack parses them;
//! - mrkdwn objects hold only our own constant words (section headings);
//! - link previews are off (`unfurl_links`, `unfurl_media`), so a hostile URL fetches nothing.
//!
//! The byte budget is the Teams card's: the same caps, shrunk in the same order until the
//! payload fits.

use foundation::{Deadline, Secret};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::alert::{Alert, AlertState};
use crate::egress::{Delivery, Egress};
use crate::error::NotifyError;
use crate::teams::{Caps, fit, pre_trim};
use crate::text::{CUT, keep_end, keep_start};

/// Slack's limit on a header block's text, in characters.
pub const MAX_HEADER: usize = 150;
/// Slack's limit on a section's text, in characters.
pub const MAX_SECTION: usize = 3000;
/// Slack's limit on one section field's text, in characters.
pub const MAX_FIELD: usize = 2000;
/// Slack's limit on the fields of one section.
pub const MAX_FIELDS: usize = 10;
/// Slack's limit on a button's text, in characters.
pub const MAX_BUTTON_TEXT: usize = 75;
/// Slack's limit on a button's URL, in characters.
pub const MAX_BUTTON_URL: usize = 3000;
/// Slack's limit on the blocks of one message.
pub const MAX_BLOCKS: usize = 50;

/// The spacing between posts to one webhook: Slack allows about one message a second each.
pub const SLACK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Escapes the three characters Slack reads as control sequences, keeping the result within
/// `max` bytes (the cut marker included) without splitting a character or an entity.
pub fn escape(text: &str, max: usize) -> String {
    let piece = |c: char| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    };
    let escaped_len: usize = text
        .chars()
        .map(|c| piece(c).map_or(c.len_utf8(), str::len))
        .sum();
    // Whole when it fits; else as much as fits beside the cut marker.
    let room = if escaped_len <= max {
        max
    } else {
        max.saturating_sub(CUT.len())
    };
    let mut out = String::with_capacity(room.min(escaped_len));
    for c in text.chars() {
        let mut buf = [0u8; 4];
        let next = piece(c).unwrap_or_else(|| c.encode_utf8(&mut buf));
        if out.len() + next.len() > room {
            break;
        }
        out.push_str(next);
    }
    if escaped_len > max && max >= CUT.len() {
        out.push_str(CUT);
    }
    out
}

/// A `plain_text` object of untrusted text: escaped, bounded, never mrkdwn, no emoji codes.
fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": escape(text, max), "emoji": false})
}

/// A section of untrusted text.
fn text_section(text: &str, max: usize) -> Value {
    json!({"type": "section", "text": plain(text, max.min(MAX_SECTION))})
}

/// A bold heading: only ever our own constant words, so it may be mrkdwn.
fn heading(text: &'static str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{text}*")}})
}

/// Renders the webhook payload for an alert, always within
/// [`MAX_PAYLOAD_BYTES`](crate::teams::MAX_PAYLOAD_BYTES).
pub fn render(alert: &Alert) -> Vec<u8> {
    let alert = &pre_trim(alert);
    fit(
        |caps| message(alert, caps),
        || json!({"text": "batch-triage alert (content too large)"}),
    )
}

/// The message with every field under `caps`.
fn message(alert: &Alert, caps: Caps) -> Value {
    let d = &alert.diagnosis;
    let redact = diagnosis::redact::redact;
    let (mark, state) = match alert.state {
        AlertState::Resolved => ("✅", "RESOLVED".to_owned()),
        AlertState::Repeat => (
            severity_mark(d.severity.as_str()),
            format!("{} (still failing)", d.severity.as_str().to_uppercase()),
        ),
        AlertState::Firing => (
            severity_mark(d.severity.as_str()),
            d.severity.as_str().to_uppercase(),
        ),
    };
    // Our own words and the class name (a fixed vocabulary): the header may show emoji.
    let header = keep_start(
        &format!("{mark} batch-triage · {state} · {}", d.class.as_str()),
        MAX_HEADER,
    );
    let title = format!("{} · {}", d.class.as_str(), alert.headline());
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        text_section(&title, caps.summary.max(80)),
        text_section(&redact(&d.summary), caps.summary),
    ];
    let facts: Vec<Value> = alert
        .facts()
        .into_iter()
        .map(|(label, value)| {
            plain(
                &format!("{label}: {value}"),
                (label.len() + 2 + caps.fact).min(MAX_FIELD),
            )
        })
        .collect();
    for chunk in facts.chunks(MAX_FIELDS) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    if caps.cause > 0 && !d.cause.is_empty() {
        blocks.push(heading("Cause"));
        blocks.push(text_section(&redact(&d.cause), caps.cause));
    }
    if caps.hints > 0 && !d.hints.is_empty() {
        blocks.push(heading("What to do"));
        let hints: Vec<String> = d.hints.iter().map(|h| format!("• {}", redact(h))).collect();
        blocks.push(text_section(&hints.join("\n"), caps.hints));
    }
    if let Some(tail) = alert.safe_stderr_tail().filter(|_| caps.stderr > 0) {
        blocks.push(heading("stderr (tail, redacted)"));
        // The end says the most: cut from the front, then escape within the section's limit.
        let tail = keep_end(&tail, caps.stderr.min(MAX_SECTION));
        blocks.push(json!({"type": "section", "text": plain(&tail, MAX_SECTION)}));
    }
    links(alert, caps, &mut blocks);
    let footer = format!(
        "batch-triage · group {} · alert {}",
        alert.group.key,
        alert.idempotency_key()
    );
    blocks.push(json!({"type": "context", "elements": [plain(&footer, 300)]}));
    blocks.truncate(MAX_BLOCKS);
    // The notification line: escaped, and never read as mrkdwn.
    let fallback = escape(&format!("{state} · {title}"), 300);
    json!({
        "text": fallback,
        "mrkdwn": false,
        "unfurl_links": false,
        "unfurl_media": false,
        "blocks": blocks,
    })
}

/// The emoji in front of a severity: our own words.
fn severity_mark(severity: &str) -> &'static str {
    match severity {
        "critical" => "🔴",
        "error" => "🟠",
        "warning" => "🟡",
        _ => "🔵",
    }
}

/// Buttons for the first web links to the preserved logs and the portal; other logs (local
/// paths) as a plain list.
fn links(alert: &Alert, caps: Caps, blocks: &mut Vec<Value>) {
    let mut buttons = Vec::new();
    let mut other = Vec::new();
    for log in alert.safe_logs_within(caps.lists) {
        let web = crate::text::web_link(log).filter(|url| url.len() <= MAX_BUTTON_URL);
        if let Some(url) = web.filter(|_| buttons.len() < 3) {
            let name = log.rsplit('/').next().unwrap_or("logs");
            buttons.push(json!({"type": "button",
                "text": plain(&format!("Log: {name}"), MAX_BUTTON_TEXT), "url": url}));
        } else {
            other.push(log);
        }
    }
    if let Some(portal) = alert
        .safe_portal()
        .as_deref()
        .and_then(crate::text::web_link)
    {
        if portal.len() <= caps.lists.clamp(512, MAX_BUTTON_URL) {
            buttons.push(json!({"type": "button",
                "text": plain("Open job in Azure portal", MAX_BUTTON_TEXT), "url": portal}));
        }
    }
    if !other.is_empty() {
        blocks.push(heading("Preserved logs"));
        blocks.push(text_section(&other.join("\n"), caps.lists));
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
}

/// Posts the alert's blocks to an incoming webhook, paced to one post a second per webhook,
/// retrying throttling (429, honouring `Retry-After`), server errors and connection failures
/// within `deadline`. Slack answers `200 ok`; a refused payload is a 400 that is not retried.
pub async fn send(
    egress: &Egress,
    url: &Secret,
    alert: &Alert,
    deadline: Deadline,
) -> Result<Delivery, NotifyError> {
    let payload = render(alert);
    tracing::debug!(bytes = payload.len(), "slack payload rendered");
    // Slack limits each webhook, not the host: pace by the URL's digest (never the URL itself,
    // which is the credential).
    let pace_key = format!(
        "slack:{}",
        hex::encode(&Sha256::digest(url.expose().as_bytes())[..8])
    );
    egress.pace(&pace_key, SLACK_INTERVAL, deadline).await;
    egress.post_json(url, payload, deadline, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_is_bounded_and_never_splits_an_entity() {
        assert_eq!(
            escape("<!channel> & *x*", 100),
            "&lt;!channel&gt; &amp; *x*"
        );
        for max in 0..40 {
            let out = escape("a<b>&é😀<<<", max);
            assert!(out.len() <= max, "{max}: {out}");
            let unescaped = out
                .replace("&amp;", "")
                .replace("&lt;", "")
                .replace("&gt;", "");
            assert!(!unescaped.contains(['<', '>', '&']), "{max}: {out}");
        }
    }
}
