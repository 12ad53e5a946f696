//! `y = x W^T` on the CPU with `W` kept in a GGUF block format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). Up to
//! [`QUANTIZED_INT8_MAX_ROWS`] rows of `x` (decode steps, bound by streaming `W`) the
//! activations are quantized to 8 bits per block of 32 and every block's dot product is
//! integer multiply-adds (see `cpu::qmatmul`); bigger steps (prefill, bound by arithmetic,
//! where AVX2's integer path does no better than f32 FMAs) dequantize `W` a slice of rows
//! at a time (a few MiB) and multiply with candle's f32 GEMM. Other block types go through
//! candle's quantized matmul in the model crate.

use candle_core::quantized::GgmlDType;
use candle_core::{bail, DType, Device, Result, Storage, Tensor};

use crate::cpu::qmatmul::{self as cpu_qmatmul, dequantize_rows, qmatmul, Format, QK};
use crate::cpu::tiled_gemm::{tile_rows, tiled_gemm, Unpacked};

/// Elements of `W` dequantized at a time by the GEMM path (8 MiB of f32; 1 MiB slices
/// measured slower: more, smaller GEMM calls).
const DEQUANT_CHUNK_ELEMS: usize = 1 << 21;

/// Up to this many rows of `x` the integer path runs; above it dequantize-and-GEMM. The
/// GEMM path pays for dequantizing every weight once per call (~90 ms per SmolLM2-135M
/// forward on 2 AMD EPYC cores) and then runs at f32 GEMM speed, about twice the integer
/// path's per-row rate: they break even near 50 rows (`benches/results/cpu-smollm2-gguf-quantized.txt`).
pub const QUANTIZED_INT8_MAX_ROWS: usize = 24;

fn format(dtype: GgmlDType) -> Option<Format> {
    match dtype {
        GgmlDType::Q4_0 => Some(Format::Q4_0),
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q5_0 => Some(Format::Q5_0),
        GgmlDType::Q5_1 => Some(Format::Q5_1),
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        _ => None,
    }
}

/// Whether [`quantized_matmul`] computes on weights of block type `dtype`.
pub fn quantized_matmul_supports(dtype: GgmlDType) -> bool {
    format(dtype).is_some()
}

/// `x` `(T, K)` f32 on the CPU times `W^T`, where `w` holds `N` rows of `K / 32` blocks of
/// `dtype` (ggml's layout, as in a GGUF file): `(T, N)` f32.
pub fn quantized_matmul(x: &Tensor, w: &[u8], dtype: GgmlDType, n: usize) -> Result<Tensor> {
    quantized_matmul_path(x, w, dtype, n, QuantizedMatmulPath::Auto)
}

/// Which computation [`quantized_matmul_path`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizedMatmulPath {
    /// By the number of rows of `x` (see [`QUANTIZED_INT8_MAX_ROWS`]).
    Auto,
    /// Activations quantized to 8 bits, integer dot products.
    Int8,
    /// Weights dequantized a cache-sized tile at a time per thread, f32 GEMM.
    Gemm,
    /// Weights dequantized 8 MiB at a time, candle's threaded f32 matmul per slice.
    CandleGemm,
}

/// Checks `x` `(T, K)` and `w` (`N` rows of `K / block` blocks of `block_bytes` bytes) for
/// one of the matmuls below (`what`), and returns `x` as a contiguous f32 CPU tensor with
/// `(T, K)`.
fn checked_input(
    what: &str,
    x: &Tensor,
    w: &[u8],
    dtype: GgmlDType,
    (n, block, block_bytes): (usize, usize, usize),
) -> Result<(Tensor, usize, usize)> {
    let (t, k) = x.dims2()?;
    if k == 0 || k % block != 0 {
        bail!("{what}: K = {k} is not a whole number of {block}-element {dtype:?} blocks");
    }
    let want = n * (k / block) * block_bytes;
    if w.len() != want {
        bail!(
            "{what}: {n} rows of {k} {dtype:?} values take {want} bytes, got {}",
            w.len()
        );
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        bail!(
            "{what}: x must be f32 on the CPU (got {:?} on {:?})",
            x.dtype(),
            x.device()
        );
    }
    Ok((x.contiguous()?, t, k))
}

/// `f` on the values of `x` (contiguous, f32, on the CPU: see [`checked_input`]), its
/// `(T, N)` result as a tensor.
fn on_cpu_values(
    what: &str,
    x: &Tensor,
    (t, n): (usize, usize),
    f: impl FnOnce(&[f32]) -> Result<Vec<f32>>,
) -> Result<Tensor> {
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("{what}: x is not in CPU memory");
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{what}: x is not contiguous");
    };
    let y = f(&data[start..end])?;
    drop(storage);
    Tensor::from_vec(y, (t, n), &Device::Cpu)
}

/// [`quantized_matmul`] on a chosen path (benchmarks compare them).
pub fn quantized_matmul_path(
    x: &Tensor,
    w: &[u8],
    dtype: GgmlDType,
    n: usize,
    path: QuantizedMatmulPath,
) -> Result<Tensor> {
    const WHAT: &str = "quantized_matmul";
    let Some(fmt) = format(dtype) else {
        bail!("{WHAT}: {dtype:?} weights are not supported (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)");
    };
    let (x, t, k) = checked_input(WHAT, x, w, dtype, (n, QK, fmt.block_bytes()))?;
    if n == 0 || t == 0 {
        return Tensor::zeros((t, n), DType::F32, &Device::Cpu);
    }
    let path = match path {
        QuantizedMatmulPath::Auto if t > QUANTIZED_INT8_MAX_ROWS => QuantizedMatmulPath::Gemm,
        QuantizedMatmulPath::Auto => QuantizedMatmulPath::Int8,
        p => p,
    };
    if path == QuantizedMatmulPath::CandleGemm {
        return dequant_gemm(&x, w, fmt, (n, k), (DEQUANT_CHUNK_ELEMS / k).max(64));
    }
    on_cpu_values(WHAT, &x, (t, n), |x| {
        Ok(if path == QuantizedMatmulPath::Gemm {
            let tile = tile_rows(k);
            cpu_qmatmul::dequant_gemm(x, w, fmt, (t, n, k), tile)
        } else {
            qmatmul(x, w, fmt, t, n, k)
        })
    })
}

/// Rows of `x` up to which candle's quantized matmul (integer dot products with AVX2 for the
/// K-quants) runs the block types [`quantized_matmul`] does not; above it
/// [`dequantized_matmul`] is faster.
pub const CANDLE_QMATMUL_MAX_ROWS: usize = 8;

/// Whether `x W^T` with `rows` rows of `x` and `W` in `dtype` blocks should go through
/// [`dequantized_matmul`] rather than candle's quantized matmul (types [`quantized_matmul`]
/// does not cover).
pub fn dequantized_matmul_rows(dtype: GgmlDType, rows: usize) -> bool {
    match dtype {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => false,
        _ => rows > CANDLE_QMATMUL_MAX_ROWS,
    }
}

/// `x` `(T, K)` f32 on the CPU times `W^T` for `W` in any of candle's block types (ggml's
/// layout, `N` rows): each rayon task dequantizes a cache-sized tile of `W`'s rows with
/// candle's block code and multiplies it in place with f32 GEMM, as [`quantized_matmul`]'s
/// GEMM path does for its own formats.
pub fn dequantized_matmul(x: &Tensor, w: &[u8], dtype: GgmlDType, n: usize) -> Result<Tensor> {
    if format(dtype).is_some() {
        return quantized_matmul_path(x, w, dtype, n, QuantizedMatmulPath::Gemm);
    }
    const WHAT: &str = "dequantized_matmul";
    let (x, t, k) = checked_input(
        WHAT,
        x,
        w,
        dtype,
        (n, dtype.block_size(), dtype.type_size()),
    )?;
    let unpack = |bytes: &[u8], out: &mut [f32]| -> Result<()> {
        // candle reads the blocks in place and asserts their alignment: hand it an 8-byte
        // aligned copy of the tile (a fraction of the f32 tile's size).
        let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `aligned` holds at least `bytes.len()` bytes; u64 has no invalid bit patterns.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), bytes.len())
        };
        dst.copy_from_slice(bytes);
        let blocks = dtype.from_data(std::borrow::Cow::Borrowed(dst));
        match blocks.dequantize(out.len())? {
            candle_core::CpuStorage::F32(v) if v.len() == out.len() => {
                out.copy_from_slice(&v);
                Ok(())
            }
            _ => bail!("dequantized_matmul: {dtype:?} blocks did not dequantize to f32"),
        }
    };
    let tile = tile_rows(k);
    on_cpu_values(WHAT, &x, (t, n), |x| {
        let row_bytes = k / dtype.block_size() * dtype.type_size();
        let src = Unpacked {
            w,
            row_bytes,
            k,
            unpack,
        };
        tiled_gemm(x, (t, n, k), tile, &src)
    })
}

/// The GEMM path: `W` dequantized `chunk` rows at a time, each slice multiplied with
/// candle's f32 matmul; the slices' outputs side by side.
fn dequant_gemm(
    x: &Tensor,
    w: &[u8],
    fmt: Format,
    (n, k): (usize, usize),
    chunk: usize,
) -> Result<Tensor> {
    let row_bytes = k / QK * fmt.block_bytes();
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    let mut buf = Vec::new();
    for r0 in (0..n).step_by(chunk) {
        let rows = chunk.min(n - r0);
        buf.resize(rows * k, 0f32);
        dequantize_rows(
            &w[r0 * row_bytes..(r0 + rows) * row_bytes],
            fmt,
            k,
            &mut buf,
        );
        let wt = Tensor::from_slice(&buf, (rows, k), &Device::Cpu)?;
        parts.push(x.matmul(&wt.t()?)?);
    }
    if parts.len() == 1 {
        parts
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("no rows".into()))
    } else {
        Tensor::cat(&parts, 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;

    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let m = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap()
    }

    /// Every path against candle's f32 matmul over the dequantized weights (the blocks
    /// written by candle's quantizer, i.e. ggml's layout): the GEMM paths (chosen above
    /// `QUANTIZED_INT8_MAX_ROWS` rows; tiles of any size) to f32 rounding, the integer path
    /// within the activation quantization; bad shapes are refused.
    #[test]
    fn both_paths_match_dequantized_weights() {
        let dev = Device::Cpu;
        let (k, n) = (96, 200);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let t = QUANTIZED_INT8_MAX_ROWS + 8;
        let x = Tensor::randn(0f32, 1.0, (t, k), &dev).unwrap();
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
        ] {
            assert!(quantized_matmul_supports(dt));
            let q = QTensor::quantize(&w, dt).unwrap();
            let bytes = q.data().unwrap();
            let wd = q.dequantize(&dev).unwrap();
            let want = x.matmul(&wd.t().unwrap()).unwrap();
            let gemm = quantized_matmul(&x, &bytes, dt, n).unwrap();
            assert!(rel_diff(&gemm, &want) < 1e-5, "{dt:?} gemm");
            let fmt = format(dt).unwrap();
            let chunked = dequant_gemm(&x, &bytes, fmt, (n, k), 64).unwrap();
            assert_eq!(chunked.dims(), &[t, n]);
            assert!(rel_diff(&chunked, &want) < 1e-5, "{dt:?} gemm in 4 slices");
            let candle =
                quantized_matmul_path(&x, &bytes, dt, n, QuantizedMatmulPath::CandleGemm).unwrap();
            assert!(rel_diff(&candle, &want) < 1e-5, "{dt:?} candle gemm");
            // Tiles of 1, 7 (the last one short) and all 200 rows, each on its own thread.
            let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for tile in [1, 7, n] {
                let y = cpu_qmatmul::dequant_gemm(&xv, &bytes, fmt, (t, n, k), tile);
                let y = Tensor::from_vec(y, (t, n), &dev).unwrap();
                assert!(rel_diff(&y, &want) < 1e-5, "{dt:?} gemm tiles of {tile}");
            }
            // One row still takes the GEMM path when asked to.
            let x1 = x.narrow(0, 3, 1).unwrap();
            let g1 = quantized_matmul_path(&x1, &bytes, dt, n, QuantizedMatmulPath::Gemm).unwrap();
            assert!(
                rel_diff(&g1, &want.narrow(0, 3, 1).unwrap()) < 1e-5,
                "{dt:?} gemm, 1 row"
            );
            let x8 = x.narrow(0, 0, 8).unwrap();
            let int8 = quantized_matmul(&x8, &bytes, dt, n).unwrap();
            let d = rel_diff(&int8, &want.narrow(0, 0, 8).unwrap());
            assert!(d < 2e-2 && d > 1e-6, "{dt:?} int8 path: {d}");
            assert!(quantized_matmul(&x, &bytes[1..], dt, n).is_err());
            assert!(quantized_matmul(&x.narrow(1, 0, 48).unwrap(), &bytes, dt, n).is_err());
        }
        assert!(!quantized_matmul_supports(GgmlDType::Q4K));
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let bytes = q.data().unwrap();
        let e = quantized_matmul(&x, &bytes, GgmlDType::Q6K, n).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }

    /// The tiled path for candle's other block types (K-quants) against candle's own
    /// dequantization, over several tiles; `dequantized_matmul_rows` keeps few-row steps on
    /// candle's integer matmul; bad shapes are refused.
    #[test]
    fn dequantized_matmul_covers_k_quants() {
        let dev = Device::Cpu;
        let (k, n, t) = (512, 300, 20);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (t, k), &dev).unwrap();
        for dt in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5K] {
            let q = QTensor::quantize(&w, dt).unwrap();
            let bytes = q.data().unwrap();
            let want = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap();
            let got = dequantized_matmul(&x, &bytes, dt, n).unwrap();
            assert!(rel_diff(&got, &want) < 1e-5, "{dt:?}");
            assert!(!dequantized_matmul_rows(dt, CANDLE_QMATMUL_MAX_ROWS));
            assert!(dequantized_matmul_rows(dt, CANDLE_QMATMUL_MAX_ROWS + 1));
            assert!(dequantized_matmul(&x, &bytes[..bytes.len() - 1], dt, n).is_err());
            let x_bad = x.narrow(1, 0, 256 + 32).unwrap();
            assert!(dequantized_matmul(&x_bad, &bytes, dt, n).is_err());
        }
        assert!(!dequantized_matmul_rows(GgmlDType::F32, 100));
        // The formats of the integer kernel take its GEMM path.
        let q = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
        let want = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap();
        let got = dequantized_matmul(&x, &q.data().unwrap(), GgmlDType::Q5_0, n).unwrap();
        assert!(rel_diff(&got, &want) < 1e-5);
    }
}
