//! Small text helpers shared by the renderers: byte-bounded truncation that never splits a
//! UTF-8 character, thousands separators and HTML escaping.

/// The marker put where text was cut.
pub(crate) const CUT: &str = "…";

/// The longest prefix of `text` of at most `max` bytes ending on a character boundary.
fn floor_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Keeps the beginning of `text` within `max` bytes (the cut marker included).
pub(crate) fn keep_start(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    if max < CUT.len() {
        return String::new();
    }
    let end = floor_boundary(text, max - CUT.len());
    format!("{}{CUT}", &text[..end])
}

/// Keeps the end of `text` within `max` bytes (the cut marker included): for log tails, where
/// the last lines say the most.
pub(crate) fn keep_end(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    if max < CUT.len() {
        return String::new();
    }
    let mut start = text.len() - (max - CUT.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{CUT}{}", &text[start..])
}

/// `4812` → `4,812`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A link that may be a button or an href: an `http(s)` URL, serialised by the URL parser so
/// spaces, quotes and angle brackets in it are percent-encoded; `None` for anything else (a
/// local path, a `javascript:` URL).
pub(crate) fn web_link(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    matches!(url.scheme(), "https" | "http").then(|| url.to_string())
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let text = "ééééé";
        for max in 0..12 {
            let start = keep_start(text, max);
            let end = keep_end(text, max);
            assert!(start.len() <= max, "{max}: {start}");
            assert!(end.len() <= max, "{max}: {end}");
        }
        assert_eq!(keep_start("abc", 3), "abc");
        assert_eq!(keep_end("abcdef", 5), "…ef");
    }

    #[test]
    fn thousands_and_escape() {
        assert_eq!(thousands(4812), "4,812");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12), "12");
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
