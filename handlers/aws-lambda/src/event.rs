//! What a Lambda invocation is, told apart by the event's shape (Lambda itself says nothing about
//! who invoked the function):
//!
//! - an **EventBridge scheduled event** (`"source": "aws.events"`, `"detail-type": "Scheduled
//!   Event"`): the timer;
//! - an **HTTP request** from a Function URL or an API Gateway HTTP API (payload format 2.0:
//!   `"version": "2.0"`, `requestContext.http.method`) or an API Gateway REST proxy (payload
//!   format 1.0: `httpMethod`): Event Grid delivering to the webhook;
//! - a **direct invocation** `{"jobId": "…", "taskId": "…", "account": "…"}` (`taskId` and
//!   `account` optional; without `account`, the first account of the settings): diagnose.
//!
//! Anything else is [`Invocation::Unknown`], with a reason that names no value from the event.

use base64::Engine;
use serde_json::{Map, Value};

/// One invocation, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// The EventBridge schedule: sweep, send due alert groups, drain the outbox.
    Schedule,
    /// A webhook request (Function URL or API Gateway) in a payload format, normalised; `Err`
    /// when the event has the shape of a request but a part of it is unusable (the 400 to
    /// answer).
    Http(PayloadFormat, Result<HttpRequest, String>),
    /// Diagnose a job, or one task of it.
    Diagnose {
        /// The job.
        job_id: String,
        /// The task, when one is asked for.
        task_id: Option<String>,
        /// The account, when the deployment watches several; `None` for the first.
        account: Option<String>,
    },
    /// None of the above; the reason is for the error message.
    Unknown(String),
}

/// Which of the two HTTP payload formats an event is in; the response differs slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// 1.0: API Gateway REST API proxy integrations (and HTTP APIs set to 1.0).
    V1,
    /// 2.0: Function URLs and API Gateway HTTP APIs.
    V2,
}

/// An HTTP request, whichever of the two payload formats carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, upper case.
    pub method: String,
    /// Header names in lower case, with their values (a repeated header appears once per value).
    pub headers: Vec<(String, String)>,
    /// The `key` query parameter, percent-decoded.
    pub key_param: Option<String>,
    /// The path (`/report`); empty when the event has none.
    pub path: String,
    /// Every query parameter, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// The body, base64-decoded when the platform encoded it.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The headers as borrowed pairs, the form `pipeline::webhook` takes.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }
}

/// Classifies a Lambda event.
pub fn classify(event: &Value) -> Invocation {
    let Some(object) = event.as_object() else {
        return Invocation::Unknown(format!(
            "the event is a JSON {}, not an object",
            kind_of(event)
        ));
    };
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    if text("version") == Some("2.0") && object.pointer_str("/requestContext/http/method").is_some()
    {
        return Invocation::Http(PayloadFormat::V2, http_v2(object));
    }
    if text("httpMethod").is_some() {
        return Invocation::Http(PayloadFormat::V1, http_v1(object));
    }
    if text("source") == Some("aws.events") && text("detail-type") == Some("Scheduled Event") {
        return Invocation::Schedule;
    }
    if let Some(job) = object.get("jobId") {
        return diagnose(job, object.get("taskId"), object.get("account"));
    }
    let mut names: Vec<&str> = object.keys().take(8).map(|k| truncate(k, 40)).collect();
    if object.len() > names.len() {
        names.push("…");
    }
    Invocation::Unknown(format!(
        "unrecognised event (fields: {}): send an EventBridge scheduled event, a Function URL or \
         API Gateway request, or {{\"jobId\": \"…\", \"taskId\": \"…\"}}",
        names.join(", ")
    ))
}

fn diagnose(job: &Value, task: Option<&Value>, account: Option<&Value>) -> Invocation {
    let job_id = match job.as_str().map(str::trim) {
        Some(job) if !job.is_empty() => job.to_owned(),
        _ => return Invocation::Unknown("jobId must be a non-empty string".to_owned()),
    };
    let task_id = match task {
        None | Some(Value::Null) => None,
        Some(Value::String(task)) if !task.trim().is_empty() => Some(task.trim().to_owned()),
        Some(_) => {
            return Invocation::Unknown(
                "taskId, when given, must be a non-empty string".to_owned(),
            );
        }
    };
    let account = match account {
        None | Some(Value::Null) => None,
        Some(Value::String(account)) if !account.trim().is_empty() => {
            Some(account.trim().to_owned())
        }
        Some(_) => {
            return Invocation::Unknown(
                "account, when given, must be a non-empty string".to_owned(),
            );
        }
    };
    Invocation::Diagnose {
        job_id,
        task_id,
        account,
    }
}

/// Payload format 2.0 (Function URLs, HTTP APIs): headers are one string each (repeats joined
/// with commas), the query is `rawQueryString`.
fn http_v2(event: &Map<String, Value>) -> Result<HttpRequest, String> {
    let method = event
        .pointer_str("/requestContext/http/method")
        .unwrap_or_default()
        .to_ascii_uppercase();
    let headers = string_map(event.get("headers"), "headers")?;
    let query: Vec<(String, String)> = match event.get("rawQueryString") {
        Some(Value::String(raw)) => url::form_urlencoded::parse(raw.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("rawQueryString is not a string".to_owned()),
    };
    let key_param = query
        .iter()
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.clone());
    Ok(HttpRequest {
        method,
        headers,
        key_param,
        path: event
            .get("rawPath")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        query,
        body: body(event)?,
    })
}

/// Payload format 1.0 (REST API proxy integrations): `multiValueHeaders` and
/// `multiValueQueryStringParameters` hold every value; the single-valued maps hold the last.
fn http_v1(event: &Map<String, Value>) -> Result<HttpRequest, String> {
    let method = event
        .get("httpMethod")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let headers = match event.get("multiValueHeaders") {
        Some(multi @ Value::Object(_)) => multi_map(multi, "multiValueHeaders")?,
        _ => string_map(event.get("headers"), "headers")?,
    };
    let query = match event.get("multiValueQueryStringParameters") {
        Some(multi @ Value::Object(_)) => multi_map(multi, "multiValueQueryStringParameters")?,
        _ => string_map(event.get("queryStringParameters"), "queryStringParameters")?,
    };
    let key_param = query
        .iter()
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.clone());
    Ok(HttpRequest {
        method,
        headers,
        key_param,
        path: event
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        query,
        body: body(event)?,
    })
}

fn body(event: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let encoded = event
        .get("isBase64Encoded")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match event.get("body") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if encoded => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "the body is marked isBase64Encoded but is not base64".to_owned()),
        Some(Value::String(text)) => Ok(text.clone().into_bytes()),
        Some(_) => Err("body is not a string".to_owned()),
    }
}

/// `{"name": "value", …}` (or null) → pairs with lower-case names.
fn string_map(value: Option<&Value>, field: &str) -> Result<Vec<(String, String)>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| match value {
                Value::String(value) => Ok((name.to_ascii_lowercase(), value.clone())),
                _ => Err(format!("{field}.{} is not a string", truncate(name, 40))),
            })
            .collect(),
        Some(_) => Err(format!("{field} is not an object")),
    }
}

/// `{"name": ["value", …], …}` → one pair per value, with lower-case names.
fn multi_map(value: &Value, field: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (name, values) in value.as_object().into_iter().flatten() {
        let values = match values {
            Value::Null => continue,
            Value::Array(values) => values,
            _ => return Err(format!("{field}.{} is not a list", truncate(name, 40))),
        };
        for value in values {
            let value = value
                .as_str()
                .ok_or_else(|| format!("{field}.{} holds a non-string", truncate(name, 40)))?;
            pairs.push((name.to_ascii_lowercase(), value.to_owned()));
        }
    }
    Ok(pairs)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most `max` characters, cut on a character boundary (names in messages stay short).
fn truncate(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(end, _)| &text[..end])
}

trait PointerStr {
    fn pointer_str(&self, pointer: &str) -> Option<&str>;
}

impl PointerStr for Map<String, Value> {
    fn pointer_str(&self, pointer: &str) -> Option<&str> {
        let (first, rest) = pointer.trim_start_matches('/').split_once('/')?;
        self.get(first)?.pointer(&format!("/{rest}"))?.as_str()
    }
}

#[cfg(test)]
mod tests;
