//! The one client-side parser of `text/event-stream` bodies, shared by the load generator
//! and the tests so that both read sagashop's result stream by the same rules.
//!
//! It is pure (no I/O, no async): feed it body chunks as they arrive with [`Parser::push`] and
//! take complete frames with [`Parser::next_frame`]. It follows the SSE framing of the HTML
//! standard: a blank line ends a frame; `field: value` lines (one optional space after the
//! colon); repeated `data` lines joined with `\n`; lines starting with `:` are comments.
//! Lines end with `\n` or `\r\n` (a lone `\r`, allowed by the standard but sent by nobody we
//! talk to, is not a line end here).

/// One frame (an event or a comment-only block), exactly as far as it was received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The `id` field, verbatim (sagashop sends event ids as decimal `u64`).
    pub id: Option<String>,
    /// The `event` field.
    pub event: Option<String>,
    /// Every `data` line of the frame, joined with `\n` (empty when there was none).
    pub data: String,
    /// The `retry` field, when it is a number.
    pub retry: Option<u64>,
    /// The text of each comment line, without the `:` and the one space after it.
    pub comments: Vec<String>,
    /// The frame's bytes as received (lossy UTF-8), blank line included: for messages.
    pub raw: String,
    fields: usize,
    has_data: bool,
}

impl Frame {
    /// True for a block with comments only (a keep-alive), no field at all.
    pub fn is_comment_only(&self) -> bool {
        self.fields == 0
    }

    /// The `id` as sagashop's numeric event id (`None` when absent or not a number).
    pub fn event_id(&self) -> Option<u64> {
        self.id.as_deref()?.parse().ok()
    }

    fn line(&mut self, line: &str) {
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            self.comments.push(comment.to_owned());
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                self.data.push_str(value);
            }
            "event" => self.event = Some(value.to_owned()),
            // An id containing NUL is ignored, as the standard says.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => return,
        }
        self.fields += 1;
    }
}

/// Accumulates body chunks and yields complete frames, in order.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Frame,
    lines: usize,
}

impl Parser {
    /// Adds a chunk of the body (chunks may split lines and UTF-8 characters anywhere).
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, comment-only blocks included, once its blank line arrived.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let end = self.buf.iter().position(|b| *b == b'\n')?;
            let bytes: Vec<u8> = self.buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&bytes);
            self.current.raw.push_str(&text);
            let line = text.trim_end_matches('\n');
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                self.lines += 1;
                self.current.line(line);
                continue;
            }
            let frame = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.lines) > 0 {
                return Some(frame);
            }
            // A blank line with nothing before it dispatches nothing.
        }
    }

    /// Bytes received but not yet part of a complete line.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut Parser) -> Vec<Frame> {
        std::iter::from_fn(|| p.next_frame()).collect()
    }

    #[test]
    fn sagashop_frames_split_anywhere_parse_the_same() {
        let body =
            "event: data\ndata: null\n\n: keep-alive\n\nid: 7\nevent: data\ndata: {\"x\":1}\n\n";
        let mut whole = Parser::default();
        whole.push(body.as_bytes());
        let expected = all(&mut whole);
        assert_eq!(expected.len(), 3);
        assert_eq!(
            (expected[0].event.as_deref(), expected[0].data.as_str()),
            (Some("data"), "null")
        );
        assert!(expected[1].is_comment_only());
        assert_eq!(expected[1].comments, vec!["keep-alive".to_owned()]);
        assert_eq!(expected[2].event_id(), Some(7));
        assert_eq!(expected[2].data, "{\"x\":1}");
        assert_eq!(expected[2].raw, "id: 7\nevent: data\ndata: {\"x\":1}\n\n");
        for split in 0..body.len() {
            let mut p = Parser::default();
            p.push(&body.as_bytes()[..split]);
            let mut got = all(&mut p);
            p.push(&body.as_bytes()[split..]);
            got.extend(all(&mut p));
            assert_eq!(got, expected, "split at {split}");
            assert!(p.pending().is_empty());
        }
    }

    #[test]
    fn incomplete_frame_waits_for_its_blank_line() {
        let mut p = Parser::default();
        p.push(b"id: 1\ndata: a\n");
        assert_eq!(p.next_frame(), None);
        p.push(b"\n");
        assert_eq!(p.next_frame().unwrap().data, "a");
        assert_eq!(p.next_frame(), None);
    }

    #[test]
    fn crlf_multiline_data_no_space_and_unknown_fields() {
        let mut p = Parser::default();
        p.push(b"data:first\r\ndata: second\r\ndata\r\nfoo: bar\r\nretry: 300\r\n\r\n");
        let f = p.next_frame().unwrap();
        assert_eq!(f.data, "first\nsecond\n");
        assert_eq!(f.retry, Some(300));
        assert_eq!((&f.id, &f.event), (&None, &None));
        assert!(!f.is_comment_only());
    }

    #[test]
    fn stray_blank_lines_dispatch_nothing_and_bad_ids_are_not_numbers() {
        let mut p = Parser::default();
        p.push(b"\n\n\nid: abc\ndata: x\n\n:\n\n");
        let f = p.next_frame().unwrap();
        assert_eq!((f.id.as_deref(), f.event_id()), (Some("abc"), None));
        let c = p.next_frame().unwrap();
        assert!(c.is_comment_only());
        assert_eq!(c.comments, vec![String::new()]);
        assert_eq!(p.next_frame(), None);
    }

    #[test]
    fn utf8_split_inside_a_character_survives() {
        let body = "data: naïve ☕\n\n".as_bytes();
        let mut p = Parser::default();
        p.push(&body[..9]);
        assert_eq!(p.next_frame(), None);
        p.push(&body[9..]);
        assert_eq!(p.next_frame().unwrap().data, "naïve ☕");
    }
}
