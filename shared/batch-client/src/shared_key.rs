//! Shared Key request signing (docs/batch-facts.md), byte-for-byte as the official Python SDK's
//! `BatchSharedKeyAuthPolicy` (azure-batch 15.1.0) does it; the integration test
//! `shared_key_python` checks that against the installed package.
//!
//! String to sign: the verb; eleven standard headers (`Content-Length` is `"0"` for a body-less
//! request other than GET/HEAD, empty for GET/HEAD, as Python signs it); every header whose name
//! contains `ocp-` as `name:value`, sorted; then `/{account}{path}` with the path exactly as sent
//! (percent-encoded) and each query parameter, url-decoded, sorted by name, first value only,
//! empty values skipped.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use foundation::Secret;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use sha2::Sha256;
use url::Url;

use crate::error::ConfigError;

/// The standard headers in the order the string to sign lists them.
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

/// An account name and its decoded key, ready to sign requests.
#[derive(Clone)]
pub struct SharedKeyCredential {
    /// The account name as it appears in the canonicalized resource.
    account: String,
    /// The HMAC key: the base64-decoded account key. Never printed.
    key: Arc<[u8]>,
}

impl fmt::Debug for SharedKeyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyCredential")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SharedKeyCredential {
    /// Checks that the key is base64 (it is decoded for every signature, so it is checked once
    /// here rather than failing on the first request).
    pub fn new(account: &str, key: &Secret) -> Result<Self, ConfigError> {
        if account.is_empty() {
            return Err(ConfigError::Missing("account name"));
        }
        let decoded = BASE64
            .decode(key.expose().trim())
            .map_err(|_| ConfigError::InvalidKey)?;
        if decoded.is_empty() {
            return Err(ConfigError::InvalidKey);
        }
        Ok(Self {
            account: account.to_owned(),
            key: Arc::from(decoded),
        })
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The `Authorization` header value for a request: `SharedKey {account}:{signature}`.
    /// `headers` must already hold `ocp-date` and every header that will be sent.
    pub fn authorization(&self, method: &str, url: &Url, headers: &HeaderMap) -> String {
        let string_to_sign = string_to_sign(&self.account, method, url, headers);
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC accepts keys of any length, so this branch is never taken.
            return format!("SharedKey {}:", self.account);
        };
        mac.update(string_to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        format!("SharedKey {}:{signature}", self.account)
    }
}

/// The Shared Key string to sign for a request (public so that a failed signature can be compared
/// with the `AuthenticationErrorDetail` "Server used following string to sign" of a 403).
pub fn string_to_sign(account: &str, method: &str, url: &Url, headers: &HeaderMap) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
    };
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    let body_less_default = !matches!(method, "GET" | "HEAD");
    for name in SIGNED_HEADERS {
        match header(name) {
            Some(value) => out.push_str(value),
            None if name == "content-length" && body_less_default => out.push('0'),
            None => {}
        }
        out.push('\n');
    }

    let mut ocp: Vec<(String, &str)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().contains("ocp-"))
        .filter_map(|(name, value)| {
            let value = value.to_str().ok().filter(|value| !value.is_empty())?;
            Some((name.as_str().to_ascii_lowercase(), value))
        })
        .collect();
    ocp.sort();
    for (name, value) in ocp {
        out.push_str(&name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }

    out.push('/');
    out.push_str(account);
    out.push_str(url.path());

    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in url.query_pairs() {
        if !params.iter().any(|(seen, _)| *seen == name) {
            params.push((name.into_owned(), value.into_owned()));
        }
    }
    params.sort();
    for (name, value) in params {
        if !value.is_empty() {
            out.push('\n');
            out.push_str(&name);
            out.push(':');
            out.push_str(&value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// The well-known emulator account key (not a secret).
    const KEY: &str =
        "mjKm6b5f7cz+1Z87ZQTzqewMgLsXqKvuJqfrLzWEpg27VruihOB6mXgex29Mi/scsRrX5vb19ODbFU0ZvQTWRg==";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn get_with_query_decodes_sorts_and_signs_empty_content_length() {
        let url = Url::parse(
            "https://acct.westeurope.batch.azure.com/jobs/j%201/tasks?maxresults=10&api-version=2025-06-01&%24filter=state+eq+%27completed%27&empty=",
        )
        .unwrap();
        let headers = headers(&[
            ("ocp-date", "Tue, 03 Dec 2024 10:00:00 GMT"),
            ("client-request-id", "x"),
            ("ocp-range", "bytes=0-9"),
        ]);
        let expected = "GET\n\n\n\n\n\n\n\n\n\n\n\n\
            ocp-date:Tue, 03 Dec 2024 10:00:00 GMT\nocp-range:bytes=0-9\n\
            /acct/jobs/j%201/tasks\n$filter:state eq 'completed'\napi-version:2025-06-01\nmaxresults:10";
        assert_eq!(string_to_sign("acct", "GET", &url, &headers), expected);
    }

    #[test]
    fn post_without_body_signs_zero_length_and_content_type_as_sent() {
        let url = Url::parse("https://acct.x.batch.azure.com/jobs/j/enable?api-version=v").unwrap();
        let signed = string_to_sign("acct", "POST", &url, &headers(&[]));
        assert!(signed.starts_with("POST\n\n\n0\n\n\n"), "{signed:?}");
        let with_body = headers(&[
            ("content-length", "27"),
            ("content-type", "application/json; odata=minimalmetadata"),
            ("if-match", "\"0x8D\""),
        ]);
        let signed = string_to_sign("acct", "POST", &url, &with_body);
        assert!(
            signed.starts_with(
                "POST\n\n\n27\n\napplication/json; odata=minimalmetadata\n\n\n\"0x8D\"\n"
            ),
            "{signed:?}"
        );
    }

    #[test]
    fn known_signature_is_stable() {
        let credential = SharedKeyCredential::new("devbatch1", &Secret::new(KEY)).unwrap();
        let url = Url::parse("http://127.0.0.1:1/jobs?api-version=2025-06-01").unwrap();
        let headers = headers(&[("ocp-date", "Tue, 03 Dec 2024 10:00:00 GMT")]);
        let auth = credential.authorization("GET", &url, &headers);
        assert!(auth.starts_with("SharedKey devbatch1:"));
        assert_eq!(auth, credential.authorization("GET", &url, &headers));
        // A different key gives a different signature.
        let other = SharedKeyCredential::new("devbatch1", &Secret::new("AAAA")).unwrap();
        assert_ne!(auth, other.authorization("GET", &url, &headers));
        assert!(!format!("{credential:?}").contains(KEY));
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert_eq!(
            SharedKeyCredential::new("a", &Secret::new("not base64!")).unwrap_err(),
            ConfigError::InvalidKey
        );
        assert!(SharedKeyCredential::new("a", &Secret::new("")).is_err());
        assert!(SharedKeyCredential::new("", &Secret::new(KEY)).is_err());
    }
}
