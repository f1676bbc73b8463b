//! What the handler's benchmark examples share: where the release handler is, a field of
//! `/proc/<pid>/status`, and percentiles. (A directory module, so Cargo does not take it for an
//! example of its own.)

use std::path::PathBuf;

/// The release `batch-triage-functions` beside this example's directory
/// (`target/release/examples/…` → `target/release/`), or `BENCH_HANDLER`.
pub(crate) fn handler() -> PathBuf {
    if let Some(p) = std::env::var_os("BENCH_HANDLER").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target directory")
        .join("batch-triage-functions");
    assert!(
        path.exists(),
        "{} is missing: cargo build --release -p batch-triage-azure-functions --bins",
        path.display()
    );
    path
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 if unreadable.
pub(crate) fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
