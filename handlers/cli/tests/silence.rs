//! `batch-triage silence` end to end: the binary writes, lists and expires silences in a local
//! directory and in Blob Storage (Azurite), and another process (`serve`) honours them.

use std::process::{Command, Output};

use serde_json::{Value, json};
use test_kit::{Backends, spawn_announced};

fn silence(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .arg("silence")
        .args(args)
        .env_clear()
        .env("BATCH_TRIAGE_STORE", store)
        .env("USER", "alice")
        .output()
        .unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// add, list, expire and the errors people meet, on the store `spec` names.
fn add_list_expire(spec: &str) {
    let added = ok_json(&silence(
        spec,
        &[
            "add",
            "--match",
            "job=etl",
            "--match",
            "class=task.*",
            "--for",
            "2h",
            "--comment",
            "etl is being fixed",
            "--output",
            "json",
        ],
    ));
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(added["author"], "alice", "the user name by default");
    assert_eq!(added["matchers"], json!(["job=etl", "class=task.*"]));
    let other = ok_json(&silence(
        spec,
        &[
            "add",
            "--match",
            "pool=gpu-*",
            "--for",
            "30m",
            "--comment",
            "drain",
            "--author",
            "bob",
            "--output",
            "json",
        ],
    ));
    assert_eq!(other["author"], "bob");

    let listed = ok_json(&silence(spec, &["list", "--output", "json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert!(ids.contains(&id.as_str()));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["active"] == true && s["muted"] == 0)
    );

    let out = silence(spec, &["expire", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("silence {id} ended")));
    let active = ok_json(&silence(spec, &["list", "--output", "json"]));
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["id"], other["id"]);
    let all = ok_json(&silence(spec, &["list", "--all", "--output", "json"]));
    let expired = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("--all shows the expired one");
    assert_eq!(expired["active"], false);
    assert_eq!(expired["expiredBy"], "alice");

    let text = silence(spec, &["list", "--all"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("expired") && text.contains("etl is being fixed"),
        "{text}"
    );

    // The errors people meet.
    let error = failed(&silence(
        spec,
        &[
            "add",
            "--match",
            "class=tsk.*",
            "--for",
            "1h",
            "--comment",
            "x",
        ],
    ));
    assert!(
        error.contains("--match \"class=tsk.*\"") && error.contains("matches no failure class"),
        "{error}"
    );
    let error = failed(&silence(
        spec,
        &[
            "add",
            "--match",
            "job=etl",
            "--for",
            "soon",
            "--comment",
            "x",
        ],
    ));
    assert!(error.contains("--for \"soon\""), "{error}");
    let error = failed(&silence(spec, &["expire", "s-0123456789ab"]));
    assert!(error.contains("no silence \"s-0123456789ab\""), "{error}");
    assert_eq!(
        ok_json(&silence(spec, &["list", "--all", "--output", "json"]))
            .as_array()
            .unwrap()
            .len(),
        2,
        "a refused silence writes nothing"
    );
}

#[test]
fn add_list_and_expire_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    add_list_expire(dir.path().to_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_list_and_expire_on_azurite() {
    let azurite = artifact_store::testing::Azurite::start();
    azurite.store("silences").await; // creates the container
    let spec = azurite.connection_string("silences");
    tokio::task::spawn_blocking(move || add_list_expire(&spec))
        .await
        .unwrap();
}

#[test]
fn no_store_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(["silence", "list"])
        .env_clear()
        .output()
        .unwrap();
    assert!(failed(&out).contains("BATCH_TRIAGE_STORE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_added_by_one_process_mutes_another_serving_the_pipeline() {
    let backends = Backends::start().await;
    let store = backends.store.path().to_str().unwrap().to_owned();
    let spec = store.clone();
    let added = tokio::task::spawn_blocking(move || {
        ok_json(&silence(
            &spec,
            &[
                "add",
                "--match",
                "job=etl",
                "--match",
                "exit_meaning=oom_or_sigkill",
                "--for",
                "1h",
                "--comment",
                "oom known",
                "--output",
                "json",
            ],
        ))
    })
    .await
    .unwrap();

    const KEY: &str = "silence-test-key-0123456789abcdef";
    let mut command = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .envs(backends.settings())
        .env("BATCH_TRIAGE_WEBHOOK_KEY", KEY);
    let (_child, base, _) = tokio::task::spawn_blocking(move || spawn_announced(&mut command))
        .await
        .unwrap();
    let base2 = base.clone();
    let post = |task: &'static str| {
        let url = format!("{base}/api/events?key={KEY}");
        async move {
            let event = json!([{"id": format!("e-{task}"), "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.EventGrid/topics/t",
                "subject": format!("jobs/etl/tasks/{task}"), "eventType": "Contoso.Batch.TaskFailed",
                "eventTime": "2026-11-27T10:00:00Z", "data": {"jobId": "etl", "taskId": task},
                "dataVersion": "1.0", "metadataVersion": "1"}]);
            let response = reqwest::Client::new()
                .post(url)
                .header("aeg-event-type", "Notification")
                .json(&event)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    };
    post("oom").await;
    assert!(
        backends.hook.is_empty(),
        "the silenced failure is not alerted: {:?}",
        backends.hook.bodies()
    );
    // Its logs are still kept.
    assert!(
        backends
            .stored_files()
            .iter()
            .any(|f| f.starts_with("devbatch1/etl/oom/attempt-0/")),
        "{:?}",
        backends.stored_files()
    );
    // A failure the silence does not match still alerts.
    post("exit-127").await;
    let alerts = backends.hook.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["diagnosis"]["subject"]["taskId"], "exit-127");

    // The report is served behind the same key: the page, and JSON with what was muted.
    let client = reqwest::Client::new();
    let refused = client.get(format!("{base2}/report")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let page = client
        .get(format!("{base2}/report?since=1h"))
        .header("x-batch-triage-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("devbatch1/etl/exit-127") && html.contains("oom known"),
        "{html}"
    );
    let json: Value = client
        .get(format!("{base2}/report?format=json&key={KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["silences"][0]["muted"], 1, "{json}");
    assert_eq!(json["muted"][0]["subject"], "devbatch1/etl/oom");
    let bad = client
        .get(format!("{base2}/report?since=forever&key={KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let listed = tokio::task::spawn_blocking(move || {
        ok_json(&silence(&store, &["list", "--output", "json"]))
    })
    .await
    .unwrap();
    assert_eq!(listed[0]["id"], added["id"]);
    assert_eq!(
        listed[0]["muted"], 1,
        "the muted alert is counted: {listed}"
    );
}
