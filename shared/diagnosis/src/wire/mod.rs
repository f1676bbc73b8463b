//! What Azure Batch sends, as typed Rust: REST bodies and diagnostic events, parsed leniently
//! (see [`lenient`]) so that every real payload shape is readable.

pub mod events;
pub mod lenient;
pub mod node;
pub mod pool;
pub mod rest;

pub use events::*;
pub use lenient::{IsoDuration, Timestamp};
pub use node::*;
pub use pool::*;
pub use rest::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// serde reads a struct from a JSON array too. Every field is defaulted at the struct, so an
    /// array where an object belongs reads as an object whose fields are absent, like `{}`, and
    /// does not make the whole payload unreadable.
    #[test]
    fn an_array_in_place_of_an_object_reads_as_absent_fields() {
        let task: BatchTask = serde_json::from_str(
            r#"{"id": "t1", "nodeInfo": [], "executionInfo": [], "constraints": []}"#,
        )
        .unwrap();
        assert_eq!(task.id.as_deref(), Some("t1"));
        assert_eq!(task.node_info, Some(NodeInfo::default()));
        assert_eq!(task.execution_info, Some(TaskExecutionInfo::default()));
        assert_eq!(task.constraints, Some(TaskConstraints::default()));

        let body: TaskEventBody =
            serde_json::from_str(r#"{"jobId": "j1", "executionInfo": [], "nodeInfo": []}"#)
                .unwrap();
        assert_eq!(body.job_id.as_deref(), Some("j1"));
        assert_eq!(body.execution_info.map(|e| e.retry_count), Some(0));

        let record: DiagnosticRecord<'_> = serde_json::from_str("[]").unwrap();
        assert!(record.operation_name.is_none() && record.properties.is_none());
    }

    /// Fields without a default stay required, in both forms.
    #[test]
    fn required_fields_stay_required() {
        assert!(serde_json::from_str::<ExitCodeMapping>(r#"{"exitOptions": {}}"#).is_err());
        assert!(serde_json::from_str::<TaskReference>(r#"{"taskId": "t1"}"#).is_err());
        assert!(serde_json::from_str::<TaskReference>("[]").is_err());
    }

    /// Node errors, pool errors and failures are one type; each keeps reading the spelling of
    /// its details it always read, and a key only another of them carries, ill-formed, still
    /// reads (as absent) rather than making the object unreadable.
    #[test]
    fn one_failure_shape_reads_every_spelling_of_its_details() {
        let detail = |name: &str, value: &str| NameValue {
            name: Some(name.into()),
            value: Some(value.into()),
        };
        let node: ComputeNode = serde_json::from_str(
            r#"{"errors": [{"code": "DiskFull", "category": 5,
                "errorDetails": [{"name": "Message", "value": "full"}]}]}"#,
        )
        .unwrap();
        assert_eq!(node.errors[0].detail("message"), Some("full"));
        assert_eq!(node.errors[0].category, None);
        let pool: BatchPool = serde_json::from_str(
            r#"{"resizeErrors": [{"code": "AllocationFailed", "details": 7,
                "values": {"name": "Reason", "value": "quota"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            pool.resize_errors[0].details,
            vec![detail("Reason", "quota")]
        );
        let failure: FailureInfo = serde_json::from_str(
            r#"{"category": "UserError", "code": "X", "values": [{"name": "a", "value": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(failure.category, Some(ErrorCategory::UserError));
        assert_eq!(failure.details, vec![detail("a", "b")]);
        let empty: FailureInfo = serde_json::from_str(r#"{"code": "", "details": null}"#).unwrap();
        assert!(!empty.is_set() && empty.details.is_empty());
        // A code or message of the wrong type was never tolerated, and still is not.
        assert!(serde_json::from_str::<FailureInfo>(r#"{"code": 5}"#).is_err());
    }

    /// A node's start task and a job's preparation task share one execution shape.
    #[test]
    fn a_start_task_reads_like_a_preparation_task() {
        let node: ComputeNode = serde_json::from_str(
            r#"{"startTaskInfo": {"state": "Completed", "exitCode": "1", "retryCount": "2",
                "taskRootDirectory": 9, "lastRetryTime": "2025-01-01T00:00:00Z",
                "result": "failure", "failureInfo": {"code": "FailureExitCode"}}}"#,
        )
        .unwrap();
        let info = node.start_task_info.unwrap();
        assert_eq!(info.state, Some(StartTaskState::Completed));
        assert_eq!((info.exit_code, info.retry_count), (Some(1), 2));
        assert_eq!(info.task_root_directory, None);
        assert!(info.last_retry_time.is_some());
        assert_eq!(info.result, Some(TaskResult::Failure));
        let prep: PrepTaskExecutionInfo =
            serde_json::from_str(r#"{"taskRootDirectory": "tasks/j/prep", "lastRetryTime": 3}"#)
                .unwrap();
        assert_eq!(prep.task_root_directory.as_deref(), Some("tasks/j/prep"));
        assert_eq!(prep.last_retry_time, None);
    }
}
