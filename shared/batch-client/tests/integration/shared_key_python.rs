//! The Authorization header our client sends, compared with what the official Python SDK
//! (`azure-batch` 15.1.0, `BatchSharedKeyAuthPolicy`) computes for the very same request as the
//! server received it (method, path and query as sent, headers including `ocp-date`, body).
//!
//! Python is found through `BATCH_TRIAGE_PYTHON`, else `<workspace>/.venv/bin/python` (made by
//! `scripts/setup-test-deps`). A missing interpreter or package fails the test: this check is the
//! independent evidence that our signatures are right.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use batch_client::{
    BatchApi, Deadline, DownloadOptions, FileRef, GetOptions, ListOptions, TerminateJobOptions,
};
use diagnosis::wire::DisableTasks;
use futures::TryStreamExt;

use crate::stub::{ACCOUNT, KEY, Reply, Seen, Stub};

const SIGNER: &str = r#"
import json, sys
import azure.batch
from azure.batch._version import VERSION
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

job = json.load(sys.stdin)
policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(job["account"], job["key"]))
out = []
for r in job["requests"]:
    headers = {k: v for k, v in r["headers"] if k.lower() not in ("authorization", "host")}
    body = bytes.fromhex(r["body_hex"]) if r["body_hex"] else None
    request = HttpRequest(r["method"], job["base"] + r["target"], headers=headers, content=body)
    policy.on_request(PipelineRequest(request, PipelineContext(None)))
    out.append(request.headers["Authorization"])
print(json.dumps({"version": VERSION, "authorizations": out}))
"#;

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("BATCH_TRIAGE_PYTHON") {
        return PathBuf::from(path);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ))
}

/// Signs the requests with the Python SDK and returns its Authorization headers.
fn python_signatures(base: &str, seen: &[Seen]) -> Vec<String> {
    let python = python();
    assert!(
        python.exists(),
        "Python with azure-batch 15.1.0 is required for the Shared Key cross-check, but {} does \
         not exist. Run scripts/setup-test-deps, or set BATCH_TRIAGE_PYTHON.",
        python.display()
    );
    let requests: Vec<serde_json::Value> = seen
        .iter()
        .map(|s| {
            serde_json::json!({
                "method": s.method,
                "target": s.target,
                "headers": s.headers,
                "body_hex": s.body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    let input =
        serde_json::json!({"account": ACCOUNT, "key": KEY, "base": base, "requests": requests});
    let mut child = Command::new(&python)
        .args(["-c", SIGNER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Python signer failed (is azure-batch installed? run scripts/setup-test-deps):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["version"], "15.1.0", "expected azure-batch 15.1.0");
    result["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn signatures_match_the_official_python_sdk() {
    let stub = Stub::start().await;
    let client = stub.client();
    let deadline = Deadline::after(Duration::from_secs(60));

    // GET with $filter (spaces, quotes, a slash), $select and maxresults, then a nextLink page
    // whose $skiptoken holds percent-encoded characters.
    let next = format!(
        "{}/jobs/job-1/tasks?api-version=2025-06-01&maxresults=2&%24skiptoken=a%2Bb%3D%3D%20c&$select=id,state",
        stub.base
    );
    stub.push(Reply::json(
        200,
        &serde_json::json!({"value": [{"id": "t1"}], "odata.nextLink": next}).to_string(),
    ));
    stub.push(Reply::json(200, r#"{"value":[{"id":"t2"}]}"#));
    let options = ListOptions {
        filter: Some("state eq 'completed' and executionInfo/result eq 'failure'".into()),
        select: Some("id,state,executionInfo".into()),
        max_results: Some(2),
        ..ListOptions::default()
    };
    let pages: Vec<_> = client
        .list_tasks("job-1", &options, deadline)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);

    // GET with ids that need percent-encoding, and $expand.
    stub.push(Reply::json(200, r#"{"id":"t 1"}"#));
    let get = GetOptions {
        select: Some("id".into()),
        expand: Some("stats".into()),
    };
    client
        .get_task("job+1", "t 1é", &get, deadline)
        .await
        .unwrap();

    // POST with a JSON body, a query parameter and If-Match.
    stub.push(Reply::status(202));
    let terminate = TerminateJobOptions {
        reason: Some("batch-triage: prep task failed".into()),
        force: true,
        if_match: Some("\"0x8DDAB\"".into()),
    };
    client
        .terminate_job("job-1", &terminate, deadline)
        .await
        .unwrap();
    stub.push(Reply::status(202));
    client
        .disable_job("job-1", DisableTasks::Requeue, None, deadline)
        .await
        .unwrap();

    // POST without a body.
    stub.push(Reply::status(202));
    client.enable_job("job-1", None, deadline).await.unwrap();
    stub.push(Reply::status(204));
    client
        .terminate_task("job-1", "task-1", None, deadline)
        .await
        .unwrap();

    // A ranged download (ocp-range) of a path with a backslash and a space, and a HEAD.
    stub.push(Reply::file(b"0123456789", "Tue, 03 Dec 2024 10:00:00 GMT"));
    let file = FileRef::task("job-1", "task-1", "wd\\out dir/log.txt");
    let download = client
        .download_file(
            &file,
            &DownloadOptions {
                offset: 5,
                ..DownloadOptions::default()
            },
            deadline,
        )
        .await
        .unwrap();
    let _bytes: Vec<_> = download.try_collect().await.unwrap();
    stub.push(Reply::file(b"", "Tue, 03 Dec 2024 10:00:00 GMT"));
    client
        .file_properties(
            &FileRef::node("pool-1", "tvm-1", "startup/stdout.txt"),
            deadline,
        )
        .await
        .unwrap();

    let seen = stub.seen();
    assert_eq!(seen.len(), 9, "{seen:#?}");
    assert!(
        seen[0]
            .target
            .contains("%24filter=state+eq+%27completed%27")
    );
    assert_eq!(
        seen[5].header("content-length"),
        Some("0"),
        "POST without a body"
    );
    assert_eq!(seen[7].header("ocp-range"), Some("bytes=5-"));
    let ours: Vec<String> = seen
        .iter()
        .map(|s| s.header("authorization").unwrap().to_owned())
        .collect();
    let theirs = python_signatures(&stub.base, &seen);
    assert_eq!(ours.len(), theirs.len());
    for ((ours, theirs), seen) in ours.iter().zip(&theirs).zip(&seen) {
        assert_eq!(
            ours, theirs,
            "signature differs for {} {}",
            seen.method, seen.target
        );
    }
}
