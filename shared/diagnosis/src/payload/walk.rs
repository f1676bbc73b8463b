//! The document walker: a document held in memory, turned into items, following envelopes (spec
//! examples, Event Grid and CloudEvents `data`, record batches, arrays) down to what they carry.

use std::fmt;

use serde::Deserialize;
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::detect::{Element, Shape, Single, detect, element_kind, list_kind};
use super::{Item, MAX_DEPTH, PayloadError, PayloadKind, advance, strip_position};
use crate::wire::{
    CloudEvent, DiagnosticRecord, EventGridEvent, PoolEventBody, PoolEventKind,
    SpecialTaskEventBody, TaskEventBody, TaskEventKind, infer_event_kind,
    is_special_task_operation,
};

/// The input (or, when streaming, one element cut out of it), so that errors inside nested
/// fragments can be located in the whole input.
pub(super) struct Doc<'a> {
    pub(super) text: &'a str,
    /// Line and column in the whole input of `text`'s first byte.
    pub(super) origin: (usize, usize),
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
        let (base_line, base_column) = advance((1, 1), &self.text.as_bytes()[..start - base]);
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
    pub(super) fn typed<T: Deserialize<'a>>(
        &self,
        fragment: &'a RawValue,
        path: &str,
    ) -> Result<T, PayloadError> {
        self.typed_str(fragment.get(), path)
    }

    /// Parses `text` (a part of this document) as `T`. The fast parse runs first; only when it
    /// fails is the text parsed again with path tracking, to say where.
    pub(super) fn typed_str<T: Deserialize<'a>>(
        &self,
        text: &'a str,
        path: &str,
    ) -> Result<T, PayloadError> {
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
    pub(super) fn syntax(&self, text: &str, e: &serde_json::Error) -> PayloadError {
        let (line, column) = self.locate(text, e.line(), e.column());
        PayloadError::Syntax {
            message: strip_position(e),
            line,
            column,
        }
    }

    pub(super) fn process(
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
            Shape::SpecExample => self.spec_example(raw, path, depth, sink)?,
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
            Shape::Array => self.array(raw, path, depth, sink)?,
            Shape::List(None) => PayloadKind::EmptyList,
            Shape::List(Some(element)) => {
                self.page(element, raw, path, sink)?;
                list_kind(element)
            }
            Shape::Single(single) => self.single(single, raw, path, sink)?,
        })
    }

    /// A REST-spec example: the success response's body, read as a payload of its own.
    fn spec_example(
        &self,
        raw: &'a RawValue,
        path: &str,
        depth: usize,
        sink: &mut dyn FnMut(Item),
    ) -> Result<PayloadKind, PayloadError> {
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
        Ok(PayloadKind::SpecExample)
    }

    /// A JSON array of payloads: Event Grid and CloudEvents batches keep their kind.
    fn array(
        &self,
        raw: &'a RawValue,
        path: &str,
        depth: usize,
        sink: &mut dyn FnMut(Item),
    ) -> Result<PayloadKind, PayloadError> {
        // The first element's kind, and whether every other one had it too.
        let mut kinds: Option<(PayloadKind, bool)> = None;
        self.for_each_element(raw, path, &mut |i, item| {
            let kind = self.process(item, &join(path, &format!("[{i}]")), depth + 1, sink)?;
            match &mut kinds {
                None => kinds = Some((kind, true)),
                Some((first, same)) => *same &= *first == kind,
            }
            Ok(())
        })?;
        Ok(match kinds {
            Some((first @ (PayloadKind::EventGrid | PayloadKind::CloudEvents), true)) => first,
            _ => PayloadKind::Array,
        })
    }

    /// A document that is one item.
    fn single(
        &self,
        single: Single,
        raw: &'a RawValue,
        path: &str,
        sink: &mut dyn FnMut(Item),
    ) -> Result<PayloadKind, PayloadError> {
        Ok(match single {
            Single::TaskCounts => {
                sink(Item::TaskCounts(self.typed(raw, path)?));
                PayloadKind::TaskCounts
            }
            Single::BatchError => {
                sink(Item::Error(self.typed(raw, path)?));
                PayloadKind::BatchError
            }
            Single::SpecialTaskEvent => {
                sink(Item::SpecialTaskEvent {
                    body: Box::new(self.typed(raw, path)?),
                    account: None,
                });
                PayloadKind::SpecialTaskEvent
            }
            Single::TaskEvent => {
                let body: TaskEventBody = self.typed(raw, path)?;
                sink(Item::TaskEvent {
                    kind: infer_event_kind(&body),
                    body: Box::new(body),
                    account: None,
                });
                PayloadKind::TaskEvent
            }
            Single::TaskReference => {
                sink(Item::TaskReference(self.typed(raw, path)?));
                PayloadKind::TaskReference
            }
            Single::Element(element) => {
                sink(self.element(element, raw.get(), path)?);
                element_kind(element)
            }
            Single::PoolEvent(kind) => {
                let body: PoolEventBody = self.typed(raw, path)?;
                sink(Item::PoolEvent {
                    kind,
                    body: Box::new(body),
                    account: None,
                });
                PayloadKind::PoolEvent
            }
            Single::SkippedPoolEvent(what) => {
                sink(Item::Skipped {
                    what: what.to_owned(),
                });
                PayloadKind::PoolEvent
            }
        })
    }

    fn page(
        &self,
        element: Element,
        raw: &'a RawValue,
        path: &str,
        sink: &mut dyn FnMut(Item),
    ) -> Result<(), PayloadError> {
        let page: Page<'a> = self.typed(raw, path)?;
        self.for_each_element(page.value, &join(path, "value"), &mut |i, item| {
            let path = join(path, &format!("value[{i}]"));
            sink(self.element(element, item.get(), &path)?);
            Ok(())
        })
    }

    /// `text` (a part of this document) read as one `element` of a list.
    pub(super) fn element(
        &self,
        element: Element,
        text: &'a str,
        path: &str,
    ) -> Result<Item, PayloadError> {
        Ok(match element {
            Element::Task => Item::Task(Box::new(self.typed_str(text, path)?)),
            Element::Job => Item::Job(Box::new(self.typed_str(text, path)?)),
            Element::PrepReleaseStatus => {
                Item::PrepReleaseStatus(Box::new(self.typed_str(text, path)?))
            }
            Element::File => Item::File(Box::new(self.typed_str(text, path)?)),
            Element::Pool => Item::Pool(Box::new(self.typed_str(text, path)?)),
            Element::Node => Item::Node(Box::new(self.typed_str(text, path)?)),
            Element::PoolNodeCounts => Item::PoolNodeCounts(Box::new(self.typed_str(text, path)?)),
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

    pub(super) fn record(
        &self,
        record: DiagnosticRecord<'a>,
        path: &str,
        sink: &mut dyn FnMut(Item),
    ) -> Result<(), PayloadError> {
        let name = record.operation_name.clone().unwrap_or_default();
        let account = record.account();
        let properties_path = join(path, "properties");
        if let (Some(kind), Some(properties)) =
            (PoolEventKind::from_operation_name(&name), record.properties)
        {
            let body: PoolEventBody = self.typed(properties, &properties_path)?;
            sink(Item::PoolEvent {
                kind,
                body: Box::new(body),
                account,
            });
            return Ok(());
        }
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
