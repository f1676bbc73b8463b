//! The signed webhook: the signature verifies in Python, and the allowlist refuses hosts before
//! connecting.

use notify::{Allowlist, Egress, NotifyError, Secret};

use crate::support::{Receiver, deadline, local_egress, python_check, quick_policy, sample_alert};

#[tokio::test]
async fn signature_verifies_independently() {
    let receiver = Receiver::start(vec![(500, vec![])]).await;
    let alert = sample_alert();
    notify::webhook::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &Secret::new("hook-key-s3cr3t"),
        &alert,
        deadline(),
    )
    .await
    .unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "the 500 was retried");
    let dir = tempfile::tempdir().unwrap();
    for (i, request) in requests.iter().enumerate() {
        let path = request.to_file(&dir, &format!("req{i}.json"));
        python_check(&[
            "webhook".as_ref(),
            "hook-key-s3cr3t".as_ref(),
            path.as_os_str(),
        ]);
        assert_eq!(
            request.header("x-batch-triage-id"),
            Some(alert.idempotency_key().as_str())
        );
    }
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["group"]["count"], 4812);
    assert_eq!(body["diagnosis"]["class"], "task.exit_code");
    assert_eq!(
        body["links"]["logs"][0],
        "https://logs.blob.core.windows.net/batch-triage/genomics/t-17/stderr.txt"
    );
    let text = String::from_utf8(requests[0].body.clone()).unwrap();
    assert!(!text.contains("SASSECRETSIG123") && !text.contains("LINKSECRET"));

    // A tampered body does not verify.
    let mut tampered = requests[0].clone();
    tampered.body.push(b' ');
    let path = tampered.to_file(&dir, "tampered.json");
    let output = std::process::Command::new(crate::support::python())
        .arg(crate::support::support_file("check.py"))
        .args([
            "webhook".as_ref(),
            "hook-key-s3cr3t".as_ref(),
            path.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn hosts_off_the_allowlist_are_refused_before_connecting() {
    let receiver = Receiver::start(vec![]).await;
    // Loopback not allowed: refused, and the receiver saw nothing.
    let strict = Egress::new(Allowlist::default(), quick_policy()).unwrap();
    let error = notify::webhook::send(
        &strict,
        &Secret::new(receiver.url.clone()),
        &Secret::new("k"),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, NotifyError::HostNotAllowed { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(receiver.requests().is_empty());

    for url in [
        "https://example.com/hook",
        "http://prod.westeurope.logic.azure.com/x",
        "https://169.254.169.254/metadata",
        "https://10.1.2.3/hook",
        "https://[::ffff:192.168.0.1]/hook",
        // A public address is refused unless it is listed, like any host.
        "https://20.50.2.1/hook",
    ] {
        let error = notify::webhook::send(
            &strict,
            &Secret::new(url),
            &Secret::new("k"),
            &sample_alert(),
            deadline(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, NotifyError::HostNotAllowed { .. }),
            "{url}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_allowed_name_resolving_to_a_private_address_is_refused() {
    // `localhost` passes the pattern check, but the resolver refuses loopback addresses when
    // loopback is not allowed: a DNS name cannot smuggle a private address in.
    let receiver = Receiver::start(vec![]).await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let egress = Egress::new(Allowlist::new(["localhost"]), quick_policy()).unwrap();
    let error = notify::webhook::send(
        &egress,
        &Secret::new(format!("https://localhost:{port}/hook")),
        &Secret::new("k"),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, NotifyError::HostNotAllowed { .. }),
        "{error:?}"
    );
    assert!(receiver.requests().is_empty());
}
