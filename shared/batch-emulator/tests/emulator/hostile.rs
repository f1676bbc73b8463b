//! Malformed and hostile requests get Batch errors, and the server keeps serving.

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{API, Server, expect_error};

/// Sends raw bytes and returns the response status line.
async fn raw(server: &Server, request: &str) -> String {
    let addr = server.base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn malformed_requests_do_not_break_the_server() {
    let server = Server::builtin().await;
    for (path, status) in [
        (format!("/jobs/%FF%FE?{API}"), "400"),
        (
            format!("/jobs/etl/tasks/oom/files/..%2F..%2Fsecret?{API}"),
            "400",
        ),
        (format!("/jobs/etl/tasks?{API}&$filter=%28%28%28%28"), "400"),
        (
            format!("/jobs/etl/tasks?{API}&maxresults=99999999999999999999999"),
            "400",
        ),
        (format!("/jobs/etl/tasks?{API}&timeOut=soon"), "400"),
        (format!("/no/such/thing?{API}"), "403"),
    ] {
        let line = raw(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        // Unsigned requests stop at auth (403) unless the path or query fails first.
        assert!(
            line.contains(status) || line.contains("403"),
            "{path}: {line}"
        );
    }
    let line = raw(
        &server,
        "GET /jobs HTTP/1.1\r\nHost: evil\"host\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");

    // Signed, so the request reaches routing and parsing.
    expect_error(
        server.get(&format!("/jobs/%FF?{API}")).await,
        400,
        "InvalidUri",
    )
    .await;
    expect_error(
        server
            .get(&format!("/jobs/etl/tasks/oom/files/..%2F..%2Fsecret?{API}"))
            .await,
        400,
        "InvalidUri",
    )
    .await;
    let deep = "(".repeat(3000);
    expect_error(
        server
            .get(&format!("/jobs/etl/tasks?{API}&$filter={deep}"))
            .await,
        400,
        "InvalidQueryParameterValue",
    )
    .await;
    expect_error(
        server
            .request(Method::DELETE, &format!("/jobs/etl?{API}"))
            .send()
            .await,
        405,
        "UnsupportedHttpVerb",
    )
    .await;
    expect_error(
        server
            .request(Method::POST, &format!("/jobs/etl/terminate?{API}"))
            .raw_body(vec![b' '; 100 * 1024])
            .send()
            .await,
        413,
        "RequestBodyTooLarge",
    )
    .await;
    expect_error(
        server.get(&format!("/nope?{API}")).await,
        404,
        "ResourceNotFound",
    )
    .await;
    expect_error(
        server
            .request(
                Method::GET,
                &format!("/jobs/etl/tasks/oom/files/stdout.txt?{API}"),
            )
            .header("ocp-range", "bytes=5-1")
            .send()
            .await,
        400,
        "InvalidHeaderValue",
    )
    .await;
    // Still serving.
    assert_eq!(server.get(&format!("/jobs/etl?{API}")).await.status(), 200);
}
