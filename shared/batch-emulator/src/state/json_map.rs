//! Reading and filling the JSON maps a scenario's jobs, tasks and rows are kept as.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::clock;

pub(super) fn str_at<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    let mut value = map.get(*first)?;
    for segment in rest {
        value = value.get(*segment)?;
    }
    value.as_str()
}

/// Replaces every relative time string (`now-5m`) in `value` with a Batch timestamp.
pub(super) fn resolve_times(value: &mut Value, now: OffsetDateTime) {
    match value {
        Value::String(text) => {
            if let Some(t) = clock::resolve_relative(text, now) {
                *text = clock::format_time(t);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| resolve_times(v, now)),
        Value::Object(map) => map.values_mut().for_each(|v| resolve_times(v, now)),
        _ => {}
    }
}

pub(super) fn resolve_map(map: Map<String, Value>, now: OffsetDateTime) -> Map<String, Value> {
    let mut value = Value::Object(map);
    resolve_times(&mut value, now);
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(super) fn object_at<'a>(
    map: &'a mut Map<String, Value>,
    name: &str,
) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(name.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(inner) => inner,
        _ => unreachable!("slot was just made an object"),
    }
}

pub(super) fn default_field(map: &mut Map<String, Value>, name: &str, value: Value) {
    map.entry(name.to_owned()).or_insert(value);
}

/// A JSON object holding only `{"id": id}`.
pub(super) fn id_map(id: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), Value::String(id.to_owned()));
    map
}
