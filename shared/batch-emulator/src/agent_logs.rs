//! `POST /pools/{pool}/nodes/{node}/uploadbatchservicelogs`.
//!
//! Batch answers at once with the `virtualDirectoryName` and the number of files it *will*
//! upload, then uploads them asynchronously. The emulator does the same: after the scenario's
//! `agentLogs.delayMillis` (default 200 ms) it writes a few plausible node agent log files
//! under `{container}/{virtualDirectoryName}/`:
//! - into a Blob container named by a SAS URL (`http(s)://…/container?sv=…&sig=…`, Azurite
//!   included), with one `PUT` Block Blob per file carrying the SAS query;
//! - or, an **emulator-only extension**, into a local directory named by a `file://` URL, so a
//!   handler with a local store can copy what the emulator produced.
//!
//! The file names and contents are invented (Batch documents neither); they name the pool, the
//! node, its state and its `errors`, so a reader can tell whose logs they are. The container URL
//! is a secret: its query never reaches a log line, an error body or the recorded upload.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use url::Url;

use crate::api::body_object;
use crate::clock;
use crate::emulator::Emulator;
use crate::error::ApiError;
use crate::server::{Ctx, json_response};
use crate::state::AgentLogUpload;

/// What is shown instead of a container URL in an error body.
const NOT_SHOWN: &str = "(not shown: a container URL may hold a SAS)";

/// `x-ms-version` of the Blob requests (one every Azurite release accepts).
const BLOB_API_VERSION: &str = "2021-08-06";

/// Where the files go.
#[derive(Debug, Clone)]
enum Destination {
    /// A Blob container URL with its SAS query.
    Blob(Url),
    /// A local directory (`file://`).
    Directory(PathBuf),
}

/// The container URL without its query, for logs and the record.
fn shown(url: &Url) -> String {
    let mut bare = url.clone();
    bare.set_query(None);
    bare.set_fragment(None);
    let _ = bare.set_password(None);
    bare.to_string()
}

fn destination(body: Option<&Map<String, Value>>) -> Result<(Destination, String), ApiError> {
    let text = match body.and_then(|map| map.get("containerUrl")) {
        None | Some(Value::Null) => return Err(ApiError::missing_property("containerUrl")),
        Some(Value::String(text)) => text,
        Some(_) => return Err(ApiError::invalid_property("containerUrl", NOT_SHOWN)),
    };
    let url =
        Url::parse(text).map_err(|_| ApiError::invalid_property("containerUrl", NOT_SHOWN))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => {
            let shown = shown(&url);
            Ok((Destination::Blob(url), shown))
        }
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| ApiError::invalid_property("containerUrl", NOT_SHOWN))?;
            Ok((Destination::Directory(dir), shown(&url)))
        }
        _ => Err(ApiError::invalid_property("containerUrl", NOT_SHOWN)),
    }
}

/// A time property: required or optional, RFC 3339.
fn time_property(
    body: Option<&Map<String, Value>>,
    name: &str,
    required: bool,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    match body.and_then(|map| map.get(name)) {
        None | Some(Value::Null) if required => Err(ApiError::missing_property(name)),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => clock::parse_time(text)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_property(name, text)),
        Some(other) => Err(ApiError::invalid_property(name, &other.to_string())),
    }
}

/// A path segment made of letters, digits and hyphens (Batch writes `_` as `-` here).
fn segment(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub(crate) fn upload_logs(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
    node_id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let body = body_object(body)?;
    let (destination, shown) = destination(body.as_ref())?;
    let start = time_property(body.as_ref(), "startTime", true)?.unwrap_or(ctx.now);
    let end = time_property(body.as_ref(), "endTime", false)?.unwrap_or(ctx.now);
    let identity = match body.as_ref().and_then(|map| map.get("identityReference")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(identity)) => match identity.get("resourceId") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => {
                return Err(ApiError::invalid_property(
                    "identityReference",
                    "resourceId",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid_property(
                "identityReference",
                "not an object",
            ));
        }
    };
    let files = {
        let mut state = emulator.state();
        let node = state.read_node(pool_id, node_id, ctx.now)?;
        let files = log_files(pool_id, &node.json, start, end);
        let virtual_directory_name = format!(
            "{}/{}/{}",
            segment(pool_id),
            segment(node_id),
            uuid::Uuid::new_v4()
        );
        state.agent_log_uploads.push(AgentLogUpload {
            pool_id: pool_id.to_owned(),
            node_id: node_id.to_owned(),
            virtual_directory_name: virtual_directory_name.clone(),
            number_of_files_uploaded: u32::try_from(files.len()).unwrap_or(u32::MAX),
            destination: shown.clone(),
            identity_reference: identity,
        });
        (virtual_directory_name, files)
    };
    let (directory, files) = files;
    let answer = json!({
        "virtualDirectoryName": directory,
        "numberOfFilesUploaded": files.len(),
    });
    let delay = emulator.agent_log_delay();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Err(error) = deliver(&destination, &directory, &files).await {
            tracing::warn!(destination = %shown, %error, "emulator: agent logs not delivered");
        }
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// Invented agent logs of a node: a few lines each, within `[start, end]`.
fn log_files(
    pool_id: &str,
    node: &Map<String, Value>,
    start: time::OffsetDateTime,
    end: time::OffsetDateTime,
) -> Vec<(String, String)> {
    let at = |offset_s: i64| {
        let t = start + time::Duration::seconds(offset_s);
        clock::format_time(if t > end { end } else { t })
    };
    let text = |name: &str| node.get(name).and_then(Value::as_str).unwrap_or_default();
    let node_id = text("id");
    let state = text("state");
    let mut agent = format!(
        "{} INFO  agent: node {node_id} of pool {pool_id} starting, agent {}\n{} INFO  agent: node state {state}\n",
        at(0),
        node.get("nodeAgentInfo")
            .and_then(|a| a.get("version"))
            .and_then(Value::as_str)
            .unwrap_or("unknown"),
        at(1),
    );
    for error in node
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or_default();
        agent.push_str(&format!(
            "{} ERROR agent: node error {}: {}\n",
            at(2),
            field("code"),
            field("message")
        ));
        for detail in error
            .get("errorDetails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let part = |name: &str| detail.get(name).and_then(Value::as_str).unwrap_or_default();
            agent.push_str(&format!(
                "{} ERROR agent:   {} = {}\n",
                at(2),
                part("name"),
                part("value")
            ));
        }
    }
    let start_task = match node.get("startTaskInfo") {
        Some(info) => format!(
            "{} INFO  starttask: state {} result {} exit code {}\n",
            at(3),
            info.get("state")
                .and_then(Value::as_str)
                .unwrap_or("unknown"),
            info.get("result")
                .and_then(Value::as_str)
                .unwrap_or("unknown"),
            info.get("exitCode")
                .map_or_else(|| "none".to_owned(), Value::to_string),
        ),
        None => format!("{} INFO  starttask: none configured\n", at(3)),
    };
    vec![
        ("batch-agent/agent.log".to_owned(), agent),
        (
            "batch-agent/controller.log".to_owned(),
            format!("{} INFO  controller: heartbeat ok\n{start_task}", at(4)),
        ),
        (
            "batch-agent/nodeagent-stdout.log".to_owned(),
            format!("{} INFO  nodeagent: listening\n", at(5)),
        ),
        (
            "waagent/waagent.log".to_owned(),
            format!("{} INFO  Azure Linux Agent: provisioning complete\n", at(0)),
        ),
    ]
}

/// Why a delivery failed (the SAS query is never part of it).
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("the container URL cannot hold a blob path")]
    BadUrl,
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("PUT {blob} failed: {message}")]
    Put { blob: String, message: String },
}

async fn deliver(
    destination: &Destination,
    directory: &str,
    files: &[(String, String)],
) -> Result<(), DeliveryError> {
    match destination {
        Destination::Directory(root) => {
            for (name, text) in files {
                let path = directory
                    .split('/')
                    .chain(name.split('/'))
                    .fold(root.clone(), |path, part| path.join(part));
                let io = |source| DeliveryError::Io {
                    path: path.display().to_string(),
                    source,
                };
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(io)?;
                }
                tokio::fs::write(&path, text.as_bytes()).await.map_err(io)?;
            }
            Ok(())
        }
        Destination::Blob(container) => {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|error| DeliveryError::Put {
                    blob: shown(container),
                    message: error.without_url().to_string(),
                })?;
            for (name, text) in files {
                let mut url = container.clone();
                url.path_segments_mut()
                    .map_err(|()| DeliveryError::BadUrl)?
                    .pop_if_empty()
                    .extend(directory.split('/'))
                    .extend(name.split('/'));
                let blob = shown(&url);
                let fail = |message: String| DeliveryError::Put {
                    blob: blob.clone(),
                    message,
                };
                let response = client
                    .put(url.clone())
                    .header("x-ms-blob-type", "BlockBlob")
                    .header("x-ms-version", BLOB_API_VERSION)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(text.clone())
                    .send()
                    .await
                    .map_err(|error| fail(error.without_url().to_string()))?;
                if !response.status().is_success() {
                    return Err(fail(format!("status {}", response.status())));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sas_query_is_never_shown() {
        let body: Map<String, Value> = serde_json::from_value(json!({
            "containerUrl": "https://acct.blob.core.windows.net/logs?sv=2021&sp=w&sig=SECRET"
        }))
        .unwrap();
        let (_, shown) = destination(Some(&body)).unwrap();
        assert_eq!(shown, "https://acct.blob.core.windows.net/logs");
        let bad: Map<String, Value> =
            serde_json::from_value(json!({"containerUrl": "ftp://x/y?sig=SECRET"})).unwrap();
        let error = destination(Some(&bad)).unwrap_err();
        assert!(!format!("{error:?}").contains("SECRET"));
        let missing = destination(None).unwrap_err();
        assert_eq!(missing.code, "MissingRequiredProperty");
    }

    #[test]
    fn directory_segments_are_plain() {
        assert_eq!(
            segment("tvm-1695681911_1-20161121t182739z"),
            "tvm-1695681911-1-20161121t182739z"
        );
        assert_eq!(segment("../x"), "---x");
    }
}
