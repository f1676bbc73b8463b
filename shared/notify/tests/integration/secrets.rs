//! Secrets (webhook URLs, keys, passwords, SAS tokens) never appear in Debug output, errors or
//! logs.

use notify::config::ReceiverConfig;
use notify::{NotifyError, Secret};

use crate::support::{Receiver, SECRETS, deadline, local_egress, logs, sample_alert};

#[tokio::test]
async fn secrets_stay_out_of_debug_errors_and_logs() {
    let logs = logs();
    let config: ReceiverConfig = serde_json::from_value(serde_json::json!({
        "name": "hook", "kind": "webhook", "url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"
    }))
    .unwrap();
    let missing = config.resolve(|_| None).unwrap_err();
    assert!(missing.to_string().contains("HOOK_URL"), "{missing}");

    let server = Receiver::start(vec![
        (500, vec![]),
        (
            302,
            vec![("location", "https://elsewhere/TOPSECRETSIG".into())],
        ),
    ])
    .await;
    let receiver = config
        .resolve(|var| match var {
            "HOOK_URL" => Some(server.url.clone()),
            "HOOK_SECRET" => Some("hook-key-s3cr3t".into()),
            _ => None,
        })
        .unwrap();
    let error = notify::send(&local_egress(), &receiver, &sample_alert(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(error, NotifyError::Redirected { .. }));

    // A connection failure to a secret URL: the error must not quote it.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = notify::webhook::send(
        &local_egress(),
        &Secret::new(format!("http://127.0.0.1:{dead}/hook?sig=TOPSECRETSIG")),
        &Secret::new("hook-key-s3cr3t"),
        &sample_alert(),
        notify::Deadline::after(std::time::Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    // A bad URL is reported without its text.
    let bad = notify::teams::send(
        &local_egress(),
        &Secret::new("not a url TOPSECRETSIG"),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();

    let rendered = [
        format!("{receiver:?}"),
        format!("{error:?} {error}"),
        format!("{bad:?} {bad}"),
        format!("{:?}", local_egress()),
    ];
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("delivery attempt failed"),
        "logs were captured: {logged}"
    );
    for secret in SECRETS {
        for text in &rendered {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        assert!(!logged.contains(secret), "{secret} leaked into the logs");
    }
}
