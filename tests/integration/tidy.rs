//! Architecture invariants (ARCHITECTURE.md), checked rather than hoped for:
//! - the core (`batch-triage-diagnosis`) does no I/O: no async runtime, HTTP, cloud SDK or
//!   filesystem-watching crate anywhere in its dependency closure;
//! - dependencies point inward: handlers → pipeline → adapters → core, never back out;
//! - `anyhow` only in handlers and tests; libraries return typed errors;
//! - the foundation (`batch-triage-foundation`) does no I/O either: no HTTP stack or cloud SDK in
//!   its dependency closure, no file, environment or network access in its sources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The layer of each workspace crate: a crate may depend (normal dependencies) only on crates of a
/// lower layer. A new crate must be placed here.
const LAYERS: &[(&str, u8)] = &[
    ("batch-triage-diagnosis", 0),
    // Deadlines, the retry policy and Secret, shared by the adapters; no I/O.
    ("batch-triage-foundation", 0),
    ("batch-triage-batch-client", 1),
    ("batch-triage-batch-emulator", 1),
    ("batch-triage-artifact-store", 1),
    ("batch-triage-preserve", 2),
    // Dev-dependency only: the handlers' and the pipeline's end-to-end tests.
    ("batch-triage-test-kit", 2),
    ("batch-triage-notify", 2),
    ("batch-triage-pipeline", 3),
    // The demo: the emulator, the pipeline and loopback receivers in one process, and its
    // report. A library the CLI calls, so it sits just below the handlers.
    ("batch-triage-demo", 4),
    ("batch-triage-cli", 5),
    ("batch-triage-azure-functions", 5),
    ("batch-triage-aws-lambda", 5),
    ("batch-triage-tests", 6),
];

/// Crates the pure core must never reach, by name prefix.
const IMPURE: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "lambda_runtime",
    "azure_",
    "aws-",
    "mio",
    "socket2",
    "notify",
];

#[test]
fn dependencies_point_inward() {
    let meta = metadata();
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    for package in meta["packages"].as_array().unwrap() {
        if !members.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        let layer = *layers
            .get(name)
            .unwrap_or_else(|| panic!("workspace crate {name} has no layer in tidy.rs LAYERS"));
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let normal = dep["kind"].is_null();
            if let (true, Some(dep_layer)) = (normal, layers.get(dep_name)) {
                assert!(
                    dep_layer < &layer,
                    "{name} (layer {layer}) must not depend on {dep_name} (layer {dep_layer}): dependencies point inward"
                );
            }
            if normal && dep_name == "anyhow" {
                assert!(
                    layer >= 5,
                    "{name} is a library: return typed errors (thiserror), not anyhow"
                );
            }
        }
    }
}

#[test]
fn the_core_does_no_io() {
    let meta = metadata();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let by_id: BTreeMap<&str, &Value> = nodes
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let name_of = |id: &str| -> String {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let core = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "batch-triage-diagnosis")
        .unwrap()["id"]
        .as_str()
        .unwrap();
    // Walk normal (non-dev, non-build) dependencies only.
    let mut stack = vec![core];
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in by_id[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    let closure: Vec<String> = seen.iter().map(|id| name_of(id)).collect();
    for name in &closure {
        assert!(
            !IMPURE.iter().any(|p| name.starts_with(p)),
            "the pure core reaches {name}: {closure:?}"
        );
    }
    assert!(
        closure.iter().any(|n| n == "serde_json"),
        "the walk found the core's real dependencies: {closure:?}"
    );
}

#[test]
fn the_core_reads_no_environment_files_or_clock() {
    let src = workspace_root().join("shared/diagnosis/src");
    let mut offenders = Vec::new();
    let mut files = vec![src];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "std::env",
            "std::fs",
            "File::open",
            "SystemTime::now",
            "Instant::now",
            "OffsetDateTime::now",
            "std::net",
        ] {
            if text.contains(needle) {
                offenders.push(format!("{} uses {needle}", path.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn the_readme_documents_every_class_and_exit_meaning() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    for class in diagnosis::FailureClass::ALL {
        let row = format!("| `{}` | {} |", class.as_str(), class.severity());
        assert!(
            readme.contains(&row),
            "README's class table lacks the row starting {row:?}"
        );
    }
    for meaning in diagnosis::ExitMeaning::ALL {
        assert!(
            readme.contains(&format!("| `{meaning}` |")),
            "README's exitMeaning table lacks {meaning}"
        );
    }
}

/// Crates the foundation must never reach: it holds types and decisions, not clients. (It uses
/// `tokio::time::Instant` for deadlines, so the runtime itself is allowed.)
const NO_CLIENTS: &[&str] = &[
    "reqwest",
    "hyper",
    "axum",
    "lettre",
    "azure_",
    "aws-",
    "lambda_runtime",
    "rustls",
];

#[test]
fn the_foundation_does_no_io() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let id_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{name} is a workspace crate"))
    };
    let name_of = |id: &str| -> String {
        packages
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let nodes: BTreeMap<String, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_owned(), n))
        .collect();
    let mut stack = vec![id_of("batch-triage-foundation")];
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in nodes[&id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().unwrap().to_owned());
            }
        }
    }
    let closure: Vec<String> = seen.iter().map(|id| name_of(id)).collect();
    for name in &closure {
        assert!(
            !NO_CLIENTS.iter().any(|p| name.starts_with(p)),
            "the foundation reaches {name}: {closure:?}"
        );
    }
    assert!(
        closure.iter().any(|n| n == "httpdate"),
        "the walk found the foundation's real dependencies: {closure:?}"
    );
    let src = workspace_root().join("shared/foundation/src");
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for needle in [
            "std::env",
            "std::fs",
            "std::net",
            "tokio::net",
            "tokio::fs",
            "File::open",
        ] {
            assert!(
                !text.contains(needle),
                "{} uses {needle}",
                entry.path().display()
            );
        }
    }
}
