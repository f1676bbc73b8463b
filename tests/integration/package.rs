//! `scripts/package`: the zips a deployment uploads, opened and checked entry by entry.
//!
//! The script is run with `--binary-dir` on this build's own binaries (a release build is too slow
//! for every test run); the build path of the script only differs in where the binaries come from.
//! The zips are read back with Python's `zipfile`, an independent reader. The last tests check
//! `infra/`: `main.bicep` sets every app setting the function.json files and the handler read,
//! and no loop, condition, resource name or scope in any `.bicep` file needs a value that only
//! exists once the deployment runs (the Bicep compiler's BCP120/BCP178, which checkov misses).

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
        "Report/function.json",
        "Sweep/function.json",
        "TaskEventGrid/function.json",
        "TaskEvents/function.json",
        "TaskEvents2/function.json",
        "TaskEvents3/function.json",
        "TaskEvents4/function.json",
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

    assert_eq!(
        function("Report"),
        [
            binding("httpTrigger", "in", "req"),
            binding("http", "out", "res")
        ]
    );
    let report = zip["Report/function.json"].json.as_ref().unwrap();
    assert_eq!(
        report["bindings"][0]["authLevel"], "function",
        "the report is behind the function key"
    );
    assert_eq!(report["bindings"][0]["methods"], serde_json::json!(["get"]));

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
    assert_eq!(
        functions.len(),
        11,
        "host.json, the handler, eight function.json files (TaskEvents to TaskEvents4, TaskEventGrid, \
         Diagnose, Sweep, Report), and the policy"
    );
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

    // The settings reach the app as one `appsettings` object (a sites/config child), not as a
    // siteConfig.appSettings array built by a loop over them (which does not compile: BCP178).
    let config = bicep
        .split_once("name: 'appsettings'")
        .expect("main.bicep has a sites/config child named 'appsettings'")
        .1;
    let properties = config
        .lines()
        .find(|l| l.trim_start().starts_with("properties:"))
        .expect("the appsettings resource has properties");
    assert!(
        properties.contains("union(") && properties.contains("baseAppSettings"),
        "the appsettings object includes baseAppSettings: {properties}"
    );
    assert!(
        !bicep.contains("appSettings: ["),
        "no second place for settings: siteConfig.appSettings is not used"
    );
    // Elastic Premium needs the worker runtime and the host version as settings (Flex takes
    // them from functionAppConfig and rejects them).
    let premium = bicep_object_keys(&bicep, "premiumAppSettings");
    for name in ["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"] {
        assert!(premium.contains(name), "premiumAppSettings sets {name}");
        assert!(!settings.contains(name), "Flex Consumption rejects {name}");
    }

    // What the handler cannot start without (the managed identity replaces the access key): the
    // accounts are the numbered settings, built by a loop over the accounts and merged in.
    assert!(
        properties.contains("accountAppSettings"),
        "the appsettings object includes the accounts: {properties}"
    );
    let app_settings = bicep
        .split_once("var accountAppSettings = ")
        .expect("main.bicep declares accountAppSettings")
        .1;
    assert!(
        app_settings.starts_with("json('{${join(accountSettingEntries, ', ')}}')"),
        "accountAppSettings is the object of the entries: {}",
        app_settings.lines().next().unwrap_or_default()
    );
    let entries = bicep
        .split_once("var accountSettingEntries = [for (account, i) in accounts: ")
        .expect("main.bicep builds one entry per account")
        .1;
    let entries = entries.lines().next().unwrap_or_default();
    for field in ["NAME", "ENDPOINT"] {
        assert!(
            entries.contains(&format!("\"BATCH_TRIAGE_ACCOUNTS__${{i}}__{field}\": ")),
            "accountAppSettings sets BATCH_TRIAGE_ACCOUNTS__<n>__{field}: {entries}"
        );
    }
    // checkov's Bicep parser reads no lambdas, and scripts/check-infra fails on what it cannot
    // parse: the template is written without them.
    assert!(!bicep.contains("=>"), "no lambda in main.bicep");
    assert!(
        settings.contains("BATCH_TRIAGE_STORE"),
        "main.bicep sets BATCH_TRIAGE_STORE: {settings:?}"
    );
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

/// Removes `//` comments, keeping `//` inside single-quoted Bicep strings (`'https://…'`).
#[test]
fn event_grid_dead_letters_go_to_a_container_the_sweep_drains() {
    let root = workspace_root();
    let main =
        strip_bicep_comments(&std::fs::read_to_string(root.join("infra/main.bicep")).unwrap());
    let event_grid = strip_bicep_comments(
        &std::fs::read_to_string(root.join("infra/modules/event-grid.bicep")).unwrap(),
    );
    // Without a dead-letter destination Event Grid drops what it gives up on.
    for needle in [
        "deadLetterWithResourceIdentity",
        "endpointType: 'StorageBlob'",
        "blobContainerName: deadLetterContainerName",
        "scope: deadLetterContainer",
    ] {
        assert!(event_grid.contains(needle), "event-grid.bicep: {needle}");
    }
    // The handler is told where they are, and may read and delete them there.
    assert!(
        bicep_object_keys(&main, "baseAppSettings").contains("BATCH_TRIAGE_DEAD_LETTER_STORE"),
        "main.bicep sets BATCH_TRIAGE_DEAD_LETTER_STORE"
    );
    assert!(
        main.contains("resource deadLetterContainerRole"),
        "the app's role on the container"
    );
    assert!(main.contains("deadLetterContainerName: deadLetterContainer.name"));
}

fn strip_bicep_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut previous = ' ';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            match c {
                '\'' if previous != '\\' => in_string = !in_string,
                '/' if !in_string && previous == '/' => {
                    cut = i - 1;
                    break;
                }
                _ => {}
            }
            previous = c;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `word` occurs in `expr` as a whole identifier, and what follows it.
fn identifier_uses<'a>(expr: &'a str, word: &str) -> Vec<&'a str> {
    let mut uses = Vec::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        let before = expr[..start].chars().next_back();
        let after = expr[end..].chars().next();
        if !before.is_some_and(|c| is_ident_char(c) || c == '.')
            && !after.is_some_and(is_ident_char)
        {
            uses.push(&expr[end..]);
        }
        from = end;
    }
    uses
}

/// Why `expr` is only known once the deployment runs, if it is: a resource or module symbol
/// read beyond `id`, `name`, `type` and `apiVersion` (its properties, identity or outputs), a
/// `list*()` or `reference()` call, or a variable built from one of those.
fn deploy_time_reason(
    expr: &str,
    symbols: &[String],
    deploy_time_vars: &[String],
) -> Option<String> {
    for symbol in symbols {
        for rest in identifier_uses(expr, symbol) {
            if let Some(member) = rest.strip_prefix('.') {
                let member: String = member.chars().take_while(|&c| is_ident_char(c)).collect();
                if !["id", "name", "type", "apiVersion"].contains(&member.as_str()) {
                    return Some(format!("reads {symbol}.{member}"));
                }
            }
        }
    }
    for call in ["reference"] {
        if !identifier_uses(expr, call).is_empty() {
            return Some(format!("calls {call}()"));
        }
    }
    let mut from = 0;
    while let Some(at) = expr[from..].find("list") {
        let start = from + at;
        let name: String = expr[start..]
            .chars()
            .take_while(|&c| is_ident_char(c))
            .collect();
        let before = expr[..start].chars().next_back();
        if !before.is_some_and(|c| is_ident_char(c) || c == '.')
            && expr[start + name.len()..].starts_with('(')
        {
            return Some(format!("calls {name}()"));
        }
        from = start + 4;
    }
    deploy_time_vars
        .iter()
        .find(|var| !identifier_uses(expr, var).is_empty())
        .map(|var| format!("uses variable {var}, which is only known at deployment"))
}

/// The text from `open` (an opening bracket in `text`) to its matching close, exclusive.
fn balanced(text: &str, open: usize) -> &str {
    let (opening, closing) = match text.as_bytes()[open] {
        b'(' => (b'(', b')'),
        _ => (b'[', b']'),
    };
    let mut depth = 0usize;
    for (i, &b) in text.as_bytes().iter().enumerate().skip(open) {
        if b == opening {
            depth += 1;
        } else if b == closing {
            depth -= 1;
            if depth == 0 {
                return &text[open + 1..i];
            }
        }
    }
    &text[open + 1..]
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

const TOP_LEVEL: [&str; 11] = [
    "var ",
    "param ",
    "resource ",
    "module ",
    "output ",
    "@",
    "targetScope",
    "func ",
    "type ",
    "import ",
    "metadata ",
];

/// Every loop source, condition, resource or module `name` and `scope` in a Bicep file whose
/// value is only known once the deployment runs, as `line N: …`. The Bicep compiler rejects
/// them (BCP120, BCP178); checkov's parser does not.
fn start_time_violations(source: &str) -> Vec<String> {
    let text = strip_bicep_comments(source);
    let lines: Vec<&str> = text.lines().collect();

    // Resource and module symbols, nested child resources included.
    let symbols: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix("resource ")
                .or_else(|| l.strip_prefix("module "))?;
            let symbol: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
            (!symbol.is_empty()).then_some(symbol)
        })
        .collect();

    // Variables and their bodies (a body runs to the next top-level declaration).
    let mut vars: Vec<(String, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("var ") else {
            continue;
        };
        let name: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
        let mut body = rest[name.len()..].to_owned();
        for next in &lines[i + 1..] {
            if TOP_LEVEL.iter().any(|k| next.starts_with(k)) {
                break;
            }
            body.push('\n');
            body.push_str(next);
        }
        vars.push((name, body));
    }
    let mut deploy_time_vars: Vec<String> = Vec::new();
    loop {
        let before = deploy_time_vars.len();
        for (name, body) in &vars {
            if !deploy_time_vars.contains(name)
                && deploy_time_reason(body, &symbols, &deploy_time_vars).is_some()
            {
                deploy_time_vars.push(name.clone());
            }
        }
        if deploy_time_vars.len() == before {
            break;
        }
    }
    let reason = |expr: &str| deploy_time_reason(expr, &symbols, &deploy_time_vars);

    let mut violations = Vec::new();
    // Loops: `[for x in SOURCE: …]` and `[for (x, i) in SOURCE: …]`.
    let mut from = 0;
    while let Some(at) = text[from..].find("[for ") {
        let start = from + at;
        let body = balanced(&text, start);
        if let Some((_, after_in)) = body.split_once(" in ") {
            let source = after_in.split_once(':').map_or(after_in, |(s, _)| s);
            if let Some(why) = reason(source) {
                violations.push(format!(
                    "line {}: loop over `{}` {why}",
                    line_of(&text, start),
                    source.trim()
                ));
            }
        }
        from = start + 5;
    }
    // Conditions: `= if (COND) {` on resources and modules, `: if (COND) {` in loops.
    let mut from = 0;
    while let Some(at) = text[from..].find("if") {
        let start = from + at;
        from = start + 2;
        let before = text[..start].trim_end();
        let is_word = !text[..start].chars().next_back().is_some_and(is_ident_char);
        let after = text[start + 2..].trim_start();
        if !(is_word && (before.ends_with('=') || before.ends_with(':')) && after.starts_with('('))
        {
            continue;
        }
        let open = text.len() - after.len();
        let condition = balanced(&text, open);
        if let Some(why) = reason(condition) {
            violations.push(format!(
                "line {}: condition `{}` {why}",
                line_of(&text, start),
                condition.trim()
            ));
        }
    }
    // `name:` and `scope:` of a resource or module: the properties one level inside it.
    let mut declaration_indents: Vec<usize> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            continue;
        }
        // A line at or left of a declaration's indentation ends it.
        declaration_indents.retain(|&d| d < indent);
        if trimmed.starts_with("resource ") || trimmed.starts_with("module ") {
            declaration_indents.push(indent);
            continue;
        }
        let Some(&owner) = declaration_indents.last() else {
            continue;
        };
        if indent != owner + 2 {
            continue;
        }
        for key in ["name:", "scope:"] {
            if let Some(expr) = trimmed.strip_prefix(key) {
                if let Some(why) = reason(expr) {
                    violations.push(format!("line {}: {key} `{}` {why}", i + 1, expr.trim()));
                }
            }
        }
    }
    violations
}

fn bicep_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            bicep_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "bicep") {
            found.push(path);
        }
    }
}

#[test]
fn no_bicep_loop_condition_or_name_waits_for_a_deployed_value() {
    let mut files = Vec::new();
    bicep_files(&workspace_root().join("infra"), &mut files);
    assert!(files.len() >= 4, "found the Bicep files: {files:?}");
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read bicep");
        for violation in start_time_violations(&text) {
            problems.push(format!("{}: {violation}", file.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "the Bicep compiler needs these when the deployment starts (BCP120/BCP178):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_start_time_lint_catches_what_the_compiler_rejects() {
    // The shape that broke the first main.bicep: a loop over settings two variables away from
    // a property of an existing resource.
    let old = r#"
resource batchAccount 'Microsoft.Batch/batchAccounts@2024-07-01' existing = {
  name: batchAccountName
}
var baseAppSettings = {
  // 'https://not-a-comment' stays a string
  AZURE_BATCH_ENDPOINT: 'https://${batchAccount.properties.accountEndpoint}'
}
var appSettings = union(extraAppSettings, baseAppSettings)
resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  properties: {
    siteConfig: {
      appSettings: [for setting in items(appSettings): { name: setting.key, value: setting.value }]
    }
  }
}
"#;
    let found = start_time_violations(old);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("line 14: loop over `items(appSettings)` uses variable appSettings"),
        "{found:?}"
    );

    let more = r#"
module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
}
resource store 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storeName
}
resource role 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(monitoring.outputs.id)) {
  name: guid(store.id, store.name, roleId)
  scope: store
  properties: {
    principalId: store.identity.principalId
  }
}
resource rule 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'rule-${store.properties.primaryEndpoints.blob}'
  properties: {
    criteria: [for key in listKeys(store.id, '2023-05-01').keys: key.value]
    dimensions: [
      {
        name: store.properties.anything
      }
    ]
  }
}
resource fine 'Microsoft.Web/sites/config@2024-04-01' = [for (item, i) in range(0, count): if (deployIt) {
  name: 'fine-${i}'
}]
"#;
    let found = start_time_violations(more);
    assert_eq!(
        found.len(),
        3,
        "the condition on an output, the name from a property, the loop over listKeys: {found:?}"
    );
    assert!(found[0].contains("calls listKeys()"), "{found:?}");
    assert!(found[1].contains("reads monitoring.outputs"), "{found:?}");
    assert!(
        found[2].contains("name: `'rule-${store.properties"),
        "{found:?}"
    );
}
