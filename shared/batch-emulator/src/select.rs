//! `$select`: trims returned objects to the listed properties.
//!
//! Items are top-level property names (`id,state,executionInfo`); nested paths such as
//! `executionInfo/exitCode` keep only that field inside its parent. Names are matched
//! case-insensitively; unknown names select nothing, and an empty list selects everything.

use serde_json::{Map, Value};

/// A parsed `$select` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Select {
    paths: Vec<Vec<String>>,
}

impl Select {
    /// Parses a comma-separated list; `None` when it names nothing.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let paths: Vec<Vec<String>> = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .filter(|path: &Vec<String>| !path.is_empty())
            .collect();
        (!paths.is_empty()).then_some(Self { paths })
    }

    /// The selected part of `object`. `odata.*` annotations are kept.
    pub(crate) fn apply(&self, object: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in object {
            if key.starts_with("odata.") {
                out.insert(key.clone(), value.clone());
            }
        }
        for path in &self.paths {
            copy_path(object, path, &mut out);
        }
        out
    }
}

/// Copies the value at `path` in `from` into `to` at the same path.
fn copy_path(from: &Map<String, Value>, path: &[String], to: &mut Map<String, Value>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some((key, value)) = from.iter().find(|(k, _)| k.eq_ignore_ascii_case(first)) else {
        return;
    };
    if rest.is_empty() {
        to.insert(key.clone(), value.clone());
        return;
    }
    let Value::Object(inner) = value else {
        return;
    };
    let slot = to
        .entry(key.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(slot) = slot {
        copy_path(inner, rest, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_top_level_and_nested() {
        let task = json!({"id": "t", "state": "completed", "url": "u",
            "executionInfo": {"exitCode": 1, "result": "failure"}});
        let task = task.as_object().unwrap();
        let select = Select::parse("id, State").unwrap();
        assert_eq!(
            Value::Object(select.apply(task)),
            json!({"id": "t", "state": "completed"})
        );
        let select = Select::parse("id,executionInfo/exitCode,nope").unwrap();
        assert_eq!(
            Value::Object(select.apply(task)),
            json!({"id": "t", "executionInfo": {"exitCode": 1}})
        );
        assert!(Select::parse(" , ").is_none());
    }
}
