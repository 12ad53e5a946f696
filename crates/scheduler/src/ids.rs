//! Typed ids, so a sequence id, a KV block and a LoRA adapter cannot be mixed up. They are
//! defined here, at the bottom of the stack, and used by the runtime, the engine and the
//! server alike. The request id (one `submit`, possibly `n` sequences) is the engine's.

use std::fmt;

/// One sequence the scheduler runs: one completion of a request (a request with `n > 1` has
/// `n` of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// A KV cache block; [`crate::NULL_BLOCK`] is the reserved null block.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable,
)]
#[repr(transparent)]
pub struct BlockId(pub u32);

impl BlockId {
    /// The block's index in the KV cache tensors.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// A block table as the runner and the kernels take it: raw block indices (no copy).
    pub fn raw_table(table: &[BlockId]) -> &[u32] {
        bytemuck::cast_slice(table)
    }
}

/// A loaded LoRA adapter. Ids are never reused. Where a request may run on the base model
/// the type is `Option<LoraId>`, with `None` for the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoraId(pub u32);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
display_inner!(SeqId, BlockId, LoraId);
