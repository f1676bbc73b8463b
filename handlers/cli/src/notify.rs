//! `batch-triage notify --test RECEIVER`: sends a realistic sample alert to one receiver of the
//! policy, so a new Teams workflow, mailbox or webhook can be checked before a real failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use diagnosis::policy::Policy;
use notify::{
    Alert, AlertState, Allowlist, Deadline, Egress, Group, Links, ReceiverConfig, RetryPolicy,
};

pub(crate) const EXAMPLES: &str = "\
Examples:
  export TEAMS_WEBHOOK_URL='https://prod-00.westeurope.logic.azure.com/workflows/...'
  batch-triage notify --test ops-teams --policy policy.toml
  batch-triage notify --test siem --policy policy.toml --allow-host hooks.example.com

Receivers are the policy's [[receivers]] entries; secrets come from the environment variables
they name (url_env, password_env, access_key_env, secret_env). Destinations must be on the
allowlist: Teams Workflows / Logic Apps / Power Platform and ACS hosts by default.";

/// Arguments of `notify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Send a sample alert to this receiver (its `name` in the policy).
    #[arg(long = "test", value_name = "RECEIVER")]
    receiver: String,

    /// The policy file (TOML) that defines the receivers.
    #[arg(
        long,
        value_name = "FILE",
        env = "BATCH_TRIAGE_POLICY",
        default_value = "policy.toml"
    )]
    policy: PathBuf,

    /// Also allow this destination host (exact, or `*.suffix`); repeatable.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    allow_hosts: Vec<String>,

    /// Allow loopback destinations over plain http (local test receivers only).
    #[arg(long)]
    allow_loopback: bool,

    /// Give up after this many seconds (retries included).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read --policy {}", args.policy.display()))?;
    let policy = Policy::parse(&text)
        .map_err(|errors| anyhow::anyhow!("{}: {errors}", args.policy.display()))?;
    let entry = policy.receiver(&args.receiver).with_context(|| {
        let names: Vec<&str> = policy.receivers.iter().map(|r| r.name.as_str()).collect();
        format!(
            "no receiver {:?} in {} (receivers: {})",
            args.receiver,
            args.policy.display(),
            names.join(", ")
        )
    })?;
    let receiver = ReceiverConfig::from_policy(entry)?.resolve(|var| std::env::var(var).ok())?;
    let mut allowlist = Allowlist::default();
    for host in &args.allow_hosts {
        allowlist = allowlist.with(host);
    }
    if args.allow_loopback {
        allowlist = allowlist.allow_loopback();
    }
    let egress = Egress::new(allowlist, RetryPolicy::standard())?;
    let alert = sample_alert()?;
    let delivery = crate::runtime()?.block_on(notify::send(
        &egress,
        &receiver,
        &alert,
        Deadline::after(Duration::from_secs(args.timeout)),
    ));
    match delivery {
        Ok(delivery) => {
            println!(
                "sent a test alert to {:?} ({}): status {}, {} attempt(s), id {}",
                receiver.name,
                receiver.kind().as_str(),
                delivery.status,
                delivery.attempts,
                alert.idempotency_key()
            );
            if let Some(location) = delivery.operation_location {
                println!("  operation: {location}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let verdict = if error.is_retryable() {
                "retryable"
            } else {
                "not retryable"
            };
            Err(anyhow::anyhow!(
                "sending to {:?} failed ({verdict}): {error}",
                receiver.name
            ))
        }
    }
}

/// A realistic alert: an out-of-memory task failing across a job, grouped. Its group key
/// includes the current time, so every test run is a new message (ACS would otherwise treat a
/// second run as a retry of the first).
fn sample_alert() -> anyhow::Result<Alert> {
    let task = br#"{"id": "align-0017", "url": "https://contoso.westeurope.batch.azure.com/jobs/genomics-nightly/tasks/align-0017",
      "state": "completed", "commandLine": "/bin/bash -c 'python align.py --threads 16'",
      "executionInfo": {"exitCode": 137, "result": "failure", "retryCount": 2, "requeueCount": 0,
        "failureInfo": {"category": "UserError", "code": "FailureExitCode",
          "message": "The task process exited with an unexpected exit code"}},
      "nodeInfo": {"poolId": "hpc-pool", "nodeId": "tvmps_0a1b2c3d"}}"#;
    let mut found = Vec::new();
    diagnosis::payload::read_slice(task, &mut |item| {
        found.extend(diagnosis::diagnose_item(
            &item,
            &diagnosis::Evidence::default(),
        ));
    })
    .context("the sample task does not parse")?;
    let diagnosis = found.pop().context("the sample task gave no diagnosis")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Ok(Alert {
        group: Group {
            key: format!("test/{now}/{}", diagnosis.fingerprint),
            count: 12,
            examples: vec![
                "align-0017".into(),
                "align-0018".into(),
                "align-0042".into(),
            ],
            ..Group::default()
        },
        stderr_tail: Some(
            "Loading reference genome (3.1 GB)...\nAllocating index buffers\n\
             numpy.core._exceptions._ArrayMemoryError: Unable to allocate 12.0 GiB for an array\n\
             Killed\n"
                .into(),
        ),
        links: Links::new(["genomics-nightly/align-0017/2/stderr.txt"], None),
        rule: Some("batch-triage notify --test".into()),
        state: AlertState::Firing,
        sequence: 0,
        diagnosis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(policy: PathBuf, receiver: &str) -> Args {
        Args {
            receiver: receiver.into(),
            policy,
            allow_hosts: vec![],
            allow_loopback: false,
            timeout: 5,
        }
    }

    #[test]
    fn the_sample_alert_renders_on_every_channel() {
        let alert = sample_alert().unwrap();
        assert_eq!(alert.diagnosis.class.as_str(), "task.exit_code");
        assert!(notify::teams::render(&alert).len() <= notify::teams::MAX_PAYLOAD_BYTES);
        let email = notify::email::render(&alert);
        assert!(
            email.subject.contains("job genomics-nightly (12 tasks)"),
            "{}",
            email.subject
        );
    }

    #[test]
    fn unknown_receivers_and_missing_secrets_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[[receivers]]\nname = \"ops\"\nkind = \"teams\"\nurl_env = \"BATCH_TRIAGE_TEST_UNSET_URL\"\n",
        )
        .unwrap();
        let error = run(&args(policy.clone(), "nope")).unwrap_err().to_string();
        assert!(
            error.contains("no receiver \"nope\"") && error.contains("ops"),
            "{error}"
        );
        let error = run(&args(policy, "ops")).unwrap_err().to_string();
        assert!(error.contains("BATCH_TRIAGE_TEST_UNSET_URL"), "{error}");
    }
}
