//! `y = x W^T` on the CPU as one single-threaded f32 GEMM per tile of `W`'s rows, the tiles
//! spread over rayon's pool. Each task owns a tile of output columns, so the threads never
//! share a cache line of `y` and need no reduction; every output element is one GEMM's dot
//! product over `K`, computed the same way whatever the number of rows of `x`.
//!
//! Where the tile comes from is a [`TileSource`]: the f32 rows of `W` themselves ([`Dense`],
//! no copy: the GEMM packs them from memory) or rows unpacked into a per-task buffer that
//! stays in L2 while it is multiplied ([`Unpacked`]: GGUF blocks dequantized, bf16 / f16
//! widened). Compared with one threaded GEMM over the whole `W`, which splits the work
//! inside the GEMM and synchronises between its blocks, the tiles keep both cores busy on
//! small-`M` problems (prefill chunks of a few dozen tokens next to decodes).

use candle_core::DType;
use rayon::prelude::*;

use super::Elem;

/// f32 elements of `W` per tile: 256 KiB, half of an AMD Zen 3 core's L2, so an unpacked
/// tile is still in cache when the GEMM reads it (measured: 8192-131072 elements per tile,
/// `benches/results/cpu-smollm2-gguf-quantized.txt` section 4).
pub(crate) const GEMM_TILE_ELEMS: usize = 1 << 16;

/// Rows of `W` per tile for rows of `k` values.
pub(crate) fn tile_rows(k: usize) -> usize {
    (GEMM_TILE_ELEMS / k.max(1)).max(8)
}

/// Rows of `W` per tile when the rows are read where they are ([`Dense`]): four tiles per
/// thread. The GEMM blocks for the caches itself, and every tile packs all of `x` again, so
/// tiles as big as load balance allows (measured on 2 AMD EPYC cores, SmolLM2-135M's shapes:
/// 64 rows of `x` 105-114 ms per forward with 2-8 tiles per matmul against 172 ms with
/// 256 KiB tiles).
pub(crate) fn dense_tile_rows(n: usize) -> usize {
    n.div_ceil(4 * rayon::current_num_threads().max(1)).max(8)
}

/// Where [`tiled_gemm`]'s tasks get f32 rows of `W` from.
pub(crate) trait TileSource: Sync {
    type Error: Send;
    /// Rows `r0..r0 + rows` of `W` as f32, `k` values each, row after row: borrowed from
    /// `W` or unpacked into `buf`.
    fn rows<'a>(
        &'a self,
        r0: usize,
        rows: usize,
        buf: &'a mut Vec<f32>,
    ) -> Result<&'a [f32], Self::Error>;
}

/// `W` stored as rows of `k` f32 (tiles borrowed, no copy), bf16 or f16 (tiles widened into
/// the task's buffer).
pub(crate) struct Dense<'w, T> {
    pub w: &'w [T],
    pub k: usize,
}

impl<T: Elem> TileSource for Dense<'_, T> {
    type Error = std::convert::Infallible;
    fn rows<'a>(
        &'a self,
        r0: usize,
        rows: usize,
        buf: &'a mut Vec<f32>,
    ) -> Result<&'a [f32], Self::Error> {
        let w = &self.w[r0 * self.k..(r0 + rows) * self.k];
        if T::DTYPE != DType::F32 {
            buf.resize(w.len(), 0.0);
        }
        Ok(T::row_f32(w, buf))
    }
}

/// `W` stored in some other row format, `row_bytes` a row: `unpack(bytes, out)` turns whole
/// rows into f32 rows of `k`.
pub(crate) struct Unpacked<'w, F> {
    pub w: &'w [u8],
    pub row_bytes: usize,
    pub k: usize,
    pub unpack: F,
}

impl<E: Send, F: Fn(&[u8], &mut [f32]) -> Result<(), E> + Sync> TileSource for Unpacked<'_, F> {
    type Error = E;
    fn rows<'a>(&'a self, r0: usize, rows: usize, buf: &'a mut Vec<f32>) -> Result<&'a [f32], E> {
        buf.resize(rows * self.k, 0.0);
        let bytes = &self.w[r0 * self.row_bytes..(r0 + rows) * self.row_bytes];
        (self.unpack)(bytes, buf.as_mut_slice())?;
        Ok(buf.as_slice())
    }
}

/// The output pointer shared by the tasks, each writing its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint column ranges of the output (see `tiled_gemm`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `y` `(t, n)` = `x W^T` with `x` `t` rows of `k` and `W` `n` rows of `k` from `src`, one
/// GEMM per tile of `tile` rows of `W`. The first error stops the remaining tiles and is
/// returned.
pub(crate) fn tiled_gemm<S: TileSource>(
    x: &[f32],
    (t, n, k): (usize, usize, usize),
    tile: usize,
    src: &S,
) -> Result<Vec<f32>, S::Error> {
    let mut y = vec![0f32; t * n];
    if t == 0 || n == 0 || k == 0 {
        return Ok(y);
    }
    let tile = tile.max(1);
    let out = OutPtr(y.as_mut_ptr());
    let failed = std::sync::Mutex::new(None);
    let task = |buf: &mut Vec<f32>, i: usize| {
        if failed.lock().map_or(true, |f| f.is_some()) {
            return;
        }
        let r0 = i * tile;
        let rows = tile.min(n - r0);
        let w = match src.rows(r0, rows, buf) {
            Ok(w) => w,
            Err(e) => {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
        };
        debug_assert_eq!(w.len(), rows * k);
        // SAFETY: `x` holds `t` rows of `k` (row stride k); `w` holds `rows` rows of `k`,
        // read as the `(k, rows)` right-hand side (row stride 1, column stride k); the
        // destination is columns `r0..r0 + rows` of `y` (`t` rows of `n`), which no other
        // task writes, and `y` outlives the parallel loop.
        unsafe {
            gemm::gemm(
                t,
                rows,
                k,
                out.at(r0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    let tiles = n.div_ceil(tile);
    if tiles == 1 {
        task(&mut Vec::new(), 0);
    } else {
        (0..tiles).into_par_iter().for_each_init(Vec::new, task);
    }
    let failed = match failed.into_inner() {
        Ok(f) => f,
        Err(poisoned) => poisoned.into_inner(),
    };
    match failed {
        Some(e) => Err(e),
        None => Ok(y),
    }
}
