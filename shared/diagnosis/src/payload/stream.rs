//! Streaming a document too large to hold: list pages and record batches, one element at a time.

use std::io::Read;

use serde_json::Value;
use serde_json::value::RawValue;

use super::detect::{LIST_ITEMS, element_of, list_kind};
use super::scan::Scanner;
use super::walk::Doc;
use super::{IN_MEMORY_LIMIT, Item, PayloadError, PayloadKind, advance};
use crate::wire::DiagnosticRecord;

/// Streams a document too large to hold: only list pages (`value`) and record batches
/// (`records`) may be this large. A small scanner cuts each array element out of a bounded buffer,
/// and serde_json parses the element from that slice, which is two to three times faster than
/// parsing from a reader.
pub(super) fn stream_large<R: Read>(
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
                        reason: format!("list items are not {LIST_ITEMS}"),
                    }
                })?)
            }
        };
        sink(doc.element(element, text, &path)?);
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
