//! The gate in front of a webhook that Azure Event Grid delivers to, whatever serves the HTTP
//! (`batch-triage serve`'s axum routes, a Lambda function URL): it checks the shared secret,
//! answers Event Grid's handshakes itself, and hands everything else to the pipeline.
//!
//! It does no I/O and knows no HTTP library: the caller passes the method, the headers, the
//! `key` query value and the body, and gets back either a [`Response`] to send as is or the
//! payload to give to [`Triage::handle_payload`](crate::triage::Triage::handle_payload).
//!
//! What it answers (docs/delivery.md, and Microsoft's "Webhook event delivery"
//! and "Endpoint validation with CloudEvents schema" pages):
//!
//! - **The key first, for every request.** The secret (`BATCH_TRIAGE_WEBHOOK_KEY`) is presented
//!   as `?key=…` or as the `x-batch-triage-key` header. Missing or wrong → 401, and nothing else
//!   is looked at, so a stranger cannot even complete a handshake. Event Grid sends the
//!   subscription's endpoint URL, query included, on the handshakes too, so put the key in the
//!   URL (`https://host/api/events?key=…`). 401 is one of the codes Event Grid does not retry.
//! - **Event Grid schema handshake**: a POST whose body holds an event of type
//!   `Microsoft.EventGrid.SubscriptionValidationEvent` → 200
//!   `{"validationResponse": data.validationCode}`. A CloudEvents-shaped event of that `type` is
//!   answered the same way; Event Grid itself validates CloudEvents subscriptions with OPTIONS.
//! - **CloudEvents abuse protection**: `OPTIONS` with `WebHook-Request-Origin` → 200 with
//!   `WebHook-Allowed-Origin: <origin>`, `WebHook-Allowed-Rate: *` and `Allow: POST, OPTIONS`.
//! - **Subscription deleted** (`aeg-event-type: SubscriptionDeletion`) → 200, nothing done.
//! - **A body that is not JSON** → 400, which Event Grid does not retry: retrying cannot make it
//!   readable. Only the line and column are reported, never the body.
//! - Anything else POSTed is delivered to the pipeline.
//!
//! ```
//! use pipeline::webhook::{Gate, Request, WebhookKey};
//!
//! let key = WebhookKey::new("a-long-random-shared-secret").unwrap();
//! let body = br#"[{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
//!                  "data": {"validationCode": "512d38b6"}}]"#;
//! let request = Request {
//!     method: "POST",
//!     headers: &[("aeg-event-type", "SubscriptionValidation")],
//!     key_param: Some("a-long-random-shared-secret"),
//!     body,
//! };
//! match key.gate(&request) {
//!     Gate::Respond(response) => {
//!         assert_eq!(response.status, 200);
//!         assert_eq!(response.body, br#"{"validationResponse":"512d38b6"}"#);
//!     }
//!     Gate::Deliver(_) => unreachable!("a handshake never reaches the pipeline"),
//! }
//! ```

use std::fmt;

use batch_client::Secret;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The setting that holds the shared secret.
pub const KEY_SETTING: &str = "BATCH_TRIAGE_WEBHOOK_KEY";

/// The header that may carry the shared secret instead of the `key` query parameter.
pub const KEY_HEADER: &str = "x-batch-triage-key";

/// The shortest key accepted: shorter ones can be guessed by someone who can reach the endpoint.
pub const MIN_KEY_LEN: usize = 16;

/// The Event Grid event type of the subscription handshake.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// The shared secret a webhook caller must present. Its `Debug` output is redacted and it has no
/// `Display`, so it cannot reach a log line or an error message.
#[derive(Clone)]
pub struct WebhookKey(Secret);

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey(<redacted>)")
    }
}

/// The webhook key setting is missing or unusable. The message names the setting and never the
/// value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookKeyError {
    /// The setting is absent or blank.
    #[error(
        "{KEY_SETTING} is not set: set it to a long random secret (for example the output of \
         `openssl rand -hex 32`) and give Event Grid the endpoint URL with `?key=<that secret>`"
    )]
    Missing,
    /// The key is too short to be a secret.
    #[error(
        "{KEY_SETTING} is shorter than {MIN_KEY_LEN} characters: use a long random secret (for \
         example the output of `openssl rand -hex 32`)"
    )]
    TooShort,
    /// The key holds characters that cannot travel in a URL query or a header unescaped.
    #[error(
        "{KEY_SETTING} must be printable ASCII without spaces, '&', '#', '%' or '+', so that it \
         travels unchanged in `?key=` and in a header"
    )]
    BadCharacters,
}

impl WebhookKey {
    /// Wraps a key, refusing one that is too short to be secret or that would be mangled in a
    /// URL query or a header.
    pub fn new(key: impl Into<String>) -> Result<Self, WebhookKeyError> {
        let key = key.into();
        let key = key.trim();
        if key.is_empty() {
            return Err(WebhookKeyError::Missing);
        }
        if key.chars().count() < MIN_KEY_LEN {
            return Err(WebhookKeyError::TooShort);
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"&#%+".contains(&b))
        {
            return Err(WebhookKeyError::BadCharacters);
        }
        Ok(Self(Secret::new(key)))
    }

    /// Reads [`KEY_SETTING`] through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, WebhookKeyError> {
        Self::new(get(KEY_SETTING).ok_or(WebhookKeyError::Missing)?)
    }

    /// Whether `presented` is the key, in time that does not depend on where they differ or on
    /// their lengths: both sides are hashed first, and the digests compared without an early
    /// exit.
    fn matches(&self, presented: &str) -> bool {
        let expected = Sha256::digest(self.0.expose().as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Checks the key a request presents (`?key=` or the [`KEY_HEADER`] header). `Err` is the
    /// 401 to send; it says what was wrong, never what the key is.
    pub fn authorize(
        &self,
        headers: &[(&str, &str)],
        key_param: Option<&str>,
    ) -> Result<(), Response> {
        let presented: Vec<&str> = key_param
            .into_iter()
            .chain(header(headers, KEY_HEADER))
            .collect();
        if presented.is_empty() {
            return Err(Response::error(
                401,
                "missing key: add ?key=<BATCH_TRIAGE_WEBHOOK_KEY> to the URL or send it in the \
                 x-batch-triage-key header",
            ));
        }
        // Every presented value is compared, so timing does not tell which one was tried.
        let accepted = presented
            .iter()
            .fold(false, |ok, candidate| ok | self.matches(candidate.trim()));
        if accepted {
            Ok(())
        } else {
            Err(Response::error(401, "wrong key"))
        }
    }

    /// Decides what to do with one Event Grid or CloudEvents delivery (see the module docs).
    pub fn gate<'a>(&self, request: &Request<'a>) -> Gate<'a> {
        if let Err(refused) = self.authorize(request.headers, request.key_param) {
            return Gate::Respond(refused);
        }
        if request.method.eq_ignore_ascii_case("OPTIONS") {
            return Gate::Respond(abuse_protection(request.headers));
        }
        if !request.method.eq_ignore_ascii_case("POST") {
            let mut response = Response::error(405, "use POST (or OPTIONS for the handshake)");
            response.headers.push(("Allow", ALLOW.to_owned()));
            return Gate::Respond(response);
        }
        let event_type = header(request.headers, "aeg-event-type").unwrap_or_default();
        if event_type.eq_ignore_ascii_case("SubscriptionDeletion") {
            return Gate::Respond(Response::json(
                200,
                br#"{"status":"subscription deleted"}"#.to_vec(),
            ));
        }
        let events = match probe(request.body) {
            Ok(events) => events,
            Err(error) => {
                return Gate::Respond(Response::error(
                    400,
                    &format!(
                        "the body is not an Event Grid or CloudEvents delivery: {} at line {}, \
                         column {}",
                        describe(&error),
                        error.line(),
                        error.column()
                    ),
                ));
            }
        };
        if let Some(validation) = events.iter().find(|e| e.is_validation()) {
            return Gate::Respond(validation_response(validation));
        }
        if event_type.eq_ignore_ascii_case("SubscriptionValidation") {
            return Gate::Respond(Response::error(
                400,
                "aeg-event-type is SubscriptionValidation but the body holds no \
                 Microsoft.EventGrid.SubscriptionValidationEvent",
            ));
        }
        Gate::Deliver(request.body)
    }
}

/// One webhook request, as any HTTP library can describe it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method, in any casing.
    pub method: &'a str,
    /// The headers as (name, value) pairs; names are matched without regard to case. Values that
    /// are not text can be left out.
    pub headers: &'a [(&'a str, &'a str)],
    /// The `key` query parameter, percent-decoded, if the URL has one.
    pub key_param: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate<'a> {
    /// Send this response; the pipeline is not involved.
    Respond(Response),
    /// Give this payload to the pipeline, and answer from its verdict.
    Deliver(&'a [u8]),
}

/// A response to send as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers to set (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// The body (JSON, or empty).
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".to_owned())],
            body,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        )
    }
}

const ALLOW: &str = "POST, OPTIONS";

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn abuse_protection(headers: &[(&str, &str)]) -> Response {
    let mut response = Response {
        status: 200,
        headers: vec![("Allow", ALLOW.to_owned())],
        body: Vec::new(),
    };
    if let Some(origin) = header(headers, "WebHook-Request-Origin") {
        let origin = origin.trim();
        // The origin is echoed in a header: anything but printable ASCII (CR, LF) is refused
        // rather than reflected.
        if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic()) {
            return Response::error(400, "WebHook-Request-Origin is not a host name");
        }
        response
            .headers
            .push(("WebHook-Allowed-Origin", origin.to_owned()));
        response
            .headers
            .push(("WebHook-Allowed-Rate", "*".to_owned()));
    }
    response
}

/// The few fields of an event the gate looks at; `data` stays unparsed unless the event is a
/// handshake.
#[derive(Deserialize)]
struct Probe<'a> {
    /// Event Grid schema.
    #[serde(rename = "eventType", default)]
    event_type: Option<String>,
    /// CloudEvents schema.
    #[serde(rename = "type", default)]
    cloud_event_type: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

impl Probe<'_> {
    fn is_validation(&self) -> bool {
        self.event_type
            .as_deref()
            .or(self.cloud_event_type.as_deref())
            == Some(VALIDATION_EVENT_TYPE)
    }
}

/// The events of a delivery: an Event Grid delivery is an array of events, a CloudEvents
/// delivery one event or an array. Valid JSON of another shape (a string, a member that is not
/// an object, an `eventType` that is not a string) holds no handshake and is left for the
/// pipeline to judge; only a body that is not JSON at all is an error.
fn probe(body: &[u8]) -> Result<Vec<Probe<'_>>, serde_json::Error> {
    let raw: &RawValue = serde_json::from_slice(body)?;
    let text = raw.get().trim_start();
    let events = if text.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(text)?
            .into_iter()
            .filter_map(|member| serde_json::from_str::<Probe<'_>>(member.get()).ok())
            .collect()
    } else {
        serde_json::from_str::<Probe<'_>>(text)
            .into_iter()
            .collect()
    };
    Ok(events)
}

fn describe(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Eof => "it ends early",
        serde_json::error::Category::Io => "it cannot be read",
        serde_json::error::Category::Syntax | serde_json::error::Category::Data => {
            "it is not valid JSON"
        }
    }
}

fn validation_response(event: &Probe<'_>) -> Response {
    #[derive(Deserialize)]
    struct ValidationData {
        #[serde(rename = "validationCode")]
        validation_code: String,
    }
    let code = event
        .data
        .and_then(|data| serde_json::from_str::<ValidationData>(data.get()).ok())
        .map(|data| data.validation_code);
    match code {
        Some(code) => Response::json(
            200,
            serde_json::json!({ "validationResponse": code })
                .to_string()
                .into_bytes(),
        ),
        None => Response::error(
            400,
            "the SubscriptionValidationEvent has no data.validationCode string",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef-shared-secret";

    fn key() -> WebhookKey {
        WebhookKey::new(KEY).unwrap()
    }

    fn post<'a>(
        headers: &'a [(&'a str, &'a str)],
        key: Option<&'a str>,
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            method: "POST",
            headers,
            key_param: key,
            body,
        }
    }

    fn respond(gate: Gate<'_>) -> Response {
        match gate {
            Gate::Respond(response) => response,
            Gate::Deliver(body) => panic!("delivered {:?}", String::from_utf8_lossy(body)),
        }
    }

    fn body_json(response: &Response) -> serde_json::Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    fn header_of<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    const VALIDATION: &[u8] = br#"[{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/xxx/resourceGroups/rg/providers/Microsoft.EventGrid/topics/t",
        "subject": "",
        "data": {
            "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
            "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x/validate?id=y&t=z&apiVersion=2018-05-01-preview&token=abc"
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z",
        "metadataVersion": "1",
        "dataVersion": "1"
    }]"#;

    const NOTIFICATION: &[u8] = br#"[{"id": "e1", "eventType": "Contoso.Batch.TaskFailed",
        "subject": "jobs/etl/tasks/t1", "eventTime": "2026-11-27T17:00:00Z",
        "data": {"jobId": "etl", "taskId": "t1"}, "dataVersion": "1"}]"#;

    #[test]
    fn answers_the_event_grid_validation_handshake_with_the_code() {
        let headers = [("Aeg-Event-Type", "SubscriptionValidation")];
        let response = respond(key().gate(&post(&headers, Some(KEY), VALIDATION)));
        assert_eq!(response.status, 200);
        assert_eq!(
            body_json(&response),
            serde_json::json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
        );
        assert_eq!(
            header_of(&response, "content-type"),
            Some("application/json")
        );
    }

    #[test]
    fn answers_a_cloud_event_shaped_validation_event_too() {
        let body = br#"{"specversion": "1.0", "id": "1", "source": "x",
            "type": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": "abc"}}"#;
        let response = respond(key().gate(&post(&[], Some(KEY), body)));
        assert_eq!(response.status, 200);
        assert_eq!(body_json(&response)["validationResponse"], "abc");
    }

    #[test]
    fn a_validation_event_with_a_wrong_or_missing_key_is_refused() {
        let headers = [("aeg-event-type", "SubscriptionValidation")];
        let wrong = respond(key().gate(&post(&headers, Some("not-the-key-at-all!"), VALIDATION)));
        assert_eq!(wrong.status, 401);
        assert_eq!(body_json(&wrong)["error"], "wrong key");
        let missing = respond(key().gate(&post(&headers, None, VALIDATION)));
        assert_eq!(missing.status, 401);
        assert!(
            body_json(&missing)["error"]
                .as_str()
                .unwrap()
                .contains("x-batch-triage-key")
        );
        // The code is never echoed to someone without the key.
        for response in [wrong, missing] {
            assert!(!String::from_utf8_lossy(&response.body).contains("512d38b6"));
        }
    }

    #[test]
    fn the_key_may_come_in_the_header_in_any_casing() {
        let headers = [("X-Batch-Triage-Key", KEY)];
        assert_eq!(
            key().gate(&post(&headers, None, NOTIFICATION)),
            Gate::Deliver(NOTIFICATION)
        );
    }

    #[test]
    fn a_wrong_key_is_refused_whatever_the_request() {
        for (method, body) in [
            ("POST", NOTIFICATION),
            ("OPTIONS", &b""[..]),
            ("GET", &b""[..]),
        ] {
            let headers = [
                ("WebHook-Request-Origin", "eventgrid.azure.net"),
                (KEY_HEADER, "0123456789abcdef-shared-secreT"),
            ];
            let request = Request {
                method,
                headers: &headers,
                key_param: None,
                body,
            };
            let response = respond(key().gate(&request));
            assert_eq!(response.status, 401, "{method}");
            assert!(header_of(&response, "WebHook-Allowed-Origin").is_none());
        }
    }

    #[test]
    fn a_right_key_beside_a_wrong_one_is_accepted() {
        // A proxy may add the header while the URL keeps `?key=`; either proves the caller.
        let headers = [(KEY_HEADER, "stale-key-from-before-rotation")];
        assert_eq!(
            key().gate(&post(&headers, Some(KEY), NOTIFICATION)),
            Gate::Deliver(NOTIFICATION)
        );
    }

    #[test]
    fn answers_the_cloud_events_abuse_protection_preflight() {
        let headers = [
            ("webhook-request-origin", "eventgrid.azure.net"),
            ("WebHook-Request-Rate", "120"),
        ];
        let request = Request {
            method: "OPTIONS",
            headers: &headers,
            key_param: Some(KEY),
            body: b"",
        };
        let response = respond(key().gate(&request));
        assert_eq!(response.status, 200);
        assert_eq!(
            header_of(&response, "WebHook-Allowed-Origin"),
            Some("eventgrid.azure.net")
        );
        assert_eq!(header_of(&response, "WebHook-Allowed-Rate"), Some("*"));
        assert_eq!(header_of(&response, "Allow"), Some("POST, OPTIONS"));
    }

    #[test]
    fn an_origin_that_would_split_a_header_is_not_reflected() {
        let headers = [("WebHook-Request-Origin", "evil\r\nSet-Cookie: a=b")];
        let request = Request {
            method: "OPTIONS",
            headers: &headers,
            key_param: Some(KEY),
            body: b"",
        };
        let response = respond(key().gate(&request));
        assert_eq!(response.status, 400);
        assert!(header_of(&response, "WebHook-Allowed-Origin").is_none());
    }

    #[test]
    fn options_without_an_origin_just_lists_the_methods() {
        let request = Request {
            method: "options",
            headers: &[],
            key_param: Some(KEY),
            body: b"",
        };
        let response = respond(key().gate(&request));
        assert_eq!(response.status, 200);
        assert_eq!(header_of(&response, "Allow"), Some("POST, OPTIONS"));
        assert!(header_of(&response, "WebHook-Allowed-Origin").is_none());
    }

    #[test]
    fn other_methods_are_405() {
        let request = Request {
            method: "PUT",
            headers: &[],
            key_param: Some(KEY),
            body: NOTIFICATION,
        };
        let response = respond(key().gate(&request));
        assert_eq!(response.status, 405);
        assert_eq!(header_of(&response, "Allow"), Some("POST, OPTIONS"));
    }

    #[test]
    fn a_notification_is_delivered_unchanged() {
        let headers = [("aeg-event-type", "Notification")];
        assert_eq!(
            key().gate(&post(&headers, Some(KEY), NOTIFICATION)),
            Gate::Deliver(NOTIFICATION)
        );
        // A single CloudEvent, and valid JSON of another shape, are the pipeline's to judge.
        let cloud_event = br#"{"specversion": "1.0", "type": "x", "data": {"jobId": "j"}}"#;
        assert_eq!(
            key().gate(&post(&[], Some(KEY), cloud_event)),
            Gate::Deliver(&cloud_event[..])
        );
        assert_eq!(
            key().gate(&post(&[], Some(KEY), b"[1, \"x\", {\"eventType\": 5}]")),
            Gate::Deliver(&b"[1, \"x\", {\"eventType\": 5}]"[..])
        );
    }

    #[test]
    fn a_malformed_body_is_400_with_a_position_and_not_its_content() {
        let body = b"[{\"eventType\": \"secret-looking-content\", ";
        let response = respond(key().gate(&post(&[], Some(KEY), body)));
        assert_eq!(response.status, 400);
        let message = body_json(&response)["error"].as_str().unwrap().to_owned();
        assert!(message.contains("line 1"), "{message}");
        assert!(!message.contains("secret-looking-content"), "{message}");

        let response = respond(key().gate(&post(&[], Some(KEY), b"not json")));
        assert_eq!(response.status, 400);
    }

    #[test]
    fn a_validation_header_without_a_validation_event_is_400() {
        let headers = [("aeg-event-type", "SubscriptionValidation")];
        let response = respond(key().gate(&post(&headers, Some(KEY), NOTIFICATION)));
        assert_eq!(response.status, 400);
    }

    #[test]
    fn a_validation_batch_after_whitespace_is_still_found() {
        let body = [b"\r\n  ".as_slice(), VALIDATION].concat();
        let response = respond(key().gate(&post(&[], Some(KEY), &body)));
        assert_eq!(response.status, 200);
    }

    #[test]
    fn a_validation_event_without_a_code_is_400() {
        let body = br#"[{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {"validationCode": 7}}]"#;
        let response = respond(key().gate(&post(&[], Some(KEY), body)));
        assert_eq!(response.status, 400);
    }

    #[test]
    fn subscription_deletion_is_acknowledged_without_delivery() {
        let headers = [("aeg-event-type", "SubscriptionDeletion")];
        let response = respond(key().gate(&post(&headers, Some(KEY), b"[]")));
        assert_eq!(response.status, 200);
    }

    #[test]
    fn the_key_is_checked_for_length_and_characters_and_never_printed() {
        assert_eq!(WebhookKey::new("  ").unwrap_err(), WebhookKeyError::Missing);
        assert_eq!(
            WebhookKey::new("short").unwrap_err(),
            WebhookKeyError::TooShort
        );
        assert_eq!(
            WebhookKey::new("0123456789abcdef&x").unwrap_err(),
            WebhookKeyError::BadCharacters
        );
        assert_eq!(
            WebhookKey::from_env(|_| None).unwrap_err(),
            WebhookKeyError::Missing
        );
        let error = WebhookKey::new("tiny-secret").unwrap_err().to_string();
        assert!(error.contains(KEY_SETTING), "{error}");
        assert!(!error.contains("tiny-secret"), "{error}");
        assert_eq!(format!("{:?}", key()), "WebhookKey(<redacted>)");
        // Surrounding whitespace from a copied setting is not part of the key.
        let padded = WebhookKey::new(format!(" {KEY}\n")).unwrap();
        assert_eq!(padded.authorize(&[], Some(KEY)), Ok(()));
    }

    #[test]
    fn comparison_is_exact() {
        let key = key();
        assert!(key.matches(KEY));
        assert!(!key.matches(&KEY[..KEY.len() - 1]));
        assert!(!key.matches(&format!("{KEY}x")));
        assert!(!key.matches(""));
    }
}
