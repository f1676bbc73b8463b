//! Slack incoming webhooks against a loopback receiver that checks Block Kit's documented
//! limits; hostile text is inert (only in `plain_text`, `&<>` escaped); the byte budget holds
//! for every size and alphabet; retries and the allowlist as for the other channels.

use notify::config::ReceiverConfig;
use notify::{AlertState, Allowlist, Egress, NotifyError, Secret};
use serde_json::Value;

use crate::support::{
    HOSTILE, Receiver, Recorded, deadline, hostile_alert, local_egress, quick_policy, sample_alert,
};

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

/// A text object: `plain_text` or `mrkdwn`, with text within `max` characters.
fn check_text(object: &Value, max: usize, what: &str) -> Result<(), String> {
    match object["type"].as_str() {
        Some("plain_text" | "mrkdwn") if object["text"].is_string() => {}
        other => return Err(format!("{what}: text object of type {other:?}")),
    }
    if chars(&object["text"]) > max {
        return Err(format!(
            "{what}: {} characters > {max}",
            chars(&object["text"])
        ));
    }
    Ok(())
}

/// The incoming-webhook request as documented: JSON, a `text` fallback, at most 50 blocks of
/// known types, each within its limits (header 150 plain-text characters; section text 3,000,
/// at most 10 fields of 2,000; context at most 10 elements; buttons 75 characters of plain
/// text and a URL of at most 3,000).
fn check_message(request: &Recorded) -> Result<(), String> {
    if request.method != "POST" {
        return Err(request.method.clone());
    }
    if request.header("content-type") != Some("application/json") {
        return Err("content-type is not application/json".into());
    }
    let message: Value = serde_json::from_slice(&request.body).map_err(|e| e.to_string())?;
    if !message["text"].is_string() {
        return Err("no text fallback".into());
    }
    let blocks = message["blocks"].as_array().ok_or("no blocks")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    for block in blocks {
        match block["type"].as_str() {
            Some("header") => {
                check_text(&block["text"], 150, "header")?;
                if block["text"]["type"] != "plain_text" {
                    return Err("header text must be plain_text".into());
                }
            }
            Some("section") => {
                if !block["text"].is_null() {
                    check_text(&block["text"], 3000, "section")?;
                }
                if let Some(fields) = block["fields"].as_array() {
                    if fields.len() > 10 {
                        return Err(format!("{} fields", fields.len()));
                    }
                    for field in fields {
                        check_text(field, 2000, "field")?;
                    }
                } else if block["text"].is_null() {
                    return Err("a section with neither text nor fields".into());
                }
            }
            Some("context") => {
                let elements = block["elements"].as_array().ok_or("context elements")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err("context element count".into());
                }
                for element in elements {
                    check_text(element, 3000, "context")?;
                }
            }
            Some("actions") => {
                let elements = block["elements"].as_array().ok_or("actions elements")?;
                if elements.is_empty() || elements.len() > 25 {
                    return Err("actions element count".into());
                }
                for button in elements {
                    if button["type"] != "button" || button["text"]["type"] != "plain_text" {
                        return Err("an action that is not a plain-text button".into());
                    }
                    check_text(&button["text"], 75, "button")?;
                    if chars(&button["url"]) > 3000 {
                        return Err("button url over 3,000 characters".into());
                    }
                }
            }
            other => return Err(format!("block type {other:?}")),
        }
    }
    Ok(())
}

fn receiver(url: &str) -> notify::Receiver {
    let config: ReceiverConfig = serde_json::from_value(serde_json::json!({
        "name": "ops-slack", "kind": "slack", "url_env": "SLACK_URL", "send_resolved": true
    }))
    .unwrap();
    config
        .resolve(|var| (var == "SLACK_URL").then(|| url.to_owned()))
        .unwrap()
}

/// Every string in `value` containing `marker`, with the `type` of the object holding it and
/// its key.
fn strings_with(
    value: &Value,
    marker: &str,
    kind: &str,
    key: &str,
    found: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(text) if text.contains(marker) => found.push((kind.into(), key.into())),
        Value::Array(items) => items
            .iter()
            .for_each(|item| strings_with(item, marker, kind, key, found)),
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
            for (k, v) in map {
                strings_with(v, marker, kind, k, found);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn messages_keep_the_documented_shape_and_the_cards_facts() {
    let server = Receiver::start_checked(vec![], check_message, "ok").await;
    let receiver = receiver(&server.url);
    assert!(receiver.send_resolved);
    let mut alert = sample_alert();
    notify::send(&local_egress(), &receiver, &alert, deadline())
        .await
        .unwrap();
    alert.state = AlertState::Resolved;
    notify::send(&local_egress(), &receiver, &alert, deadline())
        .await
        .unwrap();
    assert_eq!(server.refusals(), Vec::<String>::new());
    let requests = server.requests();
    let firing = String::from_utf8(requests[0].body.clone()).unwrap();
    for fact in [
        "Job: genomics",
        "Task: t-17",
        "Exit code: 137",
        "Affected: 4,812 tasks, same cause",
        "Rule: oom-critical",
        "MemoryError &lt;&amp;&gt;",
        "Log: stderr.txt",
    ] {
        assert!(firing.contains(fact), "{fact} missing: {firing}");
    }
    for secret in ["SASSECRETSIG123", "LINKSECRET"] {
        assert!(!firing.contains(secret), "{secret} in the message");
    }
    let resolved: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert!(
        resolved["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("RESOLVED")
    );
}

#[tokio::test]
async fn hostile_text_is_inert_and_every_size_fits() {
    let server = Receiver::start_checked(vec![], check_message, "ok").await;
    let receiver = receiver(&server.url);
    let egress = Egress::new(Allowlist::new([]).allow_loopback(), quick_policy()).unwrap();
    for size in [10, 3_000, 40_000, 400_000] {
        notify::send(&egress, &receiver, &hostile_alert(size), deadline())
            .await
            .unwrap();
    }
    assert_eq!(server.refusals(), Vec::<String>::new());
    for request in server.requests() {
        assert!(request.body.len() <= notify::teams::MAX_PAYLOAD_BYTES);
        let message: Value = serde_json::from_slice(&request.body).unwrap();
        let mut found = Vec::new();
        strings_with(&message, "HOSTILE", "", "", &mut found);
        assert!(found.len() >= 8, "{found:?}");
        for (kind, key) in &found {
            // Untrusted text only as plain text, as the fallback Slack is told not to format,
            // or percent-encoded in a button's URL.
            assert!(
                (key == "text" && (kind == "plain_text" || kind.is_empty()))
                    || (kind == "button" && key == "url"),
                "untrusted text in {kind}.{key}"
            );
        }
        assert_eq!(message["mrkdwn"], false);
        let text = String::from_utf8(request.body.clone()).unwrap();
        assert!(!text.contains("<!channel>") && !text.contains("<https://evil"));
        // Every `<`, `>` and `&` is an entity: none is left raw in any string.
        for block in message["blocks"].as_array().unwrap() {
            for text in block
                .to_string()
                .split('"')
                .filter(|s| s.contains("HOSTILE"))
            {
                let rest = text
                    .replace("&amp;", "")
                    .replace("&lt;", "")
                    .replace("&gt;", "");
                assert!(!rest.contains(['<', '>', '&']), "raw markup in {text}");
            }
        }
    }
    // Every alphabet fits the budget too.
    for filler in ["é", "😀", "\"", "<&>", "a\\b\n"] {
        let mut alert = hostile_alert(10);
        alert.stderr_tail = Some(filler.repeat(300_000 / filler.len()));
        alert.diagnosis.cause = filler.repeat(100_000 / filler.len());
        let payload = notify::slack::render(&alert);
        assert!(
            payload.len() <= notify::teams::MAX_PAYLOAD_BYTES,
            "{filler:?}"
        );
        serde_json::from_slice::<Value>(&payload).unwrap();
    }
    assert!(HOSTILE.contains("<!channel>"));
}

#[tokio::test]
async fn throttling_is_retried_and_the_allowlist_applies() {
    let server = Receiver::start_checked(
        vec![(429, vec![("retry-after", "0".into())]), (200, vec![])],
        check_message,
        "ok",
    )
    .await;
    let delivery = notify::send(
        &local_egress(),
        &receiver(&server.url),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!((delivery.status, delivery.attempts), (200, 2));

    let strict = Egress::new(Allowlist::default(), quick_policy()).unwrap();
    let error = notify::slack::send(
        &strict,
        &Secret::new(server.url.clone()),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, NotifyError::HostNotAllowed { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("TOPSECRETSIG"));
    assert_eq!(
        server.requests().len(),
        2,
        "the refused send never connected"
    );
    // Slack's own host is allowed by default.
    receiver("https://hooks.slack.com/services/T0/B0/XYZ")
        .check_destination(&Allowlist::default())
        .unwrap();
}
