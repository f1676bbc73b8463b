//! Removing secrets from text before it leaves the process: SAS signatures, account keys,
//! connection strings and bearer tokens. stderr and Batch failure messages routinely carry
//! resource-file URLs with SAS tokens, so every string that reaches a diagnosis, a card, an email
//! or a log goes through [`redact`].

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Query parameters of a SAS (and similar signed URLs) whose values are secret.
const SECRET_QUERY_KEYS: &[&str] = &[
    "sig",
    "signature",
    "code",
    "x-amz-signature",
    "token",
    "access_token",
];

/// `key=value` settings of connection strings whose values are secret.
const SECRET_SETTINGS: &[&str] = &[
    "accountkey",
    "sharedaccesskey",
    "sharedaccesssignature",
    "password",
    "pwd",
    "clientsecret",
    "client_secret",
];

/// Returns `text` with every secret replaced by [`REDACTED`]. Idempotent.
pub fn redact(text: &str) -> String {
    let mut out = redact_bearer(text);
    out = redact_key_values(&out);
    out
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

/// `sig=…` in URLs and `AccountKey=…` in connection strings: any `name=value` whose name is a
/// known secret, delimited by `&`, `;`, whitespace or quotes.
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        // The name runs back to the previous delimiter.
        let name_start = text[..i]
            .rfind(|c: char| {
                matches!(
                    c,
                    '?' | '&' | ';' | ' ' | '\t' | '\n' | '"' | '\'' | '(' | ',' | '{'
                )
            })
            .map_or(0, |p| p + 1);
        let name = text[name_start..i].trim().to_ascii_lowercase();
        let secret =
            SECRET_QUERY_KEYS.contains(&name.as_str()) || SECRET_SETTINGS.contains(&name.as_str());
        let value_start = i + 1;
        let value_end = text[value_start..]
            .find(|c: char| {
                matches!(
                    c,
                    '&' | ';' | ' ' | '\t' | '\r' | '\n' | '"' | '\'' | ')' | ',' | '<' | '>'
                )
            })
            .map_or(text.len(), |p| value_start + p);
        if secret && value_end > value_start && &text[value_start..value_end] != REDACTED {
            out.push_str(&text[copied..value_start]);
            out.push_str(REDACTED);
            copied = value_end;
        }
        i = value_end.max(i + 1);
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
mod tests {
    use super::*;

    #[test]
    fn sas_signature_in_a_url() {
        let text = "download failed: https://acct.blob.core.windows.net/in/x.csv?sv=2022-11-02&se=2026-01-01&sp=r&sig=AbC%2Bdef%3D ok";
        let out = redact(text);
        assert!(!out.contains("AbC%2Bdef"), "{out}");
        assert!(out.contains("sig=[REDACTED] ok"), "{out}");
        assert!(
            out.contains("sv=2022-11-02"),
            "non-secret parameters stay: {out}"
        );
    }

    #[test]
    fn connection_strings_and_tokens() {
        let text = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=bXlrZXk=;EndpointSuffix=core.windows.net";
        let out = redact(text);
        assert!(!out.contains("bXlrZXk"), "{out}");
        assert!(out.contains("AccountName=a"));
        let out = redact("Authorization: Bearer eyJ0eXAiOiJKV1Qi.abc.def\nnext");
        assert_eq!(out, "Authorization: Bearer [REDACTED]\nnext");
        let out = redact("Authorization: SharedKey devbatch1:c2lnbmF0dXJl");
        assert!(!out.contains("c2lnbmF0dXJl"), "{out}");
        let out = redact("Password=hunter2;User=x");
        assert_eq!(out, "Password=[REDACTED];User=x");
    }

    #[test]
    fn idempotent_and_harmless_on_plain_text() {
        let plain = "exit code 1: x = 2, y=3; nothing secret here";
        assert_eq!(redact(plain), plain);
        let once = redact("?sig=abc&x=1");
        assert_eq!(redact(&once), once);
        assert_eq!(
            strip_query("https://a/b/c.txt?sv=1&sig=2"),
            "https://a/b/c.txt"
        );
    }
}
