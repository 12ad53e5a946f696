//! CPU scatter of key/value rows into a contiguous paged cache.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};

use super::Elem;

/// Writes `rows` `(num_tokens, num_kv_heads, head_dim)` (unit stride on the last dim) into
/// `cache` `(num_blocks, block_size, num_kv_heads, head_dim)` (contiguous) at `slots`
/// `(num_tokens,)` i64. Negative slots are skipped. All slots are checked before any write.
pub(crate) fn write_kv_cache_cpu(
    cache: &mut CpuStorage,
    cache_l: &Layout,
    rows: &CpuStorage,
    rows_l: &Layout,
    slots: &CpuStorage,
    slots_l: &Layout,
) -> Result<()> {
    let slots = read_slots(slots, slots_l)?;
    match (cache, rows) {
        (CpuStorage::F32(d), CpuStorage::F32(r)) => scatter(d, cache_l, r, rows_l, &slots, copy),
        (CpuStorage::F16(d), CpuStorage::F16(r)) => scatter(d, cache_l, r, rows_l, &slots, copy),
        (CpuStorage::BF16(d), CpuStorage::BF16(r)) => scatter(d, cache_l, r, rows_l, &slots, copy),
        // A narrower (or wider) cache than the activations: converted through f32.
        (CpuStorage::F16(d), CpuStorage::F32(r)) => {
            scatter(d, cache_l, r, rows_l, &slots, convert_row)
        }
        (CpuStorage::F16(d), CpuStorage::BF16(r)) => {
            scatter(d, cache_l, r, rows_l, &slots, convert_row)
        }
        (CpuStorage::BF16(d), CpuStorage::F32(r)) => {
            scatter(d, cache_l, r, rows_l, &slots, convert_row)
        }
        (CpuStorage::BF16(d), CpuStorage::F16(r)) => {
            scatter(d, cache_l, r, rows_l, &slots, convert_row)
        }
        (CpuStorage::F32(d), CpuStorage::F16(r)) => {
            scatter(d, cache_l, r, rows_l, &slots, convert_row)
        }
        (CpuStorage::F32(d), CpuStorage::BF16(r)) => {
            scatter(d, cache_l, r, rows_l, &slots, convert_row)
        }
        (cache, rows) => bail!(
            "write_kv_cache: cache dtype {:?} with k/v dtype {:?} is not supported (f32, f16, bf16)",
            cache.dtype(),
            rows.dtype()
        ),
    }
}

/// Reads a 1-D (possibly strided) i64 slot mapping.
fn read_slots(slots: &CpuStorage, layout: &Layout) -> Result<Vec<i64>> {
    let data: &[i64] = slots.as_slice()?;
    let (&[n], &[stride]) = (layout.dims(), layout.stride()) else {
        bail!(
            "write_kv_cache: slot_mapping must be 1-D, got shape {:?}",
            layout.shape()
        );
    };
    let start = layout.start_offset();
    (0..n)
        .map(|i| match data.get(start + i * stride) {
            Some(&s) => Ok(s),
            None => bail!("write_kv_cache: slot_mapping layout exceeds its storage"),
        })
        .collect()
}

fn scatter<D: Copy, S: Copy>(
    dst: &mut [D],
    cache_l: &Layout,
    src: &[S],
    rows_l: &Layout,
    slots: &[i64],
    copy_row: impl Fn(&[S], &mut [D]),
) -> Result<()> {
    let &[num_blocks, block_size, num_kv_heads, head_dim] = cache_l.dims() else {
        bail!(
            "write_kv_cache: cache must be 4-D, got shape {:?}",
            cache_l.shape()
        );
    };
    let Some((cache_start, cache_end)) = cache_l.contiguous_offsets() else {
        bail!(
            "write_kv_cache: cache must be contiguous (got strides {:?})",
            cache_l.stride()
        );
    };
    if cache_end > dst.len() {
        bail!(
            "write_kv_cache: cache layout window {cache_start}..{cache_end} exceeds storage of {} elements",
            dst.len()
        );
    }
    let (&[num_tokens, rows_heads, rows_dim], &[s0, s1, s2]) = (rows_l.dims(), rows_l.stride())
    else {
        bail!(
            "write_kv_cache: k/v must be 3-D, got shape {:?}",
            rows_l.shape()
        );
    };
    if (num_tokens, rows_heads, rows_dim) != (slots.len(), num_kv_heads, head_dim) {
        bail!(
            "write_kv_cache: k/v shape {:?} does not match slot_mapping length {} and cache heads/head_dim ({num_kv_heads}, {head_dim})",
            rows_l.shape(),
            slots.len()
        );
    }
    if s2 != 1 && head_dim > 1 {
        bail!(
            "write_kv_cache: k/v rows must have unit stride on head_dim, got strides {:?}",
            rows_l.stride()
        );
    }
    if num_tokens == 0 || num_kv_heads == 0 || head_dim == 0 {
        return Ok(());
    }
    // Largest element index read from `src`: every row start plus head_dim.
    let src_start = rows_l.start_offset();
    let src_last = src_start + (num_tokens - 1) * s0 + (num_kv_heads - 1) * s1 + head_dim;
    if src_last > src.len() {
        bail!(
            "write_kv_cache: k/v layout needs {src_last} elements but storage has {}",
            src.len()
        );
    }
    let num_slots = num_blocks * block_size;
    if let Some((i, &s)) = slots
        .iter()
        .enumerate()
        .find(|(_, &s)| s >= 0 && s as u64 >= num_slots as u64)
    {
        bail!(
            "write_kv_cache: slot_mapping[{i}] = {s} is out of range for a cache of {num_blocks} blocks x {block_size} = {num_slots} slots"
        );
    }
    let row_len = num_kv_heads * head_dim;
    for (i, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        let base = cache_start + slot as usize * row_len;
        let dst_row = &mut dst[base..base + row_len];
        for (h, dst_head) in dst_row.chunks_exact_mut(head_dim).enumerate() {
            let off = src_start + i * s0 + h * s1;
            copy_row(&src[off..off + head_dim], dst_head);
        }
    }
    Ok(())
}

/// `dst = src` for caches of the activations' type.
#[inline]
fn copy<T: Copy>(src: &[T], dst: &mut [T]) {
    dst.copy_from_slice(src);
}

/// `dst = src` converted through f32 (rounding to nearest), for caches of another type.
#[inline]
fn convert_row<S: Elem, D: Elem>(src: &[S], dst: &mut [D]) {
    if S::DTYPE == candle_core::DType::F32 {
        // f32 rows borrow as themselves (the buffer is unused): narrowed in bulk.
        D::from_f32_slice(S::row_f32(src, &mut []), dst);
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = D::from_f32(s.to_f32());
    }
}
