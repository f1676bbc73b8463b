//! Room sizes: no non-test source file over 800 lines and no function over 120, so that the code
//! that must be right stays easy to read and change. Tests, examples, benchmarks and fuzz targets
//! are not counted; a `#[cfg(test)]` item inside a source file is not either.

use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 120;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The library and binary sources git tracks: not tests, examples, benchmarks or fuzz targets.
fn sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let output = Command::new("git")
        .args(["ls-files", "-z", "--", "*.rs"])
        .current_dir(&root)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git ls-files failed");
    String::from_utf8(output.stdout)
        .expect("paths are UTF-8")
        .split('\0')
        .filter(|path| !path.is_empty())
        .filter(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            !parts
                .iter()
                .any(|part| matches!(*part, "tests" | "examples" | "benches" | "fuzz"))
                && !path.ends_with("/tests.rs")
        })
        .map(|path| root.join(path))
        .collect()
}

/// Rust source with comments, strings and character literals blanked out (newlines kept), so
/// braces can be counted.
fn code_only(source: &str) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.extend([' ', ' ']);
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.extend([' ', ' ']);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.extend(std::iter::repeat_n(' ', j + 1 - i));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('{', '\'', '\u{7b}'), or a lifetime ('a), which is left alone.
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code's lines with every `#[cfg(test)]` item removed.
fn non_test_lines(code: &[char]) -> Vec<String> {
    let text: String = code.iter().collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            let mut depth = 0i64;
            let mut opened = false;
            i += 1;
            while i < lines.len() {
                let line = lines[i];
                depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
                opened |= line.contains('{');
                i += 1;
                if (opened && depth <= 0) || (!opened && line.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        kept.push(lines[i].to_owned());
        i += 1;
    }
    kept
}

/// Each `fn` item's name and its length in lines, from `fn` to its closing brace.
fn functions(lines: &[String]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("fn ") {
            let before = rest[..at].chars().last();
            let after = &rest[at + 3..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            let mut depth = 0i64;
            let mut opened = false;
            'lines: for (offset, body) in lines[start..].iter().enumerate() {
                let body = if offset == 0 { after } else { body.as_str() };
                for ch in body.chars() {
                    match ch {
                        ';' if !opened => break 'lines,
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => {
                            depth -= 1;
                            if opened && depth == 0 {
                                found.push((name.clone(), start + 1, offset + 1));
                                break 'lines;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_room_is_too_big() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for path in sources() {
        let source = std::fs::read_to_string(&path).expect("a tracked source reads");
        let lines = non_test_lines(&code_only(&source));
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if lines.len() > MAX_FILE_LINES {
            problems.push(format!(
                "{shown}: {} non-test lines (at most {MAX_FILE_LINES})",
                lines.len()
            ));
        }
        for (name, line, length) in functions(&lines) {
            if length > MAX_FN_LINES {
                problems.push(format!(
                    "{shown}: fn {name} (line {line} of the non-test code) has {length} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "split these:\n{}", problems.join("\n"));
}

#[test]
fn the_counter_sees_functions_through_strings_comments_and_tests() {
    let source = r##"
fn short() {
    let brace = '{';
    let text = "}}}{";
    let raw = r#"{"#;
    // }
    /* { */
}
#[cfg(test)]
mod tests {
    fn hidden() {}
}
fn pointer(f: fn(u8) -> u8) -> u8 { f(1) }
"##;
    let lines = non_test_lines(&code_only(source));
    let found = functions(&lines);
    let names: Vec<&str> = found.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["short", "pointer"]);
    assert_eq!(found[0].2, 7, "short() spans its 7 lines");
    assert_eq!(found[1].2, 1);
}
