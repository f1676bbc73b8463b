//! The report page in a real browser: headless Chromium (`BATCH_TRIAGE_CHROMIUM`, else
//! `chromium` on the PATH; `scripts/setup-test-deps` installs Debian's) opens the page that
//! `batch-triage report --out` wrote from a store a sweep filled, and the page `serve` answers
//! on `GET /report`, with every network path closed: the page renders, its links resolve inside
//! it, and it needs nothing from anywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_kit::{Backends, spawn_announced};

const KEY: &str = "browser-test-key-0123456789abcdef";

fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("BATCH_TRIAGE_CHROMIUM") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("no Chromium: run scripts/setup-test-deps or set BATCH_TRIAGE_CHROMIUM");
}

/// The DOM Chromium built for `url`, with a fresh profile and no way out: a dead proxy and a
/// resolver that resolves nothing, so any request for something outside the page fails.
fn dump_dom(url: &str, allow_loopback: bool) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    // Chromium always sends loopback past the proxy; the resolver lets only the server under
    // test (127.0.0.1) be reached.
    command.arg(if allow_loopback {
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    } else {
        "--host-resolver-rules=MAP * ~NOTFOUND"
    });
    // The DOM goes to a file, not a pipe: a page larger than the pipe's buffer (the demo's)
    // would block Chromium on its write while this waits for it to exit.
    let dom_file = profile.path().join("dom.html");
    let mut child = command
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::from(std::fs::File::create(&dom_file).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A guard against a browser that never exits, not a timing assertion.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("Chromium did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    String::from_utf8_lossy(&std::fs::read(&dom_file).unwrap()).into_owned()
}

/// Every `href="#id"` of the DOM has its element, every other link passes `file`, and nothing
/// is loaded from anywhere. Returns the number of in-page links.
fn check_links(dom: &str, mut file: impl FnMut(&str)) -> usize {
    let mut internal = 0;
    for fragment in dom.split("href=\"").skip(1) {
        let target = &fragment[..fragment.find('"').unwrap()];
        if let Some(id) = target.strip_prefix('#') {
            assert!(dom.contains(&format!("id=\"{id}\"")), "#{id} has no target");
            internal += 1;
        } else {
            file(target);
        }
    }
    for outside in [" src=\"", "<link", "<script", "@import", "url("] {
        assert!(!dom.contains(outside), "{outside} in the page");
    }
    internal
}

/// The store's page rendered, with no link or resource pointing outside.
fn check_page(dom: &str) {
    assert!(
        dom.contains("<h1>batch-triage report</h1>"),
        "rendered: {dom}"
    );
    assert!(dom.contains("devbatch1/etl/oom"), "{dom}");
    assert!(dom.contains("task.exit_code"));
    // Only preserved logs in Blob Storage may be linked, and a local store has none.
    let internal = check_links(dom, |target| panic!("a link out of the page: {target}"));
    assert!(internal >= 8, "{internal} in-page links");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_offline_in_chromium_with_its_links_inside() {
    let backends = Backends::start().await;
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_owned();
    let settings = backends.settings();
    let (file_dom, served_base, _child) = tokio::task::spawn_blocking(move || {
        let cli = |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
                .args(args)
                .env_clear()
                .envs(settings.clone())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        cli(&[
            "silence",
            "add",
            "--match",
            "job=etl",
            "--match",
            "exit_meaning=oom_or_sigkill",
            "--for",
            "1h",
            "--comment",
            "known",
            "--author",
            "alice",
        ]);
        cli(&["sweep", "--once", "--since", "1d"]);
        cli(&[
            "report",
            "--since",
            "2h",
            "--out",
            out_path.to_str().unwrap(),
        ]);
        let page = out_path.join("report.html");
        let file_dom = dump_dom(&format!("file://{}", page.display()), false);

        let mut serve = Command::new(env!("CARGO_BIN_EXE_batch-triage"));
        serve
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_clear()
            .envs(settings)
            .env("BATCH_TRIAGE_WEBHOOK_KEY", KEY);
        let (child, base, _) = spawn_announced(&mut serve);
        (file_dom, base, child)
    })
    .await
    .unwrap();
    check_page(&file_dom);
    assert!(file_dom.contains("known"), "the silence is shown");

    // The served page, with its content security policy in force.
    let url = format!("{served_base}/report?since=2h&key={KEY}");
    let served_dom = tokio::task::spawn_blocking(move || dump_dom(&url, true))
        .await
        .unwrap();
    check_page(&served_dom);
    drop(backends);
}

/// Percent-decoding of a relative link, as a browser resolves it against the page's directory.
fn decode(link: &str) -> String {
    let bytes = link.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], link.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The demo's page is the store's report page with the demo's sections: in Chromium, with no
/// network, it renders, its in-page links have their targets, and its other links are files
/// of the demo directory that exist.
#[test]
fn the_demo_page_renders_offline_in_chromium_and_links_only_to_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_batch-triage"))
        .args(["demo", "--output", "json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dom = dump_dom(
        &format!("file://{}", out.join("report.html").display()),
        false,
    );
    assert!(
        dom.contains("<h1>batch-triage demo</h1>"),
        "rendered: {dom}"
    );
    for section in ["classes", "silences", "findings", "triggers", "received"] {
        assert!(
            dom.contains(&format!("<section id=\"{section}\">")),
            "{section}"
        );
    }
    assert!(dom.contains("account=devbatch2 job=nightly"), "the silence");
    let mut files = 0;
    let internal = check_links(&dom, |target| {
        assert!(
            !target.contains(':') && !target.starts_with('/') && !target.contains(".."),
            "a link out of the demo directory: {target}"
        );
        let path = out.join(decode(&target.replace("&amp;", "&")));
        assert!(path.exists(), "{target}: {} exists", path.display());
        files += 1;
    });
    assert!(
        internal >= 10 && files >= 100,
        "{internal} in-page links, {files} files"
    );
}
