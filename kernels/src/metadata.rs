//! Attention metadata of one flattened batch: slot mapping, block tables, cumulative query
//! lengths and context lengths, plus the host-side validation shared by the CPU kernels.

use candle_core::{bail, DType, Device, Result, Tensor};

/// Attention metadata for one flattened batch (all tensors on the same device as q).
#[derive(Debug, Clone)]
pub struct PagedAttnMetadata {
    /// (num_tokens,) i64: cache slot of each token in the batch = block_id * block_size + offset; a negative slot means "do not write" (padding).
    pub slot_mapping: Tensor,
    /// (num_seqs, max_blocks_per_seq) u32, rows padded with 0.
    pub block_tables: Tensor,
    /// (num_seqs + 1,) u32: cumulative query lengths; seq s owns batch rows cu[s]..cu[s+1].
    pub cu_seqlens_q: Tensor,
    /// (num_seqs,) u32: context length of each seq AFTER this step's tokens are written (cached + new).
    pub context_lens: Tensor,
    /// Largest query length (`cu[s+1] - cu[s]`) over the batch.
    pub max_query_len: usize,
    /// Largest context length over the batch.
    pub max_context_len: usize,
    /// Tokens per cache block; must equal dim 1 of the caches.
    pub block_size: usize,
}

fn to_u32(value: usize, what: &str) -> Result<u32> {
    match u32::try_from(value) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{what} = {value} does not fit in u32"),
    }
}

impl PagedAttnMetadata {
    /// Builds the metadata tensors on `device` from host data.
    ///
    /// `block_tables[s]` lists the cache blocks of sequence `s` in position order; rows are
    /// padded with block 0 to the longest table (at least one column). `query_lens[s]` is the
    /// number of batch rows of sequence `s` in this step and `context_lens[s]` its context
    /// length after this step's tokens are written. The batch rows are the sequences' rows
    /// concatenated in order, so `slot_mapping.len()` must equal the sum of `query_lens`.
    ///
    /// Fails when the slices disagree in length, when `block_size` is 0, when a query length
    /// exceeds its context length, or when a context length does not fit in its block table.
    pub fn from_host(
        slot_mapping: &[i64],
        block_tables: &[Vec<u32>],
        query_lens: &[usize],
        context_lens: &[usize],
        block_size: usize,
        device: &Device,
    ) -> Result<Self> {
        let num_seqs = block_tables.len();
        if query_lens.len() != num_seqs || context_lens.len() != num_seqs {
            bail!(
                "PagedAttnMetadata::from_host: block_tables has {num_seqs} rows but query_lens has {} and context_lens has {}",
                query_lens.len(),
                context_lens.len()
            );
        }
        if block_size == 0 {
            bail!("PagedAttnMetadata::from_host: block_size must be > 0");
        }
        let total: usize = query_lens.iter().sum();
        if total != slot_mapping.len() {
            bail!(
                "PagedAttnMetadata::from_host: slot_mapping has {} entries but query_lens sum to {total}",
                slot_mapping.len()
            );
        }
        let max_blocks = block_tables.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut tables = Vec::with_capacity(num_seqs * max_blocks);
        let mut cu = Vec::with_capacity(num_seqs + 1);
        let mut ctx = Vec::with_capacity(num_seqs);
        cu.push(0u32);
        let mut offset = 0usize;
        for (s, ((table, &qlen), &clen)) in block_tables
            .iter()
            .zip(query_lens)
            .zip(context_lens)
            .enumerate()
        {
            if qlen > clen {
                bail!(
                    "PagedAttnMetadata::from_host: query_lens[{s}] = {qlen} exceeds context_lens[{s}] = {clen}"
                );
            }
            let capacity = table.len().saturating_mul(block_size);
            if clen > capacity {
                bail!(
                    "PagedAttnMetadata::from_host: context_lens[{s}] = {clen} does not fit block_tables[{s}] ({} blocks of {block_size} = {capacity} slots)",
                    table.len()
                );
            }
            offset += qlen;
            cu.push(to_u32(offset, "cu_seqlens_q")?);
            ctx.push(to_u32(clen, "context_len")?);
            tables.extend_from_slice(table);
            tables.resize(tables.len() + (max_blocks - table.len()), 0);
        }
        Ok(Self {
            slot_mapping: Tensor::from_slice(slot_mapping, slot_mapping.len(), device)?,
            block_tables: Tensor::from_vec(tables, (num_seqs, max_blocks), device)?,
            cu_seqlens_q: Tensor::from_vec(cu, num_seqs + 1, device)?,
            context_lens: Tensor::from_vec(ctx, num_seqs, device)?,
            max_query_len: query_lens.iter().copied().max().unwrap_or(0),
            max_context_len: context_lens.iter().copied().max().unwrap_or(0),
            block_size,
        })
    }

    /// Number of sequences in the batch (rows of `block_tables`).
    pub fn num_seqs(&self) -> usize {
        self.context_lens.elem_count()
    }

    /// Checks ranks, dtypes and devices of the attention metadata tensors (no data is read).
    /// Returns `(num_seqs, max_blocks_per_seq)`.
    pub(crate) fn check_attention_shapes(&self, device: &Device) -> Result<(usize, usize)> {
        let &[num_seqs, max_blocks] = self.block_tables.dims() else {
            bail!(
                "paged_attention: meta.block_tables must have shape (num_seqs, max_blocks_per_seq), got {:?}",
                self.block_tables.shape()
            );
        };
        if self.cu_seqlens_q.dims() != [num_seqs + 1] {
            bail!(
                "paged_attention: meta.cu_seqlens_q must have shape ({},) for {num_seqs} sequences, got {:?}",
                num_seqs + 1,
                self.cu_seqlens_q.shape()
            );
        }
        if self.context_lens.dims() != [num_seqs] {
            bail!(
                "paged_attention: meta.context_lens must have shape ({num_seqs},), got {:?}",
                self.context_lens.shape()
            );
        }
        for (name, t) in [
            ("block_tables", &self.block_tables),
            ("cu_seqlens_q", &self.cu_seqlens_q),
            ("context_lens", &self.context_lens),
        ] {
            if t.dtype() != DType::U32 {
                bail!(
                    "paged_attention: meta.{name} must be u32, got {:?}",
                    t.dtype()
                );
            }
            if !t.device().same_device(device) {
                bail!(
                    "paged_attention: meta.{name} is on {:?} but q is on {device:?}",
                    t.device()
                );
            }
        }
        if self.block_size == 0 {
            bail!("paged_attention: meta.block_size must be > 0");
        }
        Ok((num_seqs, max_blocks))
    }
}

/// Host copy of the attention metadata, validated against the tensors it indexes.
#[derive(Debug)]
pub(crate) struct HostMeta {
    /// Row-major `(num_seqs, max_blocks)`.
    pub block_tables: Vec<u32>,
    pub max_blocks: usize,
    pub cu_seqlens_q: Vec<u32>,
    pub context_lens: Vec<u32>,
}

/// Sizes of the tensors the metadata indexes into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnDims {
    pub num_tokens: usize,
    pub num_blocks: usize,
    pub block_size: usize,
}

impl HostMeta {
    /// Copies the metadata tensors to host memory (cheap on CPU) and validates every index
    /// the kernel will use, so that the kernel itself cannot go out of bounds.
    pub fn read_and_validate(meta: &PagedAttnMetadata, dims: AttnDims) -> Result<Self> {
        let (num_seqs, max_blocks) = meta.check_attention_shapes(meta.block_tables.device())?;
        let host = Self {
            block_tables: meta.block_tables.flatten_all()?.to_vec1::<u32>()?,
            max_blocks,
            cu_seqlens_q: meta.cu_seqlens_q.to_vec1::<u32>()?,
            context_lens: meta.context_lens.to_vec1::<u32>()?,
        };
        if meta.block_size != dims.block_size {
            bail!(
                "paged_attention: meta.block_size = {} but the caches have block_size {}",
                meta.block_size,
                dims.block_size
            );
        }
        if host.cu_seqlens_q.first().copied().unwrap_or(0) != 0 {
            bail!(
                "paged_attention: meta.cu_seqlens_q[0] must be 0, got {:?}",
                host.cu_seqlens_q.first()
            );
        }
        for s in 0..num_seqs {
            let (lo, hi) = (
                host.cu_seqlens_q[s] as usize,
                host.cu_seqlens_q[s + 1] as usize,
            );
            if hi < lo {
                bail!("paged_attention: meta.cu_seqlens_q is not non-decreasing at seq {s} ({lo} > {hi})");
            }
            if hi > dims.num_tokens {
                bail!(
                    "paged_attention: meta.cu_seqlens_q[{}] = {hi} exceeds num_tokens = {} of q",
                    s + 1,
                    dims.num_tokens
                );
            }
            let qlen = hi - lo;
            let ctx = host.context_lens[s] as usize;
            if qlen > ctx {
                bail!("paged_attention: seq {s} has query_len {qlen} > context_len {ctx}");
            }
            if qlen > meta.max_query_len {
                bail!(
                    "paged_attention: seq {s} has query_len {qlen} > meta.max_query_len = {}",
                    meta.max_query_len
                );
            }
            if ctx > meta.max_context_len {
                bail!(
                    "paged_attention: seq {s} has context_len {ctx} > meta.max_context_len = {}",
                    meta.max_context_len
                );
            }
            let used_blocks = ctx.div_ceil(dims.block_size);
            if used_blocks > max_blocks {
                bail!(
                    "paged_attention: seq {s} has context_len {ctx} needing {used_blocks} blocks of {} but block_tables has only {max_blocks} columns",
                    dims.block_size
                );
            }
            let row = &host.block_tables[s * max_blocks..s * max_blocks + used_blocks];
            if let Some((i, &b)) = row
                .iter()
                .enumerate()
                .find(|(_, &b)| b as usize >= dims.num_blocks)
            {
                bail!(
                    "paged_attention: block_tables[{s}][{i}] = {b} is out of range for a cache of {} blocks",
                    dims.num_blocks
                );
            }
        }
        Ok(host)
    }
}
