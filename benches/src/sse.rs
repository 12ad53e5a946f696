//! Incremental Server-Sent Events parser.
//!
//! Bytes arrive in arbitrary TCP-sized pieces: a line can be split across reads, one
//! read can hold many events, lines may end in LF, CRLF or CR. [`SseParser::feed`] keeps
//! the unfinished tail and returns every event completed so far. Comments (`:`) and
//! fields other than `data` are ignored except `event`, which is kept so an
//! `event: error` can be reported.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    /// A `data` payload (multi-line data joined with `\n`), with its `event:` name if any.
    Data {
        /// The `event:` field, when the server sent one.
        event: Option<String>,
        /// The payload.
        data: String,
    },
    /// The OpenAI end-of-stream marker `data: [DONE]`.
    Done,
}

/// Stateful parser: feed it bytes, collect events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// A CR ended the previous line; skip one LF if it comes next.
    after_cr: bool,
    /// `data` lines of the event being built.
    data: Option<String>,
    /// `event` field of the event being built.
    event: Option<String>,
}

impl SseParser {
    /// A parser with empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consume `bytes`; returns the events completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    /// End of stream: dispatch whatever is pending (a last event without its blank line).
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.dispatch(&mut out);
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry, unknown fields
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            if data.trim() == "[DONE]" {
                out.push(SseEvent::Done);
            } else {
                out.push(SseEvent::Data { event, data });
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn data(s: &str) -> SseEvent {
        SseEvent::Data {
            event: None,
            data: s.to_string(),
        }
    }

    fn feed_all(p: &mut SseParser, parts: &[&[u8]]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for part in parts {
            out.extend(p.feed(part));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn several_events_in_one_read() {
        let mut p = SseParser::new();
        let ev = feed_all(
            &mut p,
            &[b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n"],
        );
        assert_eq!(
            ev,
            vec![data("{\"a\":1}"), data("{\"a\":2}"), SseEvent::Done]
        );
    }

    #[test]
    fn lines_split_across_reads_at_every_byte() {
        let stream = b"data: {\"x\":\"hello\"}\r\n\r\n: keep-alive\r\n\r\ndata:{\"x\":2}\n\ndata: [DONE]\n\n";
        let whole = feed_all(&mut SseParser::new(), &[stream]);
        assert_eq!(
            whole,
            vec![data("{\"x\":\"hello\"}"), data("{\"x\":2}"), SseEvent::Done]
        );
        // Every split point gives the same events.
        for cut in 0..stream.len() {
            let mut p = SseParser::new();
            let got = feed_all(&mut p, &[&stream[..cut], &stream[cut..]]);
            assert_eq!(got, whole, "split at {cut}");
        }
        // Byte by byte.
        let mut p = SseParser::new();
        let parts: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&mut p, &parts), whole);
    }

    #[test]
    fn crlf_split_between_cr_and_lf() {
        let mut p = SseParser::new();
        let mut ev = p.feed(b"data: 1\r");
        ev.extend(p.feed(b"\n\r"));
        ev.extend(p.feed(b"\ndata: 2\r\r"));
        assert_eq!(ev, vec![data("1"), data("2")]);
    }

    #[test]
    fn comments_event_names_and_multiline_data() {
        let mut p = SseParser::new();
        let ev = feed_all(
            &mut p,
            &[b": comment\nevent: error\ndata: {\"error\":\ndata: 1}\nid: 7\nretry: 10\n\n"],
        );
        assert_eq!(
            ev,
            vec![SseEvent::Data {
                event: Some("error".into()),
                data: "{\"error\":\n1}".into()
            }]
        );
    }

    #[test]
    fn last_event_without_blank_line_is_flushed() {
        let mut p = SseParser::new();
        let mut ev = p.feed(b"data: {\"usage\":{}}");
        assert!(ev.is_empty());
        ev.extend(p.finish());
        assert_eq!(ev, vec![data("{\"usage\":{}}")]);
    }

    #[test]
    fn blank_lines_alone_dispatch_nothing() {
        let mut p = SseParser::new();
        assert!(feed_all(&mut p, &[b"\n\n\r\n:x\n\n"]).is_empty());
    }
}
