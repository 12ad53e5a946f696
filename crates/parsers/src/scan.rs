//! Marker search over a growing buffer, shared by the tool and reasoning parsers.

/// Result of [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Marker `which` (index into the marker list) starts at byte `at`.
    Found { at: usize, which: usize },
    /// No complete marker: `buf[..safe]` can be released, `buf[safe..]` may still become a
    /// marker (it is a proper prefix of one) and must be held back.
    Partial { safe: usize },
}

/// Finds the earliest complete marker in `buf`, or else how much of `buf` cannot be the start
/// of one. Markers must be non-empty and none may contain another.
pub(crate) fn scan(buf: &str, markers: &[&str]) -> Scan {
    let mut best: Option<(usize, usize)> = None;
    for (which, m) in markers.iter().enumerate() {
        if let Some(at) = buf.find(m) {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, which));
            }
        }
    }
    if let Some((at, which)) = best {
        return Scan::Found { at, which };
    }
    let longest = markers.iter().map(|m| m.len()).max().unwrap_or(0);
    let max_keep = longest.saturating_sub(1).min(buf.len());
    for keep in (1..=max_keep).rev() {
        let start = buf.len() - keep;
        if !buf.is_char_boundary(start) {
            continue;
        }
        let tail = &buf[start..];
        if markers.iter().any(|m| m.starts_with(tail)) {
            return Scan::Partial { safe: start };
        }
    }
    Scan::Partial { safe: buf.len() }
}

/// `buf` split at its earliest complete marker: see [`cut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut<'a> {
    /// The text before the marker or, with no complete marker, the text that cannot be the
    /// start of one (all of `buf` at the end of output).
    pub(crate) text: &'a str,
    /// The marker that ends `text` (index into the marker list), if any.
    pub(crate) marker: Option<usize>,
    /// Bytes of `buf` used up: `text` and the marker.
    pub(crate) used: usize,
}

/// Splits `buf` at its earliest complete marker, or else releases what cannot start one (at
/// `eof`, everything). Same marker rules as [`scan`].
pub(crate) fn cut<'a>(buf: &'a str, markers: &[&str], eof: bool) -> Cut<'a> {
    match scan(buf, markers) {
        Scan::Found { at, which } => Cut {
            text: &buf[..at],
            marker: Some(which),
            used: at + markers[which].len(),
        },
        Scan::Partial { safe } => {
            let upto = if eof { buf.len() } else { safe };
            Cut {
                text: &buf[..upto],
                marker: None,
                used: upto,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_earliest_marker() {
        let m = ["<think>", "</think>"];
        assert_eq!(
            scan("a</think>b<think>", &m),
            Scan::Found { at: 1, which: 1 }
        );
        assert_eq!(scan("<think></think>", &m), Scan::Found { at: 0, which: 0 });
    }

    #[test]
    fn holds_partial_prefix() {
        let m = ["<tool_call>"];
        assert_eq!(scan("hello <tool", &m), Scan::Partial { safe: 6 });
        assert_eq!(scan("hello <", &m), Scan::Partial { safe: 6 });
        assert_eq!(scan("hello", &m), Scan::Partial { safe: 5 });
        assert_eq!(scan("a<b", &m), Scan::Partial { safe: 3 });
        assert_eq!(scan("é<tool_cal", &m), Scan::Partial { safe: 2 });
        assert_eq!(scan("", &m), Scan::Partial { safe: 0 });
    }

    #[test]
    fn cut_releases_text_and_marker() {
        let m = ["<a>", "<bb>"];
        let c = cut("x<bb>y<a>", &m, false);
        assert_eq!((c.text, c.marker, c.used), ("x", Some(1), 5));
        let c = cut("xy<b", &m, false);
        assert_eq!((c.text, c.marker, c.used), ("xy", None, 2));
        let c = cut("xy<b", &m, true);
        assert_eq!((c.text, c.marker, c.used), ("xy<b", None, 4));
        let c = cut("x<", &[], false);
        assert_eq!((c.text, c.marker, c.used), ("x<", None, 2));
    }
}
