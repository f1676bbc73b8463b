//! What the demo runs: the emulator's scenario (the built-in one, which holds a failure of every
//! class, plus `scenario.json` beside this file) and the policy that routes each failure to the
//! loopback receivers.

use batch_emulator::{Scenario, ScenarioError};
use diagnosis::policy::Policy;

use crate::DemoError;
use crate::receivers::Channel;

/// The built-in scenario plus the demo's additions (`scenario.json`).
pub fn demo_scenario() -> Result<Scenario, ScenarioError> {
    let mut scenario = Scenario::builtin();
    let extra = Scenario::from_json_str(include_str!("scenario.json"))?;
    merge_scenario(&mut scenario, extra)?;
    Ok(scenario)
}

/// Adds `extra`'s jobs, pools and nodes to `base`: a pool `base` already has (ids are
/// case-insensitive, as in Batch) gains `extra`'s nodes, a new pool is added whole, and the
/// descriptions are joined. The result is validated, so a job or node both declare is refused
/// rather than silently shadowing the built-in one.
pub fn merge_scenario(base: &mut Scenario, extra: Scenario) -> Result<(), ScenarioError> {
    for pool in extra.pools {
        match base
            .pools
            .iter_mut()
            .find(|p| p.id.eq_ignore_ascii_case(&pool.id))
        {
            Some(existing) => existing.nodes.extend(pool.nodes),
            None => base.pools.push(pool),
        }
    }
    base.jobs.extend(extra.jobs);
    base.faults.extend(extra.faults);
    base.description = Some(format!(
        "{} {}",
        base.description.take().unwrap_or_default(),
        extra.description.unwrap_or_default()
    ));
    base.validate()
}

/// The settings the demo's policy reads its receivers' URLs and key from.
pub(crate) const TEAMS_URL_SETTING: &str = "DEMO_TEAMS_URL";
pub(crate) const WEBHOOK_URL_SETTING: &str = "DEMO_WEBHOOK_URL";
pub(crate) const WEBHOOK_KEY_SETTING: &str = "DEMO_WEBHOOK_KEY";
pub(crate) const SLACK_URL_SETTING: &str = "DEMO_SLACK_URL";
pub(crate) const PAGERDUTY_KEY_SETTING: &str = "DEMO_PAGERDUTY_ROUTING_KEY";

/// The demo's policy: every failure to the SIEM webhook; errors and worse to Teams and Slack;
/// critical ones by email and to PagerDuty as well, a stuck job disabled and an unusable node
/// removed (both as dry runs, so the job and the node are left alone; unusable nodes' agent logs
/// are kept by default). The `shards` job's out-of-memory kills escalate to critical once more
/// than half of the job failed, so the page follows the Teams message. Teams, the SIEM,
/// PagerDuty and Slack hear when a group resolves. `pagerduty_url` is the loopback Events API.
pub fn demo_policy(smtp_port: u16, pagerduty_url: &str) -> Result<Policy, DemoError> {
    let text = format!(
        r#"
[grouping]
group_by = ["account", "job", "class", "fingerprint"]
group_wait = "0s"

[actions]
enabled = true
dry_run = true
max_per_hour = 5

[node_actions]
enabled = true
dry_run = true
max_per_hour = 5

[[receivers]]
name = "{teams}"
kind = "teams"
url_env = "{TEAMS_URL_SETTING}"
send_resolved = true

[[receivers]]
name = "{mail}"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "batch-triage demo <batch-triage@localhost>"
to = ["oncall@example.com"]

[[receivers]]
name = "{siem}"
kind = "webhook"
url_env = "{WEBHOOK_URL_SETTING}"
secret_env = "{WEBHOOK_KEY_SETTING}"
send_resolved = true

[[receivers]]
name = "{pagerduty}"
kind = "pagerduty"
routing_key_env = "{PAGERDUTY_KEY_SETTING}"
events_url = "{pagerduty_url}"

[[receivers]]
name = "{slack}"
kind = "slack"
url_env = "{SLACK_URL_SETTING}"
send_resolved = true

[[rules]]
name = "drain-unusable-nodes"
match = {{ class = "node.unusable" }}
node_action = {{ kind = "remove" }}
continue = true

[[rules]]
name = "everything-to-siem"
match = {{ severity = "warning" }}
receivers = ["{siem}"]
continue = true

[[rules]]
name = "stuck-jobs"
match = {{ class = "job.prep_failed" }}
receivers = ["{teams}", "{mail}"]
action = {{ kind = "disable", disable_tasks = "wait" }}

[[rules]]
name = "critical"
match = {{ severity = "critical" }}
receivers = ["{teams}", "{mail}", "{pagerduty}", "{slack}"]

[[rules]]
name = "shard-ooms"
match = {{ job = "shards", class = "task.exit_code" }}
receivers = ["{teams}"]
escalate = {{ min_job_percent = 50 }}

# Errors to the team's channel; chat (Slack, one post a second per webhook) only for what is
# critical, as the rule above says.
[[rules]]
name = "errors"
match = {{ severity = "error" }}
receivers = ["{teams}"]
"#,
        teams = Channel::Teams.receiver_name(),
        mail = Channel::Email.receiver_name(),
        siem = Channel::Webhook.receiver_name(),
        pagerduty = Channel::PagerDuty.receiver_name(),
        slack = Channel::Slack.receiver_name(),
    );
    Policy::parse(&text).map_err(|errors| DemoError::Policy(errors.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_nodes(s: &Scenario) -> Vec<String> {
        s.pools
            .iter()
            .find(|p| p.id == "linux")
            .map(|p| p.nodes.iter().map(|n| n.id.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_demo_scenario_adds_nodes_to_builtin_pools_and_new_pools() {
        let builtin = Scenario::builtin();
        let merged = demo_scenario().unwrap();
        let mut expected = linux_nodes(&builtin);
        expected.push("tvm-05".to_owned());
        assert_eq!(
            linux_nodes(&merged),
            expected,
            "the built-in nodes stay, tvm-05 joins"
        );
        let node = merged
            .pools
            .iter()
            .flat_map(|p| &p.nodes)
            .find(|n| n.id == "tvm-05")
            .unwrap();
        assert!(node.files.contains_key("startup/stderr.txt"));
        assert_eq!(
            merged.pools.len(),
            builtin.pools.len(),
            "no pool is doubled"
        );
        assert_eq!(
            merged.jobs.len(),
            builtin.jobs.len() + 3,
            "webapp, shards and backfill are added"
        );
    }

    #[test]
    fn a_new_pool_is_added_whole_and_a_node_both_declare_is_refused() {
        let mut base = Scenario::builtin();
        let extra = Scenario::from_json_str(
            r#"{"pools": [{"id": "gpu", "nodes": [{"id": "tvm-g1"}]}, {"id": "LINUX", "nodes": [{"id": "tvm-09"}]}]}"#,
        )
        .unwrap();
        merge_scenario(&mut base, extra).unwrap();
        assert!(
            base.pools
                .iter()
                .any(|p| p.id == "gpu" && p.nodes.len() == 1)
        );
        assert!(
            linux_nodes(&base).contains(&"tvm-09".to_owned()),
            "ids are case-insensitive"
        );
        let mut base = Scenario::builtin();
        let clash =
            Scenario::from_json_str(r#"{"pools": [{"id": "linux", "nodes": [{"id": "tvm-01"}]}]}"#)
                .unwrap();
        let error = merge_scenario(&mut base, clash).unwrap_err().to_string();
        assert!(error.contains("tvm-01"), "{error}");
    }

    #[test]
    fn the_demo_policy_parses_and_names_the_five_receivers() {
        let policy = demo_policy(2525, "http://127.0.0.1:9/pagerduty/v2/enqueue").unwrap();
        let names: Vec<&str> = policy.receivers.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["ops-teams", "ops-mail", "siem", "oncall", "ops-slack"]
        );
        assert!(
            policy.actions.dry_run,
            "the demo never disables a job for real"
        );
        assert!(
            policy.node_actions.dry_run,
            "the demo never removes a node for real"
        );
    }
}
