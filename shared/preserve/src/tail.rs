//! A bounded tail of a stream, kept while the bytes pass by (no second download).

/// The last `cap` bytes seen.
pub(crate) struct Tail {
    cap: usize,
    buf: Vec<u8>,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Tail {
            cap,
            buf: Vec::with_capacity(cap.min(1 << 20)),
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.cap == 0 {
            return;
        }
        if bytes.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend_from_slice(bytes);
    }

    /// The last `lines` lines, lossy UTF-8, secrets redacted.
    pub(crate) fn finish(self, lines: usize) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches('\n');
        let mut start = text.len();
        for _ in 0..lines {
            match text[..start].rfind('\n') {
                Some(i) => start = i,
                None => {
                    start = 0;
                    break;
                }
            }
        }
        let kept = if start == 0 { text } else { &text[start + 1..] };
        diagnosis::redact::redact(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_lines_within_cap() {
        let mut t = Tail::new(16);
        t.push(b"line1\nline2\n");
        t.push(b"line3\nline4\n");
        assert_eq!(
            Tail {
                cap: 16,
                buf: t.buf.clone()
            }
            .finish(2),
            "line3\nline4"
        );
        t.push(&[b'x'; 100]);
        assert_eq!(t.buf.len(), 16);
        let mut t = Tail::new(64);
        t.push(b"a\nb\n");
        assert_eq!(t.finish(10), "a\nb");
    }
}
