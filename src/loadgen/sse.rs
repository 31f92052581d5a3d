//! An incremental parser of `text/event-stream` bodies, for the load generator (and anyone
//! reading sagashop's result stream from Rust).

/// One SSE frame; comment-only frames (`: keep-alive`) are not returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

/// Accumulates body chunks and yields complete frames.
#[derive(Debug, Default)]
pub struct FrameParser {
    buf: Vec<u8>,
}

impl FrameParser {
    /// Adds a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
            let mut frame = SseFrame::default();
            let mut fields = 0;
            for line in String::from_utf8_lossy(&raw).lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    frame.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    frame.event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    frame.data = v.to_owned();
                } else {
                    continue;
                }
                fields += 1;
            }
            if fields > 0 {
                return Some(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_and_comments_skipped() {
        let mut p = FrameParser::default();
        p.push(b"event: data\ndata: null\n\n: keep-alive\n\nid: 7\nevent: da");
        assert_eq!(p.next_frame().unwrap().data, "null");
        assert_eq!(p.next_frame(), None);
        p.push(b"ta\ndata: {\"x\":1}\n\n");
        let f = p.next_frame().unwrap();
        assert_eq!(
            (f.id, f.event.as_deref(), f.data.as_str()),
            (Some(7), Some("data"), "{\"x\":1}")
        );
    }
}
