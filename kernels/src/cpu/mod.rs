//! CPU implementations of the Lantern custom ops, operating directly on `CpuStorage` slices.

pub(crate) mod attention;
pub(crate) mod cache_write;

use candle_core::{bail, Layout, Result, WithDType};
use half::{bf16, f16};

/// Element types the CPU kernels compute on: stored as `Self`, computed in f32.
pub(crate) trait Elem: WithDType + Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// The `start..end` window of a contiguous layout, checked against the storage length.
pub(crate) fn contiguous_window<'a, T>(
    data: &'a [T],
    layout: &Layout,
    name: &str,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "{name} must be contiguous (got strides {:?})",
            layout.stride()
        );
    };
    match data.get(start..end) {
        Some(s) => Ok(s),
        None => bail!(
            "{name}: layout window {start}..{end} exceeds storage of {} elements",
            data.len()
        ),
    }
}
