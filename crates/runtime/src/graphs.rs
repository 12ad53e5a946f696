//! CUDA graphs for decode-only steps (on by default on CUDA devices; `--enforce-eager` off).
//!
//! A decode step of an 8B model is ~400 kernel launches and as many allocations; at small
//! batch sizes the host cannot issue them as fast as the GPU runs them. A captured graph
//! replays the whole forward pass with one launch.
//!
//! How:
//! * A step qualifies when every sequence feeds exactly one token, wants its logits, and uses
//!   no LoRA adapter, with at most the largest captured batch size of sequences.
//! * Graphs are keyed by (padded batch size `b`, block-table width `w`): `b` is the next
//!   size of [`BATCH_SIZES`], `w` the next power of two (>= [`MIN_TABLE_WIDTH`]) of the
//!   longest block table, so a graph's attention launch is sized for the contexts it serves.
//!   Each graph is captured the first time its key is seen (one eager warm-up pass fills
//!   candle's cache of small host-to-device parameter uploads, then the pass is captured).
//! * Inputs live in persistent device buffers whose addresses the graph captured: one u32
//!   buffer laid out per key as `[ids b | positions b | context_lens b | cu_seqlens b+1 |
//!   block_tables b*w]` and one i64 buffer of slots, refilled with one host-to-device copy each
//!   before the replay ([`lantern_kernels::copy_from_host`]). Padding rows are one-token
//!   sequences that write nothing (slot -1) and read block 0 (the null block).
//! * The graph ends by copying the f32 logits into a persistent `(max_batch, vocab)` buffer;
//!   every other allocation of the pass is made and freed inside the graph. The caller gets a
//!   copy of the first rows of that buffer (the next replay overwrites it) and samples them
//!   eagerly.
//! * Graph and eager passes agree to rounding, not bit for bit: a graph sizes the attention's
//!   split-K partition for the longest context its key serves, the eager pass for the batch's
//!   longest context, so sums run in a different order (bf16 greedy picks can flip on
//!   near-ties; f32 parity is exact).
//! * A capture that fails (an op that cannot be captured) is logged once and its key runs
//!   eagerly from then on; results never depend on whether a graph ran.
//! * A capture records everything issued to the device's stream (one per device, shared by
//!   all threads) while it lasts, so nothing else may use the device meanwhile: in the server
//!   only the engine thread does once the model is loaded; tests that capture run one at a time.

use std::collections::{HashMap, HashSet};

use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{copy_from_host, PagedAttnMetadata};
use lantern_models::{BatchInputs, CausalLm, LayerKvCache};

use crate::error::{Result, RuntimeError};

/// Padded batch sizes graphs are captured for (those up to `--max-num-seqs`).
pub const BATCH_SIZES: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// Smallest block-table width of a graph (in blocks).
pub const MIN_TABLE_WIDTH: usize = 16;

/// One decode row of a step, on the host.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRow<'a> {
    pub token: u32,
    pub position: u32,
    pub slot: i64,
    /// The sequence's blocks covering `context_len` tokens.
    pub table: &'a [u32],
    pub context_len: u32,
}

/// A captured graph. `CudaGraph` holds raw driver handles and is not `Send`; the runner (and
/// so this) is created on one thread and then used only by the engine thread, one call at a
/// time, which is what the driver requires of graph objects.
struct Captured(CudaGraph);

// SAFETY: see `Captured`: the graph is only ever used by the thread that owns the runner,
// never concurrently.
unsafe impl Send for Captured {}

/// Persistent buffers and the graphs captured over them.
pub struct DecodeGraphs {
    device: Device,
    block_size: usize,
    max_batch: usize,
    max_width: usize,
    /// `[ids | positions | context_lens | cu_seqlens | block_tables]` per key (see module docs).
    ints: Tensor,
    slots: Tensor,
    /// (max_batch,) u32 `0, 1, ..`: the logits rows (every row is sampled).
    rows: Tensor,
    /// (max_batch, vocab) f32: the logits of the last replay.
    logits: Tensor,
    graphs: HashMap<(usize, usize), Captured>,
    failed: HashSet<(usize, usize)>,
    /// Reused host staging of `ints`.
    host_ints: Vec<u32>,
    host_slots: Vec<i64>,
}

impl std::fmt::Debug for DecodeGraphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeGraphs")
            .field("max_batch", &self.max_batch)
            .field("max_width", &self.max_width)
            .field("captured", &self.graphs.keys().collect::<Vec<_>>())
            .field("failed", &self.failed)
            .finish()
    }
}

fn graph_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Device(format!("CUDA graph: {what}: {e}"))
}

impl DecodeGraphs {
    /// Buffers for batches of up to `max_num_seqs` sequences (rounded up to a size of
    /// [`BATCH_SIZES`], at most 256) on the model's CUDA device.
    pub fn new(model: &CausalLm, block_size: usize, max_num_seqs: usize) -> Result<Self> {
        let device = model.device().clone();
        if !device.is_cuda() {
            return Err(RuntimeError::Device(
                "CUDA graphs need a CUDA device".into(),
            ));
        }
        let max_batch = BATCH_SIZES
            .iter()
            .copied()
            .find(|&b| b >= max_num_seqs.max(1))
            .unwrap_or(BATCH_SIZES[BATCH_SIZES.len() - 1]);
        let cfg = model.config();
        let max_width = cfg
            .max_position_embeddings
            .div_ceil(block_size.max(1))
            .next_power_of_two()
            .max(MIN_TABLE_WIDTH);
        let ints_len = 4 * max_batch + 1 + max_batch * max_width;
        Ok(Self {
            ints: Tensor::zeros(ints_len, DType::U32, &device)?,
            slots: Tensor::zeros(max_batch, DType::I64, &device)?,
            rows: Tensor::arange(0u32, max_batch as u32, &device)?,
            logits: Tensor::zeros((max_batch, cfg.vocab_size), DType::F32, &device)?,
            device,
            block_size,
            max_batch,
            max_width,
            graphs: HashMap::new(),
            failed: HashSet::new(),
            host_ints: Vec::new(),
            host_slots: Vec::new(),
        })
    }

    /// The graph key of a step, or `None` when no graph can serve it.
    fn key(&self, rows: &[DecodeRow<'_>]) -> Option<(usize, usize)> {
        let n = rows.len();
        if n == 0 || n > self.max_batch {
            return None;
        }
        let b = BATCH_SIZES.iter().copied().find(|&b| b >= n)?;
        let longest = rows.iter().map(|r| r.table.len()).max().unwrap_or(1);
        let w = longest.next_power_of_two().max(MIN_TABLE_WIDTH);
        if w > self.max_width {
            return None;
        }
        Some((b, w))
    }

    /// Views of the persistent buffers for key (b, w), as the model's batch.
    fn batch(&self, b: usize, w: usize) -> Result<BatchInputs> {
        let ints = &self.ints;
        let ids = ints.narrow(0, 0, b)?;
        let positions = ints.narrow(0, b, b)?;
        let context_lens = ints.narrow(0, 2 * b, b)?;
        let cu = ints.narrow(0, 3 * b, b + 1)?;
        let tables = ints.narrow(0, 4 * b + 1, b * w)?.reshape((b, w))?;
        let attn = PagedAttnMetadata {
            slot_mapping: self.slots.narrow(0, 0, b)?,
            block_tables: tables,
            cu_seqlens_q: cu,
            context_lens,
            max_query_len: 1,
            // Sizes the attention's context splits for the longest context this key serves.
            max_context_len: w * self.block_size,
            block_size: self.block_size,
        };
        Ok(BatchInputs {
            input_ids: ids,
            positions,
            attn,
            // Every row is sampled. A view of a persistent buffer, like every input: the
            // graph keeps the addresses it was captured with.
            logits_indices: self.rows.narrow(0, 0, b)?,
            lora: None,
        })
    }

    /// Fills the persistent inputs for key (b, w) from `rows` (padding rows after them).
    fn upload(&mut self, rows: &[DecodeRow<'_>], b: usize, w: usize) -> Result<()> {
        let n = rows.len();
        let h = &mut self.host_ints;
        h.clear();
        h.extend(rows.iter().map(|r| r.token));
        h.resize(b, 0);
        h.extend(rows.iter().map(|r| r.position));
        h.resize(2 * b, 0);
        h.extend(rows.iter().map(|r| r.context_len));
        h.resize(3 * b, 1); // padding rows: one token of context (block 0, never written)
        h.extend((0..=b).map(|i| i as u32)); // one query token per row
        for r in rows {
            if r.table.len() > w {
                return Err(RuntimeError::InvalidBatch(format!(
                    "block table of {} blocks exceeds the graph width {w}",
                    r.table.len()
                )));
            }
            h.extend_from_slice(r.table);
            h.resize(h.len() + (w - r.table.len()), 0);
        }
        h.resize(4 * b + 1 + b * w, 0);
        let s = &mut self.host_slots;
        s.clear();
        s.extend(rows.iter().map(|r| r.slot));
        s.resize(b, -1); // padding rows write nothing
        debug_assert!(n <= b);
        copy_from_host(&self.ints.narrow(0, 0, h.len())?, h)?;
        copy_from_host(&self.slots.narrow(0, 0, b)?, s)?;
        Ok(())
    }

    /// Captures the graph of key (b, w); the inputs must already be uploaded.
    fn capture(
        &mut self,
        model: &CausalLm,
        kv: &[LayerKvCache],
        b: usize,
        w: usize,
    ) -> Result<CudaGraph> {
        let Device::Cuda(cuda) = &self.device else {
            return Err(RuntimeError::Device(
                "CUDA graphs need a CUDA device".into(),
            ));
        };
        let batch = self.batch(b, w)?;
        let out = self.logits.narrow(0, 0, b)?;
        // Small host-to-device parameter uploads inside candle's ops are served from a
        // cache while this guard lives; the eager pass fills it (and loads every kernel
        // module, so nothing is loaded during the capture).
        let _cache = cuda.enable_cuda_graph_htod_cache();
        {
            let logits = model.forward(&batch, kv)?;
            out.slice_set(&logits, 0, 0)?;
        }
        let stream = cuda.cuda_stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| graph_err("begin capture", e))?;
        // Everything the pass allocates is dropped inside this scope, i.e. freed inside the
        // graph, before the capture ends.
        let pass = (|| -> candle_core::Result<()> {
            let logits = model.forward(&batch, kv)?;
            out.slice_set(&logits, 0, 0)
        })();
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        pass.map_err(|e| graph_err("capturing the forward pass", e))?;
        match ended {
            Ok(Some(g)) => {
                g.upload().map_err(|e| graph_err("upload", e))?;
                Ok(g)
            }
            Ok(None) => Err(graph_err("end capture", "no graph was captured")),
            Err(e) => Err(graph_err("end capture / instantiate", e)),
        }
    }

    /// Runs a decode-only step through a graph. Returns the f32 logits `(rows.len(), vocab)`,
    /// or `None` when no graph serves this step (the caller then runs it eagerly).
    pub fn run(
        &mut self,
        model: &CausalLm,
        kv: &[LayerKvCache],
        rows: &[DecodeRow<'_>],
    ) -> Result<Option<Tensor>> {
        let Some((b, w)) = self.key(rows) else {
            return Ok(None);
        };
        if self.failed.contains(&(b, w)) {
            return Ok(None);
        }
        self.upload(rows, b, w)?;
        if !self.graphs.contains_key(&(b, w)) {
            let t0 = std::time::Instant::now();
            match self.capture(model, kv, b, w) {
                Ok(g) => {
                    tracing::info!(
                        "CUDA graph captured for batch {b}, block-table width {w} ({:.0} ms)",
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                    self.graphs.insert((b, w), Captured(g));
                }
                Err(e) => {
                    tracing::warn!(
                        "CUDA graph capture failed for batch {b}, width {w}; those steps run eagerly: {e}"
                    );
                    self.failed.insert((b, w));
                    return Ok(None);
                }
            }
        }
        let Some(g) = self.graphs.get(&(b, w)) else {
            return Ok(None);
        };
        g.0.launch().map_err(|e| graph_err("launch", e))?;
        // A copy: the next replay overwrites the persistent buffer, and callers may keep a
        // step's logits (tests do). At batch 256 this is 131 MB, ~60 us of a ~14 ms step.
        Ok(Some(self.logits.narrow(0, 0, rows.len())?.copy()?))
    }

    /// Number of graphs captured so far.
    pub fn num_captured(&self) -> usize {
        self.graphs.len()
    }
}
