//! The one linear-layer type every projection goes through: `y = x W^T + b`, plus per-token
//! multi-LoRA deltas. A layer may be *fused*: several projections that read the same input
//! (q/k/v, gate/up) concatenated along the output dimension into one weight, so one matmul
//! computes all of them; LoRA adapters still target each projection by name and are applied
//! to its slice of the fused output.

use crate::lora::LoraStack;
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use lantern_kernels::{LoraBatch, LoraWeights};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Which projection of a decoder layer a linear layer is; LoRA adapters target these by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    /// The checkpoint name of the projection (`q_proj`, ..., `down_proj`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }
}

/// How a [`Linear`] stores its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `(in, out)`: the checkpoint's weight transposed once at load, so the forward pass is
    /// a plain row-major `(T, in) x (in, out)` product (the unfused path's layout).
    Transposed,
    /// `(out, in)` as in the checkpoint; the forward pass multiplies by the transposed view
    /// (cuBLAS and candle's CPU matmul take it without a copy, so there is no load-time
    /// transpose), and on the CPU Lantern's kernels take steps by size
    /// ([`lantern_kernels::cpu_matmul`]).
    Checkpoint,
}

/// Block-quantized weights (from a GGUF file: Q8_0, Q4_0, Q4_1, Q4_K, ...) by checkpoint
/// name (`model.layers.0.self_attn.q_proj.weight`), kept in their block format. The loader
/// fills it; a [`Linear`] whose weight is here multiplies through candle's quantized matmul
/// (the activations are quantized to 8 bits per block on the fly, as llama.cpp does) and
/// never holds a dense copy.
#[derive(Debug, Default, Clone)]
pub struct QuantizedWeights {
    map: HashMap<String, Arc<QTensor>>,
}

impl QuantizedWeights {
    pub fn insert(&mut self, name: impl Into<String>, weight: QTensor) {
        self.map.insert(name.into(), Arc::new(weight));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<QTensor>> {
        self.map.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes held in block format.
    pub fn bytes(&self) -> usize {
        self.map.values().map(|q| q.storage_size_in_bytes()).sum()
    }

    /// The quantized weight of the module at `vb`'s prefix (`<prefix>.weight`), checked
    /// to be `(rows, cols)`.
    fn weight_of(&self, vb: &VarBuilder, rows: usize, cols: usize) -> Result<Option<Arc<QTensor>>> {
        let name = format!("{}.weight", vb.prefix());
        match self.map.get(&name) {
            None => Ok(None),
            Some(q) => {
                if q.shape().dims() != [rows, cols] {
                    bail!(
                        "{name}: quantized weight is {:?}, expected ({rows}, {cols})",
                        q.shape().dims()
                    );
                }
                Ok(Some(q.clone()))
            }
        }
    }
}

/// Rows `(rows, cols)` of a block-quantized CPU tensor as raw bytes (each row is
/// `cols / block_size` whole blocks), checked.
pub fn quantized_row_bytes(q: &QTensor) -> Result<(usize, usize)> {
    let (rows, cols) = q.shape().dims2()?;
    let dt = q.dtype();
    if cols % dt.block_size() != 0 {
        bail!(
            "a {dt:?} tensor of {cols} columns is not whole blocks of {}",
            dt.block_size()
        );
    }
    Ok((rows, cols / dt.block_size() * dt.type_size()))
}

/// A new `(rows, cols)` quantized tensor on `device` from raw block bytes.
pub fn quantized_from_bytes(
    bytes: &[u8],
    dtype: GgmlDType,
    (rows, cols): (usize, usize),
    device: &Device,
) -> Result<QTensor> {
    let storage = QStorage::from_data(Cow::Borrowed(bytes), device, dtype)?;
    QTensor::new(storage, (rows, cols))
}

/// Concatenates quantized `(r_i, cols)` tensors of one block type along the rows (the
/// fused q/k/v and gate/up weights); `None` when their types or widths differ.
fn concat_quantized(parts: &[Arc<QTensor>], device: &Device) -> Result<Option<QTensor>> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    let (dtype, cols) = (first.dtype(), first.shape().dims2()?.1);
    let mut rows = 0;
    let mut bytes = Vec::new();
    for q in parts {
        let (r, c) = q.shape().dims2()?;
        if q.dtype() != dtype || c != cols {
            return Ok(None);
        }
        rows += r;
        bytes.extend_from_slice(&q.data()?);
    }
    quantized_from_bytes(&bytes, dtype, (rows, cols), device).map(Some)
}

/// Whether CPU matmuls over quantized weights use Lantern's kernels
/// (`lantern_kernels::quantized_matmul` for Q4_0 / Q4_1 / Q8_0, `dequantized_matmul` for the
/// other block types where it is faster); `LANTERN_QMATMUL=candle` sends them all through
/// candle's quantized matmul instead, for A/B benchmarks.
/// Set once candle's own quantized matmul has run on the CPU in this process.
static CANDLE_CPU_QMATMUL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether candle's quantized matmul has run on the CPU in this process (K-quant weights at
/// small batches, or `LANTERN_QMATMUL=candle`). It splits its work over candle's own pool of
/// threads, pinned to cores and spinning between calls, which then compete for the cores
/// with anything else kept spinning (the runtime stops keeping rayon's workers awake).
pub fn candle_cpu_qmatmul_used() -> bool {
    CANDLE_CPU_QMATMUL.load(std::sync::atomic::Ordering::Relaxed)
}

fn own_quantized_kernel() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var("LANTERN_QMATMUL").as_deref() != Ok("candle"))
}

/// `x (T, in) W^T` for a quantized `W`, on a contiguous f32 copy of `x` (what both
/// quantized matmuls take): on the CPU Lantern's kernel for the block types it covers, its
/// tiled dequantize-and-GEMM for other types above a few rows (and always for Q5_0 / Q5_1,
/// which candle multiplies in scalar code), else candle's quantized matmul. The result comes back in `x`'s dtype.
pub(crate) fn quantized_forward(w: &QMatMul, x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = if dtype == DType::F32 {
        x.contiguous()?
    } else {
        x.to_dtype(DType::F32)?.contiguous()?
    };
    let y = match w {
        QMatMul::QTensor(q)
            if xf.device().is_cpu()
                && q.device().is_cpu()
                && lantern_kernels::quantized_matmul_supports(q.dtype())
                && own_quantized_kernel() =>
        {
            let n = q.shape().dims2()?.0;
            lantern_kernels::quantized_matmul(&xf, &q.data()?, q.dtype(), n)?
        }
        QMatMul::QTensor(q)
            if xf.device().is_cpu()
                && q.device().is_cpu()
                && lantern_kernels::dequantized_matmul_rows(q.dtype(), xf.dims2()?.0)
                && own_quantized_kernel() =>
        {
            let n = q.shape().dims2()?.0;
            lantern_kernels::dequantized_matmul(&xf, &q.data()?, q.dtype(), n)?
        }
        _ => {
            if xf.device().is_cpu() && matches!(w, QMatMul::QTensor(_)) {
                CANDLE_CPU_QMATMUL.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            w.forward(&xf)?
        }
    };
    if y.dtype() == dtype {
        Ok(y)
    } else {
        y.to_dtype(dtype)
    }
}

/// How a [`Linear`] holds its weight.
#[derive(Debug, Clone)]
enum Weight {
    /// Dense, in the layer's [`WeightLayout`].
    Dense(Tensor),
    /// Block-quantized `(out, in)` (every part, when fused, of one block type).
    Quantized(QMatMul),
    /// A fused layer whose parts are stored in different block types (a Q4_K_M file keeps
    /// some `v_proj`s in Q6_K): one quantized matmul per part, outputs side by side.
    QuantizedParts(Vec<QMatMul>),
}

/// One projection inside a (possibly fused) [`Linear`]: output columns
/// `offset..offset + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearPart {
    pub proj: Proj,
    pub offset: usize,
    pub size: usize,
}

/// A dense linear layer `(T, in) -> (T, out)` with an optional bias, made of one projection
/// or of several fused side by side (`parts`, in output-column order).
#[derive(Debug, Clone)]
pub struct Linear {
    /// Dense `(in, out)` or `(out, in)` (see `layout`), or quantized `(out, in)`.
    weight: Weight,
    layout: WeightLayout,
    /// `(out,)`.
    bias: Option<Tensor>,
    parts: Vec<LinearPart>,
    layer: usize,
    in_dim: usize,
    out_dim: usize,
}

impl Linear {
    /// Loads one projection (`vb` at e.g. `...self_attn.o_proj`): weight `(out_dim, in_dim)`
    /// and, with `bias`, `(out_dim,)`.
    /// When `quant` holds the weight (`<prefix>.weight`), it stays quantized (`layout`
    /// does not apply); the bias is dense either way.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: VarBuilder,
        quant: Option<&QuantizedWeights>,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        proj: Proj,
        layer: usize,
        layout: WeightLayout,
    ) -> Result<Self> {
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        let parts = vec![LinearPart {
            proj,
            offset: 0,
            size: out_dim,
        }];
        if let Some(q) = quant
            .map(|q| q.weight_of(&vb, out_dim, in_dim))
            .transpose()?
            .flatten()
        {
            return Ok(Self::quantized(
                Weight::Quantized(QMatMul::from_arc(q)?),
                bias,
                parts,
                layer,
                (in_dim, out_dim),
            ));
        }
        let weight = vb.get((out_dim, in_dim), "weight")?;
        Self::from_checkpoint(weight, bias, parts, layer, layout)
    }

    fn quantized(
        weight: Weight,
        bias: Option<Tensor>,
        parts: Vec<LinearPart>,
        layer: usize,
        (in_dim, out_dim): (usize, usize),
    ) -> Self {
        Self {
            weight,
            layout: WeightLayout::Checkpoint,
            bias,
            parts,
            layer,
            in_dim,
            out_dim,
        }
    }

    /// Loads several projections that read the same input and fuses them: `vb` is the parent
    /// module (e.g. `...self_attn`), `parts` the projections with their output sizes in the
    /// order their outputs are laid out (each loaded from `vb.pp(proj.hf_name())`). Weights
    /// (and biases, when `bias`) are concatenated along the output dimension.
    /// Quantized weights (all parts in `quant`) are concatenated in their block format
    /// when the parts share one block type, else kept one matmul per part.
    pub fn load_fused(
        vb: VarBuilder,
        quant: Option<&QuantizedWeights>,
        in_dim: usize,
        parts: &[(Proj, usize)],
        bias: bool,
        layer: usize,
        layout: WeightLayout,
    ) -> Result<Self> {
        let mut biases = Vec::with_capacity(parts.len());
        let mut layout_parts = Vec::with_capacity(parts.len());
        let mut quantized = Vec::with_capacity(parts.len());
        let mut offset = 0;
        for &(proj, size) in parts {
            let p = vb.pp(proj.hf_name());
            if let Some(q) = quant {
                if let Some(w) = q.weight_of(&p, size, in_dim)? {
                    quantized.push(w);
                }
            }
            if bias {
                biases.push(p.get(size, "bias")?);
            }
            layout_parts.push(LinearPart { proj, offset, size });
            offset += size;
        }
        let bias = if bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        if !quantized.is_empty() {
            if quantized.len() != parts.len() {
                bail!(
                    "layer {layer}: {} of the {} fused projections under `{}` are quantized; all or none must be",
                    quantized.len(),
                    parts.len(),
                    vb.prefix()
                );
            }
            let device = vb.device();
            let weight = match concat_quantized(&quantized, device)? {
                Some(q) => Weight::Quantized(QMatMul::from_qtensor(q)?),
                None => Weight::QuantizedParts(
                    quantized
                        .into_iter()
                        .map(QMatMul::from_arc)
                        .collect::<Result<_>>()?,
                ),
            };
            return Ok(Self::quantized(
                weight,
                bias,
                layout_parts,
                layer,
                (in_dim, offset),
            ));
        }
        let mut weights = Vec::with_capacity(parts.len());
        for &(proj, size) in parts {
            weights.push(vb.pp(proj.hf_name()).get((size, in_dim), "weight")?);
        }
        let weight = Tensor::cat(&weights, 0)?;
        drop(weights);
        Self::from_checkpoint(weight, bias, layout_parts, layer, layout)
    }

    /// `weight`: `(out, in)` as in the checkpoint.
    fn from_checkpoint(
        weight: Tensor,
        bias: Option<Tensor>,
        parts: Vec<LinearPart>,
        layer: usize,
        layout: WeightLayout,
    ) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let weight = match layout {
            WeightLayout::Transposed => weight.t()?.contiguous()?,
            WeightLayout::Checkpoint => weight,
        };
        Ok(Self {
            weight: Weight::Dense(weight),
            layout,
            bias,
            parts,
            layer,
            in_dim,
            out_dim,
        })
    }

    /// Whether the weight is held block-quantized.
    pub fn is_quantized(&self) -> bool {
        !matches!(self.weight, Weight::Dense(_))
    }

    /// The projections of this layer, in output-column order (one unless fused).
    pub fn parts(&self) -> &[LinearPart] {
        &self.parts
    }

    pub fn layer(&self) -> usize {
        self.layer
    }

    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Total output width (all parts).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x W^T + b`, plus each token's LoRA delta when `lora` is given and some token uses
    /// an adapter (base-only batches skip the LoRA path entirely). For a single projection;
    /// a fused layer goes through [`Module::forward`] and [`Linear::lora_parts`].
    pub fn forward_lora(
        &self,
        x: &Tensor,
        lora: Option<(&LoraWeights, &LoraBatch)>,
    ) -> Result<Tensor> {
        let y = self.forward(x)?;
        match lora {
            Some((w, batch)) if batch.any_lora => {
                if self.parts.len() != 1 {
                    bail!(
                        "layer {}: forward_lora on a fused linear of {} projections; use lora_parts",
                        self.layer,
                        self.parts.len()
                    );
                }
                lantern_kernels::lora_add(&y, x, w, batch)
            }
            _ => Ok(y),
        }
    }

    /// The LoRA-adjusted parts of a fused output: `y` is `self.forward(x)` (T, out); entry
    /// `i` is `Some(y_i + delta_i)` (a new `(T, size_i)` tensor) when some resident adapter
    /// targets part `i`'s projection and some token of `batch` uses an adapter, else `None`
    /// (the part is `y`'s slice unchanged; callers take their own view of it, so no copy is
    /// made).
    pub fn lora_parts(
        &self,
        y: &Tensor,
        x: &Tensor,
        stack: &LoraStack,
        batch: &LoraBatch,
    ) -> Result<Vec<Option<Tensor>>> {
        self.parts
            .iter()
            .map(|p| match stack.weights(self.layer, p.proj) {
                Some(w) if batch.any_lora => {
                    let y_p = y.narrow(1, p.offset, p.size)?;
                    lantern_kernels::lora_add(&y_p, x, w, batch).map(Some)
                }
                _ => Ok(None),
            })
            .collect()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // x: (T, in) -> (T, out)
        let y = match (&self.weight, self.layout) {
            (Weight::Dense(w), WeightLayout::Transposed) => x.matmul(w)?,
            (Weight::Dense(w), WeightLayout::Checkpoint) => matmul_checkpoint(x, w)?,
            (Weight::Quantized(w), _) => quantized_forward(w, x)?,
            (Weight::QuantizedParts(ws), _) => {
                let ys = ws
                    .iter()
                    .map(|w| quantized_forward(w, x))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&ys, 1)?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x (T, in)` times `w^T` for `w` `(out, in)`: on the CPU Lantern's kernels by step size
/// (`lantern_kernels::cpu_matmul`: skinny for decode steps, tiled GEMM for a few dozen
/// rows, candle's matmul above), elsewhere the general matmul on the transposed view.
pub(crate) fn matmul_checkpoint(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        lantern_kernels::cpu_matmul(x, w)
    } else {
        x.matmul(&w.t()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn vb_with(tensors: Vec<(&str, Tensor)>) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
    }

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A fused q/k/v layer (with biases) equals the three projections side by side, in
    /// either weight layout.
    #[test]
    fn fused_equals_separate_projections() {
        let (h, q, kv) = (8, 12, 4);
        let vb = vb_with(vec![
            ("q_proj.weight", randn(&[q, h])),
            ("q_proj.bias", randn(&[q])),
            ("k_proj.weight", randn(&[kv, h])),
            ("k_proj.bias", randn(&[kv])),
            ("v_proj.weight", randn(&[kv, h])),
            ("v_proj.bias", randn(&[kv])),
        ]);
        let x = randn(&[5, h]);
        let parts = [(Proj::Q, q), (Proj::K, kv), (Proj::V, kv)];
        for layout in [WeightLayout::Transposed, WeightLayout::Checkpoint] {
            let fused = Linear::load_fused(vb.clone(), None, h, &parts, true, 3, layout).unwrap();
            assert_eq!((fused.in_dim(), fused.out_dim()), (h, q + 2 * kv));
            assert_eq!(fused.layer(), 3);
            let y = fused.forward(&x).unwrap();
            for (p, &(proj, size)) in fused.parts().iter().zip(&parts) {
                assert_eq!((p.proj, p.size), (proj, size));
                let single = Linear::load(
                    vb.pp(proj.hf_name()),
                    None,
                    h,
                    size,
                    true,
                    proj,
                    3,
                    WeightLayout::Transposed,
                )
                .unwrap();
                let want = single.forward(&x).unwrap();
                let got = y.narrow(1, p.offset, p.size).unwrap();
                assert!(max_diff(&got, &want) < 1e-5, "{proj:?} {layout:?}");
            }
        }
    }

    fn quantize(w: &Tensor, dt: GgmlDType) -> QTensor {
        QTensor::quantize(w, dt).unwrap()
    }

    /// Largest |a - b| relative to the largest |b|.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let scale = b
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        max_diff(a, b) / scale
    }

    /// A quantized projection computes `x W^T` for the dequantized `W`, up to the 8-bit
    /// quantization of the activations (about 1% of the output scale), for the block types
    /// GGUF files use; the dense path over the same dequantized weights is the reference.
    #[test]
    fn quantized_projection_matches_its_dequantized_weight() {
        let (h, out) = (256, 72);
        let w = randn(&[out, h]);
        let x = randn(&[5, h]);
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let qw = quantize(&w, dt);
            let dense_w = qw.dequantize(&Device::Cpu).unwrap();
            let mut quant = QuantizedWeights::default();
            quant.insert("o_proj.weight", qw);
            let vb = vb_with(vec![("o_proj.weight", dense_w.clone())]);
            let ql = Linear::load(
                vb.pp("o_proj"),
                Some(&quant),
                h,
                out,
                false,
                Proj::O,
                0,
                WeightLayout::Checkpoint,
            )
            .unwrap();
            assert!(ql.is_quantized());
            let dense = Linear::load(
                vb.pp("o_proj"),
                None,
                h,
                out,
                false,
                Proj::O,
                0,
                WeightLayout::Checkpoint,
            )
            .unwrap();
            assert!(!dense.is_quantized());
            let (got, want) = (ql.forward(&x).unwrap(), dense.forward(&x).unwrap());
            assert_eq!(got.dims(), &[5, out]);
            let d = rel_diff(&got, &want);
            assert!(d < 2e-2, "{dt:?}: relative difference {d}");
            // Not the dense weights by accident: the quantization error is visible.
            let exact = x.matmul(&w.t().unwrap()).unwrap();
            assert!(rel_diff(&got, &exact) > 1e-4, "{dt:?}");
        }
    }

    /// Fused quantized q/k/v: one concatenated block tensor when the parts share a block
    /// type, one matmul per part when they do not; both equal the separate projections.
    #[test]
    fn fused_quantized_parts_equal_separate_projections() {
        let (h, q, kv) = (256, 64, 32);
        let ws = [randn(&[q, h]), randn(&[kv, h]), randn(&[kv, h])];
        let x = randn(&[3, h]);
        let vb = vb_with(vec![
            ("q_proj.bias", randn(&[q])),
            ("k_proj.bias", randn(&[kv])),
            ("v_proj.bias", randn(&[kv])),
        ]);
        let parts = [(Proj::Q, q), (Proj::K, kv), (Proj::V, kv)];
        for types in [
            [GgmlDType::Q8_0; 3],
            [GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K],
        ] {
            let mut quant = QuantizedWeights::default();
            for ((p, _), (w, dt)) in parts.iter().zip(ws.iter().zip(types)) {
                quant.insert(format!("{}.weight", p.hf_name()), quantize(w, dt));
            }
            let fused = Linear::load_fused(
                vb.clone(),
                Some(&quant),
                h,
                &parts,
                true,
                0,
                WeightLayout::Checkpoint,
            )
            .unwrap();
            let concatenated = matches!(fused.weight, Weight::Quantized(_));
            assert_eq!(concatenated, types[0] == types[2], "{types:?}");
            assert_eq!(fused.out_dim(), q + 2 * kv);
            let y = fused.forward(&x).unwrap();
            for p in fused.parts() {
                let single = Linear::load(
                    vb.pp(p.proj.hf_name()),
                    Some(&quant),
                    h,
                    p.size,
                    true,
                    p.proj,
                    0,
                    WeightLayout::Checkpoint,
                )
                .unwrap();
                let want = single.forward(&x).unwrap();
                let got = y.narrow(1, p.offset, p.size).unwrap();
                assert!(rel_diff(&got, &want) < 1e-6, "{types:?} {:?}", p.proj);
            }
        }
    }

    /// Some parts quantized and some dense is refused with a message, not mixed silently.
    #[test]
    fn partly_quantized_fused_layer_is_refused() {
        let h = 64;
        let vb = vb_with(vec![
            ("gate_proj.weight", randn(&[32, h])),
            ("up_proj.weight", randn(&[32, h])),
        ]);
        let mut quant = QuantizedWeights::default();
        quant.insert(
            "gate_proj.weight",
            quantize(&randn(&[32, h]), GgmlDType::Q8_0),
        );
        let err = Linear::load_fused(
            vb,
            Some(&quant),
            h,
            &[(Proj::Gate, 32), (Proj::Up, 32)],
            false,
            2,
            WeightLayout::Checkpoint,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("1 of the 2 fused projections"), "{err}");
    }
}
