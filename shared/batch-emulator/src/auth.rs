//! Request authentication: Shared Key exactly as docs/batch-facts.md describes it, or configured bearer tokens.
//!
//! The string to sign is rebuilt from the request as received:
//!
//! ```text
//! VERB\nContent-Encoding\nContent-Language\nContent-Length\nContent-MD5\nContent-Type\nDate\n
//! If-Modified-Since\nIf-Match\nIf-None-Match\nIf-Unmodified-Since\nRange\n
//! <ocp-* headers, lower-cased, sorted, "name:value\n"><"/" account raw-path>
//! <"\n" name ":" decoded-value for each query parameter, sorted by name>
//! ```
//!
//! Two canonicalizations of the resource are accepted because the official SDKs differ: the
//! Python SDK keeps query names as sent and drops empty values; the Java SDK lower-cases the
//! account and the query names. The Date line is empty when `ocp-date` is present (as the docs
//! require); for a body-less POST the Content-Length line may be `0` or empty. The date
//! (`ocp-date`, else `Date`) must be within 15 minutes of now. Failures give 403
//! `AuthenticationFailed` with an `AuthenticationErrorDetail` that shows the string the server
//! signed (never the key or the caller's signature).

use axum::http::{HeaderMap, Method};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::{Duration, OffsetDateTime};

use crate::clock;
use crate::error::ApiError;

/// How far the request date may be from the server clock.
const MAX_SKEW: Duration = Duration::minutes(15);

/// The standard headers, in string-to-sign order, after the verb.
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// What the emulator accepts, decoded once.
#[derive(Clone)]
pub(crate) struct AuthSettings {
    /// When false, everything is accepted.
    pub(crate) required: bool,
    /// Account name for Shared Key.
    pub(crate) account: String,
    /// Decoded account key; `None` when Shared Key is disabled.
    pub(crate) key: Option<Vec<u8>>,
    /// Accepted bearer tokens.
    pub(crate) tokens: Vec<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("required", &self.required)
            .field("account", &self.account)
            .field("shared_key", &self.key.is_some())
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The request pieces authentication looks at.
pub(crate) struct SignedRequest<'a> {
    /// HTTP method.
    pub(crate) method: &'a Method,
    /// Path exactly as sent (still percent-encoded).
    pub(crate) raw_path: &'a str,
    /// Query string exactly as sent.
    pub(crate) raw_query: Option<&'a str>,
    /// All headers.
    pub(crate) headers: &'a HeaderMap,
}

/// Which scheme authenticated the request, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Auth is switched off.
    Anonymous,
    /// `SharedKey account:signature`.
    SharedKey,
    /// `Bearer token`.
    Bearer,
}

impl Scheme {
    /// Name for the log.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scheme::Anonymous => "none",
            Scheme::SharedKey => "SharedKey",
            Scheme::Bearer => "Bearer",
        }
    }
}

/// Checks a request's credentials.
pub(crate) fn authenticate(
    settings: &AuthSettings,
    request: &SignedRequest<'_>,
    now: OffsetDateTime,
) -> Result<Scheme, ApiError> {
    if !settings.required {
        return Ok(Scheme::Anonymous);
    }
    let Some(authorization) = header(request.headers, "authorization") else {
        return Err(ApiError::authentication_failed(
            "The request has no Authorization header.",
        ));
    };
    let (scheme, credentials) = authorization.split_once(' ').unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("Bearer") {
        return check_bearer(settings, credentials.trim());
    }
    if !scheme.eq_ignore_ascii_case("SharedKey") {
        return Err(ApiError::authentication_failed(
            "The Authorization header scheme is neither SharedKey nor Bearer.",
        ));
    }
    let Some(key) = &settings.key else {
        return Err(ApiError::authentication_failed(
            "Shared Key authentication is disabled for this account.",
        ));
    };
    let Some((account, signature)) = credentials.trim().rsplit_once(':') else {
        return Err(ApiError::authentication_failed(
            "The Authorization header is not of the form 'SharedKey <account>:<signature>'.",
        ));
    };
    if !account.eq_ignore_ascii_case(&settings.account) {
        return Err(ApiError::authentication_failed(&format!(
            "The account name '{}' in the Authorization header does not match this account.",
            account.chars().take(64).collect::<String>()
        )));
    }
    check_date(request.headers, now)?;
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return Err(ApiError::authentication_failed(
            "The signature in the Authorization header is not valid base64.",
        ));
    };
    let candidates = strings_to_sign(request, account);
    for candidate in &candidates {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            break;
        };
        mac.update(candidate.as_bytes());
        if mac.verify_slice(&signature).is_ok() {
            return Ok(Scheme::SharedKey);
        }
    }
    let shown = candidates.first().map_or("", String::as_str);
    Err(ApiError::authentication_failed(&format!(
        "The MAC signature found in the HTTP request is not the same as any computed signature. Server used following string to sign: '{shown}'."
    )))
}

fn check_bearer(settings: &AuthSettings, token: &str) -> Result<Scheme, ApiError> {
    if settings.tokens.is_empty() {
        return Err(ApiError::invalid_token(
            "Bearer tokens are not accepted by this emulator scenario.",
        ));
    }
    let accepted = settings
        .tokens
        .iter()
        .any(|candidate| constant_time_eq(candidate.as_bytes(), token.as_bytes()));
    if accepted {
        Ok(Scheme::Bearer)
    } else {
        Err(ApiError::invalid_token("The access token is not valid."))
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_date(headers: &HeaderMap, now: OffsetDateTime) -> Result<(), ApiError> {
    let Some(text) = header(headers, "ocp-date").or_else(|| header(headers, "date")) else {
        return Err(ApiError::authentication_failed(
            "The request has neither an ocp-date nor a Date header.",
        ));
    };
    let Some(date) = clock::parse_http_date(text) else {
        return Err(ApiError::authentication_failed(&format!(
            "The date '{}' is not an RFC 1123 date.",
            text.chars().take(64).collect::<String>()
        )));
    };
    if (date - now).abs() > MAX_SKEW {
        return Err(ApiError::authentication_failed(&format!(
            "Request date header too old or too far in the future: '{}'. It must be within 15 minutes of the server time {}.",
            text.chars().take(64).collect::<String>(),
            clock::http_date(now)
        )));
    }
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The accepted strings to sign, the Python-SDK form first (it is the one shown on failure).
pub(crate) fn strings_to_sign(request: &SignedRequest<'_>, account: &str) -> Vec<String> {
    let verb = request.method.as_str();
    let has_ocp_date = header(request.headers, "ocp-date").is_some();
    let mut standard: Vec<String> = SIGNED_HEADERS
        .iter()
        .map(|name| {
            if *name == "date" && has_ocp_date {
                return String::new();
            }
            header(request.headers, name).unwrap_or("").to_owned()
        })
        .collect();
    let body_less_post = !matches!(*request.method, Method::GET | Method::HEAD);
    let mut lengths = vec![standard[2].clone()];
    if body_less_post && standard[2].is_empty() {
        lengths.push("0".to_owned());
    } else if standard[2] == "0" {
        lengths.push(String::new());
    }
    let ocp = canonical_ocp_headers(request.headers);
    let python = canonical_resource(account, request, false);
    let java = canonical_resource(&account.to_lowercase(), request, true);
    let mut out = Vec::new();
    for length in lengths {
        standard[2] = length;
        let head = format!("{verb}\n{}\n{ocp}", standard.join("\n"));
        for resource in [&python, &java] {
            let candidate = format!("{head}{resource}");
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// `name:value\n` for every `ocp-*` header, names lower-cased and sorted.
fn canonical_ocp_headers(headers: &HeaderMap) -> String {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("ocp-"))
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?.replace(['\r', '\n'], " ");
            let value = value.trim_start();
            (!value.is_empty()).then(|| (name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect()
}

/// `/account/path` plus `\nname:value` per query parameter.
fn canonical_resource(account: &str, request: &SignedRequest<'_>, java: bool) -> String {
    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(request.raw_query.unwrap_or("").as_bytes()) {
        let name = if java {
            name.to_lowercase()
        } else {
            name.into_owned()
        };
        if !java && value.is_empty() {
            continue;
        }
        if !java && params.iter().any(|(n, _)| *n == name) {
            continue;
        }
        params.push((name, value.into_owned()));
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("/{account}{}", request.raw_path);
    for (name, value) in params {
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn settings() -> AuthSettings {
        AuthSettings {
            required: true,
            account: "devbatch1".into(),
            key: Some(b"0123456789abcdef".to_vec()),
            tokens: vec!["tok".into()],
        }
    }

    fn sign(sts: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(sts.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn python_style_string_to_sign() {
        let now = OffsetDateTime::now_utc();
        let mut headers = HeaderMap::new();
        let date = clock::http_date(now);
        headers.insert("ocp-date", HeaderValue::from_str(&date).unwrap());
        let query =
            Some("api-version=2025-06-01&%24filter=state%20eq%20%27completed%27&timeOut=30");
        let expected = format!(
            "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:{date}\n/devbatch1/jobs/j1/tasks\n$filter:state eq 'completed'\napi-version:2025-06-01\ntimeOut:30"
        );
        {
            let request = SignedRequest {
                method: &Method::GET,
                raw_path: "/jobs/j1/tasks",
                raw_query: query,
                headers: &headers,
            };
            assert_eq!(strings_to_sign(&request, "devbatch1")[0], expected);
        }
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("SharedKey devbatch1:{}", sign(&expected))).unwrap(),
        );
        let request = SignedRequest {
            method: &Method::GET,
            raw_path: "/jobs/j1/tasks",
            raw_query: query,
            headers: &headers,
        };
        assert_eq!(
            authenticate(&settings(), &request, now),
            Ok(Scheme::SharedKey)
        );
        let stale = now + Duration::minutes(16);
        let error = authenticate(&settings(), &request, stale).unwrap_err();
        assert_eq!(error.code, "AuthenticationFailed");
    }

    #[test]
    fn bearer_tokens() {
        let now = OffsetDateTime::now_utc();
        let check = |token: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_static(token));
            let request = SignedRequest {
                method: &Method::GET,
                raw_path: "/jobs",
                raw_query: None,
                headers: &headers,
            };
            authenticate(&settings(), &request, now)
        };
        assert_eq!(check("Bearer tok"), Ok(Scheme::Bearer));
        let error = check("Bearer nope").unwrap_err();
        assert_eq!(error.status.as_u16(), 401);
        assert!(!format!("{error:?}").contains("nope"));
    }
}
