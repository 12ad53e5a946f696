//! The delta sink shared by the tool-call parsers: content whitespace rules, call indexes,
//! merging of adjacent pieces.

use super::ToolDelta;

/// Collects the deltas of one `push`/`finish` and keeps the state that spans them.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) deltas: Vec<ToolDelta>,
    /// Trailing whitespace of the content, held until non-whitespace content follows.
    pending_ws: String,
    /// Non-whitespace content has been emitted.
    content_seen: bool,
    next_index: usize,
    /// Index of the call that has started and not ended.
    current: Option<usize>,
    /// Some call markup turned out malformed.
    pub(crate) failed: bool,
    /// The end of output has been handled.
    finished: bool,
}

impl Out {
    /// A parser's `push`: runs `read` over the new text unless the output has finished, and
    /// returns the deltas.
    pub(crate) fn push_with(&mut self, read: impl FnOnce(&mut Out)) -> Vec<ToolDelta> {
        if !self.finished {
            read(self);
        }
        std::mem::take(&mut self.deltas)
    }

    /// A parser's `finish`: the first time, runs `end` and then [`finish`](Self::finish);
    /// returns the deltas.
    pub(crate) fn finish_with(&mut self, end: impl FnOnce(&mut Out)) -> Vec<ToolDelta> {
        if !self.finished {
            self.finished = true;
            end(self);
            self.finish();
        }
        std::mem::take(&mut self.deltas)
    }

    /// Text outside calls. Trailing whitespace is held back: it is emitted only when more
    /// non-whitespace content follows, or at the end when there was no call. Leading
    /// whitespace after a call, before any content, is dropped.
    pub(crate) fn content(&mut self, text: &str) {
        let mut text = text;
        if !self.content_seen && self.next_index > 0 {
            text = text.trim_start();
        }
        let body = text.trim_end().len();
        if body == 0 {
            self.pending_ws.push_str(text);
            return;
        }
        let mut piece = std::mem::take(&mut self.pending_ws);
        piece.push_str(&text[..body]);
        self.pending_ws.push_str(&text[body..]);
        self.content_seen = true;
        self.push(ToolDelta::Content(piece));
    }

    /// A new call named `name` starts.
    pub(crate) fn start(&mut self, name: String) {
        if !self.content_seen {
            self.pending_ws.clear();
        }
        let index = self.next_index;
        self.next_index += 1;
        self.current = Some(index);
        self.push(ToolDelta::Start { index, name });
    }

    /// A piece of the current call's arguments.
    pub(crate) fn args(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(index) = self.current {
            self.push(ToolDelta::Arguments {
                index,
                text: text.to_owned(),
            });
        }
    }

    /// The current call is complete.
    pub(crate) fn end_call(&mut self) {
        self.current = None;
    }

    /// How many calls have started.
    pub(crate) fn call_count(&self) -> usize {
        self.next_index
    }

    /// At least one call started.
    pub(crate) fn called(&self) -> bool {
        self.next_index > 0
    }

    /// End of output: held whitespace is content only if there was no call.
    fn finish(&mut self) {
        let ws = std::mem::take(&mut self.pending_ws);
        if !self.called() && !ws.is_empty() {
            self.push(ToolDelta::Content(ws));
        }
        self.current = None;
    }

    fn push(&mut self, delta: ToolDelta) {
        match (self.deltas.last_mut(), delta) {
            (Some(ToolDelta::Content(prev)), ToolDelta::Content(more)) => prev.push_str(&more),
            (
                Some(ToolDelta::Arguments {
                    index: i,
                    text: prev,
                }),
                ToolDelta::Arguments { index, text },
            ) if *i == index => prev.push_str(&text),
            (_, delta) => self.deltas.push(delta),
        }
    }
}
