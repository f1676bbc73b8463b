//! PagerDuty Events API v2 against a loopback receiver that checks the documented request
//! shape: `trigger` and `resolve` on one `dedup_key`, severity mapped, summary within 1,024
//! characters, retries like the other channels, the allowlist, and the routing key kept secret.

use notify::config::ReceiverConfig;
use notify::{AlertState, Allowlist, Egress, NotifyError};
use serde_json::Value;

use crate::support::{
    Receiver, Recorded, SECRETS, deadline, hostile_alert, local_egress, logs, quick_policy,
    sample_alert,
};

/// The routing key planted in these tests (32 characters, like PagerDuty's).
const ROUTING_KEY: &str = "PDROUTINGKEYSECRET00000000000000";

/// The Events API v2 request as documented: JSON, a 32-character routing key, a known action, a
/// `dedup_key` of at most 255 characters, and for a trigger a payload with `summary` (at most
/// 1,024 characters), `source` and one of the four severities; only the documented top-level
/// fields; under 512 KB.
fn check_event(request: &Recorded) -> Result<(), String> {
    if request.method != "POST" || request.path_and_query != "/v2/enqueue" {
        return Err(format!("{} {}", request.method, request.path_and_query));
    }
    if request.header("content-type") != Some("application/json") {
        return Err("content-type is not application/json".into());
    }
    if request.body.len() > 512 * 1024 {
        return Err("event over 512 KB".into());
    }
    let event: Value = serde_json::from_slice(&request.body).map_err(|e| e.to_string())?;
    let object = event.as_object().ok_or("not an object")?;
    for key in object.keys() {
        let known = [
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!("unknown field {key}"));
        }
    }
    if event["routing_key"].as_str().map(str::len) != Some(32) {
        return Err("routing_key is not 32 characters".into());
    }
    let dedup = event["dedup_key"].as_str().ok_or("no dedup_key")?;
    if dedup.is_empty() || dedup.chars().count() > 255 {
        return Err("dedup_key length".into());
    }
    match event["event_action"].as_str() {
        Some("resolve" | "acknowledge") => Ok(()),
        Some("trigger") => {
            let payload = &event["payload"];
            let summary = payload["summary"].as_str().ok_or("no summary")?;
            if summary.is_empty() || summary.chars().count() > 1024 {
                return Err("summary length".into());
            }
            if payload["source"].as_str().is_none_or(str::is_empty) {
                return Err("no source".into());
            }
            let severity = payload["severity"].as_str().unwrap_or_default();
            if !["critical", "error", "warning", "info"].contains(&severity) {
                return Err(format!("severity {severity:?}"));
            }
            if !payload["custom_details"].is_object() {
                return Err("custom_details is not an object".into());
            }
            for link in event["links"].as_array().into_iter().flatten() {
                if link["href"].as_str().is_none() {
                    return Err("a link without href".into());
                }
            }
            Ok(())
        }
        other => Err(format!("event_action {other:?}")),
    }
}

const ACCEPTED: &str = r#"{"status":"success","message":"Event processed","dedup_key":"k"}"#;

fn receiver(events_url: &str) -> notify::Receiver {
    let config: ReceiverConfig = serde_json::from_value(serde_json::json!({
        "name": "oncall", "kind": "pagerduty", "routing_key_env": "PD_KEY",
        "events_url": events_url,
    }))
    .unwrap();
    config
        .resolve(|var| (var == "PD_KEY").then(|| ROUTING_KEY.to_owned()))
        .unwrap()
}

/// The receiver's enqueue URL: its origin and `/v2/enqueue`.
fn enqueue_url(server: &Receiver) -> String {
    let origin = server.url.split("/workflows").next().unwrap();
    format!("{origin}/v2/enqueue")
}

fn event(request: &Recorded) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn trigger_repeat_and_resolve_land_on_one_incident() {
    let server = Receiver::start_checked(vec![], check_event, ACCEPTED).await;
    let receiver = receiver(&enqueue_url(&server));
    assert!(
        receiver.send_resolved,
        "pagerduty sends resolved by default"
    );
    let mut alert = sample_alert();
    for (state, sequence) in [
        (AlertState::Firing, 0),
        (AlertState::Repeat, 1),
        (AlertState::Resolved, 2),
    ] {
        alert.state = state;
        alert.sequence = sequence;
        let delivery = notify::send(&local_egress(), &receiver, &alert, deadline())
            .await
            .unwrap();
        assert_eq!(delivery.status, 202);
    }
    assert_eq!(server.refusals(), Vec::<String>::new());
    let events: Vec<Value> = server.requests().iter().map(event).collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "resolve"]);
    let keys: Vec<&str> = events
        .iter()
        .map(|e| e["dedup_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [alert.group.key.as_str(); 3]);

    let trigger = &events[0];
    let payload = &trigger["payload"];
    assert_eq!(payload["severity"], alert.diagnosis.severity.as_str());
    assert_eq!(payload["class"], "task.exit_code");
    assert_eq!(payload["component"], "genomics");
    assert_eq!(payload["group"], "gpu-pool");
    assert!(
        payload["summary"]
            .as_str()
            .unwrap()
            .contains("task.exit_code")
    );
    let details = &payload["custom_details"];
    assert_eq!(details["count"], 4812);
    assert_eq!(details["diagnosis"]["exitCode"], 137);
    assert!(details["stderrTail"].as_str().unwrap().contains("Killed"));
    assert_eq!(
        trigger["links"][0]["href"],
        "https://logs.blob.core.windows.net/batch-triage/genomics/t-17/stderr.txt"
    );
    assert!(
        events[1]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("still failing")
    );
    let text = String::from_utf8(server.requests()[0].body.clone()).unwrap();
    for secret in ["SASSECRETSIG123", "LINKSECRET"] {
        assert!(!text.contains(secret), "{secret} in the event");
    }
}

#[tokio::test]
async fn hostile_and_huge_alerts_keep_the_documented_shape() {
    let server = Receiver::start_checked(vec![], check_event, ACCEPTED).await;
    let receiver = receiver(&enqueue_url(&server));
    for size in [10, 5_000, 400_000] {
        let alert = hostile_alert(size);
        notify::send(&local_egress(), &receiver, &alert, deadline())
            .await
            .unwrap();
    }
    assert_eq!(server.refusals(), Vec::<String>::new());
    for request in server.requests() {
        let event = event(&request);
        let summary = event["payload"]["summary"].as_str().unwrap();
        assert!(!summary.contains(['\n', '\r', '\u{1b}']), "{summary:?}");
        assert!(
            event["dedup_key"]
                .as_str()
                .unwrap()
                .starts_with("batch-triage:")
        );
    }
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_and_bad_requests_are_not() {
    let server = Receiver::start_checked(
        vec![(429, vec![("retry-after", "0".into())]), (503, vec![])],
        check_event,
        ACCEPTED,
    )
    .await;
    let oncall = receiver(&enqueue_url(&server));
    let delivery = notify::send(&local_egress(), &oncall, &sample_alert(), deadline())
        .await
        .unwrap();
    assert_eq!((delivery.status, delivery.attempts), (202, 3));

    // A refused event (here: the receiver echoes the whole request, routing key included, as
    // PagerDuty quotes invalid fields) is not retried, and the key is in no error or log.
    let echo = Receiver::start_checked(
        vec![],
        |request| {
            let event: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            Err(format!(
                "{{\"status\":\"invalid event\",\"errors\":[\"routing_key {} is not an integration key\"]}}",
                event["routing_key"].as_str().unwrap_or_default()
            ))
        },
        ACCEPTED,
    )
    .await;
    let logs = logs();
    let error = notify::send(
        &local_egress(),
        &receiver(&enqueue_url(&echo)),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, NotifyError::Status { status: 400, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(echo.requests().len(), 1);
    let shown = format!("{error} {error:?} {:?}", receiver(&enqueue_url(&echo)));
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        assert!(!logged.contains(secret), "{secret} leaked into the logs");
    }
    assert!(
        shown.contains("[REDACTED]"),
        "the echo was scrubbed: {shown}"
    );
}

#[tokio::test]
async fn the_allowlist_applies_before_any_connection() {
    let server = Receiver::start_checked(vec![], check_event, ACCEPTED).await;
    let strict = Egress::new(Allowlist::default(), quick_policy()).unwrap();
    let receiver = receiver(&enqueue_url(&server));
    let error = notify::send(&strict, &receiver, &sample_alert(), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::HostNotAllowed { .. }),
        "{error:?}"
    );
    assert!(server.requests().is_empty());
    assert!(receiver.check_destination(&Allowlist::default()).is_err());

    // The default destination is allowed by default; a private one written in the policy is
    // refused when the configuration is checked, before any secret is read.
    let default: ReceiverConfig = serde_json::from_value(serde_json::json!({
        "name": "oncall", "kind": "pagerduty", "routing_key_env": "PD_KEY"
    }))
    .unwrap();
    default
        .resolve(|_| Some(ROUTING_KEY.into()))
        .unwrap()
        .check_destination(&Allowlist::default())
        .unwrap();
    let private: ReceiverConfig = serde_json::from_value(serde_json::json!({
        "name": "oncall", "kind": "pagerduty", "routing_key_env": "PD_KEY",
        "events_url": "https://10.0.0.7/v2/enqueue"
    }))
    .unwrap();
    assert!(matches!(
        private.check_destination(&Allowlist::default()),
        Err(NotifyError::HostNotAllowed { .. })
    ));
}
