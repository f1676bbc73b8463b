//! Pools and nodes as subjects: a pool whose resize or autoscale failed or whose deletion is
//! stuck, and a node in trouble (`unusable`, or its start task failed). They are found by the
//! pool sweep (`pool_sweep.rs`), or named by a payload (a REST body, a pool event), and then
//! always read again from the configured account.
//!
//! A node's sequence: diagnose, plan, keep the node agent's logs once per incident (when the
//! plan says so), then the node action (which waits for the logs), then the alert, which links
//! to the logs' folder. A task whose failure Batch puts down to itself (`servererror`) gets the
//! same agent-logs step, from [`Triage::keep_node_agent_logs`].

use batch_client::{BatchError, Deadline, GetOptions, UploadLogsOptions};
use diagnosis::policy::{Plan, PlanContext, plan};
use diagnosis::wire::{BatchPool, ComputeNode, Timestamp};
use diagnosis::{Diagnosis, Evidence, Item, diagnose_item};
use preserve::agent_logs::{
    AgentLogsOptions, AgentLogsSubject, UploadAgentLogs, UploadLogsAnswer, UploadLogsRequest,
    agent_logs_prefix, keep_agent_logs, read_agent_logs_manifest,
};
use time::OffsetDateTime;

use super::alert::{PendingAlert, Worked};
use super::refuse::StoredIds;
use super::{Outcome, SubjectReport, Triage, batch_failure};
use crate::node_actions::{NodeActionOutcome, NodeActionRequest};

/// How far before an incident the agent logs asked for start.
const LOGS_BEFORE_INCIDENT: time::Duration = time::Duration::minutes(30);

/// The Batch client seen as the one operation agent logs need.
struct Uploads<'a>(&'a dyn batch_client::BatchApi);

#[async_trait::async_trait]
impl UploadAgentLogs for Uploads<'_> {
    async fn upload_agent_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        request: &UploadLogsRequest,
        deadline: Deadline,
    ) -> Result<UploadLogsAnswer, BatchError> {
        let options = UploadLogsOptions {
            container_url: request.container_url.clone(),
            start_time: request.start_time,
            end_time: None,
            identity_resource_id: request.identity_resource_id.clone(),
        };
        let result = self
            .0
            .upload_node_logs(pool_id, node_id, &options, deadline)
            .await?;
        Ok(UploadLogsAnswer {
            virtual_directory_name: result.virtual_directory_name,
            number_of_files_uploaded: u64::from(result.number_of_files_uploaded),
        })
    }
}

/// What tells one incident on a node from a later one: when the node entered its state (or
/// its start task ended), to the second. A node that recovers and breaks again is a new one.
pub(crate) fn node_incident(node: &ComputeNode) -> (String, Option<OffsetDateTime>) {
    let when = node
        .state_transition_time
        .or_else(|| node.start_task_info.as_ref().and_then(|i| i.end_time))
        .map(|t| t.0);
    let text = when.map_or_else(
        || "unknown-time".to_owned(),
        |t| {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    );
    (text, when)
}

impl Triage {
    /// A pool named by a payload: read it again, then triage it.
    pub(super) async fn process_pool(
        &self,
        pool_id: &str,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let pool = match self
            .batch
            .get_pool(pool_id, &GetOptions::default(), deadline)
            .await
        {
            Ok(pool) => pool,
            Err(error) if error.is_not_found() => {
                return Err(Outcome::Skipped(format!("pool {pool_id} no longer exists")));
            }
            Err(error) => return Err(batch_failure(&error)),
        };
        Ok(self.triage_pool(pool_id, pool, now).await)
    }

    /// A pool already read (by a GET or the sweep's list): diagnose, plan, alert. A pool has
    /// no logs of its own and no action.
    pub(crate) async fn triage_pool(
        &self,
        pool_id: &str,
        pool: BatchPool,
        now: OffsetDateTime,
    ) -> Worked {
        let mut report = SubjectReport::new(format!("{}/_pools/{pool_id}", self.config.account));
        let evidence = Evidence {
            account: Some(&self.config.account),
            now: Some(Timestamp(now)),
            ..Evidence::default()
        };
        let Some(diagnosis) = diagnose_item(&Item::Pool(Box::new(pool)), &evidence) else {
            return report.into();
        };
        report.class = Some(diagnosis.class);
        if !diagnosis.class.is_failure() {
            return report.into();
        }
        let diagnosis = self.redacted(diagnosis);
        let plan = plan(&diagnosis, &self.policy, now, &PlanContext::default());
        self.worked(diagnosis, plan, Vec::new(), None, report, now)
            .await
    }

    /// A node named by a payload: read it again, then triage it.
    pub(super) async fn process_node(
        &self,
        pool_id: &str,
        node_id: &str,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Result<Worked, Outcome> {
        let node = match self
            .batch
            .get_node(pool_id, node_id, &GetOptions::default(), deadline)
            .await
        {
            Ok(node) => node,
            Err(error) if error.is_not_found() => {
                return Err(Outcome::Skipped(format!(
                    "node {pool_id}/{node_id} no longer exists"
                )));
            }
            Err(error) => return Err(batch_failure(&error)),
        };
        Ok(self.triage_node(pool_id, node, now, deadline).await)
    }

    /// A node already read (by a GET or the sweep's filtered list): diagnose, plan, keep its
    /// agent logs, act on it, alert.
    pub(crate) async fn triage_node(
        &self,
        pool_id: &str,
        node: ComputeNode,
        now: OffsetDateTime,
        deadline: Deadline,
    ) -> Worked {
        let node_id = node.id.clone().unwrap_or_default();
        let ids = StoredIds::node(&self.config.account, pool_id, &node_id);
        let evidence = Evidence {
            account: Some(&self.config.account),
            now: Some(Timestamp(now)),
            ..Evidence::default()
        };
        let (incident, since) = node_incident(&node);
        let diagnosis = diagnose_item(&Item::Node(Box::new(node)), &evidence);
        if let Some(problem) = ids.problem() {
            return self
                .refuse_unstorable(&ids, problem, diagnosis, now, deadline)
                .await;
        }
        let mut report = SubjectReport::new(format!(
            "{}/_pools/{pool_id}/{node_id}",
            self.config.account
        ));
        let Some(mut diagnosis) = diagnosis else {
            return report.into();
        };
        report.class = Some(diagnosis.class);
        if !diagnosis.class.is_failure() {
            return report.into();
        }
        // The listing's node may lack the pool in its URL ($select): the pool it was listed
        // under is the truth.
        diagnosis.subject.pool_id = Some(pool_id.to_owned());
        diagnosis.subject.node_id = Some(node_id.clone());
        let diagnosis = self.redacted(diagnosis);
        let plan = plan(&diagnosis, &self.policy, now, &PlanContext::default());
        let start = since.unwrap_or(now) - LOGS_BEFORE_INCIDENT;
        let (links, settled) = self
            .keep_node_agent_logs(&diagnosis, &plan, &incident, start, &mut report, deadline)
            .await;
        if let Some(action) = &plan.node_action {
            let request = NodeActionRequest {
                diagnosis: &diagnosis,
                policy: &self.policy,
                plan: action,
                incident: &incident,
                agent_logs_settled: settled,
            };
            match self.node_actions.execute(request, now).await {
                // An earlier run's decision was reported then; a repeat says nothing new.
                Ok(NodeActionOutcome::AlreadyDecided(_)) => {}
                Ok(outcome) => report.action = Some(outcome.describe()),
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        reason: format!("node action: {error}"),
                        retryable: true,
                    }
                }
            }
        }
        self.worked(diagnosis, plan, links, Some(incident), report, now)
            .await
    }

    /// Keeps the node agent's logs of the diagnosis's node for `incident` when the plan says
    /// so, recording the folder in `report`. Returns the links for the alert and whether the
    /// logs are settled (kept, or known to be unobtainable), which a node action waits for.
    pub(super) async fn keep_node_agent_logs(
        &self,
        diagnosis: &Diagnosis,
        plan: &Plan,
        incident: &str,
        start_time: OffsetDateTime,
        report: &mut SubjectReport,
        deadline: Deadline,
    ) -> (Vec<String>, bool) {
        let (Some(pool_id), Some(node_id)) = (
            diagnosis.subject.pool_id.as_deref(),
            diagnosis.subject.node_id.as_deref(),
        ) else {
            return (Vec::new(), false);
        };
        if !plan.keep_agent_logs {
            // Nothing to wait for: the policy does not want them.
            return (Vec::new(), true);
        }
        let subject = AgentLogsSubject {
            account: &self.config.account,
            pool_id,
            node_id,
            incident,
            start_time,
        };
        let link = agent_logs_prefix(&subject)
            .ok()
            .map(|prefix| self.store.link(&prefix).unwrap_or(prefix.to_string()));
        let options = AgentLogsOptions {
            identity_resource_id: self.agent_logs_identity.clone(),
            ..AgentLogsOptions::default()
        };
        // Whether an earlier run already settled them: this one then kept nothing new (a
        // report that says so is how a second sweep is seen to repeat nothing).
        let already = read_agent_logs_manifest(self.store.as_ref(), &subject)
            .await
            .ok()
            .flatten()
            .is_some_and(|m| m.settled());
        match keep_agent_logs(
            &Uploads(self.batch.as_ref()),
            self.store.as_ref(),
            &subject,
            &options,
            deadline,
        )
        .await
        {
            Ok(manifest) => {
                report.agent_logs = Some(manifest.status.as_str().to_owned());
                if report.preserved.is_empty() {
                    report.already_preserved = already;
                }
                report.preserved.extend(link.clone());
                (link.into_iter().collect(), manifest.settled())
            }
            Err(error) => {
                report.outcome = Outcome::Failed {
                    reason: format!("keeping the node agent's logs: {error}"),
                    retryable: true,
                };
                (Vec::new(), false)
            }
        }
    }

    /// The subject's alert, to be grouped with the others of its payload or sweep page, and
    /// what the report reads about it (its muting silence, its failure record).
    async fn worked(
        &self,
        diagnosis: Diagnosis,
        plan: Plan,
        links: Vec<String>,
        incident: Option<String>,
        mut report: SubjectReport,
        now: OffsetDateTime,
    ) -> Worked {
        self.record_for_report(&mut report, &diagnosis, &plan, now)
            .await;
        let firing = (plan.receivers.iter())
            .chain(&plan.silenced_receivers)
            .map(|r| r.group_key.clone())
            .collect();
        let alert = (!plan.receivers.is_empty()).then_some(PendingAlert {
            diagnosis,
            plan,
            tail: None,
            links,
            incident,
        });
        Worked {
            report,
            alert,
            firing,
        }
    }
}
