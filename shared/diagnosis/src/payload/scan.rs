//! The byte scanner of the stream: finds where JSON values end in a bounded buffer, without
//! parsing them.

use std::io::{self, Read};

use super::{IN_MEMORY_LIMIT, PayloadError, advance, strip_position};

/// Reads bytes into a bounded buffer and finds where JSON values end, without parsing them.
pub(super) struct Scanner<R> {
    reader: R,
    buf: Vec<u8>,
    /// The next unread byte.
    pos: usize,
    /// How many bytes of `buf` hold input.
    len: usize,
    /// A position in `buf` whose line and column are known: positions are counted forward from
    /// it, so each byte is counted once.
    mark: usize,
    /// Line and column of `buf[mark]` in the whole input.
    origin: (usize, usize),
}

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

impl<R: Read> Scanner<R> {
    pub(super) fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; CHUNK],
            pos: 0,
            len: 0,
            mark: 0,
            origin: (1, 1),
        }
    }

    /// Reads more input after what is held, dropping what was consumed; false at the end.
    fn fill(&mut self) -> Result<bool, PayloadError> {
        if self.pos > 0 {
            self.origin = advance(self.origin, &self.buf[self.mark..self.pos]);
            self.mark = 0;
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            if self.buf.len() > IN_MEMORY_LIMIT {
                return Err(self.error(&format!(
                    "a single element larger than {} MiB",
                    IN_MEMORY_LIMIT >> 20
                )));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PayloadError::Io(e)),
            }
        }
    }

    pub(super) fn peek(&mut self) -> Result<Option<u8>, PayloadError> {
        if self.pos == self.len && !self.fill()? {
            return Ok(None);
        }
        Ok(Some(self.buf[self.pos]))
    }

    pub(super) fn bump(&mut self) {
        self.pos += 1;
    }

    pub(super) fn skip_whitespace(&mut self) -> Result<(), PayloadError> {
        while let Some(b) = self.peek()? {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.bump();
        }
        Ok(())
    }

    pub(super) fn expect(&mut self, byte: u8, what: &str) -> Result<(), PayloadError> {
        if self.peek()? == Some(byte) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(&format!("expected {what}")))
        }
    }

    /// Line and column of `buf[index]`, for an `index` at or after the mark; moves the mark there.
    fn position(&mut self, index: usize) -> (usize, usize) {
        self.origin = advance(self.origin, &self.buf[self.mark..index]);
        self.mark = index;
        self.origin
    }

    /// A syntax error at the current position.
    pub(super) fn error(&self, message: &str) -> PayloadError {
        let (line, column) = advance(self.origin, &self.buf[self.mark..self.pos.min(self.len)]);
        PayloadError::Syntax {
            message: message.to_owned(),
            line,
            column,
        }
    }

    /// A JSON string at the current position, unescaped.
    pub(super) fn string(&mut self) -> Result<String, PayloadError> {
        if self.peek()? != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        let (bytes, origin) = self.value()?;
        serde_json::from_slice(bytes).map_err(|e| PayloadError::Syntax {
            message: strip_position(&e),
            line: origin.0,
            column: origin.1 + e.column().saturating_sub(1),
        })
    }

    /// The complete JSON value at the current position (the scanner only finds where it ends;
    /// serde_json checks it), with the line and column where it starts.
    pub(super) fn value(&mut self) -> Result<(&[u8], (usize, usize)), PayloadError> {
        if self.peek()?.is_none() {
            return Err(self.error("unexpected end of input"));
        }
        let mut scan = ValueScan::default();
        let mut offset = 0;
        loop {
            match scan.feed(&self.buf[self.pos + offset..self.len]) {
                Some(end) => {
                    // `end` counts from the start of the value, across refills.
                    let start = self.pos;
                    let origin = self.position(start);
                    self.pos = start + end;
                    return Ok((&self.buf[start..self.pos], origin));
                }
                None => {
                    offset = self.len - self.pos;
                    if !self.fill()? {
                        // A scalar may end with the input; anything else is cut short.
                        if scan.is_scalar() && offset > 0 {
                            let start = self.pos;
                            let origin = self.position(start);
                            self.pos = self.len;
                            return Ok((&self.buf[start..self.len], origin));
                        }
                        self.pos = self.len;
                        return Err(self.error("unexpected end of input"));
                    }
                }
            }
        }
    }
}

/// The offset of the next `"`, `{`, `[`, `}` or `]` in `bytes`.
fn next_structural(bytes: &[u8]) -> Option<usize> {
    // Opening and closing brackets differ by 2 (`[`/`]`, `{`/`}`), so two searches of three
    // bytes each cover all five; the nearer hit wins.
    let quote_or_open = memchr::memchr3(b'"', b'{', b'[', bytes);
    let limit = quote_or_open.map_or(bytes.len(), |k| k);
    let close = memchr::memchr2(b'}', b']', &bytes[..limit]);
    match (quote_or_open, close) {
        (_, Some(c)) => Some(c),
        (q, None) => q,
    }
}

/// Where a JSON value ends, fed in pieces: tracks nesting, strings and escapes.
#[derive(Debug, Default)]
struct ValueScan {
    started: bool,
    scalar: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    consumed: usize,
}

impl ValueScan {
    fn is_scalar(&self) -> bool {
        self.started && self.scalar
    }

    /// Scans `bytes` (which continue where the last call stopped); `Some(end)` is the end of the
    /// value as an offset from the start of the value.
    ///
    /// Most of a document is string contents and whitespace between tokens, so the scan jumps
    /// (with `memchr`) to the next byte that can change its state instead of looking at each.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !self.started {
                self.started = true;
                match b {
                    b'{' | b'[' => self.depth = 1,
                    b'"' => self.in_string = true,
                    _ => self.scalar = true,
                }
                i += 1;
                continue;
            }
            if self.scalar {
                if matches!(b, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t') {
                    return Some(self.consumed + i);
                }
                i += 1;
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let Some(k) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                    break;
                };
                i += k;
                if bytes[i] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.consumed + i + 1);
                    }
                }
                i += 1;
                continue;
            }
            // Between tokens: only quotes and brackets matter.
            let Some(k) = next_structural(&bytes[i..]) else {
                break;
            };
            i += k;
            match bytes[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                _ => {
                    // `}` or `]`.
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.consumed + i + 1);
                    }
                }
            }
            i += 1;
        }
        self.consumed += bytes.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ValueScan;

    /// Where the scan says the value at the start of `text` ends, fed in pieces of `piece` bytes.
    fn end_of(text: &str, piece: usize) -> Option<usize> {
        let mut scan = ValueScan::default();
        text.as_bytes()
            .chunks(piece)
            .find_map(|chunk| scan.feed(chunk))
    }

    #[test]
    fn a_value_ends_where_json_says_whatever_the_pieces() {
        let values = [
            r#"{"a": "x}y]z", "b": [1, {"c": "\"}"}], "d": "\\"}"#,
            r#"[ "[", "]", {"k": "\\\"{"}, [[], {}] ]"#,
            r#""a \"quoted\" string with } and ] and \\""#,
            r#"{"commandLine": "/bin/sh -c \"echo {x} > out\\\\log\"", "n": 3}"#,
            "123",
            "true",
            "null",
            "-1073741510",
        ];
        for value in values {
            for trailer in [",{\"next\": 1}]", " ]", "\n}"] {
                let text = format!("{value}{trailer}");
                // Scalars end at the byte after them; everything else just after its last byte.
                let expected = value.len();
                for piece in 1..=text.len() {
                    assert_eq!(
                        end_of(&text, piece),
                        Some(expected),
                        "{text:?} in pieces of {piece}"
                    );
                }
            }
        }
        // An unfinished value has no end.
        for piece in 1..=8 {
            assert_eq!(end_of(r#"{"a": "unfinished \"}"#, piece), None);
        }
    }
}
