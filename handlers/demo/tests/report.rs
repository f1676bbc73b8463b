//! The report in process, from a hand-made outcome and a store holding hostile records: what a
//! hostile task, Batch message, file name, silence or receiver body would put on the page
//! arrives as text, and no link leaves the demo directory or runs anything.

use std::path::Path;
use std::time::Duration;

use batch_triage_demo::receivers::{Channel, Received};
use batch_triage_demo::run::OperatorSilence;
use batch_triage_demo::{DemoOutcome, Report, Run, prepare_out_dir};
use diagnosis::{Diagnosis, FailureClass};
use pipeline::history::{FailureRecord, record_failure};
use pipeline::silences::{NewSilence, SilenceStore};
use pipeline::triage::{Outcome, SubjectReport};
use serde_json::json;
use time::OffsetDateTime;

const JOB: &str = r#""><img src=x onerror=alert(1)>"#;
const TASK: &str = "<script>alert(2)";
const SUMMARY: &str = "<script>alert(3)</script>";
const CAUSE: &str = r#"'"><img src=x onerror=alert(4)>"#;
const HINT: &str = r#"<a href="javascript:alert(5)">click</a>"#;
const MESSAGE: &str = "<b>unrecognised</b> & <iframe src=//evil>";
const STDERR: &str = "</pre><script>alert(6)</script>";
const HEADLINE: &str = "<img src=x onerror=alert(8)>";
const FILES: &[&str] = &["javascript:alert(7)", "..", "a\"b<c>#?%.txt"];
const COMMENT: &str = "<script>alert(9)</script>";
const MUTED: &str = "devbatch1/<svg onload=alert(10)>";

/// The store's report of `out/store`, holding a hostile failure record, a silence with a
/// hostile comment and one alert it muted: the page's first part.
fn hostile_store(out: &Path, label: &str) -> (report::StoreReport, Vec<OperatorSilence>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = artifact_store::open(out.join("store").to_str().unwrap()).unwrap();
        let now = OffsetDateTime::now_utc();
        let record = FailureRecord {
            time: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
            subject: label.to_owned(),
            preserved: vec![format!("{}/store/evil", out.display())],
            muted_by: None,
            action: Some("<marquee>disable</marquee>".to_owned()),
            diagnosis: diagnosis(label),
        };
        record_failure(&store, &record, now).await.unwrap();
        let silences = SilenceStore::new(store.clone());
        let silence = silences
            .add(
                NewSilence {
                    matchers: vec!["job=<b>x</b>".to_owned()],
                    duration: Duration::from_secs(3600),
                    author: "<i>mallory</i>".to_owned(),
                    comment: COMMENT.to_owned(),
                },
                now,
            )
            .await
            .unwrap();
        silences
            .record_muted(
                &silence.id,
                MUTED,
                &diagnosis(label),
                vec!["siem".to_owned()],
                now,
            )
            .await
            .unwrap();
        let options = report::ReportOptions {
            since: Duration::from_secs(3600),
            account: None,
            now: now + Duration::from_secs(1),
            limits: report::Limits::default(),
        };
        let built = report::build(store, &options).await.unwrap();
        (
            built,
            vec![OperatorSilence {
                before: "event-hubs",
                silence,
            }],
        )
    })
}

fn diagnosis(subject: &str) -> Diagnosis {
    serde_json::from_value(json!({
        "class": "task.exit_code", "severity": "error",
        "summary": SUMMARY, "cause": CAUSE, "hints": [HINT], "fingerprint": "f", "logs": [],
        "exitCode": 1,
        "failure": {"category": "usererror", "code": "<i>Code</i>", "message": MESSAGE, "details": []},
        "subject": {"account": "devbatch1", "jobId": JOB, "taskId": TASK, "label": subject},
    }))
    .unwrap()
}

/// A preserved folder as the store leaves it, with hostile file names in its manifest.
fn preserve(out: &Path, folder: &str) {
    let dir = out.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stderr.txt"), STDERR).unwrap();
    let files: Vec<_> = FILES
        .iter()
        .map(|name| json!({"name": name, "bytes": 10, "sha256": "00", "source": name}))
        .collect();
    let manifest = json!({
        "version": 1, "kind": "task", "account": "devbatch1", "jobId": JOB, "taskId": TASK,
        "attempt": 0, "createdAt": "2026-12-01T00:00:00Z", "files": files,
        "missing": [{"name": "<u>gone</u>", "source": "x", "code": "NodeNotFound"}],
        "skipped": [],
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

fn hostile_outcome(out: &Path) -> DemoOutcome {
    let label = format!("devbatch1/{JOB}/{TASK}");
    // The folder name is made from the ids; `evil` stands in for them on disk.
    let folder = "store/devbatch1/evil/attempt-0";
    preserve(out, folder);
    let mut subject = SubjectReport::new(label.clone());
    subject.class = Some(FailureClass::TaskExitCode);
    subject.preserved = vec![out.join(folder).display().to_string()];
    subject.notified = vec!["siem".to_owned()];
    subject.action = Some("<marquee>disable</marquee>".to_owned());
    let mut refused = SubjectReport::new(format!("devbatch1/{JOB}"));
    refused.class = Some(FailureClass::JobStuck);
    refused.outcome = Outcome::Refused("<blink>no</blink>".to_owned());
    let webhook = json!({"diagnosis": diagnosis(&label)});
    let teams = json!({"attachments": [{"content": {"fallbackText": HEADLINE}}]});
    let (store, silences) = hostile_store(out, &label);
    DemoOutcome {
        runs: vec![Run {
            trigger: "<h1>trigger</h1>".to_owned(),
            name: "event-hubs",
            payload_file: Some("../../outside.json".to_owned()),
            subjects: vec![subject, refused],
            ignored: 0,
            flushed: Vec::new(),
            resolved: Vec::new(),
            at: OffsetDateTime::now_utc(),
        }],
        received: vec![
            Received {
                channel: Channel::Webhook,
                body: webhook.to_string().into_bytes(),
                signature: Some("sha256=00".to_owned()),
            },
            Received {
                channel: Channel::Teams,
                body: teams.to_string().into_bytes(),
                signature: None,
            },
        ],
        diagnoses: Vec::new(),
        times: Default::default(),
        scenario: "<style>body{display:none}</style>".to_owned(),
        accounts: vec!["devbatch1".to_owned()],
        silences,
        store,
    }
}

/// Every `href="..."` value of the page.
fn hrefs(html: &str) -> Vec<&str> {
    html.split("href=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect()
}

#[test]
fn hostile_ids_messages_stderr_and_file_names_are_text_and_links_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepare_out_dir(&dir.path().join("demo")).unwrap();
    let report = Report::build(&out, hostile_outcome(&out));
    report.write(&out).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let lower = html.to_ascii_lowercase();

    // No element or attribute was injected: every `<` of the input arrives as `&lt;`.
    for tag in [
        "<script",
        "<img",
        "<iframe",
        "<marquee",
        "<blink",
        "<h1>trigger",
        "<b>unrecognised",
        "<i>code",
        "<u>gone",
        "<a href=\"javascript",
        "<svg",
        "<i>mallory",
    ] {
        assert!(!lower.contains(tag), "{tag} became markup");
    }
    assert_eq!(
        lower.matches("<style").count(),
        1,
        "only the page's own style"
    );
    assert_eq!(lower.matches("<a ").count(), hrefs(&html).len());
    // The text is there, escaped, where a reader looks for it.
    for escaped in [
        "&lt;script&gt;alert(3)&lt;/script&gt;",
        "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
        "'&quot;&gt;&lt;img src=x onerror=alert(4)&gt;",
        "&lt;a href=&quot;javascript:alert(5)&quot;&gt;click&lt;/a&gt;",
        "&lt;b&gt;unrecognised&lt;/b&gt; &amp; &lt;iframe src=//evil&gt;",
        "&lt;/pre&gt;&lt;script&gt;alert(6)&lt;/script&gt;",
        "&lt;img src=x onerror=alert(8)&gt;",
        "&lt;h1&gt;trigger&lt;/h1&gt;",
        "&lt;style&gt;body{display:none}&lt;/style&gt;",
        "&lt;marquee&gt;disable&lt;/marquee&gt;",
        "refused: &lt;blink&gt;no&lt;/blink&gt;",
        "&lt;u&gt;gone&lt;/u&gt; missing (NodeNotFound)",
        // The store's part: the silence, its author, what it muted.
        "&lt;script&gt;alert(9)&lt;/script&gt;",
        "&lt;i&gt;mallory&lt;/i&gt;",
        "&lt;svg onload=alert(10)&gt;",
        "job=&lt;b&gt;x&lt;/b&gt;",
    ] {
        assert!(html.contains(escaped), "{escaped} is shown as text");
    }

    let links = hrefs(&html);
    for link in &links {
        let lower = link.to_ascii_lowercase();
        assert!(
            !lower.starts_with("javascript:") && !lower.contains("://"),
            "{link}: no scheme, only relative links"
        );
        assert!(
            !link.starts_with('/') && !link.split('/').any(|s| s == ".." || s == "."),
            "{link}: stays inside the demo directory"
        );
        assert!(!link.contains(['"', '<', '>', ' ']), "{link}");
    }
    // A file name that looks like a scheme is a relative path, its `:` encoded.
    assert!(links.contains(&"store/devbatch1/evil/attempt-0/javascript%3Aalert%287%29"));
    assert!(links.contains(&"store/devbatch1/evil/attempt-0/a%22b%3Cc%3E%23%3F%25.txt"));
    // `..` as a file name, and a payload outside the directory, are shown but not linked.
    assert!(!links.iter().any(|l| l.contains("outside")));
    assert!(html.contains("../../outside.json"));
    assert!(links.contains(&"store/devbatch1/evil/attempt-0/"));
    // Every in-page link has its target.
    for fragment in links.iter().filter_map(|l| l.strip_prefix('#')) {
        assert!(html.contains(&format!("id=\"{fragment}\"")), "#{fragment}");
    }
    // The silence and its count reach report.json too.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["silences"][0]["comment"], COMMENT);
    assert_eq!(json["silences"][0]["muted"], 1);
    assert_eq!(json["store"]["silences"][0]["muted"], 1);
    // A hostile run did not converge: the refusal is a problem.
    assert!(!report.converged());
}

#[test]
fn a_failed_subject_of_no_known_shape_is_shown_and_breaks_convergence() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepare_out_dir(&dir.path().join("demo")).unwrap();
    let mut odd = SubjectReport::new("devbatch1/a/b/c/<script>".to_owned());
    odd.class = Some(FailureClass::TaskExitCode);
    let mut fine = SubjectReport::new("devbatch1/etl/oom".to_owned());
    fine.class = Some(FailureClass::TaskExitCode);
    let outcome = DemoOutcome {
        runs: vec![Run {
            trigger: "t".to_owned(),
            name: "sweep",
            payload_file: None,
            subjects: vec![odd, fine],
            ignored: 0,
            flushed: Vec::new(),
            resolved: Vec::new(),
            at: OffsetDateTime::now_utc(),
        }],
        received: Vec::new(),
        diagnoses: Vec::new(),
        times: Default::default(),
        scenario: String::new(),
        accounts: vec!["devbatch1".to_owned()],
        silences: Vec::new(),
        store: empty_store_report(&out),
    };
    let report = Report::build(&out, outcome);
    assert!(!report.converged());
    report.write(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        json["unrecognisedSubjects"],
        json!(["devbatch1/a/b/c/<script>"])
    );
    assert_eq!(json["failures"][0]["subject"], "devbatch1/etl/oom");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("devbatch1/a/b/c/&lt;script&gt;"));
    assert!(!html.contains("<script"));
}

/// The report of the demo directory's empty store.
fn empty_store_report(out: &Path) -> report::StoreReport {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = artifact_store::open(out.join("store").to_str().unwrap()).unwrap();
    let options = report::ReportOptions {
        since: Duration::from_secs(3600),
        account: None,
        now: OffsetDateTime::now_utc(),
        limits: report::Limits::default(),
    };
    runtime.block_on(report::build(store, &options)).unwrap()
}
