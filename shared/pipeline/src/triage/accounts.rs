//! Several Batch accounts in one deployment: a pipeline per account, sharing the store, the
//! policy, the receivers and the egress, and the routing of a payload's items to the account
//! they name. A single-account deployment is the case with no other account, and behaves as it
//! always did.

use std::sync::Arc;

use batch_client::BatchApi;

use super::{Triage, TriageConfig};

/// An account cannot be added to a deployment.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The deployment watches that account already (names compare case-insensitively, as
    /// Azure's do).
    #[error("the Batch account {0:?} is configured twice")]
    Duplicate(String),
}

impl Triage {
    /// Adds another account to this deployment: its own Batch client and job actions, the
    /// store, policy, receivers, egress, redactor and concurrency of this pipeline. From then
    /// on each account's sweep state lives under its own name (`sweep/accounts/{account}/`),
    /// so a cursor never moves for an account it was not read for.
    pub fn with_account(
        mut self,
        config: TriageConfig,
        batch: Arc<dyn BatchApi>,
    ) -> Result<Self, AccountError> {
        if self.account_index(&config.account).is_some() {
            return Err(AccountError::Duplicate(config.account.to_ascii_lowercase()));
        }
        let mut other = Triage::new(
            config,
            batch,
            self.store.clone(),
            self.policy.clone(),
            self.receivers.clone(),
            self.egress.clone(),
        );
        other.redactor = self.redactor.clone();
        other.subject_concurrency = self.subject_concurrency;
        other.agent_logs_identity = self.agent_logs_identity.clone();
        other.sweep_namespace = Some(other.config.account.clone());
        self.sweep_namespace = Some(self.config.account.clone());
        self.others.push(other);
        Ok(self)
    }

    /// Every account's pipeline, this one (the first configured, which items naming no account
    /// go to) first.
    pub fn accounts(&self) -> Vec<&Triage> {
        std::iter::once(self).chain(&self.others).collect()
    }

    /// The account's name (lower case).
    pub fn account_name(&self) -> &str {
        &self.config.account
    }

    /// The pipeline of the account named `name` (case-insensitive), for a request that names
    /// its account (the HTTP `Diagnose` function with `account=`).
    pub fn account(&self, name: &str) -> Option<&Triage> {
        self.account_index(name).map(|i| self.accounts()[i])
    }

    fn account_index(&self, name: &str) -> Option<usize> {
        self.accounts()
            .iter()
            .position(|a| a.config.account.eq_ignore_ascii_case(name))
    }

    /// The account an item belongs to, by the URL it carries (same origin as an account's
    /// endpoint) or else by the account it names (a `resourceId`, a URL's host). An item naming
    /// no account at all belongs to the first. `None`: the item names an account that is not
    /// configured, or, in a deployment of several accounts, carries a URL that is no account's
    /// and names none (a loopback emulator's, say); nothing may be fetched for it.
    pub(super) fn route(&self, name: Option<&str>, url: Option<&str>) -> Option<usize> {
        let accounts = self.accounts();
        if let Some(url) = url
            && let Some(index) = accounts.iter().position(|a| a.batch.check_url(url).is_ok())
        {
            return Some(index);
        }
        match name {
            Some(name) => self.account_index(name),
            // One account: a URL naming no account was always read from it, as before.
            None if url.is_some() && !self.others.is_empty() => None,
            None => Some(0),
        }
    }
}
