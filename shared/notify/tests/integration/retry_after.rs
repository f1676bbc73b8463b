//! The wait a receiver asks for is honoured, in every form the shared parser knows: the retry
//! loop is `foundation`'s, so notify and the Batch client read `x-ms-retry-after-ms` and a
//! fractional `Retry-After` the same way.

use std::time::Duration;

use notify::{NotifyError, Secret};

use crate::support::{Receiver, deadline, local_egress, sample_alert};

async fn send(receiver: &Receiver) -> Result<notify::Delivery, NotifyError> {
    notify::webhook::send(
        &local_egress(),
        &Secret::new(receiver.url.clone()),
        &Secret::new("hook-key-s3cr3t"),
        &sample_alert(),
        deadline(),
    )
    .await
}

/// A wait longer than the time left is not shortened: the loop gives up after the one attempt
/// and says how long the receiver asked for (without honouring the header it would have retried
/// on its quick backoff, and the receiver would have seen every attempt).
async fn asks_too_long(status: u16, header: &'static str, value: &str, expected: Duration) {
    let receiver = Receiver::start(vec![(status, vec![(header, value.to_owned())])]).await;
    let error = send(&receiver).await.unwrap_err();
    let NotifyError::DeadlineExceeded { attempts, last } = &error else {
        panic!("{header}: {value}: {error:?}");
    };
    assert_eq!(*attempts, 1, "{header}: {value}");
    assert_eq!(last.retry_after(), Some(expected), "{header}: {value}");
    assert!(error.is_retryable(), "the outbox keeps it for later");
    assert_eq!(receiver.requests().len(), 1, "{header}: {value}");
}

#[tokio::test]
async fn x_ms_retry_after_ms_is_honoured() {
    asks_too_long(
        429,
        "x-ms-retry-after-ms",
        "600000",
        Duration::from_secs(600),
    )
    .await;
}

#[tokio::test]
async fn a_fractional_retry_after_is_honoured() {
    asks_too_long(503, "retry-after", "45.5", Duration::from_millis(45_500)).await;
}

#[tokio::test]
async fn short_waits_in_every_form_are_retried() {
    let receiver = Receiver::start(vec![
        (429, vec![("x-ms-retry-after-ms", "20".to_owned())]),
        (503, vec![("retry-after", "0.02".to_owned())]),
        (429, vec![("retry-after-ms", "20".to_owned())]),
    ])
    .await;
    let delivery = send(&receiver).await.unwrap();
    assert_eq!(delivery.attempts, 4);
    assert_eq!(receiver.requests().len(), 4);
}
