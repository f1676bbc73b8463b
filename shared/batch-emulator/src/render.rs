//! Wire JSON for responses: stored objects plus the URLs that depend on the base URL.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::clock;
use crate::files::FileEntry;
use crate::state::{Job, Node, Pool, Task};

/// Characters escaped inside one path segment of a URL we hand out.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Escapes one path segment.
pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// Escapes a `/`-separated relative file path, keeping the separators.
pub(crate) fn file_path(path: &str) -> String {
    path.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// `{base}/jobs/{job}`.
pub(crate) fn job_url(base: &str, job_id: &str) -> String {
    format!("{base}/jobs/{}", segment(job_id))
}

/// `{base}/jobs/{job}/tasks/{task}`.
pub(crate) fn task_url(base: &str, job_id: &str, task_id: &str) -> String {
    format!("{}/tasks/{}", job_url(base, job_id), segment(task_id))
}

/// `{base}/pools/{pool}/nodes/{node}`.
pub(crate) fn node_url(base: &str, pool: &str, node: &str) -> String {
    format!("{base}/pools/{}/nodes/{}", segment(pool), segment(node))
}

/// `{base}/pools/{pool}`.
pub(crate) fn pool_url(base: &str, pool: &str) -> String {
    format!("{base}/pools/{}", segment(pool))
}

/// The pool as `GET /pools/{id}` returns it.
pub(crate) fn pool(base: &str, pool: &Pool) -> Map<String, Value> {
    let mut out = pool.json.clone();
    out.insert("url".into(), Value::String(pool_url(base, id(&pool.json))));
    out
}

/// The node as `GET /pools/{pool}/nodes/{id}` returns it.
pub(crate) fn node(base: &str, pool_id: &str, node: &Node) -> Map<String, Value> {
    let mut out = node.json.clone();
    out.insert(
        "url".into(),
        Value::String(node_url(base, pool_id, id(&node.json))),
    );
    out
}

fn id(map: &Map<String, Value>) -> &str {
    map.get("id").and_then(Value::as_str).unwrap_or_default()
}

/// The job as `GET /jobs/{id}` returns it.
pub(crate) fn job(base: &str, job: &Job) -> Map<String, Value> {
    let mut out = job.json.clone();
    out.insert("url".into(), Value::String(job_url(base, id(&job.json))));
    out
}

/// The task as `GET /jobs/{job}/tasks/{id}` returns it.
pub(crate) fn task(base: &str, job_id: &str, task: &Task) -> Map<String, Value> {
    let mut out = task.json.clone();
    out.insert(
        "url".into(),
        Value::String(task_url(base, job_id, id(&task.json))),
    );
    if let Some(node_info) = out.get_mut("nodeInfo").and_then(Value::as_object_mut) {
        let pool = node_info
            .get("poolId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let node = node_info
            .get("nodeId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let (Some(pool), Some(node)) = (pool, node) {
            let node_base = node_url(base, &pool, &node);
            node_info.insert("nodeUrl".into(), Value::String(node_base.clone()));
            if let Some(root) = node_info.get("taskRootDirectory").and_then(Value::as_str) {
                let url = format!("{node_base}/files/{}", file_path(&root.replace('\\', "/")));
                node_info.insert("taskRootDirectoryUrl".into(), Value::String(url));
            }
        }
    }
    out
}

/// A prep/release status row with `nodeUrl` and `taskRootDirectoryUrl`s.
pub(crate) fn prep_release_row(base: &str, row: &Map<String, Value>) -> Map<String, Value> {
    let mut out = row.clone();
    let pool = row
        .get("poolId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let node = row
        .get("nodeId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let node_base = node_url(base, pool, node);
    out.insert("nodeUrl".into(), Value::String(node_base.clone()));
    for section in [
        "jobPreparationTaskExecutionInfo",
        "jobReleaseTaskExecutionInfo",
    ] {
        if let Some(info) = out.get_mut(section).and_then(Value::as_object_mut) {
            if let Some(root) = info.get("taskRootDirectory").and_then(Value::as_str) {
                let url = format!("{node_base}/files/{}", file_path(&root.replace('\\', "/")));
                info.insert("taskRootDirectoryUrl".into(), Value::String(url));
            }
        }
    }
    out
}

/// One file-list row; `url_base` is the `…/files` URL of the listing root.
pub(crate) fn file_row(url_base: &str, name: &str, file: Option<&FileEntry>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name.to_owned()));
    out.insert(
        "url".into(),
        Value::String(format!("{url_base}/{}", file_path(name))),
    );
    out.insert("isDirectory".into(), Value::Bool(file.is_none()));
    if let Some(file) = file {
        let mut properties = json!({
            "creationTime": clock::format_time(file.creation_time),
            "lastModified": clock::format_time(file.last_modified),
            "contentLength": file.content.len().to_string(),
            "contentType": file.content_type,
        });
        if let Some(mode) = &file.file_mode {
            properties["fileMode"] = Value::String(mode.clone());
        }
        out.insert("properties".into(), properties);
    }
    out
}

/// `GET /jobs/{job}/taskcounts`: counts derived from the tasks.
pub(crate) fn task_counts(base: &str, job: &Job) -> Value {
    let mut counts = [0u64; 5];
    let mut slots = [0u64; 5];
    for task in job.tasks.values() {
        let state = task
            .json
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("active");
        let slot = task
            .json
            .get("requiredSlots")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let result = task
            .json
            .get("executionInfo")
            .and_then(|e| e.get("result"))
            .and_then(Value::as_str);
        let mut bump = |index: usize| {
            counts[index] += 1;
            slots[index] += slot;
        };
        match state {
            "active" => bump(0),
            "running" | "preparing" => bump(1),
            "completed" => {
                bump(2);
                match result {
                    Some(r) if r.eq_ignore_ascii_case("failure") => bump(4),
                    _ => bump(3),
                }
            }
            _ => {}
        }
    }
    let shape = |c: [u64; 5]| json!({"active": c[0], "running": c[1], "completed": c[2], "succeeded": c[3], "failed": c[4]});
    json!({
        "odata.metadata": format!("{base}/$metadata#taskcountsresult/@Element"),
        "taskCounts": shape(counts),
        "taskSlotCounts": shape(slots),
    })
}
