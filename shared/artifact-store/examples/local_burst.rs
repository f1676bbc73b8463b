//! A small measurement of the local store under a burst of small writes: `COUNT` objects of
//! `SIZE` bytes, `CONCURRENCY` writers at once, through `put_stream` (the way preserved logs
//! arrive) or `put` (state and records). Prints objects per second and the process's CPU time.
//!
//! ```text
//! cargo run --release -p batch-triage-artifact-store --example local_burst -- \
//!     [stream|put] [COUNT] [SIZE] [CONCURRENCY] [DIR]
//! ```
//!
//! `DIR` (default: a temp directory under the current directory) decides the file system, and so
//! what a `syncfs` has to flush.

use std::sync::Arc;
use std::time::Instant;

use artifact_store::{ArtifactStore, Condition, LocalDirStore, ObjectKey};
use bytes::Bytes;
use futures::StreamExt;

/// User and system CPU time of this process, in seconds (from `/proc/self/stat`; Linux only).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, so 11 and 12 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("stream", String::as_str).to_owned();
    let count: usize = args.get(1).map_or(2000, |s| s.parse().expect("COUNT"));
    let size: usize = args.get(2).map_or(2048, |s| s.parse().expect("SIZE"));
    let concurrency: usize = args.get(3).map_or(32, |s| s.parse().expect("CONCURRENCY"));
    let dir = tempfile::tempdir_in(args.get(4).map_or(".", String::as_str)).expect("temp dir");
    let store: Arc<dyn ArtifactStore> = Arc::new(LocalDirStore::new(dir.path()).expect("store"));
    let body = Bytes::from(vec![b'x'; size]);

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let store = Arc::clone(&store);
            let body = body.clone();
            let mode = mode.clone();
            async move {
                let key = ObjectKey::new(format!("burst/{}/{i}.txt", i % 64)).expect("key");
                if mode == "put" {
                    store
                        .put(&key, body, Condition::IfAbsent)
                        .await
                        .expect("put");
                } else {
                    let stream = futures::stream::once(async move { Ok(body) }).boxed();
                    store.put_stream(&key, stream).await.expect("put_stream");
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) => format!(
            "cpu {:.2} s ({:.0} µs/object)",
            b - a,
            (b - a) * 1e6 / count as f64
        ),
        _ => "cpu n/a".to_owned(),
    };
    println!(
        "{mode}: {count} × {size} B, {concurrency} writers: {wall:.2} s, {:.0} objects/s, {cpu}",
        count as f64 / wall
    );
}
