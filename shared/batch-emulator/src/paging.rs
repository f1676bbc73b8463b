//! List parameters (`$filter`, `$select`, `maxresults`, `$skiptoken`) and `odata.nextLink`.
//!
//! Lists are ordered by key (lower-cased id, `pool/node`, or file name). The skip token is the
//! base64url of the last key returned, opaque to clients. The next link repeats the request's
//! own query (filter, select, maxresults, …) plus `$skiptoken`, as an absolute URL on the
//! emulator's base, so following it verbatim or the way the SDKs do both work.

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::filter::{Filter, Target};
use crate::select::Select;
use crate::server::{Ctx, Query, json_response};

/// Default and largest page size.
const MAX_RESULTS: usize = 1000;

/// Characters escaped in query values of next links: everything but unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Query names keep `$` (`$filter`, `$select`).
const QUERY_NAME: &AsciiSet = &QUERY_VALUE.remove(b'$');

/// Parsed list parameters.
#[derive(Debug)]
pub(crate) struct ListParams {
    /// `$filter`.
    pub(crate) filter: Option<Filter>,
    /// `$select`.
    pub(crate) select: Option<Select>,
    /// `maxresults`.
    pub(crate) max: usize,
    /// Key after which the page starts.
    pub(crate) after: Option<String>,
}

impl ListParams {
    /// Reads the list parameters for `target`; `$select` is ignored where Batch has none.
    pub(crate) fn parse(query: &Query, target: Target) -> Result<Self, ApiError> {
        let filter = match query.get("$filter") {
            Some(text) => Some(Filter::parse(text, target).map_err(|error| {
                ApiError::invalid_query_parameter("$filter", text, &error.to_string())
            })?),
            None => None,
        };
        let select = if target == Target::Files {
            None
        } else {
            query.get("$select").and_then(Select::parse)
        };
        let max = match query.get("maxresults") {
            None => MAX_RESULTS,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_RESULTS).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid_query_parameter(
                        "maxresults",
                        text,
                        "maxresults must be an integer from 1 to 1000.",
                    ));
                }
            },
        };
        let after = match query.get("$skiptoken") {
            None => None,
            Some(token) => Some(decode_token(token).ok_or_else(|| {
                ApiError::invalid_query_parameter(
                    "$skiptoken",
                    token,
                    "The skip token is not valid.",
                )
            })?),
        };
        Ok(Self {
            filter,
            select,
            max,
            after,
        })
    }

    /// Whether a row passes the filter.
    pub(crate) fn keep(&self, row: &Map<String, Value>) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(row))
    }

    /// Applies `$select` to a rendered row.
    pub(crate) fn shape(&self, row: Map<String, Value>) -> Value {
        match &self.select {
            Some(select) => Value::Object(select.apply(&row)),
            None => Value::Object(row),
        }
    }
}

/// Takes one page from rows ordered by key, starting after `params.after`. Returns the page
/// and the key to continue after, when more matching rows exist.
pub(crate) fn take_page<'a, T: 'a>(
    rows: impl Iterator<Item = (&'a str, T)>,
    params: &ListParams,
    keep: impl Fn(&T) -> bool,
) -> (Vec<(&'a str, T)>, Option<String>) {
    let mut page = Vec::new();
    let mut rows = rows
        .filter(|(key, _)| params.after.as_deref().is_none_or(|after| *key > after))
        .filter(|(_, row)| keep(row));
    for row in rows.by_ref() {
        page.push(row);
        if page.len() == params.max {
            break;
        }
    }
    let more = page.len() == params.max && rows.next().is_some();
    let next = if more {
        page.last().map(|(key, _)| (*key).to_owned())
    } else {
        None
    };
    (page, next)
}

/// The answer to a list: the page of `rows` (in key order) that `params` selects, each row kept
/// or not by the filter on its stored form (`stored`), then rendered by `render` and shaped by
/// `$select`. `metadata` names the entity set.
pub(crate) fn list_response<'a, T: 'a>(
    ctx: &Ctx,
    params: &ListParams,
    metadata: &str,
    rows: impl Iterator<Item = (&'a str, T)>,
    stored: impl Fn(&T) -> &Map<String, Value>,
    render: impl Fn(T) -> Map<String, Value>,
) -> Response {
    let (page, next) = take_page(rows, params, |row| params.keep(stored(row)));
    let value = page
        .into_iter()
        .map(|(_, row)| params.shape(render(row)))
        .collect();
    json_response(StatusCode::OK, &list_body(ctx, metadata, value, next))
}

fn encode_token(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode_token(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim().trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The list body: `odata.metadata`, `value`, and `odata.nextLink` when there is more.
pub(crate) fn list_body(
    ctx: &Ctx,
    metadata: &str,
    value: Vec<Value>,
    next: Option<String>,
) -> Value {
    let mut body = Map::new();
    body.insert(
        "odata.metadata".into(),
        Value::String(format!("{}/$metadata#{metadata}", ctx.base)),
    );
    body.insert("value".into(), Value::Array(value));
    if let Some(last) = next {
        body.insert(
            "odata.nextLink".into(),
            Value::String(next_link(ctx, &last)),
        );
    }
    Value::Object(body)
}

/// Absolute URL of the next page.
fn next_link(ctx: &Ctx, last_key: &str) -> String {
    let mut parts: Vec<String> = ctx
        .query
        .pairs
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("$skiptoken"))
        .map(|(name, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(name, QUERY_NAME),
                utf8_percent_encode(value, QUERY_VALUE)
            )
        })
        .collect();
    parts.push(format!("$skiptoken={}", encode_token(last_key)));
    format!("{}{}?{}", ctx.base, ctx.raw_path, parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for key in ["t-00001", "wd/a b.txt", "p/n"] {
            assert_eq!(decode_token(&encode_token(key)).as_deref(), Some(key));
        }
        assert_eq!(decode_token("%%%"), None);
    }

    #[test]
    fn pages() {
        let params = ListParams {
            filter: None,
            select: None,
            max: 2,
            after: Some("b".into()),
        };
        let rows = ["a", "b", "c", "d", "e"].map(|k| (k, k));
        let (page, next) = take_page(rows.into_iter(), &params, |_| true);
        assert_eq!(page.iter().map(|r| r.0).collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(next.as_deref(), Some("d"));
        let params = ListParams { max: 3, ..params };
        let (page, next) = take_page(rows.into_iter(), &params, |_| true);
        assert_eq!(page.len(), 3);
        assert_eq!(next, None);
    }
}
