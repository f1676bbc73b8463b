//! The page frame every report page is drawn in, and the helpers its sections share: one
//! stylesheet (inline), one way to make an element id from a name, one way to link a file beside
//! the page. A page built on the store's report (the demo's) adds its own [`Section`]s through
//! [`Extras`] and draws them with these helpers, so there is one renderer, one style and one
//! escaping discipline: `maud` escapes every interpolated value, and nothing here takes markup
//! from a string.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::CONTENT_SECURITY_POLICY;

/// One section of a page: its element id (the navigation links to it), its title and its body.
#[derive(Debug, Clone)]
pub struct Section {
    /// The element id, `[a-z0-9-]` (the navigation's fragment).
    pub id: &'static str,
    /// The heading, also the navigation's label.
    pub title: String,
    /// What it shows.
    pub body: Markup,
}

/// What a page built on the store's report adds around it (see
/// [`crate::StoreReport::html_with`]). The default adds nothing: the store's own page.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// The page's title and heading, instead of "batch-triage report".
    pub title: Option<String>,
    /// Shown under the heading, before the store's summary line.
    pub header: Option<Markup>,
    /// Sections after the store's.
    pub sections: Vec<Section>,
    /// Links in the navigation to files beside the page: (relative path, label).
    pub files: Vec<(String, String)>,
    /// A closing line.
    pub footer: Option<Markup>,
}

/// The one stylesheet, inline: the page loads nothing.
const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Arial,sans-serif;margin:0 auto;max-width:80rem;padding:1rem 1.5rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
code{font-family:ui-monospace,SFMono-Regular,Consolas,monospace;font-size:.92em;background:#f2f4f7;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
article{border:1px solid #e3e6ea;border-radius:6px;padding:.2rem 1rem;margin:.8rem 0}article h3{font-size:1.05rem}
pre{background:#f6f6f6;padding:.5rem;white-space:pre-wrap;word-break:break-all}
.critical{color:#a00}.error{color:#c40}.warning{color:#a70}.muted{color:#666}
.ok{color:#067647;font-weight:600}.bad{color:#b42318}.warn{color:#b7791f}.summary{font-weight:600}
.sev{display:inline-block;padding:0 .4em;border-radius:3px;font-size:.8em;text-transform:uppercase;color:#fff;background:#6b7280}
.sev.critical{background:#b42318}.sev.error{background:#d9480f}.sev.warning{background:#b7791f}.sev.info{background:#2563eb}
.bar{background:#c40;height:.8rem;display:inline-block}
nav a{margin-right:1rem}
";

/// The whole page: `title` as its title and heading, `header` under it, a navigation to each
/// section and file, the sections, and `footer`.
pub(crate) fn frame(
    title: &str,
    header: Markup,
    sections: &[Section],
    files: &[(String, String)],
    footer: Option<&Markup>,
) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Also in the page, so a copy opened from a file keeps it: nothing may load.
                meta http-equiv="Content-Security-Policy" content=(CONTENT_SECURITY_POLICY);
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (header)
                nav {
                    @for section in sections { a href={ "#" (section.id) } { (section.title) } }
                    @for (path, label) in files { (file_link(path, html! { (label) })) }
                }
                @for section in sections {
                    section id=(section.id) {
                        h2 { (section.title) }
                        (section.body)
                    }
                }
                @if let Some(footer) = footer { footer.muted { (footer) } }
            }
        }
    }
    .into_string()
}

/// A severity as a badge (`critical`, `error`, `warning`, `info`).
pub fn severity_badge(severity: &str) -> Markup {
    html! { span class={ "sev " (anchor_class(severity)) } { (severity) } }
}

/// A class attribute from a word that may come from a record: only `[a-z]` kept.
fn anchor_class(word: &str) -> String {
    word.chars().filter(char::is_ascii_lowercase).collect()
}

/// An element id for a name from the store: only `[a-z0-9-]`, so it is always a valid fragment,
/// and two names never share one.
pub fn anchor(name: &str) -> String {
    let mut out = String::from("x-");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push_str(&format!("-{:x}-", u32::from(c)));
        }
    }
    out
}

/// What stays as it is in a path segment: RFC 3986's unreserved characters. Everything else
/// (`/`, `?`, `#`, `%`, `:`, quotes, spaces) is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A relative link to a file beside the page, each segment percent-encoded; `None` for a path
/// that is absolute or holds an empty, `.` or `..` segment (browsers resolve `%2E%2E` as `..`
/// too, so encoding alone would not keep such a link inside the page's directory).
pub fn relative_href(relative: &str) -> Option<String> {
    // A folder's link ends in `/`: that last empty segment is kept, no other.
    let (path, folder) = match relative.strip_suffix('/') {
        Some(path) => (path, "/"),
        None => (relative, ""),
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    let encoded: Vec<String> = segments
        .iter()
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    Some(encoded.join("/") + folder)
}

/// `text` linked to the file `path` beside the page, or just `text` when the path cannot be a
/// safe link.
pub fn file_link(path: &str, text: Markup) -> Markup {
    match relative_href(path) {
        Some(target) => html! { a href=(target) { (text) } },
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_encode_each_segment_and_keep_the_slashes() {
        assert_eq!(
            relative_href("store/devbatch1/job #1/t?a=1&b/stderr.txt").as_deref(),
            Some("store/devbatch1/job%20%231/t%3Fa%3D1%26b/stderr.txt")
        );
        assert_eq!(
            relative_href("store/devbatch1/etl/").as_deref(),
            Some("store/devbatch1/etl/")
        );
        assert_eq!(
            relative_href("x/javascript:alert(1)").as_deref(),
            Some("x/javascript%3Aalert%281%29")
        );
    }

    #[test]
    fn a_path_that_could_leave_the_directory_is_no_link() {
        for path in [
            "../x",
            "store/../../x",
            "store/./x",
            "/etc/passwd",
            "store//x",
            "",
        ] {
            assert_eq!(relative_href(path), None, "{path}");
        }
        let text = file_link("../x", html! { "../x" }).into_string();
        assert_eq!(text, "../x", "shown as text");
    }

    #[test]
    fn anchors_are_fragments_and_badges_take_no_markup() {
        assert_eq!(anchor("Task.Exit_code"), "x-task-2e-exit-5f-code");
        assert_ne!(anchor("a.b"), anchor("a_b"));
        let badge = severity_badge("\"><script>").into_string();
        assert_eq!(
            badge,
            "<span class=\"sev script\">&quot;&gt;&lt;script&gt;</span>"
        );
    }
}
