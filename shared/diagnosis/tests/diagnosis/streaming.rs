//! Documents larger than the in-memory limit are streamed element by element.

use std::io::Cursor;

use batch_triage_diagnosis::payload::{IN_MEMORY_LIMIT, read_payload, read_slice};
use batch_triage_diagnosis::{Item, PayloadError, PayloadKind};

fn big_task_list(tasks: usize, bad_at: Option<usize>) -> Vec<u8> {
    let mut out = String::from(
        "{\"odata.metadata\": \"https://a.b.batch.azure.com/$metadata#tasks\", \"value\": [\n",
    );
    for i in 0..tasks {
        if i > 0 {
            out.push_str(",\n");
        }
        let exit = if Some(i) == bad_at {
            "\"not-a-number\"".to_owned()
        } else {
            (i % 3).to_string()
        };
        out.push_str(&format!(
            "{{\"id\": \"task-{i}\", \"url\": \"https://acct.westeurope.batch.azure.com/jobs/j/tasks/task-{i}\", \"state\": \"completed\", \"commandLine\": \"/bin/sh -c 'python work.py --shard {i} --padding xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'\", \"executionInfo\": {{\"exitCode\": {exit}, \"retryCount\": 0, \"requeueCount\": 0}}}}"
        ));
    }
    out.push_str("\n], \"odata.nextLink\": null}");
    out.into_bytes()
}

#[test]
fn a_list_larger_than_the_limit_is_streamed() {
    let tasks = 80_000;
    let bytes = big_task_list(tasks, None);
    assert!(
        bytes.len() > IN_MEMORY_LIMIT,
        "the test document must exceed the limit ({} bytes)",
        bytes.len()
    );
    let mut count = 0;
    let mut failed = 0;
    let kind = read_payload(Cursor::new(bytes), &mut |item| {
        if let Item::Task(t) = item {
            count += 1;
            failed += usize::from(t.execution_info.and_then(|e| e.exit_code) != Some(0));
        }
    })
    .unwrap();
    assert_eq!(kind, PayloadKind::TaskList);
    assert_eq!(count, tasks);
    assert_eq!(failed, tasks - tasks.div_ceil(3));
}

#[test]
fn a_bad_element_in_a_streamed_list_names_its_path() {
    let bytes = big_task_list(80_000, Some(70_000));
    let mut seen = 0;
    let err = read_payload(Cursor::new(bytes), &mut |_| seen += 1).unwrap_err();
    match err {
        PayloadError::Shape { path, line, .. } => {
            assert_eq!(path, "value[70000].executionInfo.exitCode");
            assert_eq!(line, Some(70_002));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen, 70_000,
        "the elements before the bad one were delivered"
    );
}

#[test]
fn a_huge_document_that_is_not_a_list_is_refused() {
    let filler = "x".repeat(IN_MEMORY_LIMIT + 10);
    let text = format!("{{\"id\": \"t\", \"commandLine\": \"{filler}\"}}");
    let err = read_payload(Cursor::new(text.into_bytes()), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("not a list response"), "{err}");
}

/// A records batch larger than the in-memory limit: task events between empty records and other
/// operations, so every branch of a record is taken.
fn big_records_batch(records: usize) -> Vec<u8> {
    let mut out = String::from("{\"records\": [");
    for i in 0..records {
        if i > 0 {
            out.push(',');
        }
        match i % 4 {
            0 => out.push_str("{}"),
            1 => out.push_str(&format!(
                "{{\"operationName\": \"TaskFailEvent\", \"resourceId\": \"/SUBSCRIPTIONS/S/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.BATCH/BATCHACCOUNTS/ACCT\", \"properties\": {{\"jobId\": \"j\", \"id\": \"t-{i}\", \"executionInfo\": {{\"exitCode\": {i}}}}}}}"
            )),
            2 => out.push_str("{\"operationName\": \"PoolResizeCompleteEvent\", \"properties\": {}}"),
            _ => out.push_str(&format!("{{\"category\": \"ServiceLog\", \"padding\": \"{i:0>400}\"}}")),
        }
    }
    out.push_str("]}");
    out.into_bytes()
}

/// A way to read a payload: whole or streamed.
type Read<'a> = &'a dyn Fn(&mut dyn FnMut(Item)) -> Result<PayloadKind, PayloadError>;

fn items_of(
    read: impl FnOnce(&mut dyn FnMut(Item)) -> Result<PayloadKind, PayloadError>,
) -> (PayloadKind, Vec<String>) {
    let mut items = Vec::new();
    let kind = read(&mut |item| items.push(format!("{item:?}"))).unwrap();
    (kind, items)
}

#[test]
fn a_records_batch_streamed_gives_what_it_gives_read_whole() {
    let bytes = big_records_batch(120_000);
    assert!(bytes.len() > IN_MEMORY_LIMIT, "{} bytes", bytes.len());
    let (streamed_kind, streamed) = items_of(|sink| read_payload(Cursor::new(&bytes), sink));
    let (whole_kind, whole) = items_of(|sink| read_slice(&bytes, sink));
    assert_eq!(streamed_kind, PayloadKind::DiagnosticRecords);
    assert_eq!(whole_kind, streamed_kind);
    assert_eq!(streamed.len(), 120_000);
    assert_eq!(whole, streamed);
    assert!(whole[1].contains("t-1"), "{}", whole[1]);
}

#[test]
fn a_bad_record_has_the_same_path_and_position_streamed_or_whole() {
    let mut text = String::from_utf8(big_records_batch(120_000)).unwrap();
    let bad = "\"exitCode\": 100001}";
    let at = text.find(bad).expect("record 100001 is a task event");
    text.replace_range(at..at + bad.len(), "\"exitCode\": \"x\"}");
    let bytes = text.into_bytes();
    let streamed = read_payload(Cursor::new(&bytes), &mut |_| {}).unwrap_err();
    let whole = read_slice(&bytes, &mut |_| {}).unwrap_err();
    match &whole {
        PayloadError::Shape { path, line, .. } => {
            assert_eq!(path, "records[100001].properties.executionInfo.exitCode");
            assert_eq!(*line, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(whole.to_string(), streamed.to_string());
}

#[test]
fn eleven_million_empty_records_are_eleven_million_skipped_items() {
    // 31.5 MB, the body that once took a server to 1.35 GB: read whole (as `serve` does) and
    // streamed, each record is handed over and dropped, never collected.
    let records = 11_000_000;
    let mut bytes = Vec::with_capacity(records * 3 + 16);
    bytes.extend_from_slice(b"{\"records\":[{}");
    for _ in 1..records {
        bytes.extend_from_slice(b",{}");
    }
    bytes.extend_from_slice(b"]}");
    let count = |read: Read<'_>| {
        let (mut skipped, mut other) = (0usize, 0usize);
        let kind = read(&mut |item| match item {
            Item::Skipped { what } if what == "a record without operationName" => skipped += 1,
            _ => other += 1,
        });
        (kind.unwrap(), skipped, other)
    };
    let expected = (PayloadKind::DiagnosticRecords, records, 0);
    assert_eq!(
        count(&|sink| read_slice(&bytes, sink)),
        expected,
        "read whole"
    );
    assert_eq!(
        count(&|sink| read_payload(Cursor::new(&bytes), sink)),
        expected,
        "streamed"
    );
}

/// A node list larger than the limit is streamed like a task list; so is a pool list.
#[test]
fn node_and_pool_lists_larger_than_the_limit_are_streamed() {
    let nodes = 60_000;
    let mut out = String::from("{\"value\": [\n");
    for i in 0..nodes {
        if i > 0 {
            out.push_str(",\n");
        }
        let state = if i % 100 == 0 { "unusable" } else { "idle" };
        out.push_str(&format!(
            "{{\"id\": \"tvm-{i}_1-20261204t000000z\", \"url\": \"https://acct.westeurope.batch.azure.com/pools/big/nodes/tvm-{i}_1-20261204t000000z\", \"state\": \"{state}\", \"vmSize\": \"standard_d2s_v3\", \"isDedicated\": true, \"startTask\": {{\"waitForSuccess\": true}}, \"startTaskInfo\": {{\"state\": \"completed\", \"exitCode\": 0, \"retryCount\": 0, \"result\": \"success\"}}, \"errors\": [{{\"code\": \"DiskFull\", \"message\": \"There is not enough disk space on the node\"}}]}}"
        ));
    }
    out.push_str("\n]}");
    let bytes = out.into_bytes();
    assert!(bytes.len() > IN_MEMORY_LIMIT, "{} bytes", bytes.len());
    let (mut count, mut unusable) = (0, 0);
    let kind = read_payload(Cursor::new(bytes), &mut |item| {
        if let Item::Node(node) = item {
            count += 1;
            unusable +=
                usize::from(node.state == Some(batch_triage_diagnosis::wire::NodeState::Unusable));
        }
    })
    .unwrap();
    assert_eq!(kind, PayloadKind::NodeList);
    assert_eq!((count, unusable), (nodes, nodes / 100));

    let pools = 60_000;
    let mut out = String::from("{\"value\": [\n");
    for i in 0..pools {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(&format!(
            "{{\"id\": \"pool-{i}\", \"url\": \"https://acct.westeurope.batch.azure.com/pools/pool-{i}\", \"state\": \"active\", \"allocationState\": \"steady\", \"vmSize\": \"standard_d2s_v3\", \"currentDedicatedNodes\": 0, \"targetDedicatedNodes\": 2, \"resizeErrors\": [{{\"code\": \"AccountCoreQuotaReached\", \"message\": \"The specified account has reached its dedicated core quota\"}}]}}"
        ));
    }
    out.push_str("\n]}");
    let bytes = out.into_bytes();
    assert!(bytes.len() > IN_MEMORY_LIMIT, "{} bytes", bytes.len());
    let mut count = 0;
    let kind = read_payload(Cursor::new(bytes), &mut |item| {
        count += usize::from(matches!(item, Item::Pool(_)));
    })
    .unwrap();
    assert_eq!(kind, PayloadKind::PoolList);
    assert_eq!(count, pools);
}
