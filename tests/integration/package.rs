//! `scripts/package`: the zips a deployment uploads, opened and checked entry by entry.
//!
//! The script is run with `--binary-dir` on this build's own binaries (a release build is too slow
//! for every test run); the build path of the script only differs in where the binaries come from.
//! The zips are read back with Python's `zipfile`, an independent reader. The last test checks
//! that `infra/main.bicep` sets every app setting the function.json files and the handler read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

const FUNCTIONS_BIN: &str = "batch-triage-functions";
const LAMBDA_BIN: &str = "batch-triage-lambda";
/// Regular file (`S_IFREG`) plus permissions, as `unzip` and AWS/Azure read `external_attr >> 16`.
const EXECUTABLE: u32 = 0o100_755;
const READABLE: u32 = 0o100_644;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn has_lambda_crate() -> bool {
    workspace_root()
        .join("handlers/aws-lambda/Cargo.toml")
        .is_file()
}

/// A fresh directory under cargo's per-target temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("package-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The profile directory this test binary was built into (`target/debug` for `cargo test`, or
/// under `CARGO_TARGET_DIR`): the binary is `<profile dir>/deps/integration-<hash>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <profile>/deps")
        .to_path_buf()
}

/// The handler binaries of this build. `cargo test --workspace` only builds a package's binaries
/// when that package has integration tests, so build them here; when they are fresh this is a
/// no-op. Returns the directory that holds them.
fn handler_binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
            None => panic!("unexpected profile dir {}", dir.display()),
        };
        let mut packages = vec!["-p", "batch-triage-azure-functions"];
        if has_lambda_crate() {
            packages.extend(["-p", "batch-triage-aws-lambda"]);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args(["build", "--locked", "--bins", "--profile", &profile])
            .args(&packages)
            .current_dir(workspace_root())
            .output()
            .expect("cargo build runs");
        assert!(
            output.status.success(),
            "building the handler binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
}

fn package(args: &[&Path]) -> Output {
    let mut command = Command::new(workspace_root().join("scripts/package"));
    let mut flags = ["--binary-dir", "--out", "--policy"].iter();
    for arg in args {
        command
            .arg(flags.next().expect("at most three options"))
            .arg(arg);
    }
    command.output().expect("scripts/package runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One zip entry as Python's `zipfile` reads it.
#[derive(Debug)]
struct Entry {
    mode: u32,
    unix: bool,
    size: u64,
    json: Option<Value>,
}

/// Opens a zip with Python's `zipfile`, checks every CRC (`testzip`), and returns the entries by
/// name with their mode, size and, for `.json` entries, the parsed content.
fn read_zip(path: &Path) -> BTreeMap<String, Entry> {
    const READER: &str = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    if bad is not None:
        sys.exit(f"bad CRC in {bad}")
    out = []
    for i in z.infolist():
        content = json.loads(z.read(i)) if i.filename.endswith(".json") else None
        out.append({"name": i.filename, "mode": i.external_attr >> 16,
                    "system": i.create_system, "size": i.file_size, "json": content})
print(json.dumps(out))
"#;
    let output = Command::new("python3")
        .args(["-c", READER])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "reading {} failed: {}",
        path.display(),
        text(&output.stderr)
    );
    let entries: Vec<Value> = serde_json::from_slice(&output.stdout).expect("reader prints JSON");
    entries
        .into_iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_owned();
            let entry = Entry {
                mode: u32::try_from(e["mode"].as_u64().expect("mode")).expect("mode fits"),
                unix: e["system"] == 3,
                size: e["size"].as_u64().expect("size"),
                json: (!e["json"].is_null()).then(|| e["json"].clone()),
            };
            (name, entry)
        })
        .collect()
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// The bindings of a function.json as (type, direction, name).
fn bindings(function_json: &Value) -> Vec<(String, String, String)> {
    function_json["bindings"]
        .as_array()
        .expect("bindings is an array")
        .iter()
        .map(|b| {
            let field = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (field("type"), field("direction"), field("name"))
        })
        .collect()
}

fn binding(kind: &str, direction: &str, name: &str) -> (String, String, String) {
    (kind.to_owned(), direction.to_owned(), name.to_owned())
}

#[test]
fn the_functions_zip_has_host_json_the_handler_and_one_folder_per_function() {
    let bins = handler_binaries();
    let out = temp_dir("layout");
    let output = package(&[bins, &out]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/package failed:\n{stdout}\n{}",
        text(&output.stderr)
    );

    let functions_zip = out.join("batch-triage-functions.zip");
    assert!(
        stdout.contains(&functions_zip.display().to_string()),
        "the script names what it built: {stdout}"
    );
    let zip = read_zip(&functions_zip);
    let names: BTreeSet<&str> = zip.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "host.json",
        FUNCTIONS_BIN,
        "Diagnose/function.json",
        "Sweep/function.json",
        "TaskEventGrid/function.json",
        "TaskEvents/function.json",
    ]
    .into();
    assert_eq!(names, expected, "the entries of the Functions zip");

    for (name, entry) in &zip {
        assert!(
            entry.unix,
            "{name}: made on Unix, so the mode bits are honoured"
        );
        let mode = if name == FUNCTIONS_BIN {
            EXECUTABLE
        } else {
            READABLE
        };
        assert_eq!(entry.mode, mode, "{name}: mode {:o}", entry.mode);
    }
    assert_eq!(
        zip[FUNCTIONS_BIN].size,
        file_size(&bins.join(FUNCTIONS_BIN)),
        "the handler binary is stored whole"
    );

    let host = zip["host.json"].json.as_ref().expect("host.json parses");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"], FUNCTIONS_BIN,
        "host.json names the binary at the zip root"
    );
    let repo_host: Value = serde_json::from_slice(
        &std::fs::read(workspace_root().join("host.json")).expect("read host.json"),
    )
    .expect("the repository's host.json parses");
    assert_eq!(host, &repo_host, "host.json is the repository's");

    let function = |name: &str| {
        bindings(
            zip[&format!("{name}/function.json")]
                .json
                .as_ref()
                .unwrap_or_else(|| panic!("{name}/function.json parses")),
        )
    };
    assert_eq!(
        function("TaskEvents"),
        [binding("eventHubTrigger", "in", "events")]
    );
    assert_eq!(
        function("TaskEventGrid"),
        [binding("eventGridTrigger", "in", "event")]
    );
    assert_eq!(function("Sweep"), [binding("timerTrigger", "in", "timer")]);
    assert_eq!(
        function("Diagnose"),
        [
            binding("httpTrigger", "in", "req"),
            binding("http", "out", "res")
        ]
    );

    let lambda_zip = out.join("batch-triage-lambda.zip");
    if has_lambda_crate() {
        let zip = read_zip(&lambda_zip);
        let names: Vec<&str> = zip.keys().map(String::as_str).collect();
        assert_eq!(names, ["bootstrap"], "the Lambda zip holds only bootstrap");
        let bootstrap = &zip["bootstrap"];
        assert!(bootstrap.unix);
        assert_eq!(
            bootstrap.mode, EXECUTABLE,
            "bootstrap mode {:o}",
            bootstrap.mode
        );
        assert_eq!(
            bootstrap.size,
            file_size(&bins.join(LAMBDA_BIN)),
            "bootstrap is the batch-triage-lambda binary"
        );
    } else {
        assert!(!lambda_zip.exists(), "no Lambda crate, no Lambda zip");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A directory of stand-in binaries: symlinks to this test executable, a real ELF executable.
fn stand_in_binaries(name: &str, which: &[&str]) -> PathBuf {
    let dir = temp_dir(name);
    let exe = std::env::current_exe().expect("current exe");
    for bin in which {
        std::os::unix::fs::symlink(&exe, dir.join(bin)).expect("symlink");
    }
    dir
}

#[test]
fn a_policy_file_goes_into_both_zips_as_policy_toml() {
    let bins = stand_in_binaries("policy-bins", &[FUNCTIONS_BIN, LAMBDA_BIN]);
    let out = temp_dir("policy-out");
    let policy = workspace_root().join("examples/policy.toml");
    let output = package(&[&bins, &out, &policy]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let policy_size = file_size(&policy);
    let functions = read_zip(&out.join("batch-triage-functions.zip"));
    assert_eq!(functions["policy.toml"].size, policy_size);
    assert_eq!(functions["policy.toml"].mode, READABLE);
    assert_eq!(functions.len(), 7, "six entries plus the policy");
    if has_lambda_crate() {
        let lambda = read_zip(&out.join("batch-triage-lambda.zip"));
        let names: Vec<&str> = lambda.keys().map(String::as_str).collect();
        assert_eq!(names, ["bootstrap", "policy.toml"]);
        assert_eq!(lambda["policy.toml"].size, policy_size);
    }
    let _ = std::fs::remove_dir_all(&bins);
    let _ = std::fs::remove_dir_all(&out);
}

/// Runs the script on `bins` and expects it to fail, naming `what`, and to write no zip.
fn assert_refused(bins: &Path, what: &str) {
    let out = temp_dir("refused-out");
    let output = package(&[bins, &out]);
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "scripts/package succeeded without {what}: {}",
        text(&output.stdout)
    );
    assert!(
        stderr.contains(what),
        "the error names the problem ({what}): {stderr}"
    );
    assert!(
        !out.join("batch-triage-functions.zip").exists(),
        "no zip is written"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_missing_or_unusable_binary_fails_with_a_clear_message() {
    let empty = stand_in_binaries("no-bins", &[]);
    assert_refused(&empty, &format!("missing binary {FUNCTIONS_BIN} in"));

    if has_lambda_crate() {
        let only_functions = stand_in_binaries("functions-only", &[FUNCTIONS_BIN]);
        assert_refused(&only_functions, &format!("missing binary {LAMBDA_BIN} in"));
        let _ = std::fs::remove_dir_all(&only_functions);
    }

    let not_elf = stand_in_binaries("not-elf", &[LAMBDA_BIN]);
    let script = not_elf.join(FUNCTIONS_BIN);
    std::fs::write(&script, "#!/bin/sh\n").expect("write");
    let mut permissions = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).expect("chmod");
    assert_refused(&not_elf, "is not an x86-64 ELF executable");

    let missing_dir = empty.join("nowhere");
    assert_refused(&missing_dir, "binary directory not found");
    let _ = std::fs::remove_dir_all(&empty);
    let _ = std::fs::remove_dir_all(&not_elf);
}

/// The keys of a Bicep object literal `var NAME = {` … `}` in `text`: one `key: value` per line,
/// as `infra/main.bicep` writes them (comments and nested lines skipped).
fn bicep_object_keys(text: &str, var: &str) -> BTreeSet<String> {
    let start = format!("var {var} = {{");
    let body = text
        .split_once(&start)
        .unwrap_or_else(|| panic!("infra/main.bicep declares `{start}`"))
        .1;
    let mut keys = BTreeSet::new();
    for line in body.lines() {
        if line.starts_with('}') {
            return keys;
        }
        let line = line.trim();
        if line.starts_with("//") {
            continue;
        }
        if let Some((key, _)) = line.split_once(':') {
            let key = key.trim_matches('\'');
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                keys.insert(key.to_owned());
            }
        }
    }
    panic!("`{start}` is not closed");
}

/// Every `%SETTING%` in a string of `value`.
fn percent_settings(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            let mut parts = s.split('%');
            parts.next();
            while let (Some(name), Some(_)) = (parts.next(), parts.next()) {
                found.insert(name.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| percent_settings(v, found)),
        Value::Object(map) => map.values().for_each(|v| percent_settings(v, found)),
        _ => {}
    }
}

#[test]
fn the_bicep_sets_every_app_setting_the_functions_and_the_handler_read() {
    let root = workspace_root();
    let bicep = std::fs::read_to_string(root.join("infra/main.bicep")).expect("read main.bicep");
    let settings = bicep_object_keys(&bicep, "baseAppSettings");

    // What the handler cannot start without (the managed identity replaces the access key).
    for name in [
        "AZURE_BATCH_ENDPOINT",
        "AZURE_BATCH_ACCOUNT",
        "BATCH_TRIAGE_STORE",
    ] {
        assert!(
            settings.contains(name),
            "main.bicep sets {name}: {settings:?}"
        );
    }
    assert!(
        !settings.contains("AZURE_BATCH_ACCESS_KEY"),
        "no Shared Key: the app reads Batch with its managed identity"
    );

    // What the function.json files refer to: %SETTING% expressions and identity-based connections.
    let functions_dir = root.join("handlers/azure-functions/functions");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&functions_dir).expect("read functions/") {
        let dir = entry.expect("dir entry").path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let function: Value = serde_json::from_slice(
            &std::fs::read(dir.join("function.json")).expect("read function.json"),
        )
        .unwrap_or_else(|e| panic!("{name}/function.json: {e}"));
        let mut referenced = BTreeSet::new();
        percent_settings(&function, &mut referenced);
        for setting in referenced {
            assert!(
                settings.contains(&setting),
                "{name}/function.json reads %{setting}%, which main.bicep does not set"
            );
        }
        for binding in function["bindings"].as_array().expect("bindings") {
            if let Some(connection) = binding["connection"].as_str() {
                let setting = format!("{connection}__fullyQualifiedNamespace");
                assert!(
                    settings.contains(&setting),
                    "{name}/function.json connects through {connection:?}: main.bicep must set {setting}"
                );
            }
        }
        names.push(name);
    }
    assert!(names.len() >= 4, "found the functions: {names:?}");

    // The Event Grid subscription delivers to a function that exists and takes Event Grid events.
    let event_grid = std::fs::read_to_string(root.join("infra/modules/event-grid.bicep"))
        .expect("read event-grid.bicep");
    let target = event_grid
        .split_once("/functions/")
        .and_then(|(_, rest)| rest.split('\'').next())
        .expect("event-grid.bicep names its target function");
    let function: Value = serde_json::from_slice(
        &std::fs::read(functions_dir.join(target).join("function.json"))
            .unwrap_or_else(|e| panic!("the Event Grid subscription's function {target}: {e}")),
    )
    .expect("parses");
    assert_eq!(
        function["bindings"][0]["type"], "eventGridTrigger",
        "{target} is an Event Grid function"
    );
}
