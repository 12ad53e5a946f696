//! The events as published, and their MessagePack encoding: byte for byte what vLLM's
//! msgspec encoder writes for `KVEventBatch` (`vllm/distributed/kv_events.py`, vLLM 0.34),
//! checked against golden bytes made with vLLM's own classes
//! (`scripts/kv_events_golden.py` -> `tests/golden.json`).
//!
//! msgspec's rules, as they apply here:
//! * `EventBatch` is `array_like`: always the 3-element array `[ts, events,
//!   data_parallel_rank]` (`omit_defaults` has no effect on array-like structs);
//! * each event is a `tag=True` struct: with [`Layout::Map`] a map whose first key is
//!   `"type"` (the class name) followed by the fields in declaration order, leaving out the
//!   fields that have a default and hold it (`omit_defaults`); with [`Layout::Array`] an
//!   array `[tag, field, ...]` with every field;
//! * integers take the smallest MessagePack form (block hashes >= 2^63 are `uint64`), floats
//!   are `float64`, `None` is `nil`, tuples are arrays;
//! * a struct's map header is sized for all of its fields (plus the tag) before the defaults
//!   are left out, then patched with the real count: vLLM 0.34's `BlockStored` has 15
//!   fields, so its header is a `map16` (`0xde 0x00 0x0b` for 11 entries) although a
//!   `fixmap` would do; `BlockRemoved` (5 fields) gets a `fixmap`.

use crate::config::Layout;

/// `medium` of blocks in the device KV cache (vLLM's `MEDIUM_GPU`, which vLLM reports for
/// its primary KV cache whatever the device).
pub const MEDIUM_GPU: &str = "GPU";
/// `kv_cache_spec_kind` of a full-attention KV cache group.
pub const FULL_ATTENTION: &str = "full_attention";

/// One published message: the events of one engine step.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// Unix time in seconds.
    pub ts: f64,
    pub events: Vec<KvEvent>,
    /// vLLM's publisher always fills it in (0 without data parallelism).
    pub data_parallel_rank: Option<i64>,
}

/// vLLM's `BlockStored | BlockRemoved | AllBlocksCleared`.
#[derive(Debug, Clone, PartialEq)]
pub enum KvEvent {
    BlockStored(BlockStored),
    BlockRemoved(BlockRemoved),
    AllBlocksCleared,
}

/// vLLM's `BlockStored`, with the fields Lantern fills in. The later fields of vLLM 0.34
/// (`locality`, `ownership`, `session_id`, `lookahead_token_ids`) are always `None` here, so
/// the map layout leaves them out as msgspec does; they postdate the array layout.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStored {
    /// 64-bit block ids, parent first: vLLM's int form of block hashes.
    pub block_hashes: Vec<u64>,
    pub parent_block_hash: Option<u64>,
    pub token_ids: Vec<u32>,
    pub block_size: u32,
    /// The adapter's numeric id (`None`: the base model). Deprecated upstream in favour of
    /// `lora_name`, still sent.
    pub lora_id: Option<u32>,
    pub medium: Option<&'static str>,
    pub lora_name: Option<String>,
    /// One entry per block: the untagged keys besides the tokens that went into its hash, in
    /// vLLM's order (LoRA name, then the cache salt on a sequence's first block), or `None`.
    pub extra_keys: Option<Vec<Option<Vec<String>>>>,
    pub group_idx: Option<u32>,
    pub kv_cache_spec_kind: Option<&'static str>,
    pub kv_cache_spec_sliding_window: Option<u32>,
}

/// vLLM's `BlockRemoved` (`locality` and `ownership` always `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRemoved {
    pub block_hashes: Vec<u64>,
    pub medium: Option<&'static str>,
    pub group_idx: Option<u32>,
}

/// An event batch that MessagePack cannot represent (a list longer than 2^32 - 1).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} has {len} entries, more than MessagePack allows")]
    TooLong { what: &'static str, len: usize },
    #[error("writing MessagePack: {0}")]
    Write(String),
}

impl From<rmp::encode::ValueWriteError<std::io::Error>> for EncodeError {
    fn from(e: rmp::encode::ValueWriteError<std::io::Error>) -> Self {
        Self::Write(e.to_string())
    }
}

impl From<std::io::Error> for EncodeError {
    fn from(e: std::io::Error) -> Self {
        Self::Write(e.to_string())
    }
}

type Out = Vec<u8>;

/// Fields of vLLM 0.34's `BlockStored` and `BlockRemoved` (the map header's size class).
const BLOCK_STORED_FIELDS: usize = 15;
const BLOCK_REMOVED_FIELDS: usize = 5;

/// msgspec's map header for a tagged struct of `fields` fields holding `n` entries.
fn struct_map_header(w: &mut Out, fields: usize, n: usize) -> Result<(), EncodeError> {
    let max = fields + 1;
    if max < 16 {
        rmp::encode::write_map_len(w, len32("map", n)?)?;
    } else {
        let n = u16::try_from(n).map_err(|_| EncodeError::TooLong {
            what: "map",
            len: n,
        })?;
        w.push(0xde);
        w.extend_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

fn len32(what: &'static str, len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLong { what, len })
}

fn array_len(w: &mut Out, what: &'static str, len: usize) -> Result<(), EncodeError> {
    rmp::encode::write_array_len(w, len32(what, len)?)?;
    Ok(())
}

fn str(w: &mut Out, s: &str) -> Result<(), EncodeError> {
    rmp::encode::write_str(w, s)?;
    Ok(())
}

fn uint(w: &mut Out, v: u64) -> Result<(), EncodeError> {
    rmp::encode::write_uint(w, v)?;
    Ok(())
}

fn nil(w: &mut Out) -> Result<(), EncodeError> {
    rmp::encode::write_nil(w)?;
    Ok(())
}

fn opt_uint(w: &mut Out, v: Option<u64>) -> Result<(), EncodeError> {
    match v {
        Some(v) => uint(w, v),
        None => nil(w),
    }
}

fn opt_str(w: &mut Out, v: Option<&str>) -> Result<(), EncodeError> {
    match v {
        Some(s) => str(w, s),
        None => nil(w),
    }
}

fn uints<T: Copy + Into<u64>>(w: &mut Out, what: &'static str, v: &[T]) -> Result<(), EncodeError> {
    array_len(w, what, v.len())?;
    for &x in v {
        uint(w, x.into())?;
    }
    Ok(())
}

fn extra_keys(w: &mut Out, keys: Option<&[Option<Vec<String>>]>) -> Result<(), EncodeError> {
    let Some(keys) = keys else {
        return nil(w);
    };
    array_len(w, "extra_keys", keys.len())?;
    for block in keys {
        match block {
            None => nil(w)?,
            Some(k) => {
                array_len(w, "extra_keys entry", k.len())?;
                for s in k {
                    str(w, s)?;
                }
            }
        }
    }
    Ok(())
}

/// Writes a map key; the caller writes its value into the returned buffer.
fn key<'a>(w: &'a mut Out, k: &str) -> Result<&'a mut Out, EncodeError> {
    str(w, k)?;
    Ok(w)
}

/// Encodes one batch as vLLM's publisher sends it (the third frame of each message).
pub fn encode_batch(batch: &EventBatch, layout: Layout) -> Result<Vec<u8>, EncodeError> {
    let mut w = Vec::with_capacity(64 + 16 * batch.events.len());
    array_len(&mut w, "batch", 3)?;
    rmp::encode::write_f64(&mut w, batch.ts)?;
    array_len(&mut w, "events", batch.events.len())?;
    for ev in &batch.events {
        match layout {
            Layout::Map => encode_map(&mut w, ev)?,
            Layout::Array => encode_array(&mut w, ev)?,
        }
    }
    match batch.data_parallel_rank {
        Some(r) => rmp::encode::write_sint(&mut w, r).map(|_| ())?,
        None => nil(&mut w)?,
    }
    Ok(w)
}

fn encode_map(w: &mut Out, ev: &KvEvent) -> Result<(), EncodeError> {
    match ev {
        KvEvent::BlockStored(b) => {
            // "type" and the seven fields without a default are always there.
            let optional = [
                b.extra_keys.is_some(),
                b.group_idx.is_some(),
                b.kv_cache_spec_kind.is_some(),
                b.kv_cache_spec_sliding_window.is_some(),
            ];
            let n = 8 + optional.iter().filter(|&&x| x).count();
            struct_map_header(w, BLOCK_STORED_FIELDS, n)?;
            str(key(w, "type")?, "BlockStored")?;
            uints(key(w, "block_hashes")?, "block_hashes", &b.block_hashes)?;
            opt_uint(key(w, "parent_block_hash")?, b.parent_block_hash)?;
            uints(key(w, "token_ids")?, "token_ids", &b.token_ids)?;
            uint(key(w, "block_size")?, b.block_size.into())?;
            opt_uint(key(w, "lora_id")?, b.lora_id.map(u64::from))?;
            opt_str(key(w, "medium")?, b.medium)?;
            opt_str(key(w, "lora_name")?, b.lora_name.as_deref())?;
            if let Some(k) = &b.extra_keys {
                extra_keys(key(w, "extra_keys")?, Some(k))?;
            }
            if let Some(g) = b.group_idx {
                uint(key(w, "group_idx")?, g.into())?;
            }
            if let Some(k) = b.kv_cache_spec_kind {
                str(key(w, "kv_cache_spec_kind")?, k)?;
            }
            if let Some(s) = b.kv_cache_spec_sliding_window {
                uint(key(w, "kv_cache_spec_sliding_window")?, s.into())?;
            }
        }
        KvEvent::BlockRemoved(b) => {
            let n = 3 + usize::from(b.group_idx.is_some());
            struct_map_header(w, BLOCK_REMOVED_FIELDS, n)?;
            str(key(w, "type")?, "BlockRemoved")?;
            uints(key(w, "block_hashes")?, "block_hashes", &b.block_hashes)?;
            opt_str(key(w, "medium")?, b.medium)?;
            if let Some(g) = b.group_idx {
                uint(key(w, "group_idx")?, g.into())?;
            }
        }
        KvEvent::AllBlocksCleared => {
            struct_map_header(w, 0, 1)?;
            str(w, "type")?;
            str(w, "AllBlocksCleared")?;
        }
    }
    Ok(())
}

fn encode_array(w: &mut Out, ev: &KvEvent) -> Result<(), EncodeError> {
    match ev {
        KvEvent::BlockStored(b) => {
            array_len(w, "BlockStored", 12)?;
            str(w, "BlockStored")?;
            uints(w, "block_hashes", &b.block_hashes)?;
            opt_uint(w, b.parent_block_hash)?;
            uints(w, "token_ids", &b.token_ids)?;
            uint(w, b.block_size.into())?;
            opt_uint(w, b.lora_id.map(u64::from))?;
            opt_str(w, b.medium)?;
            opt_str(w, b.lora_name.as_deref())?;
            extra_keys(w, b.extra_keys.as_deref())?;
            opt_uint(w, b.group_idx.map(u64::from))?;
            opt_str(w, b.kv_cache_spec_kind)?;
            opt_uint(w, b.kv_cache_spec_sliding_window.map(u64::from))?;
        }
        KvEvent::BlockRemoved(b) => {
            array_len(w, "BlockRemoved", 4)?;
            str(w, "BlockRemoved")?;
            uints(w, "block_hashes", &b.block_hashes)?;
            opt_str(w, b.medium)?;
            opt_uint(w, b.group_idx.map(u64::from))?;
        }
        KvEvent::AllBlocksCleared => {
            array_len(w, "AllBlocksCleared", 1)?;
            str(w, "AllBlocksCleared")?;
        }
    }
    Ok(())
}
