//! `batch-triage demo` as a newcomer runs it: the real binary, a real directory, and the files a
//! person opens afterwards. One demo run is shared by the tests that only read its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use diagnosis::FailureClass;
use serde_json::Value;

fn demo(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .env("NO_COLOR", "1")
        .arg("demo")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("the binary runs")
}

/// One demo run (JSON summary) shared by the read-only tests.
struct SharedRun {
    _dir: tempfile::TempDir,
    out: PathBuf,
    summary: Value,
    report: Value,
    html: String,
}

fn shared() -> &'static SharedRun {
    static RUN: OnceLock<SharedRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demo");
        let output = demo(&out, &["--output", "json"]);
        assert!(
            output.status.success(),
            "demo failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "--output json prints one JSON object ({e}):\n{}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        let report: Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        SharedRun {
            _dir: dir,
            out,
            summary,
            report,
            html,
        }
    })
}

fn failures(report: &Value) -> &Vec<Value> {
    report["failures"].as_array().expect("failures is an array")
}

fn failure<'a>(report: &'a Value, subject: &str) -> &'a Value {
    failures(report)
        .iter()
        .find(|f| f["subject"] == subject)
        .unwrap_or_else(|| panic!("no failure {subject} in report.json"))
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_failure_class_is_in_report_json_and_none_is_left_out() {
    let report = &shared().report;
    let found: Vec<&str> = failures(report)
        .iter()
        .map(|f| f["class"].as_str().unwrap())
        .collect();
    for class in FailureClass::ALL.iter().filter(|c| c.is_failure()) {
        let name = class.as_str();
        assert!(found.contains(&name), "{name} is not in the demo");
    }
    assert!(found.contains(&"node.start_task_failed"));
    // The exit codes the README promises to explain are in the demo, with their meanings.
    for (subject, meaning) in [
        ("devbatch1/etl/oom", "oom_or_sigkill"),
        ("devbatch1/etl/sigkill", "oom_or_sigkill"),
        ("devbatch1/render/dll-missing", "dll_not_found"),
        ("devbatch1/render/timeout", "ctrl_c_exit"),
    ] {
        assert_eq!(
            failure(report, subject)["diagnosis"]["exitMeaning"],
            meaning,
            "{subject}"
        );
    }
}

#[test]
fn the_json_summary_counts_what_report_json_holds() {
    let run = shared();
    let summary = &run.summary;
    assert_eq!(summary["failures"], failures(&run.report).len());
    assert_eq!(summary["byClass"], run.report["byClass"]);
    assert_eq!(summary["byJob"], run.report["byJob"]);
    let by_job_total: u64 = summary["byJob"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        by_job_total as usize,
        failures(&run.report).len(),
        "every failure is under one job or pool"
    );
    assert_eq!(summary["converged"], true);
    assert_eq!(
        PathBuf::from(summary["report"].as_str().unwrap()),
        run.out.join("report.html")
    );
    let alerts: u64 = summary["alerts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        alerts as usize,
        run.report["alerts"].as_array().unwrap().len()
    );
}

#[test]
fn the_html_report_names_every_class_shown_and_escapes_task_output() {
    let run = shared();
    let html = &run.html;
    for failure in failures(&run.report) {
        let class = failure["class"].as_str().unwrap();
        assert!(html.contains(class), "report.html lacks {class}");
    }
    // The webapp task's stderr and Batch's message carry markup; it must arrive as text.
    assert!(
        html.contains("&lt;script&gt;alert('stderr')&lt;/script&gt;"),
        "the stderr tail with <script> is shown, escaped"
    );
    assert!(html.contains("&lt;b&gt;unrecognised&lt;/b&gt;"));
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "no script element at all");
    assert!(!lower.contains("<b>unrecognised"));
    // Self-contained: nothing is fetched from elsewhere.
    assert!(!lower.contains("<link"), "no external stylesheet");
    assert!(!lower.contains(" src="), "no external image or script");
    assert!(
        !lower.contains("href=\"http"),
        "links stay inside the demo directory"
    );
    // A preserved file is linked relative to the report.
    assert!(html.contains("href=\"store/devbatch1/etl/oom/attempt-0/stderr.txt\""));
    assert!(html.contains("id=\"timeline\""));
}

#[test]
fn logs_are_preserved_in_the_design_layout_with_manifests() {
    let run = shared();
    let folder = run.out.join("store/devbatch1/etl/oom/attempt-0");
    let manifest = read_json(&folder.join("manifest.json"));
    assert_eq!(manifest["kind"], "task");
    assert_eq!(manifest["jobId"], "etl");
    assert_eq!(manifest["taskId"], "oom");
    for name in ["stdout.txt", "stderr.txt"] {
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the manifest"));
        let on_disk = std::fs::metadata(folder.join(name)).unwrap().len();
        assert_eq!(
            entry["bytes"], on_disk,
            "{name}: the manifest's size is the file's"
        );
    }
    assert_eq!(
        read_json(&folder.join("diagnosis.json"))["class"],
        "task.exit_code"
    );
    assert!(
        std::fs::read_to_string(folder.join("stderr.txt"))
            .unwrap()
            .contains("Killed")
    );

    let prep = read_json(
        &run.out
            .join("store/devbatch1/prep-fail/_jobprep/tvm-03/manifest.json"),
    );
    assert_eq!(prep["kind"], "jobprep");
    // A release failure is named by the folder its output goes to, and that folder is linked.
    let release = failure(&run.report, "devbatch1/prep/_jobrelease/tvm-02");
    assert_eq!(release["class"], "job.release_failed");
    assert!(
        run.html
            .contains("href=\"store/devbatch1/prep/_jobrelease/tvm-02/manifest.json\""),
        "the release folder is linked"
    );

    let missing_code = |path: &str| {
        let manifest = read_json(&run.out.join(path));
        manifest["missing"][0]["code"].as_str().map(str::to_owned)
    };
    // The node went away before anyone read its logs; the manifest says why they are missing.
    assert_eq!(
        missing_code("store/devbatch1/lost-node/t1/attempt-0/manifest.json").as_deref(),
        Some("NodeNotFound")
    );
    // A nine-day-old failure replayed by an event: retention expired.
    assert_eq!(
        missing_code("store/devbatch1/etl/old-fail/attempt-0/manifest.json").as_deref(),
        Some("TaskFilesUnavailable")
    );
    // The 2 GiB stdout is recorded as skipped rather than copied, which keeps the demo fast.
    let big = read_json(
        &run.out
            .join("store/devbatch1/etl/big-log/attempt-0/manifest.json"),
    );
    assert_eq!(big["skipped"][0]["name"], "stdout.txt");
    assert_eq!(big["skipped"][0]["bytes"], 2_147_483_648_u64);
    assert!(
        !run.out
            .join("store/devbatch1/etl/big-log/attempt-0/stdout.txt")
            .exists()
    );
}

const START_TASK: &str = "devbatch1/_pools/linux/tvm-05/_starttask";

#[test]
fn a_failed_start_task_is_fed_diagnosed_preserved_alerted_and_shown_under_its_pool() {
    let run = shared();
    let report = &run.report;

    // Fed as Batch sends it: a SpecialTaskEvent record with an empty job.
    let fed = read_json(&run.out.join("triggers/event-hubs.json"));
    let record = fed["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["operationName"] == "SpecialTaskEvent")
        .expect("the Event Hubs batch holds a special-task record");
    assert_eq!(record["properties"]["taskType"], "StartTask");
    assert_eq!(record["properties"]["jobId"], "");
    assert_eq!(record["properties"]["nodeInfo"]["nodeId"], "tvm-05");

    let finding = failure(report, START_TASK);
    assert_eq!(finding["class"], "node.start_task_failed");
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["problems"], serde_json::json!([]));
    // The diagnosis is the pipeline's (from its alert or its diagnosis.json: Batch keeps no
    // start-task object to read back), about this node and no job.
    let diagnosis = &finding["diagnosis"];
    assert_eq!(diagnosis["class"], "node.start_task_failed", "{finding}");
    assert_eq!(diagnosis["subject"]["poolId"], "linux");
    assert_eq!(diagnosis["subject"]["nodeId"], "tvm-05");
    assert_eq!(diagnosis["subject"]["jobId"], Value::Null);
    assert_eq!(diagnosis["exitCode"], 100);
    assert!(
        diagnosis["summary"].as_str().unwrap().contains("tvm-05"),
        "{diagnosis}"
    );
    assert!(
        !diagnosis["hints"].as_array().unwrap().is_empty(),
        "{diagnosis}"
    );
    assert!(
        finding["stderrTail"]
            .as_str()
            .is_some_and(|t| t.contains("E: Unable to locate package")),
        "{finding}"
    );
    // Times come from the event, for the timeline.
    let start = finding["startTime"].as_str().expect("a start time");
    let end = finding["endTime"].as_str().expect("an end time");
    assert!(start < end, "{start} < {end}");

    // Logs kept once, to the node's folder, with a manifest of kind starttask.
    let folder = format!("store/{START_TASK}");
    assert_eq!(finding["preserved"], serde_json::json!([folder]));
    assert_eq!(finding["copies"], 1);
    let dir = run.out.join(&folder);
    let manifest = read_json(&dir.join("manifest.json"));
    assert_eq!(manifest["kind"], "starttask");
    assert_eq!(manifest["jobId"], "");
    assert_eq!(manifest["nodeId"], "tvm-05");
    assert_eq!(finding["manifests"][0]["manifest"], manifest);
    for name in ["stdout.txt", "stderr.txt"] {
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the manifest: {manifest}"));
        assert_eq!(entry["source"], format!("startup/{name}"));
        let on_disk = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(on_disk > 0, "{name} is not empty");
        assert_eq!(entry["bytes"], on_disk, "{name}");
    }
    assert!(
        std::fs::read_to_string(dir.join("stderr.txt"))
            .unwrap()
            .contains("E: Unable to locate package")
    );
    assert_eq!(
        read_json(&dir.join("diagnosis.json"))["class"],
        "node.start_task_failed"
    );

    // Alerted by policy (an error: the SIEM and Teams), once each, and the webhook body is the
    // diagnosis of this node.
    let notified: Vec<&str> = finding["notified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(notified.contains(&"siem"), "{notified:?}");
    assert!(notified.contains(&"ops-teams"), "{notified:?}");
    let webhooks: Vec<Value> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["receiver"] == "siem")
        .map(|a| read_json(&run.out.join(a["file"].as_str().unwrap())))
        .filter(|body| body["diagnosis"]["class"] == "node.start_task_failed")
        // The pool sweep finds the built-in `workers` pool's start task failures too.
        .filter(|body| body["diagnosis"]["subject"]["nodeId"] == "tvm-05")
        .collect();
    assert_eq!(webhooks.len(), 1, "one webhook alert for the start task");
    assert_eq!(webhooks[0]["diagnosis"]["subject"]["nodeId"], "tvm-05");
    assert!(
        report["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["receiver"] == "ops-teams"
                && a["headline"]
                    .as_str()
                    .unwrap()
                    .contains("node.start_task_failed")),
        "a Teams card for it"
    );

    // A start task has no job: "by job" counts it under its pool.
    assert_eq!(
        report["byJob"]["pool devbatch1/linux"], 1,
        "{}",
        report["byJob"]
    );
    assert!(report["byJob"].get("").is_none(), "{}", report["byJob"]);

    // The HTML shows it with its pool and node, its cause, its stderr, its times and links to
    // its files.
    let html = &run.html;
    let article = &html[html
        .find("<article id=\"fx-devbatch1-2f--5f-pools-2f-linux-2f-tvm-2d-05-2f--5f-starttask\">")
        .expect("the start task has its article")..];
    let article = &article[..article.find("</article>").unwrap()];
    assert!(
        article.contains("<b>Where</b> pool <code>linux</code>, node <code>tvm-05</code>"),
        "{article}"
    );
    assert!(article.contains("node.start_task_failed"));
    assert!(article.contains("E: Unable to locate package"));
    assert!(
        article.contains(&format!("Ran {start} → {end}")),
        "its times: {article}"
    );
    for file in [
        "stderr.txt",
        "stdout.txt",
        "manifest.json",
        "diagnosis.json",
    ] {
        let link = format!("href=\"{folder}/{file}\"");
        assert!(html.contains(&link), "report.html links {link}");
    }
    // The store's report (the page's first part) counts it in its hour and shows it under its
    // class.
    let timeline = &html[html.find("id=\"timeline\"").unwrap()..];
    let timeline = &timeline[..timeline.find("</section>").unwrap()];
    assert!(timeline.contains("failed subjects"), "{timeline}");
    let store_class = &html[html
        .find("<h3 id=\"x-node-2e-start-5f-task-5f-failed\"")
        .unwrap()..];
    assert!(store_class.contains(START_TASK));

    // Delivered twice by Event Hubs: the second time nothing was copied or sent.
    let redelivery = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "event-hubs-redelivery")
        .unwrap();
    let again = redelivery["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == START_TASK)
        .expect("the redelivery saw the start task again");
    assert_eq!(again["alreadyPreserved"], true);
    assert_eq!(again["notified"], serde_json::json!([]));
}

#[test]
fn alert_files_hold_what_each_receiver_got() {
    let run = shared();
    let alerts = run.report["alerts"].as_array().unwrap();
    for receiver in ["ops-teams", "ops-mail", "siem"] {
        assert!(
            alerts.iter().any(|a| a["receiver"] == receiver),
            "{receiver} got at least one alert"
        );
    }
    for alert in alerts {
        let file = run.out.join(alert["file"].as_str().unwrap());
        assert!(file.is_file(), "{} exists", file.display());
    }
    let teams: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["receiver"] == "ops-teams")
        .collect();
    for alert in teams {
        let card = read_json(&run.out.join(alert["file"].as_str().unwrap()));
        assert_eq!(card["type"], "message", "the Workflows envelope");
        let attachment = &card["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(attachment["content"]["type"], "AdaptiveCard");
        assert_eq!(attachment["content"]["version"], "1.4");
    }
    let webhook = alerts.iter().find(|a| a["receiver"] == "siem").unwrap();
    assert_eq!(webhook["signed"], true, "the webhook is signed");
    let body = read_json(&run.out.join(webhook["file"].as_str().unwrap()));
    assert!(body["diagnosis"]["class"].is_string());
    let email = alerts.iter().find(|a| a["receiver"] == "ops-mail").unwrap();
    let mail = std::fs::read_to_string(run.out.join(email["file"].as_str().unwrap())).unwrap();
    assert!(mail.contains("Subject: [CRITICAL]"), "{mail}");
    assert!(mail.contains("To: oncall@example.com"), "{mail}");
    assert!(mail.contains("text/html"), "both bodies are sent");
}

#[test]
fn a_growing_group_is_announced_again_and_its_escalation_pages_once() {
    let run = shared();
    let alerts = run.report["alerts"].as_array().unwrap();
    let read =
        |a: &Value| std::fs::read_to_string(run.out.join(a["file"].as_str().unwrap())).unwrap();
    // The shards job: twelve tasks killed the same way. Teams heard of the first, then, one
    // group_interval later, of all twelve, escalated (more than half of the job failed).
    let teams: Vec<String> = alerts
        .iter()
        .filter(|a| a["receiver"] == "ops-teams")
        .map(read)
        .filter(|card| card.contains("job shards"))
        .collect();
    assert_eq!(teams.len(), 2, "{teams:#?}");
    assert!(teams[0].contains("job shards task shard-00000") && !teams[0].contains("Escalated"));
    assert!(
        teams[1].contains("job shards (now 12 tasks, was 1)"),
        "{}",
        teams[1]
    );
    assert!(teams[1].contains("7 of the job's 12 tasks failed this way (58.3%, more than 50%)"));
    // The page: the critical rule's email, once.
    let mails: Vec<String> = alerts
        .iter()
        .filter(|a| a["receiver"] == "ops-mail")
        .map(read)
        .filter(|mail| mail.contains("job shards"))
        .collect();
    assert_eq!(mails.len(), 1, "paged once");
    assert!(
        mails[0].contains("Subject: [CRITICAL] task.exit_code: job shards (now 12 tasks, was 1)")
    );
    // The SIEM webhook hears the growth with previousCount.
    let hooks: Vec<Value> = alerts
        .iter()
        .filter(|a| a["receiver"] == "siem")
        .map(|a| read_json(&run.out.join(a["file"].as_str().unwrap())))
        .filter(|body| body["diagnosis"]["subject"]["jobId"] == "shards")
        .collect();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0]["previousCount"], Value::Null);
    assert_eq!(
        (&hooks[1]["group"]["count"], &hooks[1]["previousCount"]),
        (&12.into(), &1.into())
    );
    // The tick that sent them is in the report, with the receivers it told.
    let later = run.report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tick-later")
        .unwrap();
    let flushed: Vec<&str> = later["flushed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for receiver in ["ops-teams", "ops-mail", "siem"] {
        assert!(flushed.contains(&receiver), "{flushed:?}");
    }
}

#[test]
fn duplicates_converge_each_failure_is_copied_once_and_told_once() {
    let report = &shared().report;
    assert_eq!(report["converged"], true);
    let mut seen_more_than_once = 0;
    for failure in failures(report) {
        let subject = failure["subject"].as_str().unwrap();
        if !failure["preserved"].as_array().unwrap().is_empty() {
            assert_eq!(failure["copies"], 1, "{subject} copied once");
        }
        let notified: Vec<&str> = failure["notified"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let mut unique = notified.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            notified.len(),
            "{subject} told each receiver once"
        );
        if failure["seenBy"].as_array().unwrap().len() > 1 {
            seen_more_than_once += 1;
        }
    }
    assert!(
        seen_more_than_once >= 5,
        "events and the sweep overlap, so duplicates happened and were absorbed"
    );
    let runs = report["runs"].as_array().unwrap();
    let redelivery = runs
        .iter()
        .find(|r| r["name"] == "event-hubs-redelivery")
        .unwrap();
    for subject in redelivery["subjects"].as_array().unwrap() {
        // The record of an account the demo does not watch is refused every time, unread.
        if subject["subject"] == "devbatch3/etl/oom" {
            assert!(
                subject["outcome"]
                    .as_str()
                    .is_some_and(|o| o
                        .starts_with("refused: account \"devbatch3\" is not a configured account")),
                "{subject}"
            );
            continue;
        }
        assert_eq!(subject["alreadyPreserved"], true, "{subject}");
        assert_eq!(subject["notified"], serde_json::json!([]), "{subject}");
    }
    // The pool event in the Event Hubs batch is skipped by design.
    assert_eq!(runs[0]["ignoredItems"], 1);
    // The flaky task succeeded in the end, so its TaskCompleteEvent is what finds it.
    assert_eq!(
        failure(report, "devbatch1/etl/flaky")["seenBy"][0],
        "event-hubs"
    );
}

#[test]
fn the_operators_silence_mutes_one_group_on_every_receiver_and_its_logs_are_kept() {
    let run = shared();
    let report = &run.report;
    let silence = &report["silences"][0];
    let id = silence["id"]
        .as_str()
        .expect("report.json lists the silence");
    assert_eq!(
        silence["matchers"],
        serde_json::json!(["account=devbatch2", "job=nightly"])
    );
    assert_eq!(silence["addedBefore"], "sweep");
    assert_eq!(silence["muted"], 2, "{silence}");
    assert_eq!(run.summary["silences"][0]["muted"], 2);
    for subject in ["devbatch2/nightly", "devbatch2/nightly/part-2"] {
        let finding = failure(report, subject);
        assert_eq!(finding["mutedBy"], id, "{finding}");
        assert_eq!(finding["notified"], serde_json::json!([]), "{finding}");
    }
    // The same job of the first account is still alerted.
    assert_ne!(
        failure(report, "devbatch1/nightly/part-2")["notified"],
        serde_json::json!([])
    );
    // No receiver got a message about it: every message names its account.
    for alert in report["alerts"].as_array().unwrap() {
        let file = alert["file"].as_str().unwrap();
        let body = std::fs::read_to_string(run.out.join(file)).unwrap();
        assert!(
            !(body.contains("devbatch2") && body.contains("nightly")),
            "{file} is about the muted group"
        );
    }
    // Its logs are kept, and linked from the page.
    let folder = "store/devbatch2/nightly/part-2/attempt-0";
    assert_eq!(
        read_json(&run.out.join(folder).join("manifest.json"))["jobId"],
        "nightly"
    );
    assert!(run.html.contains(&format!("href=\"{folder}/stderr.txt\"")));
    // The page's silences section (the store's) lists it with its count; the muted alerts
    // link to it.
    let section = &run.html[run.html.find("<section id=\"silences\"").unwrap()..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(
        section.contains(id) && section.contains("<td>2</td>"),
        "{section}"
    );
    assert!(run.html.contains("operator (demo)"));
    assert_eq!(
        run.html
            .matches(&format!("href=\"#x-s-2d-{}\"", &id[2..]))
            .count(),
        // The header; the store's two muted alerts and two failures; the demo's two failures.
        7
    );
}

#[test]
fn the_stuck_job_and_the_pool_that_reached_its_target_are_resolved_on_the_next_tick() {
    let run = shared();
    let runs = run.report["runs"].as_array().unwrap();
    let again = runs.iter().find(|r| r["name"] == "sweep-again").unwrap();
    let mut resolved: Vec<&str> = again["resolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    resolved.sort_unstable();
    // backfill on the four receivers with send_resolved; quota-pool (an error, which chat does
    // not get) on the two that heard of it.
    assert_eq!(
        resolved,
        [
            "oncall",
            "ops-slack",
            "ops-teams",
            "ops-teams",
            "siem",
            "siem"
        ]
    );
    for run_report in runs.iter().filter(|r| r["name"] != "sweep-again") {
        assert_eq!(
            run_report["resolved"],
            serde_json::json!([]),
            "{run_report}"
        );
    }
    let headlines: Vec<(&str, &str)> = run.report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["receiver"].as_str().unwrap(),
                a["headline"].as_str().unwrap(),
            )
        })
        .collect();
    let quota_pool_resolved = "RESOLVED · pool.resize_failed · pool quota-pool";
    assert!(
        headlines.contains(&("ops-teams", quota_pool_resolved)),
        "{headlines:#?}"
    );
    assert!(
        !headlines.contains(&("ops-slack", quota_pool_resolved)),
        "chat never heard of it: {headlines:#?}"
    );
    assert!(
        run.html
            .contains("resolved messages (a failure state ended) → "),
        "the page's triggers say so"
    );
}

#[test]
fn a_rerun_replaces_the_previous_demo_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let first = demo(&out, &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stale = out.join("store/devbatch1/stale-from-an-old-run.txt");
    std::fs::write(&stale, "old").unwrap();
    let second = demo(&out, &[]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        !stale.exists(),
        "the previous demo was replaced, not merged"
    );
    // A fresh store, so the second run copied and alerted again rather than finding old state.
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["converged"], true);
    assert_eq!(failure(&report, "devbatch1/etl/oom")["copies"], 1);
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("report.html"), "{text}");
    assert!(text.contains("task.exit_code"), "{text}");
    // Every class is shown, the start task counted under its pool.
    assert!(
        text.lines()
            // tvm-05's event, and the two the pool sweep finds in each account's built-in
            // `workers` pool.
            .any(|l| l.split_whitespace().eq(["node.start_task_failed", "5"])),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("By job") && l.contains("pool devbatch1/linux 1")),
        "{text}"
    );
    // The console explains why the 2 GiB log was not copied and which logs were already gone.
    assert!(
        text.lines()
            .any(|l| l.contains("etl/big-log") && l.contains("skipped")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("lost-node/t1") && l.contains("NodeNotFound")),
        "{text}"
    );
    // The operator's silence: the command, and what it muted.
    assert!(
        text.contains(
            "batch-triage silence add --match 'account=devbatch2' --match 'job=nightly' --for 2h"
        ),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l
            .contains(": muted 2 alerts (logs kept): devbatch2/nightly, devbatch2/nightly/part-2")),
        "{text}"
    );
    let alert_lines = text.lines().filter(|l| l.contains("alerts/")).count();
    assert_eq!(
        alert_lines,
        report["alerts"].as_array().unwrap().len(),
        "one console line per alert:\n{text}"
    );
}

#[test]
fn a_non_empty_directory_that_is_not_a_demo_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thesis.tex"), "precious").unwrap();
    let output = demo(dir.path(), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert!(stderr.contains("--out"), "it says what to do: {stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("thesis.tex")).unwrap(),
        "precious"
    );
    assert!(!dir.path().join("report.html").exists());
    assert!(!dir.path().join(".batch-triage-demo").exists());
}

#[test]
fn a_file_in_the_way_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo");
    std::fs::write(&file, "not a directory").unwrap();
    let output = demo(&file, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a directory"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn pools_and_nodes_are_found_by_the_sweep_with_agent_logs_kept_and_one_node_action_dry_run() {
    let run = shared();
    let report = &run.report;
    for (subject, class) in [
        ("devbatch1/_pools/quota-pool", "pool.resize_failed"),
        ("devbatch1/_pools/gpu-pool", "pool.resize_failed"),
        ("devbatch1/_pools/scaler", "pool.autoscale_failed"),
        ("devbatch1/_pools/old-pool", "pool.delete_stuck"),
        (
            "devbatch1/_pools/workers/tvm-1695681911_1-20261204t080000z",
            "node.unusable",
        ),
        (
            "devbatch1/_pools/workers/tvm-1695681911_2-20261204t080000z",
            "node.unusable",
        ),
    ] {
        let finding = failure(report, subject);
        assert_eq!(finding["class"], class, "{finding:#}");
        assert_eq!(finding["problems"], serde_json::json!([]), "{finding:#}");
        assert!(run.html.contains(subject), "report.html shows {subject}");
    }
    // The unusable node with DiskFull: its agent logs kept once, the folder linked, and the
    // policy's removal only pretended.
    let disk_full = failure(
        report,
        "devbatch1/_pools/workers/tvm-1695681911_1-20261204t080000z",
    );
    assert_eq!(disk_full["agentLogs"], "complete", "{disk_full:#}");
    assert_eq!(disk_full["copies"], 1, "{disk_full:#}");
    let folder = disk_full["preserved"][0].as_str().unwrap();
    assert!(folder.contains("/_agentlogs/"), "{folder}");
    let manifest = read_json(&run.out.join(folder).join("manifest.json"));
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["kind"], "agentlogs");
    let files = manifest["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for file in files {
        let key = file["key"].as_str().unwrap();
        assert!(run.out.join("store").join(key).is_file(), "{key} is kept");
    }
    let action = disk_full["action"].as_str().unwrap();
    assert!(action.starts_with("DryRun"), "{action}");
    assert!(
        action.contains("nodeDeallocationOption=requeue"),
        "{action}"
    );
    assert!(run.html.contains("Node agent&#39;s logs") || run.html.contains("Node agent's logs"));
    // The cards: pool and node alerts reached Teams and the SIEM.
    for class in ["pool.resize_failed", "node.unusable"] {
        for receiver in ["siem", "ops-teams"] {
            assert!(
                report["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["receiver"] == receiver
                        && a["headline"].as_str().unwrap_or_default().contains(class)),
                "{receiver} got a {class} alert"
            );
        }
    }
}
