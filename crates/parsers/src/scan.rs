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
}
