//! `diagnose` never panics on arbitrary task-shaped JSON: random values under the field names a
//! task, a pool or a node has, in every nesting Batch uses.

use batch_triage_diagnosis::payload::read_slice;
use batch_triage_diagnosis::{Evidence, diagnose_item};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "id",
    "url",
    "state",
    "commandLine",
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
    "maxTaskRetryCount",
    "exitConditions",
    "exitCodes",
    "exitCodeRanges",
    "start",
    "end",
    "exitOptions",
    "jobAction",
    "dependencyAction",
    "default",
    "fileUploadError",
    "preProcessingError",
    "nodeInfo",
    "nodeId",
    "poolId",
    "jobId",
    "taskType",
    "schedulingError",
    "name",
    "value",
    // Pools, nodes and pool events.
    "resizeErrors",
    "resizeError",
    "values",
    "autoScaleRun",
    "error",
    "allocationState",
    "currentDedicatedNodes",
    "targetDedicated",
    "errors",
    "errorDetails",
    "startTask",
    "startTaskInfo",
    "waitForSuccess",
    "resultCode",
    "formula",
    "dedicated",
    "unusable",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("completed".to_owned()),
            Just("Failure".to_owned()),
            Just("FailureExitCode".to_owned()),
            Just("TaskEnded".to_owned()),
            Just("2026-11-20T10:00:00.1234567Z".to_owned()),
            Just("PT1H".to_owned()),
            Just("P10675199DT2H48M5.4775807S".to_owned()),
            Just("137".to_owned()),
            Just("a && b $X".to_owned()),
            Just("unusable".to_owned()),
            Just("deleting".to_owned()),
            Just("AllocationFailed".to_owned()),
            Just("Provider Error Json".to_owned()),
            Just("{\"error\": {\"code\": \"BadRequest\"".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn task_shaped() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn diagnose_never_panics(mut value in task_shaped(), wrap in 0..4u8) {
        // Make it look like a task (or an event, or a list) often enough to reach the classifier.
        if let Value::Object(map) = &mut value {
            map.entry("commandLine").or_insert(json!("run"));
        }
        let doc = match wrap {
            0 => value,
            1 => json!({ "value": [value] }),
            2 => json!({ "records": [{ "operationName": "TaskFailEvent", "resourceId": "/x/BATCHACCOUNTS/a", "properties": value }] }),
            _ => json!([{ "specversion": "1.0", "data": value }]),
        };
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut consistent = true;
        // Parse errors are fine (they are reported); panics and inconsistent diagnoses are not.
        let _ = read_slice(&bytes, &mut |item| {
            if let Some(d) = diagnose_item(&item, &Evidence::default()) {
                consistent &= d.severity == d.class.severity() && d.fingerprint.len() == 32;
                consistent &= serde_json::to_string(&d).is_ok();
            }
        });
        prop_assert!(consistent, "a diagnosis whose severity does not follow its class, or that does not serialise");
    }

    #[test]
    fn pools_nodes_and_pool_events_never_panic(mut value in task_shaped(), wrap in 0..5u8) {
        // Make it a pool, a node or a pool event body often enough to reach their diagnosis.
        if let Value::Object(map) = &mut value {
            match wrap {
                0 | 1 => { map.entry("allocationState").or_insert(json!("steady")); }
                _ => { map.entry("state").or_insert(json!("unusable")); }
            }
        }
        let doc = match wrap {
            0 => value,
            1 => json!({ "value": [value] }),
            2 => json!({ "value": [value, value] }),
            3 => json!({ "records": [{ "operationName": "PoolResizeCompleteEvent", "properties": value }] }),
            _ => json!({ "records": [{ "operationName": "PoolAutoScaleEvent", "properties": value }] }),
        };
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut consistent = true;
        let _ = read_slice(&bytes, &mut |item| {
            if let Some(d) = diagnose_item(&item, &Evidence::default()) {
                consistent &= d.severity == d.class.severity() && d.fingerprint.len() == 32;
                consistent &= serde_json::to_string(&d).is_ok();
            }
        });
        prop_assert!(consistent, "a diagnosis whose severity does not follow its class, or that does not serialise");
    }
}
