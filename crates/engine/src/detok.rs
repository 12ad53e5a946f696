//! Incremental detokenization: token ids in, UTF-8-safe text deltas out.
//!
//! Decoding one token at a time is wrong in two ways: a character can be split over several
//! tokens (byte-level BPE, `<0xNN>` byte fallback), and some decoders change a token's text
//! depending on what precedes it (SentencePiece strips the `▁` space of the *first* token).
//! [`IncrementalDetokenizer`] uses the prefix-window technique of vLLM and TGI: it keeps a
//! short window of ids, decodes the window, and emits what the newest tokens added beyond the
//! text the window's first part already produced. Text that ends in an incomplete character
//! (decoded as U+FFFD) is held back until the character completes or [`flush`] is called.
//!
//! Invariant (tested on real Qwen3, Llama 3 and Llama 2 tokenizers): with no context ids, the
//! concatenation of every delta returned by [`push`] and [`flush`] equals
//! `tokenizer.decode(all_pushed_ids, skip_special_tokens)`. With context ids it equals the text
//! that the pushed ids add after the context, `decode(context ++ pushed)` minus
//! `decode(context)`; for byte-level tokenizers that is again exactly `decode(pushed)`, and for
//! SentencePiece it keeps the leading space of the first generated word that `decode(pushed)`
//! alone would strip. The one divergence: a byte-fallback run that the model makes into
//! invalid UTF-8 *after* a valid character of it was emitted (Hugging Face's `ByteFallback`
//! then turns the whole run into U+FFFD, which cannot be taken back); the stream then shows the
//! valid character followed by U+FFFD for the bad bytes.
//!
//! Cost per [`push`]: one decode of the window (the previous chunk's tokens plus the tokens not
//! yet emitted, usually 2–4), plus one more decode when a chunk is emitted. Nothing grows with
//! the length of the generation.
//!
//! [`push`]: IncrementalDetokenizer::push
//! [`flush`]: IncrementalDetokenizer::flush

use std::collections::HashSet;
use std::sync::Arc;

use tokenizers::Tokenizer;

/// How many trailing prompt ids are kept as decoding context (as in vLLM).
pub const CONTEXT_TOKENS: usize = 5;

/// The Unicode replacement character that marks bytes that do not (yet) form a character.
const REPLACEMENT: char = '\u{FFFD}';

/// Why a delta could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DetokError {
    /// The tokenizer's `decode` failed (for example an id outside its vocabulary).
    #[error("tokenizer could not decode ids {ids:?}: {message}; check the ids come from the same tokenizer as the model's vocabulary")]
    Decode {
        /// The ids of the window being decoded.
        ids: Vec<u32>,
        /// The tokenizer's error.
        message: String,
    },
}

/// Turns a stream of generated token ids into text deltas. One per request.
pub struct IncrementalDetokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// Ids of special added tokens, dropped up front when `skip_special_tokens` is set
    /// (`decode` would drop them too, so the text is the same and the window stays short).
    special_ids: HashSet<u32>,
    /// `window[..read_offset]` decoded to `prefix_text`, already emitted (or context);
    /// `window[read_offset..]` has not been emitted yet.
    window: Vec<u32>,
    read_offset: usize,
    prefix_text: String,
}

impl std::fmt::Debug for IncrementalDetokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncrementalDetokenizer")
            .field("skip_special_tokens", &self.skip_special_tokens)
            .field("window", &self.window)
            .field("read_offset", &self.read_offset)
            .field("prefix_text", &self.prefix_text)
            .finish()
    }
}

impl IncrementalDetokenizer {
    /// A detokenizer for one generation.
    ///
    /// `context_ids` are the prompt's ids (only the last [`CONTEXT_TOKENS`] are kept): they
    /// make the first generated token decode as it reads after the prompt (a SentencePiece
    /// `▁word` keeps its space). Pass `&[]` for text exactly equal to `decode(generated)`.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        context_ids: &[u32],
        skip_special_tokens: bool,
    ) -> Result<Self, DetokError> {
        let special_ids = if skip_special_tokens {
            tokenizer
                .get_added_tokens_decoder()
                .into_iter()
                .filter(|(_, token)| token.special)
                .map(|(id, _)| id)
                .collect()
        } else {
            HashSet::new()
        };
        let mut this = Self {
            tokenizer,
            skip_special_tokens,
            special_ids,
            window: Vec::new(),
            read_offset: 0,
            prefix_text: String::new(),
        };
        let kept: Vec<u32> = context_ids
            .iter()
            .copied()
            .filter(|id| !this.special_ids.contains(id))
            .collect();
        let start = kept.len().saturating_sub(CONTEXT_TOKENS);
        this.window = kept[start..].to_vec();
        this.read_offset = this.window.len();
        this.prefix_text = this.decode(&this.window)?;
        Ok(this)
    }

    /// Whether special tokens are left out of the text.
    pub fn skip_special_tokens(&self) -> bool {
        self.skip_special_tokens
    }

    /// Feeds one generated id; returns the text it completes (often empty: the token may end
    /// in the middle of a character, or decode to nothing).
    pub fn push(&mut self, token_id: u32) -> Result<String, DetokError> {
        if self.special_ids.contains(&token_id) {
            return Ok(String::new());
        }
        self.window.push(token_id);
        let text = self.decode(&self.window)?;
        if text.len() <= self.prefix_text.len() || text.ends_with(REPLACEMENT) {
            return Ok(String::new());
        }
        self.emit(text)
    }

    /// Feeds several ids; returns the concatenated deltas.
    pub fn push_all(&mut self, token_ids: &[u32]) -> Result<String, DetokError> {
        let mut out = String::new();
        for &id in token_ids {
            out.push_str(&self.push(id)?);
        }
        Ok(out)
    }

    /// Releases text still held back (an incomplete character at the end becomes U+FFFD, as
    /// `decode` renders it). Call once when the generation ends.
    pub fn flush(&mut self) -> Result<String, DetokError> {
        if self.read_offset >= self.window.len() {
            return Ok(String::new());
        }
        let text = self.decode(&self.window)?;
        if text.len() <= self.prefix_text.len() {
            // Nothing visible was added (e.g. a SentencePiece `▁` that is stripped at the start).
            return Ok(String::new());
        }
        self.emit(text)
    }

    /// Ids pushed but not yet turned into text.
    pub fn pending_ids(&self) -> &[u32] {
        &self.window[self.read_offset..]
    }

    /// Emits `text` (the decode of the whole window) minus the already-emitted prefix, and
    /// slides the window so the emitted tokens become the next prefix.
    fn emit(&mut self, text: String) -> Result<String, DetokError> {
        let delta = match text.get(self.prefix_text.len()..) {
            Some(rest) if text.starts_with(&self.prefix_text) => rest.to_string(),
            // The prefix decoded differently inside the longer window; only an invalid
            // byte-fallback run does that. Emit the new tokens on their own.
            _ => self.decode(&self.window[self.read_offset..])?,
        };
        let emitted_from = self.read_offset;
        self.window.drain(..emitted_from);
        self.read_offset = self.window.len();
        self.prefix_text = self.decode(&self.window)?;
        Ok(delta)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, DetokError> {
        self.tokenizer
            .decode(ids, self.skip_special_tokens)
            .map_err(|e| DetokError::Decode {
                ids: ids.to_vec(),
                message: e.to_string(),
            })
    }
}
