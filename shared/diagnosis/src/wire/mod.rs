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
}
