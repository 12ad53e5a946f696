// write_kv_cache: scatter rows (num_tokens, num_kv_heads, head_dim) into a paged cache
// (num_blocks, block_size, num_kv_heads, head_dim) at slot_mapping[token] (negative = skip).
// Out-of-range slots are skipped on the device (the host cannot check them without a copy).
#include "common.cuh"

template <typename T, int VEC>
__device__ void write_kv(T* __restrict__ cache, const T* __restrict__ rows,
                         const int64_t* __restrict__ slots, int num_kv_heads, int head_dim,
                         long long s0, long long s1, long long num_slots) {
  const int token = blockIdx.x;
  const long long slot = slots[token];
  if (slot < 0 || slot >= num_slots) return;
  const int vec_per_head = head_dim / VEC;
  const int n = num_kv_heads * vec_per_head;
  const long long row_len = (long long)num_kv_heads * head_dim;
  T* dst = cache + slot * row_len;
  const T* src = rows + token * s0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int h = i / vec_per_head, d = (i % vec_per_head) * VEC;
    const T* s = src + h * s1 + d;
    T* o = dst + (long long)h * head_dim + d;
    if constexpr (VEC * sizeof(T) == 16) {
      *reinterpret_cast<uint4*>(o) = *reinterpret_cast<const uint4*>(s);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) o[j] = s[j];
    }
  }
}

#define WRITE_KV(T, SUF)                                                                      \
  extern "C" __global__ void write_kv_cache_##SUF(                                           \
      T* cache, const T* rows, const int64_t* slots, int num_kv_heads, int head_dim,          \
      long long s0, long long s1, long long num_slots) {                                      \
    write_kv<T, 1>(cache, rows, slots, num_kv_heads, head_dim, s0, s1, num_slots);            \
  }                                                                                           \
  extern "C" __global__ void write_kv_cache_vec_##SUF(                                       \
      T* cache, const T* rows, const int64_t* slots, int num_kv_heads, int head_dim,          \
      long long s0, long long s1, long long num_slots) {                                      \
    write_kv<T, 16 / sizeof(T)>(cache, rows, slots, num_kv_heads, head_dim, s0, s1,           \
                                num_slots);                                                   \
  }

LANTERN_FOR_DTYPES(WRITE_KV)
