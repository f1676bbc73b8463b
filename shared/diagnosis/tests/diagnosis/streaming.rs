//! Documents larger than the in-memory limit are streamed element by element.

use std::io::Cursor;

use batch_triage_diagnosis::payload::{IN_MEMORY_LIMIT, read_payload};
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
