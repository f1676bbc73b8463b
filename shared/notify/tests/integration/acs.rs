//! ACS email: the HMAC-SHA256 signature verifies the way ACS checks it (in Python), the
//! `Operation-Id` is the alert's idempotency key on every attempt, and 202 + Operation-Location
//! is success.

use base64::Engine as _;
use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use notify::config::{AcsAuth, AcsTarget};
use notify::{NotifyError, Secret};

use crate::support::{Receiver, deadline, local_egress, python_check, sample_alert};

fn target(receiver: &Receiver, key: &str) -> AcsTarget {
    target_with(receiver, AcsAuth::Key(Secret::new(key)))
}

fn target_with(receiver: &Receiver, auth: AcsAuth) -> AcsTarget {
    let origin = receiver.url.split("/workflows").next().unwrap().to_owned();
    AcsTarget {
        endpoint: origin,
        auth,
        sender: "DoNotReply@contoso.azurecomm.net".into(),
        to: vec!["oncall@contoso.com".into()],
    }
}

#[tokio::test]
async fn signed_request_with_stable_operation_id() {
    let key = base64::engine::general_purpose::STANDARD.encode(b"acs-access-key-bytes-0123456789");
    let receiver = Receiver::start(vec![
        (503, vec![("retry-after", "0".into())]),
        (
            202,
            vec![(
                "operation-location",
                "http://127.0.0.1/emails/operations/x?api-version=2023-03-31".into(),
            )],
        ),
    ])
    .await;
    let alert = sample_alert();
    let delivery = notify::email::send_acs(
        &local_egress(),
        &target(&receiver, &key),
        &alert,
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!((delivery.status, delivery.attempts), (202, 2));
    assert_eq!(
        delivery.operation_location.as_deref(),
        Some("http://127.0.0.1/emails/operations/x")
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(
            request.path_and_query,
            "/emails:send?api-version=2023-03-31"
        );
        assert_eq!(
            request.header("operation-id"),
            Some(alert.idempotency_key().as_str())
        );
        let path = request.to_file(&dir, &format!("acs{i}.json"));
        python_check(&["acs".as_ref(), key.as_ref(), path.as_os_str()]);
    }
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["senderAddress"], "DoNotReply@contoso.azurecomm.net");
    assert_eq!(body["recipients"]["to"][0]["address"], "oncall@contoso.com");
    assert!(
        body["content"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("[ERROR] task.exit_code: job genomics (4,812 tasks)")
    );
    assert!(
        body["content"]["html"]
            .as_str()
            .unwrap()
            .contains("&lt;&amp;&gt; &quot;q&quot;")
    );
    assert!(
        body["content"]["plainText"]
            .as_str()
            .unwrap()
            .contains("<&> \"q\"")
    );

    // A wrong key does not verify.
    let path = requests[0].to_file(&dir, "wrong.json");
    let wrong = base64::engine::general_purpose::STANDARD.encode(b"another key");
    let output = std::process::Command::new(crate::support::python())
        .arg(crate::support::support_file("check.py"))
        .args(["acs".as_ref(), wrong.as_ref(), path.as_os_str()])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn unauthorized_is_final_and_a_bad_key_sends_nothing() {
    let key = base64::engine::general_purpose::STANDARD.encode(b"k");
    let receiver = Receiver::start(vec![(401, vec![])]).await;
    let error = notify::email::send_acs(
        &local_egress(),
        &target(&receiver, &key),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, NotifyError::Status { status: 401, .. }));
    assert!(!error.is_retryable());

    let receiver = Receiver::start(vec![]).await;
    let error = notify::email::send_acs(
        &local_egress(),
        &target(&receiver, "not base64 !!"),
        &sample_alert(),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, NotifyError::Config(_)));
    assert!(receiver.requests().is_empty());
}

/// An Entra credential that hands out a fixed token and checks the scope.
#[derive(Debug)]
struct StaticToken;

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, ["https://communication.azure.com/.default"]);
        Ok(AccessToken::new(
            "entra-token-123",
            time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(3600),
        ))
    }
}

#[tokio::test]
async fn entra_auth_sends_a_bearer_token() {
    let receiver = Receiver::start(vec![]).await;
    let target = target_with(&receiver, AcsAuth::Entra(Arc::new(StaticToken)));
    assert!(!format!("{target:?}").contains("entra-token"));
    let alert = sample_alert();
    notify::email::send_acs(&local_egress(), &target, &alert, deadline())
        .await
        .unwrap();
    let request = &receiver.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some("Bearer entra-token-123")
    );
    assert_eq!(
        request.header("operation-id"),
        Some(alert.idempotency_key().as_str())
    );
    assert!(request.header("x-ms-content-sha256").is_none());
}
