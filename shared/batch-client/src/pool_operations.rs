//! The pool and node operations of [`BatchApi`](crate::BatchApi) on [`BatchClient`]: lists and
//! gets of pools and nodes, pool node counts, Upload Batch Service Logs, Remove Nodes and
//! Reimage Node. Like the job operations, each checks its ids, builds the URL under the endpoint
//! and hands a [`Call`] to `request` (retries, auth, logging); the answers that mean "already
//! done" are named here.

use bytes::Bytes;
use diagnosis::wire::{BatchPool, ComputeNode, NodeState, PoolNodeCounts};
use foundation::Deadline;
use reqwest::Method;
use time::format_description::well_known::Rfc3339;

use crate::api::{
    ActionOutcome, GetOptions, ListOptions, NodeDeallocation, PageStream, RemoveNodesOptions,
    UploadLogsOptions, UploadLogsResult,
};
use crate::client::{BatchClient, check_id};
use crate::error::BatchError;
use crate::operations::get_query;
use crate::request::{Call, Expect};

/// The most nodes one Remove Nodes request may name.
const MAX_REMOVE_NODES: usize = 100;

/// 409 codes meaning Remove Nodes has nothing left to do: the pool is going away with its nodes.
const REMOVE_NODES_DONE: &[&str] = &["PoolBeingDeleted"];
/// The 409 code of Remove Nodes on a pool that is not `steady`.
const POOL_RESIZING: &str = "PoolBeingResized";
/// 409 codes meaning Reimage Node has nothing left to do.
const REIMAGE_DONE: &[&str] = &["NodeBeingReimaged"];

/// What replaces a secret found in an error.
const REDACTED: &str = "<redacted>";

impl BatchClient {
    pub(crate) fn op_list_pools(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<BatchPool> {
        self.list("list_pools", &[], &["pools"], options, deadline, &[])
    }

    pub(crate) async fn op_get_pool(
        &self,
        pool_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<BatchPool, BatchError> {
        const OP: &str = "get_pool";
        check_id(OP, "pool id", pool_id)?;
        let url = self.url(OP, &["pools", pool_id], &get_query(options))?;
        self.get_json(OP, url, deadline).await
    }

    pub(crate) fn op_list_nodes(
        &self,
        pool_id: &str,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<ComputeNode> {
        let ids = [("pool id", pool_id)];
        let segments = ["pools", pool_id, "nodes"];
        self.list("list_nodes", &ids, &segments, options, deadline, &[])
    }

    pub(crate) async fn op_get_node(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &GetOptions,
        deadline: Deadline,
    ) -> Result<ComputeNode, BatchError> {
        const OP: &str = "get_node";
        check_id(OP, "pool id", pool_id)?;
        check_id(OP, "node id", node_id)?;
        let url = self.url(
            OP,
            &["pools", pool_id, "nodes", node_id],
            &get_query(options),
        )?;
        self.get_json(OP, url, deadline).await
    }

    pub(crate) fn op_list_pool_node_counts(
        &self,
        options: &ListOptions,
        deadline: Deadline,
    ) -> PageStream<PoolNodeCounts> {
        self.list(
            "list_pool_node_counts",
            &[],
            &["nodecounts"],
            options,
            deadline,
            &[],
        )
    }

    pub(crate) async fn op_upload_node_logs(
        &self,
        pool_id: &str,
        node_id: &str,
        options: &UploadLogsOptions,
        deadline: Deadline,
    ) -> Result<UploadLogsResult, BatchError> {
        const OP: &str = "upload_node_logs";
        check_id(OP, "pool id", pool_id)?;
        check_id(OP, "node id", node_id)?;
        let body = upload_body(options)?;
        let url = self.url(
            OP,
            &["pools", pool_id, "nodes", node_id, "uploadbatchservicelogs"],
            &[],
        )?;
        let mut call = Call::new(OP, Method::POST, url);
        call.body = Some(Bytes::from(body));
        let secret = options.container_url.expose();
        let reply = self
            .request(&call, Expect::Json, deadline)
            .await
            .map_err(|error| scrub(error, secret))?;
        serde_json::from_slice(&reply.body).map_err(|e| {
            BatchError::other(
                OP,
                format!(
                    "unreadable JSON response ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })
    }

    pub(crate) async fn op_remove_nodes(
        &self,
        pool_id: &str,
        node_ids: &[String],
        options: &RemoveNodesOptions,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "remove_nodes";
        check_id(OP, "pool id", pool_id)?;
        if node_ids.is_empty() || node_ids.len() > MAX_REMOVE_NODES {
            return Err(BatchError::bad_argument(
                OP,
                format!("between 1 and {MAX_REMOVE_NODES} nodes may be removed at once"),
            ));
        }
        for node_id in node_ids {
            check_id(OP, "node id", node_id)?;
        }
        let url = self.url(OP, &["pools", pool_id, "removenodes"], &[])?;
        let mut call = Call::new(OP, Method::POST, url);
        let body = serde_json::json!({
            "nodeList": node_ids,
            "nodeDeallocationOption": options.deallocation.as_str(),
        });
        call.body = Some(Bytes::from(body.to_string()));
        match self
            .action(
                call,
                options.if_match.as_deref(),
                REMOVE_NODES_DONE,
                deadline,
            )
            .await
        {
            Err(BatchError::NotFound(info))
                if node_ids.len() == 1 && info.code.as_deref() == Some("NodeNotFound") =>
            {
                tracing::info!(operation = OP, "the node is already gone");
                Ok(ActionOutcome::AlreadyInState {
                    code: "NodeNotFound".to_owned(),
                })
            }
            Err(BatchError::Conflict(info))
                if info.code.as_deref() == Some(POOL_RESIZING)
                    && self.all_leaving(pool_id, node_ids, deadline).await =>
            {
                // Our own earlier attempt (its answer lost), or someone else, is already
                // removing exactly these nodes.
                tracing::info!(operation = OP, "the nodes are already leaving the pool");
                Ok(ActionOutcome::AlreadyInState {
                    code: POOL_RESIZING.to_owned(),
                })
            }
            other => other,
        }
    }

    /// Whether every node named is leaving the pool or gone (read one by one; a removal names
    /// few nodes). Any other answer, or an error, is "no".
    async fn all_leaving(&self, pool_id: &str, node_ids: &[String], deadline: Deadline) -> bool {
        let select = GetOptions {
            select: Some("id,state".to_owned()),
            expand: None,
        };
        for node_id in node_ids {
            match self.op_get_node(pool_id, node_id, &select, deadline).await {
                Ok(node) if node.state == Some(NodeState::LeavingPool) => {}
                Err(error) if error.code() == Some("NodeNotFound") => {}
                _ => return false,
            }
        }
        true
    }

    pub(crate) async fn op_reimage_node(
        &self,
        pool_id: &str,
        node_id: &str,
        option: NodeDeallocation,
        deadline: Deadline,
    ) -> Result<ActionOutcome, BatchError> {
        const OP: &str = "reimage_node";
        check_id(OP, "pool id", pool_id)?;
        check_id(OP, "node id", node_id)?;
        let url = self.url(OP, &["pools", pool_id, "nodes", node_id, "reimage"], &[])?;
        let mut call = Call::new(OP, Method::POST, url);
        let body = serde_json::json!({ "nodeReimageOption": option.as_str() });
        call.body = Some(Bytes::from(body.to_string()));
        self.action(call, None, REIMAGE_DONE, deadline).await
    }
}

/// The JSON body of Upload Batch Service Logs.
fn upload_body(options: &UploadLogsOptions) -> Result<String, BatchError> {
    const OP: &str = "upload_node_logs";
    if options.container_url.expose().trim().is_empty() {
        return Err(BatchError::bad_argument(OP, "the container URL is empty"));
    }
    let time = |t: time::OffsetDateTime| {
        t.to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|_| BatchError::bad_argument(OP, "a time cannot be written as RFC 3339"))
    };
    let mut body = serde_json::json!({
        "containerUrl": options.container_url.expose(),
        "startTime": time(options.start_time)?,
    });
    if let Some(end) = options.end_time {
        body["endTime"] = serde_json::Value::String(time(end)?);
    }
    if let Some(resource_id) = &options.identity_resource_id {
        body["identityReference"] = serde_json::json!({ "resourceId": resource_id });
    }
    Ok(body.to_string())
}

/// Removes the container URL, its query and its decoded query from an error, in case the
/// service echoed them (an invalid property's value is echoed in `values`).
fn scrub(mut error: BatchError, container_url: &str) -> BatchError {
    let mut needles = vec![container_url.to_owned()];
    if let Some((_, query)) = container_url.split_once('?') {
        needles.push(query.to_owned());
        let decoded = percent_encoding::percent_decode_str(query)
            .decode_utf8_lossy()
            .into_owned();
        needles.push(decoded);
        // A SAS signature alone is the secret part.
        for pair in url::form_urlencoded::parse(query.as_bytes()) {
            if pair.0 == "sig" && !pair.1.is_empty() {
                needles.push(pair.1.into_owned());
            }
        }
    }
    needles.retain(|needle| needle.len() >= 4);
    let clean = |text: &mut String| {
        for needle in &needles {
            if text.contains(needle.as_str()) {
                *text = text.replace(needle.as_str(), REDACTED);
            }
        }
    };
    let info = error.info_mut();
    clean(&mut info.message);
    for detail in &mut info.details {
        if let Some(value) = detail.value.as_mut() {
            clean(value);
        }
        if let Some(key) = detail.key.as_mut() {
            clean(key);
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use diagnosis::wire::ErrorDetail;
    use foundation::Secret;

    #[test]
    fn an_echoed_container_url_is_scrubbed_from_errors() {
        let url = "https://acct.blob.core.windows.net/logs?sv=2025-01-05&sp=w&sig=abc%2Bdef%3D";
        let mut error = BatchError::other("upload_node_logs", format!("bad value {url}"));
        error.info_mut().details = vec![
            ErrorDetail {
                key: Some("PropertyValue".into()),
                value: Some(url.into()),
            },
            ErrorDetail {
                key: Some("Signature".into()),
                value: Some("abc+def=".into()),
            },
        ];
        let error = scrub(error, url);
        let text = format!("{error} {:?}", error.info());
        assert!(!text.contains("sig=abc"), "{text}");
        assert!(!text.contains("abc+def="), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }

    #[test]
    fn the_upload_body_has_the_wire_names() {
        let options = UploadLogsOptions {
            container_url: Secret::new("https://a.blob.core.windows.net/c?sig=x"),
            start_time: time::macros::datetime!(2026-12-04 08:00 UTC),
            end_time: Some(time::macros::datetime!(2026-12-04 09:30 +01:00)),
            identity_resource_id: Some("/subscriptions/s/identity".into()),
        };
        let body: serde_json::Value =
            serde_json::from_str(&upload_body(&options).unwrap()).unwrap();
        assert_eq!(body["startTime"], "2026-12-04T08:00:00Z");
        assert_eq!(body["endTime"], "2026-12-04T08:30:00Z");
        assert_eq!(
            body["identityReference"]["resourceId"],
            "/subscriptions/s/identity"
        );
        let empty = UploadLogsOptions {
            container_url: Secret::new(" "),
            ..options
        };
        assert!(matches!(
            upload_body(&empty),
            Err(BatchError::BadRequest(_))
        ));
    }
}
