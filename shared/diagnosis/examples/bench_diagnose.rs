//! Benchmark (not a test): diagnose a generated 100,000-task List Tasks response and, in the same
//! run, parse the same bytes into `serde_json::Value`; then measure the CLI's peak RSS on that file.
//!
//! Run through `scripts/bench` (it builds the release CLI first), or:
//! `cargo run --release -p batch-triage-diagnosis --example bench_diagnose -- --cli target/release/batch-triage`

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use batch_triage_diagnosis::payload::read_payload;
use batch_triage_diagnosis::{Evidence, Item, diagnose_item};

const TASKS: usize = 100_000;
const RUNS: usize = 3;

fn main() {
    let cli = std::env::args()
        .skip_while(|a| a != "--cli")
        .nth(1)
        .map(PathBuf::from);
    let dir = std::env::temp_dir().join(format!("batch-triage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let big = dir.join("tasks-100k.json");
    let small = dir.join("tasks-1k.json");
    let bytes = task_list(TASKS);
    std::fs::write(&big, &bytes).expect("write");
    std::fs::write(&small, task_list(1_000)).expect("write");
    println!(
        "input: {TASKS} tasks, {:.1} MiB",
        bytes.len() as f64 / (1 << 20) as f64
    );

    let typed = best_of(|| {
        let mut diagnosed = 0usize;
        read_payload(Cursor::new(&bytes), &mut |item: Item| {
            diagnosed += usize::from(diagnose_item(&item, &Evidence::default()).is_some());
        })
        .expect("parses");
        assert_eq!(diagnosed, TASKS);
    });
    let parse_only = best_of(|| {
        let mut items = 0usize;
        read_payload(Cursor::new(&bytes), &mut |_item: Item| items += 1).expect("parses");
        assert_eq!(items, TASKS);
    });
    let untyped = best_of(|| {
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("parses");
        assert_eq!(value["value"].as_array().map(Vec::len), Some(TASKS));
    });
    let rate = |d: Duration| TASKS as f64 / d.as_secs_f64();
    println!(
        "typed parse + diagnose (streamed):  {:>8.1} ms  {:>10.0} tasks/s",
        ms(typed),
        rate(typed)
    );
    println!(
        "  of which typed parse (streamed):  {:>8.1} ms  {:>10.0} tasks/s",
        ms(parse_only),
        rate(parse_only)
    );
    println!(
        "serde_json::Value parse (in memory): {:>8.1} ms  {:>10.0} tasks/s",
        ms(untyped),
        rate(untyped)
    );
    println!(
        "ratio (Value time / typed time): {:.2}  (goal >= 1.0)",
        untyped.as_secs_f64() / typed.as_secs_f64()
    );

    match cli {
        Some(cli) => {
            let peak_small = peak_rss_kib(&cli, &small);
            let peak_big = peak_rss_kib(&cli, &big);
            println!(
                "CLI peak RSS, `diagnose --output json`: 1,000 tasks {:.1} MiB; 100,000 tasks {:.1} MiB  (goal <= 64 MiB, flat)",
                peak_small as f64 / 1024.0,
                peak_big as f64 / 1024.0
            );
        }
        None => {
            println!("CLI peak RSS: skipped (pass --cli PATH to the release batch-triage binary)")
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn best_of(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Peak RSS of a child process, from the kernel's accounting (`getrusage(RUSAGE_CHILDREN)` read
/// by a small Python wrapper, since this workspace forbids `unsafe`).
fn peak_rss_kib(cli: &Path, input: &Path) -> u64 {
    let script = "import resource, subprocess, sys\n\
        r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n\
        assert r.returncode == 0, r.returncode\n\
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(cli)
        .args(["diagnose", "--output", "json"])
        .arg(input)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// A List Tasks page shaped like the service's: a mix of succeeded and failed tasks with
/// failure info, node info and constraints (about 1.3 KiB a task).
fn task_list(tasks: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(tasks * 1_400);
    out.extend_from_slice(b"{\"odata.metadata\":\"https://contoso.westeurope.batch.azure.com/$metadata#tasks\",\"value\":[");
    for i in 0..tasks {
        if i > 0 {
            out.push(b',');
        }
        let (exit, result, failure) = match i % 4 {
            0 => (
                137,
                "failure",
                r#","failureInfo":{"category":"usererror","code":"FailureExitCode","message":"The task exited with an exit code representing a failure","details":[{"name":"Message","value":"The task exited with an exit code representing a failure"}]}"#,
            ),
            1 => (
                1,
                "failure",
                r#","failureInfo":{"category":"usererror","code":"FailureExitCode","message":"The task exited with an exit code representing a failure"}"#,
            ),
            _ => (0, "success", ""),
        };
        write!(
            out,
            r#"{{"id":"task-{i}","url":"https://contoso.westeurope.batch.azure.com/jobs/render/tasks/task-{i}","eTag":"0x8DD0A1B2C3D4E5F","creationTime":"2026-11-20T09:59:00.1234567Z","lastModified":"2026-11-20T10:05:00.1234567Z","state":"completed","stateTransitionTime":"2026-11-20T10:05:00.7654321Z","previousState":"running","previousStateTransitionTime":"2026-11-20T10:00:00.1234567Z","commandLine":"/bin/bash -c 'python3 render.py --frame {i} --out $AZ_BATCH_TASK_WORKING_DIR/out'","userIdentity":{{"autoUser":{{"scope":"pool","elevationLevel":"nonadmin"}}}},"constraints":{{"maxWallClockTime":"P10675199DT2H48M5.4775807S","retentionTime":"P7D","maxTaskRetryCount":2}},"requiredSlots":1,"executionInfo":{{"startTime":"2026-11-20T10:00:00.1234567Z","endTime":"2026-11-20T10:05:00.7654321Z","exitCode":{exit},"result":"{result}","retryCount":2,"requeueCount":0{failure}}},"nodeInfo":{{"affinityId":"TVM:tvm-1234567890_{n}-20261120t095500z","nodeUrl":"https://contoso.westeurope.batch.azure.com/pools/gpu-pool/nodes/tvm-1234567890_{n}-20261120t095500z","poolId":"gpu-pool","nodeId":"tvm-1234567890_{n}-20261120t095500z","taskRootDirectory":"workitems/render/job-1/task-{i}","taskRootDirectoryUrl":"https://contoso.westeurope.batch.azure.com/pools/gpu-pool/nodes/tvm-1234567890_{n}-20261120t095500z/files/workitems/render/job-1/task-{i}"}}}}"#,
            n = i % 50
        )
        .expect("write to a Vec");
    }
    out.extend_from_slice(b"]}");
    out
}
