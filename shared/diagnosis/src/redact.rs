//! Removing secrets from text before it leaves the process. stderr and Batch failure messages
//! routinely carry resource-file URLs with SAS tokens, connection strings, credentials in URLs
//! and environment dumps, so every string that reaches a diagnosis, a card, an email or a log goes
//! through [`redact`] (the shapes of secrets) or a [`Redactor`] (those shapes and the exact
//! values this process was configured with).
//!
//! The shapes recognised:
//! - signed-URL query parameters (`sig=`, `signature=`, `token=`, `?code=`...), also
//!   percent-encoded inside another URL (`%3Fsig%3D…%26`);
//! - `name=value` and `name = value` settings whose name says secret (`AccountKey`, `password`,
//!   `api_key`, `client_secret`, any `*_SECRET`, `*_KEY`, `*_TOKEN`, `*_PASSWORD`);
//! - the same names as JSON members (`"sig": "…"`, `"accountKey": "…"`);
//! - `Bearer …` and `SharedKey account:…` authorization values;
//! - the password of a URL's userinfo (`https://user:pass@host`, `postgres://app:pass@db`);
//! - PEM private key blocks (`-----BEGIN … PRIVATE KEY-----` to its END line, or to the end of
//!   the text when a tail cut it).
//!
//! What is *not* recognised by shape: a bare token with no name beside it (a key pasted alone on
//! a line). A [`Redactor`] built from the configured secrets removes those for the values it
//! knows; nothing can for values it does not.

use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use crate::Diagnosis;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Shortest configured secret that [`Redactor`] replaces: shorter values would match ordinary
/// words and numbers all over a log.
pub const MIN_SECRET_LEN: usize = 6;

/// Names whose value is secret wherever they appear as `name=value` or `"name": value`
/// (compared lowercased, with `-` read as `_`).
const SECRET_NAMES: &[&str] = &[
    "sig",
    "signature",
    "x_amz_signature",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "accountkey",
    "account_key",
    "sharedaccesskey",
    "sharedaccesssignature",
    "password",
    "passwd",
    "pwd",
    "secret",
    "clientsecret",
    "client_secret",
    "api_key",
    "apikey",
    "private_key",
    "privatekey",
];

/// Names secret only as a URL query parameter (after `?` or `&`): `code=1` in prose is an exit
/// code, `?code=…` on a Functions URL is a key.
const QUERY_ONLY_NAMES: &[&str] = &["code"];

/// Name suffixes that mark an environment-style assignment as secret (`AZURE_CLIENT_SECRET=`,
/// `STORAGE_KEY=`). A suffix, not a substring: `KEYBOARD=us` is left alone.
const SECRET_SUFFIXES: &[&str] = &["_secret", "_key", "_token", "_password", "_passwd", "_pwd"];

/// `name=value` / `"name": value`. Group 1: what precedes the name (a delimiter, or an encoded
/// `?`/`&`), kept. Group 2: the name, optionally quoted. Group 3: the separator. The value is
/// found by hand after the match (its end depends on how it starts).
static NAME_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(^|[^A-Za-z0-9_\-.%]|%3F|%26|%3D|%2526|%253F|%253D)(["']?[A-Za-z][A-Za-z0-9_\-]*["']?)([ \t]*(?:=|%3D|%253D)[ \t]*|[ \t]*:[ \t]*)"#,
    )
    .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
});

/// `scheme://user:password@`: group 1 is kept, the password replaced.
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*:)([^\s/?#]*)@")
        .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
});

/// A PEM private key, to its END line or to the end of the text.
static PEM_PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(?s:.*?)(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    )
    .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
});

/// Returns `text` with every secret of a recognised shape replaced by [`REDACTED`]. Idempotent.
/// For the configured secrets as well, use a [`Redactor`].
pub fn redact(text: &str) -> String {
    let out = redact_pem(text);
    let out = redact_bearer(&out);
    let out = redact_userinfo(&out);
    redact_name_values(&out)
}

/// Redacts the recognised shapes and, first, the exact values of the secrets this process was
/// configured with (account key, webhook key, SMTP password, client secret...), in the forms
/// they travel in: as given, percent-encoded (either hex case), JSON-escaped and base64-encoded.
///
/// Built once from the settings; [`Redactor::default`] knows no secrets and redacts shapes only.
/// `Debug` never shows the secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first so a longer form is replaced before a shorter
    /// one that it contains.
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} forms of secrets)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor for `secrets`. Values shorter than [`MIN_SECRET_LEN`] (after trimming) are
    /// ignored: they would match ordinary text.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut needles = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref().trim();
            if secret.chars().count() < MIN_SECRET_LEN {
                continue;
            }
            let percent = percent_encode(secret);
            needles.push(percent.to_ascii_lowercase());
            needles.push(percent);
            // serde_json's escaping, without the quotes.
            let json = serde_json::to_string(secret).unwrap_or_default();
            needles.push(json.trim_matches('"').to_owned());
            let base64 = base64_encode(secret.as_bytes());
            needles.push(base64.trim_end_matches('=').to_owned());
            needles.push(secret.to_owned());
        }
        needles.retain(|n| n.chars().count() >= MIN_SECRET_LEN);
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
    }

    /// Whether it knows no configured secret (it still redacts the shapes).
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` without the configured secrets and without any secret of a recognised shape.
    /// Idempotent.
    pub fn redact(&self, text: &str) -> String {
        let mut out = None::<String>;
        for needle in &self.needles {
            let current = out.as_deref().unwrap_or(text);
            if current.contains(needle.as_str()) {
                out = Some(current.replace(needle.as_str(), REDACTED));
            }
        }
        redact(out.as_deref().unwrap_or(text))
    }

    /// [`Redactor::redact`] over an optional text.
    pub fn redact_opt(&self, text: Option<&str>) -> Option<String> {
        text.map(|t| self.redact(t))
    }

    /// Redacts every free-text field of a diagnosis in place: the summary, cause, hints, Batch's
    /// failure message and detail values, and the log links. Ids and the fingerprint are left as
    /// they are (grouping depends on them), as are class and severity.
    pub fn redact_diagnosis(&self, d: &mut Diagnosis) {
        if self.is_empty() {
            // The core already applied [`redact`] to everything it took from outside.
            return;
        }
        d.summary = self.redact(&d.summary);
        d.cause = self.redact(&d.cause);
        for hint in &mut d.hints {
            *hint = self.redact(hint);
        }
        for log in &mut d.logs {
            *log = self.redact(log);
        }
        if let Some(failure) = &mut d.failure {
            failure.message = self.redact_opt(failure.message.as_deref());
            for detail in &mut failure.details {
                detail.value = self.redact_opt(detail.value.as_deref());
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, upper-case hex.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Standard base64 with padding (the core takes no encoding crate for twenty lines).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// PEM private key blocks: the armour lines stay (they say what was there), the body goes.
fn redact_pem(text: &str) -> String {
    if !text.contains("PRIVATE KEY-----") {
        return text.to_owned();
    }
    PEM_PRIVATE_KEY
        .replace_all(text, |c: &Captures<'_>| {
            format!("{}\n{REDACTED}\n{}", &c[1], &c[2])
        })
        .into_owned()
}

/// The password of a URL's userinfo; the user name stays (it helps and is not secret).
fn redact_userinfo(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    URL_USERINFO
        .replace_all(text, |c: &Captures<'_>| {
            if c[2].is_empty() || &c[2] == REDACTED {
                c[0].to_owned()
            } else {
                format!("{}{REDACTED}@", &c[1])
            }
        })
        .into_owned()
}

/// `Bearer <token>` / `SharedKey account:<signature>` in headers echoed to logs.
fn redact_bearer(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = ["bearer ", "sharedkey "]
            .iter()
            .filter_map(|scheme| lower.find(scheme).map(|i| (i, scheme.len())))
            .min();
        let Some((start, len)) = found else {
            out.push_str(rest);
            return out;
        };
        let token_start = start + len;
        let token_len = rest[token_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';'))
            .unwrap_or(rest.len() - token_start);
        out.push_str(&rest[..token_start]);
        if token_len > 0 {
            out.push_str(REDACTED);
        }
        rest = &rest[token_start + token_len..];
    }
}

/// Whether a setting or parameter called `name` (as written, quotes stripped) holds a secret.
/// `in_query` says it follows `?` or `&` (plain or percent-encoded).
fn is_secret_name(name: &str, in_query: bool) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    SECRET_NAMES.contains(&name.as_str())
        || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
        || (in_query && QUERY_ONLY_NAMES.contains(&name.as_str()))
}

/// Where the value starting at `start` ends, and where its secret part is: a quoted value is
/// what lies between its quotes (JSON escapes skipped), a bare one runs to the next delimiter,
/// plain or percent-encoded. Returns `(secret_start, secret_end, value_end)`.
fn value_span(text: &str, start: usize) -> (usize, usize, usize) {
    let bytes = text.as_bytes();
    match bytes.get(start) {
        Some(&quote @ (b'"' | b'\'')) => {
            let mut i = start + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'\n' => break,
                    b if b == quote => return (start + 1, i, i + 1),
                    _ => i += 1,
                }
            }
            let end = i.min(bytes.len());
            (start + 1, end, end)
        }
        _ => {
            let rest = &text[start..];
            let mut end = rest
                .find(|c: char| {
                    c.is_whitespace()
                        || matches!(
                            c,
                            '&' | ';' | '"' | '\'' | ')' | ',' | '<' | '>' | '}' | ']'
                        )
                })
                .unwrap_or(rest.len());
            // `]` ends a value, except the one closing an earlier redaction.
            if rest.starts_with(REDACTED) {
                end = end.max(REDACTED.len());
            }
            let lower = rest[..end].to_ascii_lowercase();
            for encoded in ["%26", "%20", "%22", "%27", "%3b", "%2526"] {
                if let Some(p) = lower.find(encoded) {
                    end = end.min(p);
                }
            }
            (start, start + end, start + end)
        }
    }
}

/// `sig=…`, `AccountKey=…`, `"accountKey": "…"`, `sig%3D…`: any value whose name says secret.
fn redact_name_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut pos = 0;
    while let Some(c) = NAME_VALUE.captures_at(text, pos) {
        let (Some(prefix), Some(name), Some(separator)) = (c.get(1), c.get(2), c.get(3)) else {
            break;
        };
        // Resume at the separator, so it can be the delimiter before the next name
        // (`url=…?sig=…`, `x=sig=…`).
        pos = name.end();
        let quoted = name.as_str().starts_with(['"', '\'']) && name.as_str().ends_with(['"', '\'']);
        // `name: value` only as a quoted (JSON, YAML flow, Python dict) member: in prose a colon
        // after a word is just a colon.
        if !separator.as_str().contains(['=', '%']) && !quoted {
            continue;
        }
        let prefix = prefix.as_str().to_ascii_lowercase();
        let in_query = matches!(
            prefix.as_str(),
            "?" | "&" | "%3f" | "%26" | "%2526" | "%253f"
        );
        if !is_secret_name(name.as_str().trim_matches(['"', '\'']), in_query) {
            continue;
        }
        let (secret_start, secret_end, value_end) = value_span(text, separator.end());
        let value = &text[secret_start..secret_end];
        if value.is_empty() || value == REDACTED || value.eq_ignore_ascii_case("%5BREDACTED%5D") {
            pos = pos.max(value_end);
            continue;
        }
        out.push_str(&text[copied..secret_start]);
        out.push_str(REDACTED);
        copied = secret_end;
        pos = value_end.max(pos);
    }
    out.push_str(&text[copied..]);
    out
}

/// A URL without its query string and fragment: for links to preserved blobs, which must never
/// carry a SAS.
pub fn strip_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

#[cfg(test)]
mod tests;
