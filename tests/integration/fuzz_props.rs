//! CI's bounded fuzzing campaign: the properties of the cargo-fuzz targets (`fuzz/src/checks.rs`,
//! compiled in here by path) over the committed seed corpus, mutated by proptest, and over
//! generated Batch-shaped JSON. `scripts/fuzz` runs the same properties under libFuzzer for longer
//! local campaigns; README "Fuzzing" says why CI runs this instead.
//!
//! Each property: no panic; every parsed item diagnoses and serialises; a payload error names a
//! path or a line/column inside the input; a policy error names a line/column inside the file.
//! `PROPTEST_CASES` raises the number of cases for a longer run.

use std::path::PathBuf;
use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

// `checks` names it `super::protocol`, as in the fuzz crate (which includes the file by path).
use batch_triage_azure_functions::protocol;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/checks.rs"]
mod checks;

fn seeds(set: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(set);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(seeds.len() >= 3, "{}: too few seeds", dir.display());
    seeds
}

static PAYLOADS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| seeds("payload"));
static POLICIES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| seeds("policy"));
static INVOCATIONS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| seeds("functions_protocol"));

/// Bytes that change JSON's and TOML's structure, and a few that break UTF-8.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\n",
    b"\r\n",
    b"-",
    b"0",
    b"1e999",
    b"-9223372036854775809",
    b"null",
    b"\"\"",
    b"[[",
    b"=",
    b"\xff",
    b"\xc3",
    b"\xef\xbc\x8c",
    b"\xEF\xBB\xBF",
    b"\"records\":[",
    b"\"value\":[",
    b"\"data\":",
    b"\"specversion\":\"1.0\",",
    b"\"exitCode\":\"abc\",",
    b"\"executionInfo\":{},",
];

#[derive(Debug, Clone)]
enum Mutation {
    Overwrite(u32, u8),
    Insert(u32, usize),
    Delete(u32, u16),
    Duplicate(u32, u16),
    Truncate(u32),
    Splice(u32, usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u32>(), any::<u8>()).prop_map(|(p, b)| Mutation::Overwrite(p, b)),
        (any::<u32>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Insert(p, t)),
        (any::<u32>(), 1..64u16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<u32>(), 1..256u16).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        any::<u32>().prop_map(Mutation::Truncate),
        (any::<u32>(), any::<usize>(), any::<u32>())
            .prop_map(|(p, s, q)| Mutation::Splice(p, s, q)),
    ]
}

fn apply(mut data: Vec<u8>, mutations: &[Mutation], others: &[Vec<u8>]) -> Vec<u8> {
    for m in mutations {
        let at = |p: u32, len: usize| (p as usize) % (len + 1);
        match *m {
            Mutation::Overwrite(p, b) if !data.is_empty() => {
                let i = (p as usize) % data.len();
                data[i] = b;
            }
            Mutation::Overwrite(..) => {}
            Mutation::Insert(p, t) => {
                let i = at(p, data.len());
                data.splice(i..i, TOKENS[t].iter().copied());
            }
            Mutation::Delete(p, n) => {
                let i = at(p, data.len());
                let end = (i + usize::from(n)).min(data.len());
                data.drain(i..end);
            }
            Mutation::Duplicate(p, n) => {
                let i = at(p, data.len());
                let end = (i + usize::from(n)).min(data.len());
                let copy = data[i..end].to_vec();
                data.splice(end..end, copy);
            }
            Mutation::Truncate(p) => data.truncate(at(p, data.len())),
            Mutation::Splice(p, s, q) => {
                let other = &others[s % others.len()];
                let from = at(q, other.len());
                let i = at(p, data.len());
                data.splice(i.., other[from..].iter().copied());
            }
        }
    }
    data
}

/// A seed of `set`, mutated 0 to 8 times (0 keeps the seed itself in the campaign).
fn mutated(set: &'static LazyLock<Vec<Vec<u8>>>) -> impl Strategy<Value = Vec<u8>> {
    (0..set.len(), proptest::collection::vec(mutation(), 0..8))
        .prop_map(move |(i, ms)| apply(set[i].clone(), &ms, set))
}

const KEYS: &[&str] = &[
    "id",
    "url",
    "state",
    "jobId",
    "taskId",
    "accountUrl",
    "executionInfo",
    "exitCode",
    "result",
    "failureInfo",
    "code",
    "category",
    "message",
    "details",
    "retryCount",
    "requeueCount",
    "startTime",
    "endTime",
    "constraints",
    "maxWallClockTime",
    "exitConditions",
    "nodeInfo",
    "poolId",
    "nodeId",
    "terminateReason",
    "schedulingError",
    "jobPreparationTaskExecutionInfo",
    "value",
    "records",
    "properties",
    "operationName",
    "resourceId",
    "time",
    "data",
    "data_base64",
    "eventType",
    "specversion",
    "type",
    "responses",
    "body",
    "odata.nextLink",
    "isDirectory",
    "name",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n.to_string())),
        prop_oneof![
            Just("completed"),
            Just("active"),
            Just("failure"),
            Just("TaskFailEvent"),
            Just("TaskCompleteEvent"),
            Just("JobPreparationTaskFailEvent"),
            Just("MaxWallClockTimeExpiry"),
            Just("P10675199DT2H48M5.4775807S"),
            Just("2026-11-27T10:05:01.1234567Z"),
            Just("2019-08-22 20:50:59.522"),
            Just("/SUBSCRIPTIONS/0/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/A/"),
            Just("https://a.b.batch.azure.com/jobs/j/tasks/t?sig=x"),
        ]
        .prop_map(|s| json!(s)),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn batch_shaped() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(
                |entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn payloads_in_memory(data in mutated(&PAYLOADS)) {
        checks::payload_slice(&data);
    }

    #[test]
    fn payloads_read_in_pieces_agree_with_payloads_in_memory(data in mutated(&PAYLOADS)) {
        checks::payload_reader(&data);
    }

    #[test]
    fn payload_fragments_inside_every_envelope(data in mutated(&PAYLOADS)) {
        checks::envelopes(&data);
        checks::rest_bodies(&data);
    }

    #[test]
    fn generated_batch_shapes_inside_every_envelope(value in batch_shaped()) {
        let text = value.to_string();
        checks::envelopes(text.as_bytes());
        checks::rest_bodies(text.as_bytes());
    }

    #[test]
    fn policies(data in mutated(&POLICIES)) {
        checks::policy(&data);
    }

    #[test]
    fn functions_invocations(data in mutated(&INVOCATIONS)) {
        checks::functions_protocol(&data);
    }

    #[test]
    fn generated_functions_invocations(value in batch_shaped(), binding in proptest::sample::select(&["events", "event", "req", "timer"][..]), twice in any::<bool>()) {
        let value = if twice { json!(value.to_string()) } else { value };
        let request = json!({"Data": {binding: value}, "Metadata": {"RetryContext": {"RetryCount": 1}}});
        checks::functions_protocol(request.to_string().as_bytes());
    }
}

proptest! {
    // Each case streams past 16 MiB of padding: few cases, still every scanner path over time.
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn large_payloads_through_the_streaming_scanner(data in mutated(&PAYLOADS)) {
        checks::payload_stream(&data);
    }
}

/// Found by `scripts/fuzz` (payload_slice): input ending just after a newline made serde_json say
/// "column 0", and the error carried it although columns are 1-based.
#[test]
fn an_end_of_input_after_a_newline_is_at_column_1() {
    for text in ["{\n", "{\"value\": [\n", "{\"records\": [{\"time\": 1,\n"] {
        let error =
            diagnosis::payload::read_slice(text.as_bytes(), &mut |_| {}).expect_err("truncated");
        match error {
            diagnosis::PayloadError::Syntax { line, column, .. } => {
                assert_eq!(
                    (line, column),
                    (text.lines().count() + 1, 1),
                    "{text:?}: {error}"
                );
            }
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }
}

/// The properties really fail on a broken input (so the campaign cannot pass vacuously).
#[test]
#[should_panic(expected = "syntax error at line")]
fn the_position_property_rejects_a_position_outside_the_input() {
    let error = diagnosis::PayloadError::Syntax {
        message: "x".to_owned(),
        line: 3,
        column: 1,
    };
    checks::check_error(&error, 2);
}
