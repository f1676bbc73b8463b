//! Reading any Batch payload: detecting which kind a document is, then parsing it typed.
//!
//! Accepted kinds (their shapes are in `docs/batch-facts.md`): REST bodies (task, job,
//! prep/release status, task counts, files, error bodies, pool, node, pool node counts, and list
//! pages of them), diagnostic-log records alone, in the `{records:[…]}` batch Event Hubs delivers
//! or as JSON Lines (`PT1H.json`), bare event bodies (task, special task, pool), Event Grid events and CloudEvents (single or batched) whose
//! `data` is any of those or a `{accountUrl?, jobId, taskId?}` reference, and REST-spec example
//! files (their response body).
//!
//! Errors name the field path and the line/column in the original input. A document larger than
//! [`IN_MEMORY_LIMIT`] is streamed: list pages and record batches are read one element at a time,
//! so a 100,000-task list never sits in memory.
//!
//! The modules, in the order a document goes through them: `detect` tells the kind of a fragment
//! from its keys, `walk` turns a document held in memory into items (following envelopes),
//! `stream` reads the list pages and record batches too large to hold, with the byte scanner of
//! `scan` finding where each element ends.

mod detect;
mod scan;
mod stream;
mod walk;

use std::io::{self, Read};

use serde_json::value::RawValue;

use crate::wire::{
    BatchErrorBody, BatchJob, BatchPool, BatchTask, ComputeNode, NodeFile, PoolEventBody,
    PoolEventKind, PoolNodeCounts, PrepReleaseStatus, SpecialTaskEventBody, TaskCountsResult,
    TaskEventBody, TaskEventKind, TaskReference,
};
use walk::Doc;

/// Documents up to this size are read whole, which gives exact error positions everywhere; larger
/// ones are streamed.
pub const IN_MEMORY_LIMIT: usize = 16 << 20;

/// How deep envelopes may nest (an Event Grid event whose data is a records batch, …).
const MAX_DEPTH: usize = 4;

/// One thing a payload says something about.
#[derive(Debug, Clone)]
pub enum Item {
    /// A task from the REST API.
    Task(Box<BatchTask>),
    /// A job from the REST API.
    Job(Box<BatchJob>),
    /// One node of a job preparation/release status list.
    PrepReleaseStatus(Box<PrepReleaseStatus>),
    /// A task diagnostic event.
    TaskEvent {
        /// Which event.
        kind: TaskEventKind,
        /// Its body.
        body: Box<TaskEventBody>,
        /// The account named by the record's `resourceId`, if it came in a record.
        account: Option<String>,
    },
    /// A job preparation/release or start task event.
    SpecialTaskEvent {
        /// Its body.
        body: Box<SpecialTaskEventBody>,
        /// The account named by the record's `resourceId`, if it came in a record.
        account: Option<String>,
    },
    /// An event that only names a task or job; the facts must be fetched.
    TaskReference(TaskReference),
    /// A task or node file entry.
    File(Box<NodeFile>),
    /// Task counts of a job.
    TaskCounts(TaskCountsResult),
    /// A REST error body.
    Error(BatchErrorBody),
    /// A pool from the REST API.
    Pool(Box<BatchPool>),
    /// A compute node from the REST API.
    Node(Box<ComputeNode>),
    /// A pool diagnostic event that may report a failure (resize complete, autoscale). An event
    /// is a hint: the pool is re-read before anything is acted on.
    PoolEvent {
        /// Which event.
        kind: PoolEventKind,
        /// Its body.
        body: Box<PoolEventBody>,
        /// The account named by the record's `resourceId`, if it came in a record.
        account: Option<String>,
    },
    /// One pool's node counts by state (an item of List Pool Node Counts).
    PoolNodeCounts(Box<PoolNodeCounts>),
    /// An event triage does not read (pool create, resize start, delete): skipped by design.
    Skipped {
        /// What it was, e.g. `PoolResizeCompleteEvent`.
        what: String,
    },
}

/// What kind of document the input was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A page of List Tasks.
    TaskList,
    /// A page of List Jobs.
    JobList,
    /// A page of List Job Preparation and Release Task Status.
    PrepReleaseStatusList,
    /// A page of List Task Files / List Node Files.
    FileList,
    /// A page of List Pools.
    PoolList,
    /// A page of List Nodes.
    NodeList,
    /// A page of List Pool Node Counts.
    PoolNodeCountsList,
    /// A list page with no items.
    EmptyList,
    /// One task.
    Task,
    /// One job.
    Job,
    /// One node's prep/release status.
    PrepReleaseStatus,
    /// Get Job Task Counts.
    TaskCounts,
    /// One pool.
    Pool,
    /// One compute node.
    Node,
    /// One pool's node counts.
    PoolNodeCounts,
    /// A bare pool event body (resize complete, autoscale).
    PoolEvent,
    /// A REST error body.
    BatchError,
    /// `{records:[…]}` as Event Hubs delivers diagnostic logs.
    DiagnosticRecords,
    /// One diagnostic-log record.
    DiagnosticRecord,
    /// A bare task event body.
    TaskEvent,
    /// A bare special-task event body.
    SpecialTaskEvent,
    /// `{accountUrl?, jobId, taskId?}`.
    TaskReference,
    /// One or more Event Grid events.
    EventGrid,
    /// One or more CloudEvents.
    CloudEvents,
    /// A REST-spec example file.
    SpecExample,
    /// A JSON array of any of the above.
    Array,
    /// Several JSON documents, one after another (JSON Lines, e.g. a `PT1H.json` blob).
    JsonLines,
}

impl PayloadKind {
    /// A human name for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TaskList => "a List Tasks response",
            Self::JobList => "a List Jobs response",
            Self::PrepReleaseStatusList => "a job preparation/release status list",
            Self::FileList => "a file list",
            Self::PoolList => "a List Pools response",
            Self::NodeList => "a List Nodes response",
            Self::PoolNodeCountsList => "a List Pool Node Counts response",
            Self::EmptyList => "an empty list response",
            Self::Task => "a task",
            Self::Job => "a job",
            Self::PrepReleaseStatus => "a job preparation/release status",
            Self::TaskCounts => "task counts",
            Self::Pool => "a pool",
            Self::Node => "a compute node",
            Self::PoolNodeCounts => "a pool's node counts",
            Self::PoolEvent => "a pool event body",
            Self::BatchError => "a Batch error response",
            Self::DiagnosticRecords => "a batch of diagnostic-log records",
            Self::DiagnosticRecord => "a diagnostic-log record",
            Self::TaskEvent => "a task event body",
            Self::SpecialTaskEvent => "a special-task event body",
            Self::TaskReference => "a task reference",
            Self::EventGrid => "Event Grid events",
            Self::CloudEvents => "CloudEvents",
            Self::SpecExample => "a REST-spec example",
            Self::Array => "a JSON array of payloads",
            Self::JsonLines => "JSON Lines",
        }
    }
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The bytes are not JSON.
    #[error("not valid JSON: {message} at line {line}, column {column}")]
    Syntax {
        /// What serde_json said.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// JSON, but a field has the wrong shape.
    #[error("{}: {message}{}", if path.is_empty() { "(document)" } else { path.as_str() }, position(*line, *column))]
    Shape {
        /// Where, e.g. `value[3].executionInfo.exitCode`.
        path: String,
        /// What is wrong.
        message: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
    },
    /// JSON, but none of the payload kinds batch-triage reads.
    #[error("{}not a Batch payload batch-triage recognises: {reason}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Unrecognised {
        /// Where.
        path: String,
        /// What it looked like instead.
        reason: String,
    },
    /// Nothing but whitespace.
    #[error("the input is empty")]
    Empty,
    /// Reading the input failed.
    #[error("could not read the input: {0}")]
    Io(#[from] io::Error),
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        _ => String::new(),
    }
}

/// Reads one input (a file, stdin) and hands every [`Item`] to `sink`, in order.
pub fn read_payload<R: Read>(
    mut reader: R,
    sink: &mut dyn FnMut(Item),
) -> Result<PayloadKind, PayloadError> {
    let mut head = Vec::new();
    reader
        .by_ref()
        .take(IN_MEMORY_LIMIT as u64 + 1)
        .read_to_end(&mut head)?;
    if head.len() <= IN_MEMORY_LIMIT {
        return read_slice(&head, sink);
    }
    stream::stream_large(io::Cursor::new(head).chain(reader), sink)
}

/// Reads a payload held in memory.
pub fn read_slice(bytes: &[u8], sink: &mut dyn FnMut(Item)) -> Result<PayloadKind, PayloadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = advance((1, 1), &bytes[..e.valid_up_to()]);
        PayloadError::Syntax {
            message: "the input is not UTF-8".to_owned(),
            line,
            column,
        }
    })?;
    let doc = Doc {
        text,
        origin: (1, 1),
    };
    let mut kinds = Vec::new();
    for (index, raw) in serde_json::Deserializer::from_str(text)
        .into_iter::<&RawValue>()
        .enumerate()
    {
        let raw = raw.map_err(|e| syntax_error_in(text, &e))?;
        let path = if index == 0 {
            String::new()
        } else {
            format!("(document {})", index + 1)
        };
        kinds.push(doc.process(raw, &path, 0, sink)?);
    }
    match kinds.as_slice() {
        [] => Err(PayloadError::Empty),
        [kind] => Ok(*kind),
        _ => Ok(PayloadKind::JsonLines),
    }
}

/// A syntax error that also names the offending character when it is not ASCII: documents pasted
/// from web pages carry look-alikes such as a fullwidth comma (U+FF0C) that are hard to see.
fn syntax_error_in(text: &str, e: &serde_json::Error) -> PayloadError {
    let mut message = strip_position(e);
    let line = text
        .lines()
        .nth(e.line().saturating_sub(1))
        .unwrap_or_default();
    // serde_json's column counts bytes and points at, or just past, the offending character.
    let window = e.column().saturating_sub(4)..e.column() + 1;
    let odd = line
        .char_indices()
        .filter(|(i, _)| window.contains(&(i + 1)))
        .map(|(_, c)| c)
        .find(|c| !c.is_ascii());
    if let Some(c) = odd {
        message.push_str(&format!(
            ", found {c:?} (U+{:04X}), which is not JSON punctuation",
            c as u32
        ));
    }
    PayloadError::Syntax {
        message,
        line: e.line(),
        // serde_json says column 0 for an end of input just after a newline; columns are 1-based.
        column: e.column().max(1),
    }
}

/// serde_json's message without its trailing " at line L column C".
pub(crate) fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Line and column after reading `bytes` from `start`: how positions are counted everywhere, in
/// a whole input (from `(1, 1)`) and in the pieces the stream scanner cuts from it.
fn advance(start: (usize, usize), bytes: &[u8]) -> (usize, usize) {
    let newlines = bytes.iter().filter(|b| **b == b'\n').count();
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(last) => (start.0 + newlines, bytes.len() - last),
        None => (start.0, start.1 + bytes.len()),
    }
}
