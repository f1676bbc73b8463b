//! Architecture invariants (ARCHITECTURE.md), checked rather than hoped for:
//! - the core (`batch-triage-diagnosis`) does no I/O: no async runtime, HTTP, cloud SDK or
//!   filesystem-watching crate anywhere in its dependency closure;
//! - dependencies point inward: handlers → pipeline → adapters → core, never back out;
//! - `anyhow` only in handlers and tests; libraries return typed errors;
//! - the foundation (`batch-triage-foundation`) does no I/O either: no HTTP stack or cloud SDK in
//!   its dependency closure, no file, environment or network access in its sources;
//! - the repository stands alone: no tracked file names a document outside it or a relative path
//!   that climbs above its root;
//! - README.md and docs/failure-classes.md list every failure class and exit meaning.

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
    // The Azure SDK's HTTP transport built on first use, for the adapters that talk to Azure.
    ("batch-triage-lazy-http", 1),
    ("batch-triage-batch-client", 2),
    ("batch-triage-batch-emulator", 2),
    ("batch-triage-artifact-store", 2),
    ("batch-triage-preserve", 3),
    // Dev-dependency only: the handlers' and the pipeline's end-to-end tests.
    ("batch-triage-test-kit", 3),
    ("batch-triage-notify", 3),
    ("batch-triage-pipeline", 4),
    // The report from the store (gathering, bounded, and its HTML), served by every handler.
    ("batch-triage-report", 5),
    // The demo: the emulator, the pipeline and loopback receivers in one process, and its
    // page, the store's report with the demo's sections. A library the CLI calls, so it sits
    // between the report and the handlers.
    ("batch-triage-demo", 6),
    ("batch-triage-cli", 7),
    ("batch-triage-azure-functions", 7),
    ("batch-triage-aws-lambda", 7),
    ("batch-triage-tests", 8),
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
                    layer >= 7,
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
    for doc in ["README.md", "docs/failure-classes.md"] {
        documents_every_class_and_exit_meaning(doc);
    }
}

/// `doc` has a table row `| class | severity |` for every class and one for every exit meaning.
fn documents_every_class_and_exit_meaning(doc: &str) {
    let readme = std::fs::read_to_string(workspace_root().join(doc)).expect(doc);
    for class in diagnosis::FailureClass::ALL {
        let row = format!("| `{}` | {} |", class.as_str(), class.severity());
        assert!(
            readme.contains(&row),
            "{doc}'s class table lacks the row starting {row:?}"
        );
    }
    for meaning in diagnosis::ExitMeaning::ALL {
        assert!(
            readme.contains(&format!("| `{meaning}` |")),
            "{doc}'s exitMeaning table lacks {meaning}"
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

/// Names of documents that live outside the repository (a team's shared notes). Each is split in
/// two so that this file does not contain what it looks for; [`outside_references`] matches the
/// joined text. Every line of a tracked file that holds one of these refers outside the repository.
const OUTSIDE_NAMES: &[(&str, &str)] = &[
    ("DESIGN", " §"),
    ("DESIGN", ".md"),
    ("DESIGN", " section"),
    ("BATCH", "-FACTS"),
    ("FACTS", ".md"),
    ("RUNTIME", ".md"),
    ("RUNTIME", " §"),
    ("STYLE", " §"),
    ("STYLE", " rule"),
    ("STYLE", ".md"),
    ("POOLS", "-NODES"),
    ("PEERS", " §"),
    ("PEERS", ".md"),
    ("../shared/", "corpus"),
    ("../shared/", "real-payloads"),
];

/// How many directories below the repository root `dir` is.
fn depth(dir: &Path) -> usize {
    dir.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count()
}

/// The files of the repository: those git tracks, or, outside a git checkout, every regular file
/// except build output and installed test dependencies.
fn repository_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    if let Ok(output) = listed {
        if output.status.success() {
            return output
                .stdout
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                .collect();
        }
    }
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir)).unwrap().flatten() {
            let name = entry.file_name();
            let rel = dir.join(&name);
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if ![".git", "target", ".venv", "node_modules"].contains(&&*name.to_string_lossy())
                {
                    dirs.push(rel);
                }
            } else if kind.is_file() {
                files.push(rel);
            }
        }
    }
    files
}

/// The line with every URL blanked out: a URL's `..` is not a path of the repository.
fn without_urls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !c.is_ascii_alphanumeric() && c != '+' && c != '-' && c != '.')
            .map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        let tail = &rest[at + 3..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | '>' | ']'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// How far above its starting directory a relative path climbs: `../../a` climbs 2, `a/../../b`
/// climbs 1, `a/../b` climbs 0.
fn climb(path: &str) -> usize {
    let mut level = 0_i64;
    let mut lowest = 0_i64;
    for segment in path.split(['/', '\\']) {
        match segment {
            ".." => level -= 1,
            "" | "." => {}
            _ => level += 1,
        }
        lowest = lowest.min(level);
    }
    usize::try_from(-lowest).unwrap_or(0)
}

/// Every place in `text` (the contents of the file at `file`, relative to the repository root)
/// that refers outside the repository, as `(line number, what)`. `crate_dir` is the directory of
/// the package the file belongs to: a path joined to `CARGO_MANIFEST_DIR` starts there, any other
/// relative path at the file's own directory (`include_str!`, `#[path]`, Markdown links), the
/// deepest place a relative path in the file can start from.
fn outside_references(file: &Path, crate_dir: &Path, text: &str) -> Vec<(usize, String)> {
    let hand_book = ["hand", "book"].concat();
    let style_section = ["STYLE", " A"].concat();
    let names: Vec<String> = OUTSIDE_NAMES
        .iter()
        .map(|(a, b)| format!("{a}{b}"))
        .collect();
    let file_depth = depth(file.parent().unwrap_or(Path::new("")));
    let crate_depth = depth(crate_dir);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        for name in &names {
            if line.contains(name.as_str()) {
                found.push((
                    index + 1,
                    format!("names {name:?}, a document outside the repository"),
                ));
            }
        }
        if line.to_ascii_lowercase().contains(&hand_book) {
            found.push((
                index + 1,
                format!("cites a {hand_book} outside the repository"),
            ));
        }
        // A section of an outside style guide: its name, a space, `A` and a digit.
        for (at, _) in line.match_indices(&style_section) {
            if line[at + 7..].starts_with(|c: char| c.is_ascii_digit()) {
                found.push((index + 1, "cites an outside style guide".to_owned()));
            }
        }
        let manifest_relative = lines[index.saturating_sub(3)..=index]
            .iter()
            .any(|l| l.contains("CARGO_MANIFEST_DIR"));
        let start_depth = if manifest_relative {
            crate_depth
        } else {
            file_depth
        };
        let line = without_urls(line);
        let is_path_char = |c: char| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '/' | '\\' | '_' | '-' | '*' | '~' | '@' | '+')
        };
        for token in line.split(|c: char| !is_path_char(c)) {
            let relative =
                token.contains("../") || token.contains("..\\") || token.ends_with("/..");
            if relative && climb(token) > start_depth {
                found.push((
                    index + 1,
                    format!(
                        "{token:?} climbs {} levels from {}, above the repository root",
                        climb(token),
                        if manifest_relative {
                            "the crate's directory"
                        } else {
                            "the file's directory"
                        }
                    ),
                ));
            }
        }
    }
    found
}

/// The directory of the package `file` belongs to: the nearest one with a `Cargo.toml`.
fn package_dir(root: &Path, file: &Path) -> PathBuf {
    let mut dir = file.parent();
    while let Some(candidate) = dir {
        if root.join(candidate).join("Cargo.toml").is_file() {
            return candidate.to_path_buf();
        }
        dir = candidate.parent();
    }
    PathBuf::new()
}

#[test]
fn nothing_refers_outside_the_repository() {
    let root = workspace_root();
    let files = repository_files(&root);
    assert!(
        files.iter().any(|f| f == Path::new("ARCHITECTURE.md")),
        "the file list is the repository's: {} files",
        files.len()
    );
    let mut offenders = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            // Binary files (and files deleted but not yet committed) hold no references.
            continue;
        };
        let crate_dir = package_dir(&root, file);
        for (line, what) in outside_references(file, &crate_dir, &text) {
            offenders.push(format!("{}:{line}: {what}", file.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "the repository must stand alone (put what is needed in docs/, or say it in place):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_outside_reference_check_catches_what_it_should_and_only_that() {
    let check = |file: &str, crate_dir: &str, text: &str| {
        outside_references(Path::new(file), Path::new(crate_dir), text)
    };
    let joined = |(a, b): (&str, &str)| format!("{a}{b}");
    // Paths that climb are built, so that this file itself climbs nowhere.
    let up = |levels: usize| "../".repeat(levels);
    // Names of outside documents, wherever they are.
    for name in OUTSIDE_NAMES {
        let text = format!("//! see {} for why\n", joined(*name));
        assert_eq!(
            check("shared/x/src/lib.rs", "shared/x", &text).len(),
            1,
            "{text}"
        );
    }
    let text = format!("the team {}book says\n", "Hand");
    assert_eq!(check("a.md", "", &text)[0].0, 1);
    let style = format!("shaped like this ({} A6)\n", "STYLE");
    assert_eq!(check("shared/x/src/lib.rs", "shared/x", &style).len(), 1);
    assert!(check("a.md", "", "STYLE Assistant\n").is_empty());

    // Paths that climb above the root, from the file or from the crate.
    let found = check(
        "shared/batch-client/src/error.rs",
        "shared/batch-client",
        &format!(
            "let dir = concat!(\n    env!(\"CARGO_MANIFEST_DIR\"),\n    \"/{}elsewhere/errors\"\n);\n",
            up(3)
        ),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 3, "the line of the path");
    assert!(
        found[0]
            .1
            .contains("climbs 3 levels from the crate's directory"),
        "{found:?}"
    );
    assert_eq!(
        check(
            "handlers/cli/src/policy.rs",
            "handlers/cli",
            &format!("include_str!(\"{}x.json\")\n", up(4))
        )
        .len(),
        1
    );
    assert_eq!(
        check("ARCHITECTURE.md", "", "see `../notes/x.md`\n").len(),
        1
    );
    assert_eq!(check("scripts/x", "", "cd ../../elsewhere\n").len(), 1);

    // Paths that stay inside, URLs and hostile test strings are fine.
    for (file, crate_dir, text) in [
        (
            "handlers/cli/src/policy.rs",
            "handlers/cli",
            format!(
                "include_str!(\"{}shared/diagnosis/test_data/x.json\")",
                up(3)
            ),
        ),
        (
            "handlers/aws-lambda/tests/t.rs",
            "handlers/aws-lambda",
            "crate_dir().join(\"../../.venv/bin/python\")".to_owned(),
        ),
        (
            "shared/diagnosis/tests/d/c.rs",
            "shared/diagnosis",
            format!(
                "Path::new(env!(\"CARGO_MANIFEST_DIR\")).join(\"{}tests/corpus\")",
                up(2)
            ),
        ),
        (
            "fuzz/Cargo.toml",
            "fuzz",
            "diagnosis = { path = \"../shared/diagnosis\" }".to_owned(),
        ),
        (
            "infra/README.md",
            "",
            "the main [README](../README.md#deploy)".to_owned(),
        ),
        (
            "README.md",
            "",
            "see https://example.com/a/../../../b and http://x/../y".to_owned(),
        ),
        (
            "shared/preserve/src/names.rs",
            "shared/preserve",
            "relative_path(\"../../etc/passwd\")".to_owned(),
        ),
        (
            "shared/store/tests/s.rs",
            "shared/store",
            "\"a/../../b\", 0..10, [..], ..Default::default()".to_owned(),
        ),
        (
            "scripts/test",
            "",
            "root=\"$(cd \"$(dirname \"$0\")/..\" && pwd)\"".to_owned(),
        ),
    ] {
        assert_eq!(check(file, crate_dir, &text), Vec::new(), "{file}: {text}");
    }
}
