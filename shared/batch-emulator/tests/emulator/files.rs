//! Task and node files: listings, downloads, HEAD, ranges and the errors of unreadable files.

use batch_emulator::NodeState;
use reqwest::Method;
use serde_json::Value;

use crate::common::{API, Server, expect_error};

fn names(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_task_files() {
    let server = Server::builtin().await;
    let (status, body) = server
        .get_json(&format!("/jobs/etl/tasks/ok-1/files?{API}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["odata.metadata"],
        format!("{}/$metadata#files", server.base)
    );
    assert_eq!(names(&body), ["stderr.txt", "stdout.txt", "wd"]);
    let files = body["value"].as_array().unwrap();
    let stdout = &files[1];
    assert_eq!(
        stdout["url"],
        format!("{}/jobs/etl/tasks/ok-1/files/stdout.txt", server.base)
    );
    assert_eq!(stdout["isDirectory"], false);
    let properties = &stdout["properties"];
    assert!(properties["contentLength"].is_string(), "int64 as a string");
    assert!(properties["creationTime"].as_str().unwrap().ends_with('Z'));
    assert!(properties["lastModified"].is_string());
    assert_eq!(properties["contentType"], "application/octet-stream");
    assert_eq!(files[2]["isDirectory"], true);

    let (_, body) = server
        .get_json(&format!("/jobs/etl/tasks/ok-1/files?{API}&recursive=true"))
        .await;
    assert_eq!(
        names(&body),
        ["stderr.txt", "stdout.txt", "wd", "wd/summary.json"]
    );
    let (_, body) = server
        .get_json(&format!(
            "/jobs/etl/tasks/ok-1/files?{API}&recursive=true&$filter=startswith(name%2C%27wd%27)"
        ))
        .await;
    assert_eq!(names(&body), ["wd", "wd/summary.json"]);
    let (_, body) = server
        .get_json(&format!(
            "/jobs/etl/tasks/ok-1/files?{API}&recursive=true&maxresults=2"
        ))
        .await;
    assert_eq!(names(&body), ["stderr.txt", "stdout.txt"]);
    assert!(
        body["odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("recursive=true")
    );

    // Node files see the same bytes under the task's root directory.
    let (_, body) = server
        .get_json(&format!(
            "/pools/linux/nodes/tvm-01/files?{API}&recursive=false"
        ))
        .await;
    assert_eq!(names(&body), ["startup", "workitems"]);
    expect_error(
        server
            .get(&format!(
                "/jobs/etl/tasks/ok-1/files?{API}&$filter=name%20eq%20%27x%27"
            ))
            .await,
        400,
        "InvalidQueryParameterValue",
    )
    .await;
}

/// A listing entry says what a HEAD of the same file says: the size (`contentLength`, a string
/// as in the 2025-06-01+ corpus examples) and the same instant for `lastModified` (RFC 3339 with
/// 7 fractional digits, as the service writes it) as the `Last-Modified` header (RFC 1123, whole
/// seconds). Preservation sizes and resumes files from the listing alone, then GETs them.
#[tokio::test]
async fn a_listing_agrees_with_head_on_size_and_last_modified() {
    let server = Server::builtin().await;
    let (status, body) = server
        .get_json(&format!("/jobs/etl/tasks/oom/files?{API}"))
        .await;
    assert_eq!(status, 200);
    let files = body["value"].as_array().unwrap();
    let mut checked = 0;
    for file in files.iter().filter(|f| f["isDirectory"] == false) {
        let name = file["name"].as_str().unwrap();
        let properties = &file["properties"];
        let head = server
            .request(
                Method::HEAD,
                &format!("/jobs/etl/tasks/oom/files/{name}?{API}"),
            )
            .send()
            .await;
        assert_eq!(head.status(), 200, "{name}");
        assert_eq!(
            properties["contentLength"].as_str().unwrap(),
            head.headers()["content-length"].to_str().unwrap(),
            "{name}"
        );
        let listed = properties["lastModified"].as_str().unwrap();
        let listed =
            time::OffsetDateTime::parse(listed, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{name}: lastModified {listed:?}: {e}"));
        let header =
            httpdate::parse_http_date(head.headers()["last-modified"].to_str().unwrap()).unwrap();
        let header = time::OffsetDateTime::from(header);
        assert_eq!(listed.unix_timestamp(), header.unix_timestamp(), "{name}");
        assert!(properties["creationTime"].is_string(), "{name}");
        checked += 1;
    }
    let names: Vec<_> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"stdout.txt") && names.contains(&"stderr.txt"),
        "{names:?}"
    );
    assert!(checked >= 2);
}

#[tokio::test]
async fn downloads_heads_and_ranges() {
    let server = Server::builtin().await;
    let response = server
        .get(&format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}"))
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    assert!(text.contains("Killed"));
    assert_eq!(headers["content-length"], text.len().to_string().as_str());
    assert_eq!(headers["ocp-batch-file-isdirectory"], "false");
    assert_eq!(
        headers["ocp-batch-file-url"],
        format!("{}/jobs/etl/tasks/oom/files/stderr.txt", server.base).as_str()
    );
    assert!(headers.contains_key("ocp-creation-time"));
    assert!(headers.contains_key("last-modified"));
    assert!(headers.contains_key("etag"));

    let head = server
        .request(
            Method::HEAD,
            &format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}"),
        )
        .send()
        .await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        text.len().to_string().as_str()
    );

    // The ocp-range header (and Range) give 200 with just those bytes.
    let ranged = server
        .request(
            Method::GET,
            &format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}"),
        )
        .header("ocp-range", "bytes=0-4")
        .send()
        .await;
    assert_eq!(ranged.status(), 200);
    assert_eq!(ranged.headers()["content-length"], "5");
    assert_eq!(ranged.text().await.unwrap(), text[..5]);
    let ranged = server
        .request(
            Method::GET,
            &format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}"),
        )
        .header("Range", "bytes=-7")
        .send()
        .await;
    assert_eq!(ranged.text().await.unwrap(), text[text.len() - 7..]);
    let body = expect_error(
        server
            .request(
                Method::GET,
                &format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}"),
            )
            .header("ocp-range", "bytes=100000-")
            .send()
            .await,
        416,
        "InvalidRange",
    )
    .await;
    assert_eq!(body["values"][0]["key"], "ContentLength");
    expect_error(
        server
            .request(
                Method::GET,
                &format!("/jobs/etl/tasks/oom/files/stderr.txt?{API}"),
            )
            .header("ocp-range", "bytes=99999999999999999999999-1")
            .send()
            .await,
        400,
        "InvalidHeaderValue",
    )
    .await;
    let log = server.emulator.requests();
    assert_eq!(log[2].ocp_range.as_deref(), Some("bytes=0-4"));
    assert_eq!(log[3].range.as_deref(), Some("bytes=-7"));
}

#[tokio::test]
async fn paths_with_encoded_slashes_and_backslashes() {
    let server = Server::builtin().await;
    for path in [
        "wd/summary.json",
        "wd%2Fsummary.json",
        "wd%5Csummary.json",
        "wd\\summary.json",
    ] {
        let response = server
            .get(&format!("/jobs/etl/tasks/ok-1/files/{path}?{API}"))
            .await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.text().await.unwrap().contains("120394"));
    }
    let response = server
        .get(&format!("/pools/linux/nodes/tvm-01/files/workitems%2Fetl%2Fjob-1%2Fok-1%2Fwd%2Fsummary.json?{API}"))
        .await;
    assert_eq!(response.status(), 200);
    let head = server
        .request(
            Method::HEAD,
            &format!("/jobs/etl/tasks/ok-1/files/wd?{API}"),
        )
        .send()
        .await;
    assert_eq!(head.headers()["ocp-batch-file-isdirectory"], "true");
}

#[tokio::test]
async fn two_gib_generated_stdout_costs_nothing() {
    let server = Server::builtin().await;
    let path = format!("/jobs/etl/tasks/big-log/files/stdout.txt?{API}");
    let head = server.request(Method::HEAD, &path).send().await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "2147483648");
    let tail = server
        .request(Method::GET, &path)
        .header("ocp-range", "bytes=2147483548-2147483647")
        .send()
        .await;
    assert_eq!(tail.status(), 200);
    let bytes = tail.bytes().await.unwrap();
    assert_eq!(bytes.len(), 100);
    assert!(bytes.ends_with(b"ERROR: simulation diverged (residual is NaN)\n"));
    let head_bytes = server
        .request(Method::GET, &path)
        .header("ocp-range", "bytes=0-127")
        .send()
        .await
        .bytes()
        .await
        .unwrap();
    assert!(head_bytes.starts_with(b"000000000000 "));
    assert_eq!(&head_bytes[64..77], b"000000000001 ");
}

#[tokio::test]
async fn unreadable_files_give_batch_errors() {
    let server = Server::builtin().await;
    let get = |path: &str| {
        let path = format!("{path}?{API}");
        let server = &server;
        async move { server.get(&path).await }
    };
    expect_error(
        get("/jobs/etl/tasks/queued/files").await,
        409,
        "OperationInvalidForCurrentState",
    )
    .await;
    expect_error(
        get("/jobs/etl/tasks/queued/files/stdout.txt").await,
        409,
        "OperationInvalidForCurrentState",
    )
    .await;
    expect_error(
        get("/jobs/etl/tasks/old-fail/files/stdout.txt").await,
        409,
        "TaskFilesUnavailable",
    )
    .await;
    expect_error(
        get("/jobs/lost-node/tasks/t1/files/stderr.txt").await,
        404,
        "NodeNotFound",
    )
    .await;
    expect_error(
        get("/jobs/lost-node/tasks/t1/files").await,
        404,
        "NodeNotFound",
    )
    .await;
    expect_error(
        get("/jobs/etl/tasks/oom/files/nope.txt").await,
        404,
        "FileNotFound",
    )
    .await;
    expect_error(
        get("/pools/linux/nodes/tvm-99/files").await,
        404,
        "NodeNotFound",
    )
    .await;
    expect_error(
        get("/pools/nope/nodes/tvm-01/files").await,
        404,
        "PoolNotFound",
    )
    .await;

    // A node removed at runtime takes its files (and its tasks' files) with it.
    assert_eq!(
        get("/jobs/etl/tasks/ok-2/files/stdout.txt").await.status(),
        200
    );
    assert!(server.emulator.remove_node("linux", "tvm-02"));
    expect_error(
        get("/jobs/etl/tasks/ok-2/files/stdout.txt").await,
        404,
        "NodeNotFound",
    )
    .await;
    assert!(
        server
            .emulator
            .set_node_state("linux", "tvm-03", NodeState::NotReady)
    );
    expect_error(
        get("/jobs/etl/tasks/py-error/files/stderr.txt").await,
        409,
        "NodeNotReady",
    )
    .await;
    assert!(!server.emulator.remove_node("linux", "tvm-77"));
}
