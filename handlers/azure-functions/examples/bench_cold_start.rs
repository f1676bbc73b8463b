//! Cold-start benchmark (not a test): the release `batch-triage-functions` started the way the
//! Functions host starts a custom handler, against a Python process that does what a Python
//! worker would do at start, measured the same way and interleaved with ours.
//!
//! ```text
//! cargo build --release -p batch-triage-azure-functions --bins --examples
//! cargo run --release -p batch-triage-azure-functions --example bench_cold_start
//! ```
//!
//! Each run spawns the process with the host's environment (`FUNCTIONS_CUSTOMHANDLER_PORT`, the
//! Batch account of an emulator running in this process, `BATCH_TRIAGE_STORE`) and polls `GET /`
//! as the host does (connection refused means "not yet"); the time is spawn → first `200`. Once
//! it answers, the CPU time it used so far (all threads), `VmRSS` and `VmHWM` are read from `/proc/<pid>/status`, then the process is killed.
//!
//! Contestants, in rotation so machine load hits them alike:
//! - `ours (local dir)`: the handler with `BATCH_TRIAGE_STORE` a temporary directory;
//! - `ours (blob)`: the same with a blob connection string (the client is built, nothing is
//!   contacted), to match the Python contestant, which builds a `BlobServiceClient`;
//! - `ours (local dir, SSL_CERT_FILE)`: as the first, with `SSL_CERT_FILE` set to the system CA
//!   bundle. Loading the TLS roots (the bundle and every file of `/etc/ssl/certs`) used to be
//!   most of the start's CPU time; the clients now load them on their first request, so this
//!   should match the first (it shows if a root store creeps back into the start);
//! - `python sdk`: imports azure.batch and azure.storage.blob, builds a `BatchClient` (azure-batch
//!   15's name for `BatchServiceClient`) and a `BlobServiceClient`, then serves `GET /` with
//!   `http.server`;
//! - `python bare`: `http.server` alone, the interpreter's floor (for context).
//!
//! Settings: `BENCH_RUNS` (default 30, after one discarded warm-up run each), `BENCH_HANDLER`
//! (path to the handler; default `batch-triage-functions` beside this example's directory; the
//! deployed build is `target/x86_64-unknown-linux-gnu/dist/batch-triage-functions` after
//! `scripts/package`),
//! `BATCH_TRIAGE_PYTHON` (default the project's `.venv`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use batch_emulator::{Emulator, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};

mod support;
use support::{handler, percentile, status_kib};

/// Azurite's development account (its public well-known key). Nothing listens there: at start
/// both contestants only build their clients.
const DEVSTORE: &str = "UseDevelopmentStorage=true";

/// The system CA bundle (Debian/Ubuntu, and the Functions Linux images).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

const PYTHON_SDK: &str = r#"
import os
from http.server import HTTPServer, BaseHTTPRequestHandler
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import BlobServiceClient

batch = BatchClient(os.environ["AZURE_BATCH_ENDPOINT"],
                    AzureNamedKeyCredential(os.environ["AZURE_BATCH_ACCOUNT"],
                                            os.environ["AZURE_BATCH_ACCESS_KEY"]))
blobs = BlobServiceClient.from_connection_string(os.environ["BENCH_BLOB_CONNECTION"])

class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"ready")
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])), Ready).serve_forever()
"#;

const PYTHON_BARE: &str = r#"
import os
from http.server import HTTPServer, BaseHTTPRequestHandler

class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"ready")
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])), Ready).serve_forever()
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contestant {
    OursLocal,
    OursBlob,
    OursCertFile,
    PythonSdk,
    PythonBare,
}

impl Contestant {
    const ALL: [Contestant; 5] = [
        Contestant::OursLocal,
        Contestant::OursBlob,
        Contestant::OursCertFile,
        Contestant::PythonSdk,
        Contestant::PythonBare,
    ];

    fn name(self) -> &'static str {
        match self {
            Contestant::OursLocal => "ours (local dir)",
            Contestant::OursBlob => "ours (blob)",
            Contestant::OursCertFile => "ours (local dir, SSL_CERT_FILE)",
            Contestant::PythonSdk => "python sdk",
            Contestant::PythonBare => "python bare",
        }
    }
}

struct Sample {
    millis: f64,
    cpu_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn python() -> PathBuf {
    match std::env::var_os("BATCH_TRIAGE_PYTHON") {
        Some(p) if !p.is_empty() => p.into(),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One `GET /` as the host sends it; `Ok(true)` on a 200, `Err` while nothing listens.
fn get_ready(addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}

/// CPU time the process has run so far, all threads, in ms (`/proc/<pid>/task/*/schedstat`,
/// nanosecond resolution): the start's cost whatever the machine's load.
fn cpu_ms(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1e6
}

fn spawn(who: Contestant, batch_url: &str, store: &std::path::Path, port: u16) -> Child {
    let mut command = match who {
        Contestant::OursLocal | Contestant::OursBlob => Command::new(handler()),
        Contestant::OursCertFile => {
            // rustls-native-certs would read this one bundle instead of the bundle and every
            // file of /etc/ssl/certs, if anything loaded the roots at start.
            Command::new(handler())
        }
        Contestant::PythonSdk => {
            let mut c = Command::new(python());
            c.args(["-c", PYTHON_SDK]);
            c
        }
        Contestant::PythonBare => {
            let mut c = Command::new(python());
            c.args(["-c", PYTHON_BARE]);
            c
        }
    };
    let store_setting = match who {
        Contestant::OursBlob => format!("{DEVSTORE};Container=bench"),
        _ => store.to_str().expect("utf-8 temp dir").to_owned(),
    };
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "bench-worker")
        .env("AZURE_BATCH_ENDPOINT", batch_url)
        .env("AZURE_BATCH_ACCOUNT", WELL_KNOWN_ACCOUNT_NAME)
        .env("AZURE_BATCH_ACCESS_KEY", WELL_KNOWN_ACCOUNT_KEY)
        .env("BATCH_TRIAGE_STORE", store_setting)
        .env("BENCH_BLOB_CONNECTION", DEVSTORE);
    if who == Contestant::OursCertFile {
        command.env("SSL_CERT_FILE", CA_BUNDLE);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

fn run_once(who: Contestant, batch_url: &str) -> Sample {
    let store = tempfile::tempdir().expect("temp store");
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    let mut child = spawn(who, batch_url, store.path(), port);
    let give_up = started + Duration::from_secs(60);
    loop {
        match get_ready(addr) {
            Ok(true) => break,
            Ok(false) => panic!("{}: GET / did not answer 200", who.name()),
            Err(_) if Instant::now() < give_up => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{} exited before it was ready: {status}", who.name());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(error) => panic!("{} never answered GET /: {error}", who.name()),
        }
    }
    let millis = started.elapsed().as_secs_f64() * 1e3;
    let pid = child.id();
    let sample = Sample {
        millis,
        cpu_ms: cpu_ms(pid),
        rss_kib: status_kib(pid, "VmRSS:"),
        hwm_kib: status_kib(pid, "VmHWM:"),
    };
    let _ = child.kill();
    let _ = child.wait();
    sample
}

struct Summary {
    median_ms: f64,
    cpu_ms: f64,
    p90_ms: f64,
    rss_mib: f64,
    hwm_mib: f64,
}

fn summarize(samples: &[Sample]) -> Summary {
    let sorted = |f: &dyn Fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let ms = sorted(&|s| s.millis);
    let cpu = sorted(&|s| s.cpu_ms);
    let rss = sorted(&|s| s.rss_kib as f64 / 1024.0);
    let hwm = sorted(&|s| s.hwm_kib as f64 / 1024.0);
    Summary {
        median_ms: percentile(&ms, 50.0),
        cpu_ms: percentile(&cpu, 50.0),
        p90_ms: percentile(&ms, 90.0),
        rss_mib: percentile(&rss, 50.0),
        hwm_mib: percentile(&hwm, 50.0),
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let batch_url = format!("http://{}", listener.local_addr().expect("address"));
    runtime.spawn(batch_emulator::serve(
        listener,
        Emulator::builtin(),
        std::future::pending::<()>(),
    ));
    println!(
        "cold start: spawn → first 200 on GET /, {runs} runs each (after 1 warm-up), interleaved; \
         handler {}, python {}",
        handler().display(),
        python().display()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average (1, 5, 15 min) at the start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for who in Contestant::ALL {
        let _ = run_once(who, &batch_url);
    }
    let mut samples: Vec<Vec<Sample>> = Contestant::ALL.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        // Rotate the order too, so no contestant always follows another's teardown.
        for k in 0..Contestant::ALL.len() {
            let i = (run + k) % Contestant::ALL.len();
            samples[i].push(run_once(Contestant::ALL[i], &batch_url));
        }
    }
    let summaries: Vec<Summary> = samples.iter().map(|s| summarize(s)).collect();
    println!();
    println!(
        "| process | median ms | p90 ms | CPU ms at ready (median) | VmRSS MiB (median) | VmHWM MiB (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (who, s) in Contestant::ALL.iter().zip(&summaries) {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            who.name(),
            s.median_ms,
            s.p90_ms,
            s.cpu_ms,
            s.rss_mib,
            s.hwm_mib
        );
    }
    let (ours, blob, py) = (&summaries[0], &summaries[1], &summaries[3]);
    println!();
    println!(
        "ratio python sdk / ours (local dir): median {:.1}x, p90 {:.1}x (goal ≥ 20x); CPU {:.1}x; memory {:.1}x",
        py.median_ms / ours.median_ms,
        py.p90_ms / ours.p90_ms,
        py.cpu_ms / ours.cpu_ms,
        py.rss_mib / ours.rss_mib
    );
    println!(
        "ratio python sdk / ours (blob): median {:.1}x, p90 {:.1}x",
        py.median_ms / blob.median_ms,
        py.p90_ms / blob.p90_ms
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average (1, 5, 15 min) at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goals: ours ≤ 3 ms median: {} ({:.1} ms); ≤ 15 MiB VmRSS: {} ({:.1} MiB); ratio ≥ 20x: {}",
        verdict(ours.median_ms <= 3.0),
        ours.median_ms,
        verdict(ours.rss_mib <= 15.0),
        ours.rss_mib,
        verdict(py.median_ms / ours.median_ms >= 20.0)
    );
}
