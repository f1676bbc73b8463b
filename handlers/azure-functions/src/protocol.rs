//! The custom-handler invocation protocol (docs/delivery.md, last section): what the host sends,
//! how each trigger's value is encoded, and what the handler answers.
//!
//! Decoding is defensive: the host JSON-encodes .NET strings a second time (a queue message
//! `aaaaa` arrives as `"\"aaaaa\""`), and the Event Hubs trigger with `dataType: string` and
//! `cardinality: many` delivers one string holding a JSON array of strings, one per event body.
//! No captured Azure payload exists for every trigger, so each decoder accepts every plausible
//! encoding rather than one guessed form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What the host POSTs to `/<FunctionName>`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvokeRequest {
    /// One entry per input or trigger binding, by binding name.
    #[serde(default, rename = "Data", alias = "data")]
    pub data: Map<String, Value>,
    /// The trigger's binding data plus `sys` (`MethodName`, `UtcNow`, `RandGuid`) and, under a
    /// retry policy, `RetryContext`.
    #[serde(default, rename = "Metadata", alias = "metadata")]
    pub metadata: Map<String, Value>,
}

impl InvokeRequest {
    /// The value of binding `name`, decoded (see [`decode_binding`]).
    pub fn binding(&self, name: &str) -> Result<Value, ProtocolError> {
        self.data
            .get(name)
            .map(decode_binding)
            .ok_or_else(|| ProtocolError::MissingBinding {
                name: name.to_owned(),
            })
    }

    /// How many times the host has retried this invocation (0 on the first attempt), from
    /// `Metadata.RetryContext.RetryCount`.
    pub fn retry_count(&self) -> u32 {
        self.metadata
            .get("RetryContext")
            .map(decode_binding)
            .and_then(|r| r.get("RetryCount").and_then(Value::as_u64))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Whether the host gives up on this invocation if it fails: the Event Hubs extension then
    /// checkpoints the batch anyway, and it is never delivered again (docs/delivery.md). That
    /// is the case when `RetryCount` has reached `MaxRetryCount`, and when there is no
    /// `RetryContext` at all (no retry policy: the first failure is the last). A
    /// `MaxRetryCount` of -1 retries forever.
    pub fn is_last_attempt(&self) -> bool {
        let Some(context) = self.metadata.get("RetryContext").map(decode_binding) else {
            return true;
        };
        let number = |name: &str| {
            context.get(name).and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
        };
        match (number("RetryCount"), number("MaxRetryCount")) {
            (_, Some(max)) if max < 0 => false,
            (Some(count), Some(max)) => count >= max,
            // A context without its counts: assume the worst, so nothing is lost.
            _ => true,
        }
    }

    /// Where the host had the events of an Event Hubs invocation: the hub and partition from
    /// `PartitionContext`, and one sequence number per event from `SequenceNumberArray`, in
    /// the order of the bodies. `None` when the metadata does not say.
    pub fn event_hub_positions(&self) -> Option<EventHubPositions> {
        let context = decode_binding(self.metadata.get("PartitionContext")?);
        let text = |name: &str| {
            context
                .get(name)
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .or_else(|| Some(v.to_string()))
                })
                .filter(|s| !s.is_empty() && s != "null")
        };
        let sequences = match decode_binding(self.metadata.get("SequenceNumberArray")?) {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                })
                .collect::<Option<Vec<i64>>>()?,
            _ => return None,
        };
        Some(EventHubPositions {
            hub: text("EventHubName")?,
            partition: text("PartitionId")?,
            sequences,
        })
    }
}

/// Where an Event Hubs batch sat in its hub, from the invocation's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubPositions {
    /// The event hub's name.
    pub hub: String,
    /// The partition id.
    pub partition: String,
    /// Each event's sequence number, in the order of the bodies.
    pub sequences: Vec<i64>,
}

/// What the handler answers (always HTTP 200 for a handled invocation; a non-2xx status makes
/// the host fail the invocation, and then it retries where the trigger allows).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvokeResponse {
    /// Output binding values by binding name (`res` for the HTTP response).
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Lines written to the invocation log.
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// The `$return` binding's value.
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

impl InvokeResponse {
    /// A response that only logs.
    pub fn logs(logs: Vec<String>) -> Self {
        Self {
            logs,
            ..Self::default()
        }
    }

    /// A response carrying the HTTP output binding `res`: JSON body with the given status.
    pub fn http(status: u16, body: &Value, logs: Vec<String>) -> Self {
        let mut outputs = Map::new();
        outputs.insert(
            "res".to_owned(),
            serde_json::json!({
                "statusCode": status,
                "body": body.to_string(),
                "headers": {"Content-Type": "application/json"},
            }),
        );
        Self {
            outputs,
            logs,
            return_value: Value::Null,
        }
    }
}

/// Why an invocation's input could not be decoded. Such input is logged and acknowledged, never
/// retried forever: retrying cannot make it readable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The binding is not in `Data`.
    #[error("the invocation has no `{name}` binding in Data")]
    MissingBinding {
        /// The binding name.
        name: String,
    },
    /// The binding's value has an unexpected shape.
    #[error("the `{binding}` binding is {found}, expected {expected}")]
    Shape {
        /// The binding name.
        binding: String,
        /// What was expected.
        expected: &'static str,
        /// What arrived.
        found: String,
    },
}

/// How many layers of JSON-in-a-string are unwrapped. The host adds one; a publisher that sends
/// JSON text as a string adds another.
const MAX_UNWRAP: usize = 3;

/// Unwraps a binding value: while it is a string that holds a JSON object, array or string, parse
/// it (at most three times). A string holding a bare number or word is left alone.
pub fn decode_binding(value: &Value) -> Value {
    let mut current = value.clone();
    for _ in 0..MAX_UNWRAP {
        let Value::String(text) = &current else { break };
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('"')) {
            break;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(parsed) => current = parsed,
            Err(_) => break,
        }
    }
    current
}

fn type_name(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(s) => format!("a string ({} bytes) that is not JSON", s.len()),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The event bodies of a `TaskEvents` invocation (Event Hubs, `cardinality: many`), each as JSON
/// text ready for `diagnosis::payload::read_slice` (normally `{"records": [...]}`).
///
/// `TaskEvents/function.json` sets `dataType: "string"`, so the host hands over each event body
/// as the text the publisher wrote, in one string holding a JSON array of strings; that is the
/// form its code builds for this binding, and the one the handler relies on. (`binary` would
/// arrive base64-encoded, and without a `dataType` the extension chooses the conversion.) An
/// array of objects or a single object is accepted too, because reading them costs nothing and a
/// local test may send them, not because the host does. Bodies that are not JSON are returned as
/// they are, so the payload reader reports them with a position.
pub fn event_hub_bodies(
    request: &InvokeRequest,
    binding: &str,
) -> Result<Vec<String>, ProtocolError> {
    let value = request.binding(binding)?;
    let events = match value {
        Value::Array(events) => events,
        Value::Object(_) => vec![value],
        other => {
            return Err(ProtocolError::Shape {
                binding: binding.to_owned(),
                expected: "an array of Event Hubs event bodies",
                found: type_name(&other),
            });
        }
    };
    Ok(events
        .into_iter()
        .map(|event| match event {
            // A body the host passed through as text: keep the publisher's exact bytes when it is
            // not double-encoded.
            // Only a body that starts as a JSON string can be encoded once more by the host; any
            // other body is kept without parsing it, because a parse into a tree costs about 30
            // times the body's size (a batch of small records), for nothing.
            Value::String(text) if text.trim_start().starts_with('"') => {
                match serde_json::from_str::<String>(&text) {
                    // Encoded once more by the host: the inner string is the body.
                    Ok(inner) => inner,
                    Err(_) => text,
                }
            }
            Value::String(text) => text,
            other => other.to_string(),
        })
        .collect())
}

/// The event of a `TaskEventGrid` invocation as JSON text: an Event Grid event or a CloudEvent
/// (the extension hands each event of a delivery to its own invocation).
pub fn event_grid_event(request: &InvokeRequest, binding: &str) -> Result<String, ProtocolError> {
    match request.binding(binding)? {
        value @ (Value::Object(_) | Value::Array(_)) => Ok(value.to_string()),
        other => Err(ProtocolError::Shape {
            binding: binding.to_owned(),
            expected: "an Event Grid event or a CloudEvent",
            found: type_name(&other),
        }),
    }
}

/// The timer trigger's `TimerInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TimerInfo {
    /// True when this run is late, e.g. the app was down at the scheduled time.
    #[serde(default, rename = "IsPastDue")]
    pub is_past_due: bool,
    /// The schedule's status; null when schedule monitoring is off.
    #[serde(default, rename = "ScheduleStatus")]
    pub schedule_status: Option<ScheduleStatus>,
}

/// `TimerInfo.ScheduleStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ScheduleStatus {
    /// The previous occurrence.
    #[serde(default, rename = "Last")]
    pub last: Option<String>,
    /// The next occurrence.
    #[serde(default, rename = "Next")]
    pub next: Option<String>,
}

/// The `Sweep` invocation's timer info. A missing or odd value is not fatal for a timer: the sweep
/// runs anyway, so this never fails.
pub fn timer_info(request: &InvokeRequest, binding: &str) -> TimerInfo {
    request
        .binding(binding)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default()
}

/// The HTTP trigger's request object (without forwarding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HttpRequestData {
    /// The full URL.
    #[serde(default, rename = "Url")]
    pub url: String,
    /// The method.
    #[serde(default, rename = "Method")]
    pub method: String,
    /// Query parameters.
    #[serde(default, rename = "Query", deserialize_with = "lenient_map")]
    pub query: Map<String, Value>,
    /// Headers, each a list of values.
    #[serde(default, rename = "Headers", deserialize_with = "lenient_map")]
    pub headers: Map<String, Value>,
    /// The body as text; absent when the request had none.
    #[serde(default, rename = "Body")]
    pub body: Option<Value>,
}

impl HttpRequestData {
    /// The body as JSON: an object sent as text, or already an object.
    pub fn json_body(&self) -> Option<Value> {
        match self.body.as_ref()? {
            Value::String(text) if text.trim().is_empty() => None,
            body => Some(decode_binding(body)).filter(|v| v.is_object() || v.is_array()),
        }
    }
}

/// The docs show `Query` as the string `"{}"`; the host's source sends an object. Accept both.
fn lenient_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match decode_binding(&value) {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

/// The `Diagnose` invocation's HTTP request.
pub fn http_request(
    request: &InvokeRequest,
    binding: &str,
) -> Result<HttpRequestData, ProtocolError> {
    let value = request.binding(binding)?;
    serde_json::from_value(value.clone()).map_err(|_| ProtocolError::Shape {
        binding: binding.to_owned(),
        expected: "an HTTP request object",
        found: type_name(&value),
    })
}

#[cfg(test)]
mod tests;
