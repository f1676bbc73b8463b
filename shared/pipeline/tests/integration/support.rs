//! What most of these tests build: the pipeline over the emulator's well-known account.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifact_store::ArtifactStore;
use batch_client::{BatchClient, BatchConfig, Secret};
use batch_emulator::{WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use diagnosis::policy::Policy;
use notify::{Allowlist, Egress, ReceiverConfig, RetryPolicy};
use pipeline::triage::{Triage, TriageConfig};
use preserve::PreserveOptions;

/// The pipeline over the well-known account of the emulator at `batch_url`, on `store`, with
/// `policy` and its receivers' URLs and secrets from `env`, egress allowed to loopback only.
pub(crate) fn single_account(
    batch_url: &str,
    store: Arc<dyn ArtifactStore>,
    policy: Policy,
    env: &BTreeMap<&str, String>,
    preserve: PreserveOptions,
) -> Triage {
    let receivers = policy
        .receivers
        .iter()
        .map(|r| {
            let receiver = ReceiverConfig::from_policy(r)
                .unwrap()
                .resolve(|name| env.get(name).cloned())
                .unwrap();
            (r.name.clone(), receiver)
        })
        .collect();
    let batch = BatchClient::new(
        BatchConfig::shared_key(
            batch_url,
            WELL_KNOWN_ACCOUNT_NAME,
            Secret::new(WELL_KNOWN_ACCOUNT_KEY),
        )
        .unwrap(),
    )
    .unwrap();
    let egress = Egress::new(
        Allowlist::default().allow_loopback(),
        RetryPolicy::standard(),
    )
    .unwrap();
    Triage::new(
        TriageConfig {
            account: WELL_KNOWN_ACCOUNT_NAME.to_owned(),
            preserve,
            action_call_timeout: Duration::from_secs(30),
        },
        Arc::new(batch),
        store,
        Arc::new(policy),
        receivers,
        egress,
    )
}
