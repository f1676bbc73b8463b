//! Reading any Batch payload: detecting which kind a document is, then parsing it typed.
//!
//! Accepted kinds (docs/batch-facts.md, docs/delivery.md): REST bodies (task, job, prep/release status,
//! task counts, files, error bodies, and list pages of them), diagnostic-log records alone, in the
//! `{records:[…]}` batch Event Hubs delivers or as JSON Lines (`PT1H.json`), bare event bodies,
//! Event Grid events and CloudEvents (single or batched) whose `data` is any of those or a
//! `{accountUrl?, jobId, taskId?}` reference, and REST-spec example files (their response body).
//!
//! Errors name the field path and the line/column in the original input. A document larger than
//! [`IN_MEMORY_LIMIT`] is streamed: list pages and record batches are read one element at a time,
//! so a 100,000-task list never sits in memory.

use std::fmt;
use std::io::{self, Read};

use serde::Deserialize;
use std::collections::BTreeMap;

use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::wire::{
    BatchErrorBody, BatchJob, BatchTask, CloudEvent, DiagnosticRecord, EventGridEvent, FailureInfo,
    NodeFile, PrepReleaseStatus, SpecialTaskEventBody, TaskCountsResult, TaskEventBody,
    TaskEventKind, TaskExecutionInfo, TaskReference, TaskResult, TaskState,
    is_special_task_operation,
};

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
    /// An event that is not about tasks or jobs (pool events): skipped by design.
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
            Self::EmptyList => "an empty list response",
            Self::Task => "a task",
            Self::Job => "a job",
            Self::PrepReleaseStatus => "a job preparation/release status",
            Self::TaskCounts => "task counts",
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
    stream_large(io::Cursor::new(head).chain(reader), sink)
}

/// Reads a payload held in memory.
pub fn read_slice(bytes: &[u8], sink: &mut dyn FnMut(Item)) -> Result<PayloadKind, PayloadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column(bytes, e.valid_up_to());
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
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

/// The input (or, when streaming, one element cut out of it), so that errors inside nested
/// fragments can be located in the whole input.
struct Doc<'a> {
    text: &'a str,
    /// Line and column in the whole input of `text`'s first byte.
    origin: (usize, usize),
}

/// A records batch, its array left raw: its records are read one at a time
/// ([`Doc::for_each_element`]), never collected.
#[derive(Deserialize)]
struct RecordsEnvelope<'a> {
    #[serde(borrow)]
    records: &'a RawValue,
}

#[derive(Deserialize)]
struct SpecExample<'a> {
    #[serde(default, borrow)]
    responses: std::collections::BTreeMap<String, SpecResponse<'a>>,
}

#[derive(Deserialize)]
struct SpecResponse<'a> {
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

/// A list page, its array left raw: its items are read one at a time, never collected.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    value: &'a RawValue,
}

/// The kinds [`detect`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    SpecExample,
    Records,
    Record,
    CloudEvent,
    EventGridEvent,
    List(Option<Element>),
    TaskCounts,
    BatchError,
    SpecialTaskEvent,
    TaskEvent,
    TaskReference,
    Element(Element),
    Array,
}

/// What a list page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Task,
    Job,
    PrepReleaseStatus,
    File,
}

/// Decides what a fragment is from its keys, without building it: values stay raw, and only the
/// first element of a list is looked into.
fn detect(raw: &RawValue) -> Result<Shape, String> {
    let text = raw.get().trim_start();
    if text.starts_with('[') {
        return Ok(Shape::Array);
    }
    if !text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Err(format!(
            "expected a JSON object or array, found {}",
            json_type(&value)
        ));
    }
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let has = |key: &str| map.contains_key(key);
    let is_array = |key: &str| {
        map.get(key)
            .is_some_and(|v| v.get().trim_start().starts_with('['))
    };
    if has("responses") && (has("operationId") || has("parameters")) {
        return Ok(Shape::SpecExample);
    }
    if is_array("records") {
        return Ok(Shape::Records);
    }
    if has("operationName") && (has("properties") || has("category") || has("resourceId")) {
        return Ok(Shape::Record);
    }
    if has("specversion") {
        return Ok(Shape::CloudEvent);
    }
    if has("eventType") && (has("data") || has("subject")) {
        return Ok(Shape::EventGridEvent);
    }
    if let Some(list) = map.get("value").filter(|_| is_array("value")) {
        return Ok(Shape::List(match first_element(list)? {
            None => None,
            Some(first) => Some(first.as_object().and_then(element_of).ok_or_else(|| {
                "a list whose items are not tasks, jobs, prep/release statuses or files".to_owned()
            })?),
        }));
    }
    if has("taskCounts") || has("taskSlotCounts") {
        return Ok(Shape::TaskCounts);
    }
    if has("code") && has("message") && !has("id") {
        return Ok(Shape::BatchError);
    }
    if has("taskName") && has("taskType") {
        return Ok(Shape::SpecialTaskEvent);
    }
    if has("jobId") && (has("id") || has("taskType"))
        || (has("schedulingError") && !has("executionInfo") && !has("id"))
    {
        return Ok(Shape::TaskEvent);
    }
    if has("jobId")
        && map
            .keys()
            .all(|k| matches!(k.as_str(), "jobId" | "taskId" | "accountUrl"))
    {
        return Ok(Shape::TaskReference);
    }
    // A single object: small, so building it to look at nested keys costs nothing.
    let object: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(element) = element_of(&object) {
        return Ok(Shape::Element(element));
    }
    let keys: Vec<&str> = map.keys().take(6).map(String::as_str).collect();
    Err(if keys.is_empty() {
        "an empty object".to_owned()
    } else {
        format!("an object with keys {}", keys.join(", "))
    })
}

/// The first element of a JSON array, built; the rest is skipped without being built.
fn first_element(list: &RawValue) -> Result<Option<Value>, String> {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Value>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    let mut de = serde_json::Deserializer::from_str(list.get());
    serde::Deserializer::deserialize_seq(&mut de, First).map_err(|e| e.to_string())
}

fn element_of(map: &Map<String, Value>) -> Option<Element> {
    let has = |key: &str| map.contains_key(key);
    if has("jobPreparationTaskExecutionInfo") || has("jobReleaseTaskExecutionInfo") {
        return Some(Element::PrepReleaseStatus);
    }
    if has("isDirectory") || (has("name") && has("properties") && !has("id")) {
        return Some(Element::File);
    }
    if let Some(url) = map.get("url").and_then(Value::as_str) {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        if path.contains("/tasks/") && !path.contains("/files/") {
            return Some(Element::Task);
        }
        if path.contains("/jobs/") && !path.contains("/tasks/") {
            return Some(Element::Job);
        }
    }
    const TASK_KEYS: &[&str] = &[
        "commandLine",
        "exitConditions",
        "nodeInfo",
        "requiredSlots",
        "multiInstanceSettings",
        "resourceFiles",
        "outputFiles",
        "dependsOn",
        "affinityInfo",
    ];
    const JOB_KEYS: &[&str] = &[
        "poolInfo",
        "onTaskFailure",
        "onAllTasksComplete",
        "jobPreparationTask",
        "jobReleaseTask",
        "jobManagerTask",
        "priority",
        "usesTaskDependencies",
        "maxParallelTasks",
    ];
    if TASK_KEYS.iter().any(|k| has(k)) {
        return Some(Element::Task);
    }
    if JOB_KEYS.iter().any(|k| has(k)) {
        return Some(Element::Job);
    }
    let exec = map.get("executionInfo").and_then(Value::as_object)?;
    if exec.contains_key("retryCount")
        || exec.contains_key("exitCode")
        || exec.contains_key("failureInfo")
    {
        return Some(Element::Task);
    }
    if exec.contains_key("terminateReason")
        || exec.contains_key("poolId")
        || exec.contains_key("schedulingError")
    {
        return Some(Element::Job);
    }
    None
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty() || rest == ".") {
        (true, _) => {
            if rest == "." {
                String::new()
            } else {
                rest.to_owned()
            }
        }
        (false, true) => prefix.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

impl<'a> Doc<'a> {
    /// The 1-based line and column in the whole input of a position inside `fragment`.
    fn locate(&self, fragment: &str, line: usize, column: usize) -> (usize, usize) {
        let start = fragment.as_ptr() as usize;
        let base = self.text.as_ptr() as usize;
        if start < base || start > base + self.text.len() {
            return (line, column);
        }
        let (base_line, base_column) = line_column(self.text.as_bytes(), start - base);
        let (line, column) = if line <= 1 {
            (base_line, base_column + column.saturating_sub(1))
        } else {
            (base_line + line - 1, column.max(1))
        };
        let (origin_line, origin_column) = self.origin;
        if line <= 1 {
            (origin_line, origin_column + column.saturating_sub(1))
        } else {
            (origin_line + line - 1, column)
        }
    }

    /// Parses `fragment` as `T`, with errors located in the whole input.
    fn typed<T: Deserialize<'a>>(
        &self,
        fragment: &'a RawValue,
        path: &str,
    ) -> Result<T, PayloadError> {
        self.typed_str(fragment.get(), path)
    }

    /// Parses `text` (a part of this document) as `T`. The fast parse runs first; only when it
    /// fails is the text parsed again with path tracking, to say where.
    fn typed_str<T: Deserialize<'a>>(&self, text: &'a str, path: &str) -> Result<T, PayloadError> {
        if let Ok(value) = serde_json::from_str(text) {
            return Ok(value);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(value) => Ok(value),
            Err(e) => {
                let inner = e.inner();
                let (line, column) = self.locate(text, inner.line(), inner.column());
                Err(PayloadError::Shape {
                    path: join(path, &e.path().to_string()),
                    message: strip_position(inner),
                    line: Some(line),
                    column: Some(column),
                })
            }
        }
    }

    /// A syntax error inside `text` (a part of this document), located in the whole input.
    fn syntax(&self, text: &str, e: &serde_json::Error) -> PayloadError {
        let (line, column) = self.locate(text, e.line(), e.column());
        PayloadError::Syntax {
            message: strip_position(e),
            line,
            column,
        }
    }

    fn process(
        &self,
        raw: &'a RawValue,
        path: &str,
        depth: usize,
        sink: &mut dyn FnMut(Item),
    ) -> Result<PayloadKind, PayloadError> {
        if depth > MAX_DEPTH {
            return Err(PayloadError::Unrecognised {
                path: path.to_owned(),
                reason: "envelopes nested too deep".to_owned(),
            });
        }
        let shape = detect(raw).map_err(|reason| PayloadError::Unrecognised {
            path: path.to_owned(),
            reason,
        })?;
        Ok(match shape {
            Shape::SpecExample => {
                let example: SpecExample<'a> = self.typed(raw, path)?;
                // The success response's body; a spec example without one (202, HEAD) has no subjects.
                let body = example
                    .responses
                    .iter()
                    .filter(|(status, _)| status.starts_with('2'))
                    .find_map(|(status, r)| r.body.map(|b| (status.clone(), b)))
                    // A file download's body is the file's text, not a payload.
                    .filter(|(_, body)| body.get().trim_start().starts_with(['{', '[']));
                if let Some((status, body)) = body {
                    self.process(
                        body,
                        &join(path, &format!("responses.{status}.body")),
                        depth + 1,
                        sink,
                    )?;
                }
                PayloadKind::SpecExample
            }
            Shape::Records => {
                let envelope: RecordsEnvelope<'a> = self.typed(raw, path)?;
                let records_path = join(path, "records");
                self.for_each_element(envelope.records, &records_path, &mut |i, record| {
                    let path = join(path, &format!("records[{i}]"));
                    self.record(self.typed(record, &path)?, &path, sink)
                })?;
                PayloadKind::DiagnosticRecords
            }
            Shape::Record => {
                let record: DiagnosticRecord<'a> = self.typed(raw, path)?;
                self.record(record, path, sink)?;
                PayloadKind::DiagnosticRecord
            }
            Shape::CloudEvent => {
                let event: CloudEvent<'a> = self.typed(raw, path)?;
                self.event_data(event.data, path, depth, sink)?;
                PayloadKind::CloudEvents
            }
            Shape::EventGridEvent => {
                let event: EventGridEvent<'a> = self.typed(raw, path)?;
                self.event_data(event.data, path, depth, sink)?;
                PayloadKind::EventGrid
            }
            Shape::Array => {
                // The first element's kind, and whether every other one had it too.
                let mut kinds: Option<(PayloadKind, bool)> = None;
                self.for_each_element(raw, path, &mut |i, item| {
                    let kind =
                        self.process(item, &join(path, &format!("[{i}]")), depth + 1, sink)?;
                    match &mut kinds {
                        None => kinds = Some((kind, true)),
                        Some((first, same)) => *same &= *first == kind,
                    }
                    Ok(())
                })?;
                match kinds {
                    Some((first @ (PayloadKind::EventGrid | PayloadKind::CloudEvents), true)) => {
                        first
                    }
                    _ => PayloadKind::Array,
                }
            }
            Shape::List(None) => PayloadKind::EmptyList,
            Shape::List(Some(element)) => {
                match element {
                    Element::Task => {
                        self.page::<BatchTask>(raw, path, sink, |t| Item::Task(Box::new(t)))?
                    }
                    Element::Job => {
                        self.page::<BatchJob>(raw, path, sink, |j| Item::Job(Box::new(j)))?
                    }
                    Element::PrepReleaseStatus => {
                        self.page::<PrepReleaseStatus>(raw, path, sink, |s| {
                            Item::PrepReleaseStatus(Box::new(s))
                        })?
                    }
                    Element::File => {
                        self.page::<NodeFile>(raw, path, sink, |f| Item::File(Box::new(f)))?
                    }
                }
                list_kind(element)
            }
            Shape::TaskCounts => {
                sink(Item::TaskCounts(self.typed(raw, path)?));
                PayloadKind::TaskCounts
            }
            Shape::BatchError => {
                sink(Item::Error(self.typed(raw, path)?));
                PayloadKind::BatchError
            }
            Shape::SpecialTaskEvent => {
                sink(Item::SpecialTaskEvent {
                    body: Box::new(self.typed(raw, path)?),
                    account: None,
                });
                PayloadKind::SpecialTaskEvent
            }
            Shape::TaskEvent => {
                let body: TaskEventBody = self.typed(raw, path)?;
                sink(Item::TaskEvent {
                    kind: infer_event_kind(&body),
                    body: Box::new(body),
                    account: None,
                });
                PayloadKind::TaskEvent
            }
            Shape::TaskReference => {
                sink(Item::TaskReference(self.typed(raw, path)?));
                PayloadKind::TaskReference
            }
            Shape::Element(Element::Task) => {
                sink(Item::Task(Box::new(self.typed(raw, path)?)));
                PayloadKind::Task
            }
            Shape::Element(Element::Job) => {
                sink(Item::Job(Box::new(self.typed(raw, path)?)));
                PayloadKind::Job
            }
            Shape::Element(Element::PrepReleaseStatus) => {
                sink(Item::PrepReleaseStatus(Box::new(self.typed(raw, path)?)));
                PayloadKind::PrepReleaseStatus
            }
            Shape::Element(Element::File) => {
                sink(Item::File(Box::new(self.typed(raw, path)?)));
                PayloadKind::FileList
            }
        })
    }

    fn page<T: Deserialize<'a>>(
        &self,
        raw: &'a RawValue,
        path: &str,
        sink: &mut dyn FnMut(Item),
        wrap: impl Fn(T) -> Item,
    ) -> Result<(), PayloadError> {
        let page: Page<'a> = self.typed(raw, path)?;
        self.for_each_element(page.value, &join(path, "value"), &mut |i, item| {
            sink(wrap(self.typed(item, &join(path, &format!("value[{i}]")))?));
            Ok(())
        })
    }

    /// Calls `each(index, element)` for every element of the array `list` (a part of this
    /// document), one at a time. The elements are never collected: a batch of eleven million
    /// empty records costs the memory of one, whether the document is read whole or streamed.
    fn for_each_element(
        &self,
        list: &'a RawValue,
        path: &str,
        each: &mut dyn FnMut(usize, &'a RawValue) -> Result<(), PayloadError>,
    ) -> Result<(), PayloadError> {
        struct Elements<'e, 'a> {
            each: &'e mut dyn FnMut(usize, &'a RawValue) -> Result<(), PayloadError>,
            /// Why `each` stopped the walk; serde's error only carries a message.
            stopped: Option<PayloadError>,
        }
        impl<'a> Visitor<'a> for &mut Elements<'_, 'a> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
                let mut index = 0;
                while let Some(element) = seq.next_element::<&'a RawValue>()? {
                    if let Err(error) = (self.each)(index, element) {
                        self.stopped = Some(error);
                        return Err(serde::de::Error::custom("stopped"));
                    }
                    index += 1;
                }
                Ok(())
            }
        }
        let mut elements = Elements {
            each,
            stopped: None,
        };
        let text = list.get();
        let mut de = serde_json::Deserializer::from_str(text);
        let walked = serde::Deserializer::deserialize_seq(&mut de, &mut elements);
        match (elements.stopped, walked) {
            (Some(error), _) => Err(error),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => {
                let (line, column) = self.locate(text, e.line(), e.column());
                Err(PayloadError::Shape {
                    path: path.to_owned(),
                    message: strip_position(&e),
                    line: Some(line),
                    column: Some(column),
                })
            }
        }
    }

    fn event_data(
        &self,
        data: Option<&'a RawValue>,
        path: &str,
        depth: usize,
        sink: &mut dyn FnMut(Item),
    ) -> Result<(), PayloadError> {
        match data {
            Some(data) if data.get() != "null" => self
                .process(data, &join(path, "data"), depth + 1, sink)
                .map(drop),
            _ => Err(PayloadError::Unrecognised {
                path: path.to_owned(),
                reason: "the event has no JSON `data`".to_owned(),
            }),
        }
    }

    fn record(
        &self,
        record: DiagnosticRecord<'a>,
        path: &str,
        sink: &mut dyn FnMut(Item),
    ) -> Result<(), PayloadError> {
        let name = record.operation_name.clone().unwrap_or_default();
        let account = record.account();
        let properties_path = join(path, "properties");
        match (TaskEventKind::from_operation_name(&name), record.properties) {
            (Some(kind), Some(properties)) => {
                let body: TaskEventBody = self.typed(properties, &properties_path)?;
                sink(Item::TaskEvent {
                    kind,
                    body: Box::new(body),
                    account,
                });
            }
            (None, Some(properties)) if is_special_task_operation(&name) => {
                let body: SpecialTaskEventBody = self.typed(properties, &properties_path)?;
                sink(Item::SpecialTaskEvent {
                    body: Box::new(body),
                    account,
                });
            }
            (Some(_), None) => {
                return Err(PayloadError::Shape {
                    path: properties_path,
                    message: format!("a {name} record without properties"),
                    line: None,
                    column: None,
                });
            }
            _ => sink(Item::Skipped {
                what: if name.is_empty() {
                    "a record without operationName".to_owned()
                } else {
                    name
                },
            }),
        }
        Ok(())
    }
}

fn list_kind(element: Element) -> PayloadKind {
    match element {
        Element::Task => PayloadKind::TaskList,
        Element::Job => PayloadKind::JobList,
        Element::PrepReleaseStatus => PayloadKind::PrepReleaseStatusList,
        Element::File => PayloadKind::FileList,
    }
}

/// Which event a bare body (without its record's `operationName`) is.
pub fn infer_event_kind(body: &TaskEventBody) -> TaskEventKind {
    let Some(exec) = &body.execution_info else {
        return TaskEventKind::ScheduleFail;
    };
    if exec.end_time.is_none() && exec.exit_code.is_none() && exec.result.is_none() {
        return TaskEventKind::Start;
    }
    let failed = exec.result == Some(TaskResult::Failure)
        || exec.exit_code.is_some_and(|c| c != 0)
        || exec
            .scheduling_error
            .as_ref()
            .is_some_and(|e| e.code.is_some());
    if failed {
        TaskEventKind::Fail
    } else {
        TaskEventKind::Complete
    }
}

/// The task an event describes, as far as the event tells (docs/batch-facts.md, diagnostic events): the event's
/// `schedulingError` becomes `failureInfo`, and the state follows from the event.
pub fn task_from_event(kind: TaskEventKind, body: &TaskEventBody) -> BatchTask {
    let exec = body.execution_info.clone().unwrap_or_default();
    let failure: Option<FailureInfo> = exec
        .scheduling_error
        .clone()
        .or_else(|| body.scheduling_error.clone())
        .filter(|f| f.code.is_some() || f.message.is_some());
    let state = match kind {
        TaskEventKind::Start => TaskState::Running,
        TaskEventKind::Complete | TaskEventKind::Fail => TaskState::Completed,
        TaskEventKind::Requeue | TaskEventKind::ScheduleFail => TaskState::Active,
    };
    let result = exec.result.clone().or(match kind {
        TaskEventKind::Fail => Some(TaskResult::Failure),
        TaskEventKind::Complete if exec.exit_code == Some(0) && failure.is_none() => {
            Some(TaskResult::Success)
        }
        _ => None,
    });
    BatchTask {
        id: body.id.clone(),
        state: Some(state),
        node_info: body.node_info.clone(),
        constraints: body
            .constraints
            .as_ref()
            .map(|c| crate::wire::TaskConstraints {
                max_wall_clock_time: c.max_wall_clock_time,
                retention_time: None,
                max_task_retry_count: c.max_task_retry_count,
            }),
        execution_info: Some(TaskExecutionInfo {
            start_time: exec.start_time,
            end_time: exec.end_time,
            exit_code: exec.exit_code,
            failure_info: failure,
            retry_count: exec.retry_count,
            requeue_count: match kind {
                // A requeue event is itself a requeue, even if the count was read before it.
                TaskEventKind::Requeue => exec.requeue_count.max(1),
                _ => exec.requeue_count,
            },
            result,
            ..TaskExecutionInfo::default()
        }),
        ..BatchTask::default()
    }
}

/// Streams a document too large to hold: only list pages (`value`) and record batches
/// (`records`) may be this large. A small scanner cuts each array element out of a bounded buffer,
/// and serde_json parses the element from that slice, which is two to three times faster than
/// parsing from a reader.
fn stream_large<R: Read>(
    reader: R,
    sink: &mut dyn FnMut(Item),
) -> Result<PayloadKind, PayloadError> {
    let mut scanner = Scanner::new(reader);
    scanner.skip_whitespace()?;
    scanner.expect(b'{', "a list response or a records batch (a JSON object)")?;
    let mut kind = None;
    let mut first = true;
    loop {
        scanner.skip_whitespace()?;
        match scanner.peek()? {
            Some(b'}') => {
                scanner.bump();
                break;
            }
            Some(b',') if !first => {
                scanner.bump();
                scanner.skip_whitespace()?;
            }
            _ if first => {}
            _ => return Err(scanner.error("expected `,` or `}`")),
        }
        first = false;
        let key = scanner.string()?;
        scanner.skip_whitespace()?;
        scanner.expect(b':', "`:`")?;
        scanner.skip_whitespace()?;
        let is_array = scanner.peek()? == Some(b'[');
        match key.as_str() {
            "value" if kind.is_none() && is_array => kind = Some(stream_list(&mut scanner, sink)?),
            "records" if kind.is_none() && is_array => {
                kind = Some(stream_records(&mut scanner, sink)?)
            }
            _ => {
                scanner.value()?;
            }
        }
    }
    scanner.skip_whitespace()?;
    if scanner.peek()?.is_some() {
        return Err(scanner.error("trailing characters after the document"));
    }
    kind.ok_or_else(|| PayloadError::Unrecognised {
        path: String::new(),
        reason: format!(
            "a document larger than {} MiB that is not a list response or a records batch",
            IN_MEMORY_LIMIT >> 20
        ),
    })
}

/// Calls `each(index, element text, its line/column)` for every element of the array at the
/// scanner's position.
fn for_each_element<R: Read>(
    scanner: &mut Scanner<R>,
    mut each: impl FnMut(usize, &str, (usize, usize)) -> Result<(), PayloadError>,
) -> Result<(), PayloadError> {
    scanner.expect(b'[', "`[`")?;
    let mut index = 0;
    loop {
        scanner.skip_whitespace()?;
        match scanner.peek()? {
            Some(b']') => {
                scanner.bump();
                return Ok(());
            }
            Some(b',') if index > 0 => {
                scanner.bump();
                scanner.skip_whitespace()?;
            }
            _ if index == 0 => {}
            _ => return Err(scanner.error("expected `,` or `]`")),
        }
        let (bytes, origin) = scanner.value()?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let (line, column) = advance(origin, &bytes[..e.valid_up_to()]);
            PayloadError::Syntax {
                message: "the input is not UTF-8".to_owned(),
                line,
                column,
            }
        })?;
        each(index, text, origin)?;
        index += 1;
    }
}

fn stream_list<R: Read>(
    scanner: &mut Scanner<R>,
    sink: &mut dyn FnMut(Item),
) -> Result<PayloadKind, PayloadError> {
    let mut element = None;
    for_each_element(scanner, |index, text, origin| {
        let doc = Doc { text, origin };
        let path = format!("value[{index}]");
        let element = match element {
            Some(element) => element,
            None => {
                let first: Value = serde_json::from_str(text).map_err(|e| doc.syntax(text, &e))?;
                *element.insert(first.as_object().and_then(element_of).ok_or_else(|| {
                    PayloadError::Unrecognised {
                        path: path.clone(),
                        reason: "list items are not tasks, jobs, prep/release statuses or files"
                            .to_owned(),
                    }
                })?)
            }
        };
        match element {
            Element::Task => sink(Item::Task(Box::new(doc.typed_str(text, &path)?))),
            Element::Job => sink(Item::Job(Box::new(doc.typed_str(text, &path)?))),
            Element::PrepReleaseStatus => sink(Item::PrepReleaseStatus(Box::new(
                doc.typed_str(text, &path)?,
            ))),
            Element::File => sink(Item::File(Box::new(doc.typed_str(text, &path)?))),
        }
        Ok(())
    })?;
    Ok(element.map_or(PayloadKind::EmptyList, list_kind))
}

fn stream_records<R: Read>(
    scanner: &mut Scanner<R>,
    sink: &mut dyn FnMut(Item),
) -> Result<PayloadKind, PayloadError> {
    for_each_element(scanner, |index, text, origin| {
        let doc = Doc { text, origin };
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| doc.syntax(text, &e))?;
        let path = format!("records[{index}]");
        let record: DiagnosticRecord<'_> = doc.typed(raw, &path)?;
        doc.record(record, &path, sink)
    })?;
    Ok(PayloadKind::DiagnosticRecords)
}

/// Line and column after reading `bytes` from `start`.
fn advance(start: (usize, usize), bytes: &[u8]) -> (usize, usize) {
    let newlines = bytes.iter().filter(|b| **b == b'\n').count();
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(last) => (start.0 + newlines, bytes.len() - last),
        None => (start.0, start.1 + bytes.len()),
    }
}

/// Reads bytes into a bounded buffer and finds where JSON values end, without parsing them.
struct Scanner<R> {
    reader: R,
    buf: Vec<u8>,
    /// The next unread byte.
    pos: usize,
    /// How many bytes of `buf` hold input.
    len: usize,
    /// A position in `buf` whose line and column are known: positions are counted forward from
    /// it, so each byte is counted once.
    mark: usize,
    /// Line and column of `buf[mark]` in the whole input.
    origin: (usize, usize),
}

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

impl<R: Read> Scanner<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; CHUNK],
            pos: 0,
            len: 0,
            mark: 0,
            origin: (1, 1),
        }
    }

    /// Reads more input after what is held, dropping what was consumed; false at the end.
    fn fill(&mut self) -> Result<bool, PayloadError> {
        if self.pos > 0 {
            self.origin = advance(self.origin, &self.buf[self.mark..self.pos]);
            self.mark = 0;
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            if self.buf.len() > IN_MEMORY_LIMIT {
                return Err(self.error(&format!(
                    "a single element larger than {} MiB",
                    IN_MEMORY_LIMIT >> 20
                )));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PayloadError::Io(e)),
            }
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, PayloadError> {
        if self.pos == self.len && !self.fill()? {
            return Ok(None);
        }
        Ok(Some(self.buf[self.pos]))
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn skip_whitespace(&mut self) -> Result<(), PayloadError> {
        while let Some(b) = self.peek()? {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.bump();
        }
        Ok(())
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), PayloadError> {
        if self.peek()? == Some(byte) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(&format!("expected {what}")))
        }
    }

    /// Line and column of `buf[index]`, for an `index` at or after the mark; moves the mark there.
    fn position(&mut self, index: usize) -> (usize, usize) {
        self.origin = advance(self.origin, &self.buf[self.mark..index]);
        self.mark = index;
        self.origin
    }

    /// A syntax error at the current position.
    fn error(&self, message: &str) -> PayloadError {
        let (line, column) = advance(self.origin, &self.buf[self.mark..self.pos.min(self.len)]);
        PayloadError::Syntax {
            message: message.to_owned(),
            line,
            column,
        }
    }

    /// A JSON string at the current position, unescaped.
    fn string(&mut self) -> Result<String, PayloadError> {
        if self.peek()? != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        let (bytes, origin) = self.value()?;
        serde_json::from_slice(bytes).map_err(|e| PayloadError::Syntax {
            message: strip_position(&e),
            line: origin.0,
            column: origin.1 + e.column().saturating_sub(1),
        })
    }

    /// The complete JSON value at the current position (the scanner only finds where it ends;
    /// serde_json checks it), with the line and column where it starts.
    fn value(&mut self) -> Result<(&[u8], (usize, usize)), PayloadError> {
        if self.peek()?.is_none() {
            return Err(self.error("unexpected end of input"));
        }
        let mut scan = ValueScan::default();
        let mut offset = 0;
        loop {
            match scan.feed(&self.buf[self.pos + offset..self.len]) {
                Some(end) => {
                    // `end` counts from the start of the value, across refills.
                    let start = self.pos;
                    let origin = self.position(start);
                    self.pos = start + end;
                    return Ok((&self.buf[start..self.pos], origin));
                }
                None => {
                    offset = self.len - self.pos;
                    if !self.fill()? {
                        // A scalar may end with the input; anything else is cut short.
                        if scan.is_scalar() && offset > 0 {
                            let start = self.pos;
                            let origin = self.position(start);
                            self.pos = self.len;
                            return Ok((&self.buf[start..self.len], origin));
                        }
                        self.pos = self.len;
                        return Err(self.error("unexpected end of input"));
                    }
                }
            }
        }
    }
}

/// The offset of the next `"`, `{`, `[`, `}` or `]` in `bytes`.
fn next_structural(bytes: &[u8]) -> Option<usize> {
    // Opening and closing brackets differ by 2 (`[`/`]`, `{`/`}`), so two searches of three
    // bytes each cover all five; the nearer hit wins.
    let quote_or_open = memchr::memchr3(b'"', b'{', b'[', bytes);
    let limit = quote_or_open.map_or(bytes.len(), |k| k);
    let close = memchr::memchr2(b'}', b']', &bytes[..limit]);
    match (quote_or_open, close) {
        (_, Some(c)) => Some(c),
        (q, None) => q,
    }
}

/// Where a JSON value ends, fed in pieces: tracks nesting, strings and escapes.
#[derive(Debug, Default)]
struct ValueScan {
    started: bool,
    scalar: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    consumed: usize,
}

impl ValueScan {
    fn is_scalar(&self) -> bool {
        self.started && self.scalar
    }

    /// Scans `bytes` (which continue where the last call stopped); `Some(end)` is the end of the
    /// value as an offset from the start of the value.
    ///
    /// Most of a document is string contents and whitespace between tokens, so the scan jumps
    /// (with `memchr`) to the next byte that can change its state instead of looking at each.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !self.started {
                self.started = true;
                match b {
                    b'{' | b'[' => self.depth = 1,
                    b'"' => self.in_string = true,
                    _ => self.scalar = true,
                }
                i += 1;
                continue;
            }
            if self.scalar {
                if matches!(b, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t') {
                    return Some(self.consumed + i);
                }
                i += 1;
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let Some(k) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                    break;
                };
                i += k;
                if bytes[i] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.consumed + i + 1);
                    }
                }
                i += 1;
                continue;
            }
            // Between tokens: only quotes and brackets matter.
            let Some(k) = next_structural(&bytes[i..]) else {
                break;
            };
            i += k;
            match bytes[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                _ => {
                    // `}` or `]`.
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.consumed + i + 1);
                    }
                }
            }
            i += 1;
        }
        self.consumed += bytes.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ValueScan;

    /// Where the scan says the value at the start of `text` ends, fed in pieces of `piece` bytes.
    fn end_of(text: &str, piece: usize) -> Option<usize> {
        let mut scan = ValueScan::default();
        text.as_bytes()
            .chunks(piece)
            .find_map(|chunk| scan.feed(chunk))
    }

    #[test]
    fn a_value_ends_where_json_says_whatever_the_pieces() {
        let values = [
            r#"{"a": "x}y]z", "b": [1, {"c": "\"}"}], "d": "\\"}"#,
            r#"[ "[", "]", {"k": "\\\"{"}, [[], {}] ]"#,
            r#""a \"quoted\" string with } and ] and \\""#,
            r#"{"commandLine": "/bin/sh -c \"echo {x} > out\\\\log\"", "n": 3}"#,
            "123",
            "true",
            "null",
            "-1073741510",
        ];
        for value in values {
            for trailer in [",{\"next\": 1}]", " ]", "\n}"] {
                let text = format!("{value}{trailer}");
                // Scalars end at the byte after them; everything else just after its last byte.
                let expected = value.len();
                for piece in 1..=text.len() {
                    assert_eq!(
                        end_of(&text, piece),
                        Some(expected),
                        "{text:?} in pieces of {piece}"
                    );
                }
            }
        }
        // An unfinished value has no end.
        for piece in 1..=8 {
            assert_eq!(end_of(r#"{"a": "unfinished \"}"#, piece), None);
        }
    }
}
