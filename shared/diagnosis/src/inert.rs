//! Making untrusted text inert for a terminal, a log line or a plain-text email: control
//! characters (ESC sequences, BEL, backspace, carriage return) and bidirectional overrides
//! (U+202E...) become visible marks instead of acting on the display. JSON and HTML have their
//! own escaping; this is for everything that is shown as text.

/// Text that may hold line breaks (a stderr tail, a multi-line message): `\n` and `\t` stay,
/// every other control and every bidi control becomes a visible mark. `\r` is always marked, so
/// a line cannot be overwritten from its start.
pub fn multi_line(text: &str) -> String {
    neutralise(text, true)
}

/// Text that must stay on one line (an id in a log line, a table cell): as [`multi_line`], and
/// `\n` is marked too (`␊`), so a value cannot forge a second line.
pub fn one_line(text: &str) -> String {
    neutralise(text, false)
}

/// Whether `c` would act on a display rather than show: a C0/C1 control, DEL, or a
/// bidirectional formatting character.
fn is_active(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The Unicode bidirectional formatting characters (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

fn neutralise(text: &str, keep_newlines: bool) -> String {
    if !text.chars().any(is_active) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\n' if keep_newlines => out.push(c),
            // C0 controls have a visible picture each: ESC → ␛, BEL → ␇, CR → ␍, NUL → ␀.
            '\u{0}'..='\u{1f}' => {
                out.push(char::from_u32(0x2400 + u32::from(c)).unwrap_or('\u{fffd}'))
            }
            '\u{7f}' => out.push('\u{2421}'),
            c if is_active(c) => out.push_str(&format!("<U+{:04X}>", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_bells_and_overrides_become_visible() {
        let hostile = "red \u{1b}[31mALERT\u{1b}[0m\u{7}\u{9b}2J evil\u{202e}txt.exe\r\nok\tdone";
        let out = multi_line(hostile);
        assert_eq!(
            out,
            "red ␛[31mALERT␛[0m␇<U+009B>2J evil<U+202E>txt.exe␍\nok\tdone"
        );
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
        assert_eq!(one_line("a\r\nb"), "a␍␊b");
        assert_eq!(one_line("plain é 😀 text"), "plain é 😀 text");
        assert_eq!(multi_line("two\nlines"), "two\nlines");
    }

    proptest::proptest! {
        #[test]
        fn nothing_active_survives(text in "\\PC*|[\\x00-\\x1f\\x7f-\\x9f\\u{202a}-\\u{202e}a]{0,40}") {
            let out = one_line(&text);
            proptest::prop_assert!(!out.chars().any(|c| is_active(c) && c != '\t'), "{:?}", out);
            let out = multi_line(&text);
            proptest::prop_assert!(!out.chars().any(|c| is_active(c) && c != '\t' && c != '\n'));
        }
    }
}
