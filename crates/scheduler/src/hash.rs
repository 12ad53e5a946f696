//! Chained prefix hashes of full KV blocks.

use crate::ids::LoraId;
use std::hash::{DefaultHasher, Hasher};

/// The 128-bit identity of a full block's contents *and everything before it*: it chains the
/// parent block's hash, the block's token ids and the [`CacheKeyExtra`] keys.
///
/// It is built from two independent 64-bit SipHash lanes (std's `DefaultHasher::new()`, which
/// is keyed with fixed keys and therefore deterministic within a build), so an accidental
/// collision is practically impossible (~2^-64 even after 2^32 blocks). It is *not* meant to
/// resist a deliberate attacker who knows the hash; tenants that must not share KV should use
/// distinct cache salts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(u128);

impl BlockHash {
    /// The raw 128-bit value.
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

/// Keys besides the tokens that decide whether two blocks' KV is interchangeable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheKeyExtra<'a> {
    /// LoRA adapter; `None` is the base model. Different adapters never share KV.
    pub lora_id: Option<LoraId>,
    /// Optional per-request cache salt: only requests with the same salt share KV.
    pub cache_salt: Option<&'a str>,
}

/// Stands in for the parent of the first block of every sequence.
const ROOT_SEED: u128 = 0x6c61_6e74_6572_6e2d_7072_6566_6978_2d30;
const LANE_TAGS: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];

/// Hash of a full block: `H(parent or ROOT_SEED, lora_id, cache_salt, token_ids)`.
pub fn hash_block(
    parent: Option<BlockHash>,
    token_ids: &[u32],
    extra: &CacheKeyExtra<'_>,
) -> BlockHash {
    let parent = parent.map_or(ROOT_SEED, |h| h.0);
    // The base model hashes as adapter 0 (adapter ids start at 1).
    let lora = extra.lora_id.map_or(0, |l| l.0);
    let lane = |tag: u64| {
        let mut h = DefaultHasher::new();
        h.write_u64(tag);
        h.write_u128(parent);
        h.write_u32(lora);
        match extra.cache_salt {
            None => h.write_u8(0),
            Some(s) => {
                h.write_u8(1);
                h.write_u64(s.len() as u64);
                h.write(s.as_bytes());
            }
        }
        h.write_u64(token_ids.len() as u64);
        for &t in token_ids {
            h.write_u32(t);
        }
        h.finish()
    };
    BlockHash((u128::from(lane(LANE_TAGS[0])) << 64) | u128::from(lane(LANE_TAGS[1])))
}

/// Extends `hashes` (the chain for the first `hashes.len()` full blocks of `token_ids`) to
/// cover the first `num_blocks` full blocks. Tokens only ever get appended to a sequence, so
/// existing entries stay valid.
pub(crate) fn extend_block_hashes(
    hashes: &mut Vec<BlockHash>,
    token_ids: &[u32],
    block_size: usize,
    num_blocks: usize,
    extra: &CacheKeyExtra<'_>,
) {
    let num_blocks = num_blocks.min(token_ids.len() / block_size);
    while hashes.len() < num_blocks {
        let i = hashes.len();
        let parent = hashes.last().copied();
        let block = &token_ids[i * block_size..(i + 1) * block_size];
        hashes.push(hash_block(parent, block, extra));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base() -> CacheKeyExtra<'static> {
        CacheKeyExtra::default()
    }

    #[test]
    fn deterministic() {
        assert_eq!(
            hash_block(None, &[1, 2, 3], &base()),
            hash_block(None, &[1, 2, 3], &base())
        );
    }

    #[test]
    fn tokens_parent_lora_and_salt_all_change_the_hash() {
        let a = hash_block(None, &[1, 2, 3], &base());
        assert_ne!(a, hash_block(None, &[1, 2, 4], &base()));
        assert_ne!(a, hash_block(None, &[3, 2, 1], &base()));
        assert_ne!(a, hash_block(None, &[1, 2], &base()));
        assert_ne!(a, hash_block(Some(a), &[1, 2, 3], &base()));
        let lora = CacheKeyExtra {
            lora_id: Some(LoraId(1)),
            cache_salt: None,
        };
        assert_ne!(a, hash_block(None, &[1, 2, 3], &lora));
        let salted = CacheKeyExtra {
            lora_id: None,
            cache_salt: Some("tenant-a"),
        };
        let salted_b = CacheKeyExtra {
            lora_id: None,
            cache_salt: Some("tenant-b"),
        };
        let empty_salt = CacheKeyExtra {
            lora_id: None,
            cache_salt: Some(""),
        };
        assert_ne!(a, hash_block(None, &[1, 2, 3], &salted));
        assert_ne!(
            hash_block(None, &[1, 2, 3], &salted),
            hash_block(None, &[1, 2, 3], &salted_b)
        );
        assert_ne!(a, hash_block(None, &[1, 2, 3], &empty_salt));
        // The two 64-bit lanes differ (they are independent).
        assert_ne!((a.as_u128() >> 64) as u64, a.as_u128() as u64);
    }

    #[test]
    fn chain_differs_when_an_earlier_block_differs() {
        let mut x = Vec::new();
        let mut y = Vec::new();
        extend_block_hashes(&mut x, &[1, 2, 3, 4, 5], 2, 10, &base());
        extend_block_hashes(&mut y, &[9, 2, 3, 4], 2, 10, &base());
        assert_eq!(x.len(), 2, "only full blocks are hashed");
        assert_eq!(y.len(), 2);
        // Same second-block tokens, different first block: different chain.
        assert_ne!(x[1], y[1]);
        // Extending incrementally gives the same chain as all at once.
        let mut z = Vec::new();
        extend_block_hashes(&mut z, &[1, 2, 3, 4, 5], 2, 1, &base());
        assert_eq!(z.len(), 1);
        extend_block_hashes(&mut z, &[1, 2, 3, 4, 5, 6], 2, 3, &base());
        assert_eq!(&z[..2], &x[..]);
        assert_eq!(z.len(), 3);
    }

    #[test]
    fn lora_changes_every_block_of_the_chain() {
        let toks: Vec<u32> = (0..8).collect();
        let mut a = Vec::new();
        let mut b = Vec::new();
        extend_block_hashes(&mut a, &toks, 4, 2, &base());
        let lora = CacheKeyExtra {
            lora_id: Some(LoraId(3)),
            cache_salt: None,
        };
        extend_block_hashes(&mut b, &toks, 4, 2, &lora);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    }
}
