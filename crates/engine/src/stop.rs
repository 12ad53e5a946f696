//! Stop strings over a stream of text deltas.
//!
//! [`StopMatcher`] sits after the detokenizer. It never lets any part of a stop string reach
//! the client before it knows the text is not the start of a stop: it holds back the longest
//! suffix of the text seen so far that is a prefix of some stop string, matches across token
//! (delta) boundaries, and cuts the output at the earliest match. With
//! `include_stop_str_in_output` the matched stop string itself is emitted and nothing after it.
//!
//! Cost per delta: a search over the delta plus at most `max_stop_len - 1` held bytes, for
//! each stop string.

/// What one [`StopMatcher::push`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopStep {
    /// Text that is safe to send to the client now (may be empty).
    pub text: String,
    /// `Some(i)` when stop string `i` (index into the list given to [`StopMatcher::new`])
    /// matched: `text` ends right before it (or right after it with
    /// `include_stop_str_in_output`) and the generation should finish with reason "stop".
    pub stopped: Option<usize>,
}

/// Finds stop strings in streamed text and decides what can be emitted. One per request.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    include_stop_str_in_output: bool,
    /// Text received but not emitted: always a proper prefix of some stop string.
    held: String,
    stopped: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops`. Empty strings are ignored (they would match everywhere; the
    /// server rejects them in validation).
    pub fn new(stops: &[String], include_stop_str_in_output: bool) -> Self {
        Self {
            stops: stops.to_vec(),
            include_stop_str_in_output,
            held: String::new(),
            stopped: None,
        }
    }

    /// Whether there are any (non-empty) stop strings at all.
    pub fn is_active(&self) -> bool {
        self.stops.iter().any(|s| !s.is_empty())
    }

    /// The stop string index that matched, once one has.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// The stop strings, in the order given.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Consumes one text delta. After a stop fired, further deltas are ignored.
    pub fn push(&mut self, delta: &str) -> StopStep {
        if self.stopped.is_some() {
            return StopStep {
                text: String::new(),
                stopped: self.stopped,
            };
        }
        if !self.is_active() {
            return StopStep {
                text: delta.to_string(),
                stopped: None,
            };
        }
        let mut buffer = std::mem::take(&mut self.held);
        buffer.push_str(delta);

        if let Some((index, start)) = self.earliest_match(&buffer) {
            let stop_len = self.stops.get(index).map_or(0, String::len);
            let end = if self.include_stop_str_in_output {
                start + stop_len
            } else {
                start
            };
            buffer.truncate(end);
            self.stopped = Some(index);
            return StopStep {
                text: buffer,
                stopped: Some(index),
            };
        }

        let hold_from = self.partial_match_start(&buffer);
        self.held = buffer.split_off(hold_from);
        StopStep {
            text: buffer,
            stopped: None,
        }
    }

    /// Releases the held-back text when the generation ends for another reason (length, EOS,
    /// cancel): it turned out not to be a stop string. Empty after a stop fired.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The stop that starts earliest in `text`; on a tie, the longest one (then the first
    /// listed). Returns `(stop index, byte offset)`.
    fn earliest_match(&self, text: &str) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (index, stop) in self.stops.iter().enumerate() {
            if stop.is_empty() {
                continue;
            }
            let Some(start) = text.find(stop.as_str()) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((best_index, best_start)) => {
                    let best_len = self.stops.get(best_index).map_or(0, String::len);
                    start < best_start || (start == best_start && stop.len() > best_len)
                }
            };
            if better {
                best = Some((index, start));
            }
        }
        best
    }

    /// Byte offset of the longest suffix of `text` that is a proper prefix of some stop
    /// string (`text.len()` when there is none). Always a char boundary.
    fn partial_match_start(&self, text: &str) -> usize {
        let longest = self
            .stops
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .saturating_sub(1);
        let earliest = text.len().saturating_sub(longest);
        for (offset, _) in text.char_indices() {
            if offset < earliest {
                continue;
            }
            let suffix = &text[offset..];
            if self
                .stops
                .iter()
                .any(|stop| stop.len() > suffix.len() && stop.starts_with(suffix))
            {
                return offset;
            }
        }
        text.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn stops(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn run(m: &mut StopMatcher, deltas: &[&str]) -> (String, Option<usize>) {
        let mut out = String::new();
        for d in deltas {
            let step = m.push(d);
            out.push_str(&step.text);
            if step.stopped.is_some() {
                return (out, step.stopped);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn no_stops_passes_through() {
        let mut m = StopMatcher::new(&[], false);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_across_deltas_is_held_then_cut() {
        let mut m = StopMatcher::new(&stops(&["</end>"]), false);
        assert_eq!(
            m.push("hello </"),
            StopStep {
                text: "hello ".into(),
                stopped: None
            }
        );
        assert_eq!(
            m.push("en"),
            StopStep {
                text: "".into(),
                stopped: None
            }
        );
        assert_eq!(
            m.push("d> tail"),
            StopStep {
                text: "".into(),
                stopped: Some(0)
            }
        );
        assert_eq!(
            m.push("more"),
            StopStep {
                text: "".into(),
                stopped: Some(0)
            }
        );
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn include_stop_str() {
        let mut m = StopMatcher::new(&stops(&["STOP"]), true);
        assert_eq!(
            run(&mut m, &["abc ST", "OP def"]),
            ("abc STOP".to_string(), Some(0))
        );
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(&stops(&["abcd"]), false);
        assert_eq!(m.push("xab").text, "x");
        assert_eq!(m.push("c").text, "");
        assert_eq!(m.push("x").text, "abcx");
        assert_eq!(m.push("abc").text, "");
        assert_eq!(m.finish(), "abc");
    }

    #[test]
    fn overlapping_prefix_keeps_longest_candidate() {
        // "aab" could start at either 'a'; holding from the first keeps both alive.
        let mut m = StopMatcher::new(&stops(&["aab"]), false);
        assert_eq!(m.push("xa").text, "x");
        assert_eq!(m.push("a").text, "");
        let step = m.push("b!");
        assert_eq!(
            step,
            StopStep {
                text: "".into(),
                stopped: Some(0)
            }
        );
    }

    #[test]
    fn earliest_match_wins_then_longest() {
        let mut m = StopMatcher::new(&stops(&["world", "o w", "hello"]), false);
        assert_eq!(run(&mut m, &["xhello world"]), ("x".to_string(), Some(2)));
        let mut m = StopMatcher::new(&stops(&["ab", "abc"]), true);
        assert_eq!(run(&mut m, &["zabc"]), ("zabc".to_string(), Some(1)));
    }

    #[test]
    fn multibyte_boundaries() {
        let mut m = StopMatcher::new(&stops(&["😀!"]), false);
        assert_eq!(m.push("é😀").text, "é");
        assert_eq!(m.push("?").text, "😀?");
        assert_eq!(
            run(&mut m, &["日本😀", "!x"]),
            ("日本".to_string(), Some(0))
        );
    }
}
