// Multi-LoRA add (see kernels/src/lora.rs): out = y + scale[s] * (x A[s]^T) B[s]^T per token.
// out starts as a copy of y; h (num_tokens, max_rank) f32 holds the scaled shrink results.
// * BGMV (tokens of segments shorter than sgmv_min): bgmv_shrink (one warp per (token, rank
//   row)) then bgmv_expand (one thread per output column, h in shared memory).
// * SGMV (segments of >= sgmv_min tokens): tiles of 16 tokens sharing the slot; sgmv_shrink
//   stages x and A chunks in shared memory, sgmv_expand reads each B row once per tile.
// Rows with slot -1 (base model) or an out-of-range slot are skipped.
#include "common.cuh"

#define LORA_MAX_RANK_TABLE 64
struct RankTable {
  int n;  // entries in r; slots >= n use max_rank
  int r[LORA_MAX_RANK_TABLE];
};

struct LoraParams {
  int num_tokens, in_dim, out_dim, max_rank, num_slots, num_segments, sgmv_min;
};

__device__ __forceinline__ int slot_rank(const RankTable& rt, int slot, int max_rank) {
  return slot < rt.n ? min(rt.r[slot], max_rank) : max_rank;
}

// Segment containing token t: the largest g with seg_starts[g] <= t.
__device__ __forceinline__ int find_segment(const uint32_t* __restrict__ starts, int num_segments,
                                            int t) {
  int lo = 0, hi = num_segments - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= (uint32_t)t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Slot of token t when it takes the BGMV path, else -1.
__device__ __forceinline__ int bgmv_slot(const int* __restrict__ token_slots,
                                         const uint32_t* __restrict__ starts, const LoraParams& p,
                                         int t) {
  const int slot = token_slots[t];
  if (slot < 0 || slot >= p.num_slots || p.num_segments <= 0) return -1;
  const int g = find_segment(starts, p.num_segments, t);
  const int len = (int)(starts[g + 1] - starts[g]);
  return len >= p.sgmv_min ? -1 : slot;
}

template <typename T, int VEC>
__device__ void bgmv_shrink(float* __restrict__ h, const T* __restrict__ x, const T* __restrict__ a,
                            const float* __restrict__ scales, const int* __restrict__ token_slots,
                            const uint32_t* __restrict__ starts, const LoraParams p,
                            const RankTable rt) {
  const int t = blockIdx.x;
  const int k = blockIdx.y * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  const int slot = bgmv_slot(token_slots, starts, p, t);
  if (slot < 0 || k >= slot_rank(rt, slot, p.max_rank)) return;
  const T* xr = x + (long long)t * p.in_dim;
  const T* ar = a + ((long long)slot * p.max_rank + k) * p.in_dim;
  float dot = 0.f;
  for (int i = lane * VEC; i < p.in_dim; i += 32 * VEC) {
    float xv[VEC], av[VEC];
    load_vec<T, VEC>(xr + i, xv);
    load_vec<T, VEC>(ar + i, av);
#pragma unroll
    for (int e = 0; e < VEC; ++e) dot = fmaf(xv[e], av[e], dot);
  }
  dot = warp_sum(dot);
  if (lane == 0) h[(long long)t * p.max_rank + k] = scales[slot] * dot;
}

// out[t][o] += sum_{k < r} hs[k] * B[slot][o][k]; hs is zero-padded to a multiple of VEC.
template <typename T, int VEC>
__device__ __forceinline__ float expand_dot(const T* __restrict__ brow, const float* hs, int r) {
  float acc = 0.f;
  for (int k = 0; k < r; k += VEC) {
    float bv[VEC];
    load_vec<T, VEC>(brow + k, bv);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc = fmaf(hs[k + e], bv[e], acc);
  }
  return acc;
}

template <typename T, int VEC>
__device__ void bgmv_expand(T* __restrict__ out, const float* __restrict__ h,
                            const T* __restrict__ b, const int* __restrict__ token_slots,
                            const uint32_t* __restrict__ starts, const LoraParams p,
                            const RankTable rt) {
  extern __shared__ float hs[];  // max_rank + VEC
  const int t = blockIdx.x;
  const int slot = bgmv_slot(token_slots, starts, p, t);
  if (slot < 0) return;
  const int r = slot_rank(rt, slot, p.max_rank);
  if (r == 0) return;
  const int rv = (r + VEC - 1) / VEC * VEC;  // <= max_rank when max_rank % VEC == 0
  for (int k = threadIdx.x; k < rv; k += blockDim.x)
    hs[k] = k < r ? h[(long long)t * p.max_rank + k] : 0.f;
  __syncthreads();
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  if (o >= p.out_dim) return;
  const T* brow = b + ((long long)slot * p.out_dim + o) * p.max_rank;
  const float acc = expand_dot<T, VEC>(brow, hs, rv);
  T* y = out + (long long)t * p.out_dim + o;
  *y = from_f<T>(to_f(*y) + acc);
}

constexpr int SG_TOK = 16;  // tokens per SGMV tile
constexpr int SG_CH = 64;   // input columns per shared-memory chunk
constexpr int SG_RK = 128;  // rank rows per pass

template <typename T>
__device__ void sgmv_shrink(float* __restrict__ h, const T* __restrict__ x, const T* __restrict__ a,
                            const float* __restrict__ scales, const uint32_t* __restrict__ starts,
                            const int* __restrict__ seg_slots, const LoraParams p,
                            const RankTable rt) {
  __shared__ float xs[SG_TOK][SG_CH + 1];
  __shared__ float as[SG_RK][SG_CH + 1];
  __shared__ float red[SG_TOK][SG_RK];
  const int g = blockIdx.x;
  const int slot = seg_slots[g];
  const int lo = (int)starts[g], hi = (int)starts[g + 1];
  if (slot < 0 || slot >= p.num_slots || hi - lo < p.sgmv_min) return;
  const int t0 = lo + blockIdx.y * SG_TOK;
  if (t0 >= hi) return;
  const int nt = min(SG_TOK, hi - t0);
  const int r = slot_rank(rt, slot, p.max_rank);
  const float scale = scales[slot];
  const int tid = threadIdx.x;
  for (int k0 = 0; k0 < r; k0 += SG_RK) {
    const int rk = min(SG_RK, r - k0);
    int rp = 1;
    while (rp < rk) rp <<= 1;
    const int nparts = blockDim.x / rp;  // blockDim.x == 128
    const int kk = tid % rp, part = tid / rp;
    float acc[SG_TOK];
#pragma unroll
    for (int j = 0; j < SG_TOK; ++j) acc[j] = 0.f;
    for (int i0 = 0; i0 < p.in_dim; i0 += SG_CH) {
      const int nc = min(SG_CH, p.in_dim - i0);
      __syncthreads();
      for (int e = tid; e < SG_TOK * SG_CH; e += blockDim.x) {
        const int j = e / SG_CH, i = e % SG_CH;
        xs[j][i] = (j < nt && i < nc) ? to_f(x[(long long)(t0 + j) * p.in_dim + i0 + i]) : 0.f;
      }
      for (int e = tid; e < SG_RK * SG_CH; e += blockDim.x) {
        const int k = e / SG_CH, i = e % SG_CH;
        as[k][i] = (k < rk && i < nc)
                       ? to_f(a[((long long)slot * p.max_rank + k0 + k) * p.in_dim + i0 + i])
                       : 0.f;
      }
      __syncthreads();
      if (kk < rk) {
        for (int i = part; i < nc; i += nparts) {
          const float av = as[kk][i];
#pragma unroll
          for (int j = 0; j < SG_TOK; ++j) acc[j] = fmaf(xs[j][i], av, acc[j]);
        }
      }
    }
    // Reduce the nparts partial sums of each (token, rank row).
    for (int pp = 0; pp < nparts; ++pp) {
      __syncthreads();
      if (part == pp && kk < rk) {
#pragma unroll
        for (int j = 0; j < SG_TOK; ++j) red[j][kk] = (pp == 0 ? 0.f : red[j][kk]) + acc[j];
      }
    }
    __syncthreads();
    for (int e = tid; e < SG_TOK * rk; e += blockDim.x) {
      const int j = e / rk, k = e % rk;
      if (j < nt) h[(long long)(t0 + j) * p.max_rank + k0 + k] = scale * red[j][k];
    }
    __syncthreads();
  }
}

template <typename T, int VEC>
__device__ void sgmv_expand(T* __restrict__ out, const float* __restrict__ h,
                            const T* __restrict__ b, const uint32_t* __restrict__ starts,
                            const int* __restrict__ seg_slots, const LoraParams p,
                            const RankTable rt) {
  extern __shared__ float hs[];  // [SG_TOK][rv]
  const int g = blockIdx.x;
  const int slot = seg_slots[g];
  const int lo = (int)starts[g], hi = (int)starts[g + 1];
  if (slot < 0 || slot >= p.num_slots || hi - lo < p.sgmv_min) return;
  const int t0 = lo + blockIdx.y * SG_TOK;
  if (t0 >= hi) return;
  const int nt = min(SG_TOK, hi - t0);
  const int r = slot_rank(rt, slot, p.max_rank);
  if (r == 0) return;
  const int rv = (r + VEC - 1) / VEC * VEC;
  for (int e = threadIdx.x; e < SG_TOK * rv; e += blockDim.x) {
    const int j = e / rv, k = e % rv;
    hs[e] = (j < nt && k < r) ? h[(long long)(t0 + j) * p.max_rank + k] : 0.f;
  }
  __syncthreads();
  const int o = blockIdx.z * blockDim.x + threadIdx.x;
  if (o >= p.out_dim) return;
  const T* brow = b + ((long long)slot * p.out_dim + o) * p.max_rank;
  float acc[SG_TOK];
#pragma unroll
  for (int j = 0; j < SG_TOK; ++j) acc[j] = 0.f;
  for (int k = 0; k < rv; k += VEC) {
    float bv[VEC];
    load_vec<T, VEC>(brow + k, bv);
#pragma unroll
    for (int e = 0; e < VEC; ++e)
#pragma unroll
      for (int j = 0; j < SG_TOK; ++j) acc[j] = fmaf(hs[j * rv + k + e], bv[e], acc[j]);
  }
  for (int j = 0; j < nt; ++j) {
    T* y = out + (long long)(t0 + j) * p.out_dim + o;
    *y = from_f<T>(to_f(*y) + acc[j]);
  }
}

#define LORA_KERNELS_V(T, SUF, VN, VEC)                                                       \
  extern "C" __global__ void bgmv_shrink_##VN##_##SUF(                                       \
      float* h, const T* x, const T* a, const float* scales, const int* token_slots,          \
      const uint32_t* starts, LoraParams p, RankTable rt) {                                   \
    bgmv_shrink<T, VEC>(h, x, a, scales, token_slots, starts, p, rt);                         \
  }                                                                                           \
  extern "C" __global__ void bgmv_expand_##VN##_##SUF(                                       \
      T* out, const float* h, const T* b, const int* token_slots, const uint32_t* starts,     \
      LoraParams p, RankTable rt) {                                                           \
    bgmv_expand<T, VEC>(out, h, b, token_slots, starts, p, rt);                               \
  }                                                                                           \
  extern "C" __global__ void sgmv_expand_##VN##_##SUF(                                       \
      T* out, const float* h, const T* b, const uint32_t* starts, const int* seg_slots,       \
      LoraParams p, RankTable rt) {                                                           \
    sgmv_expand<T, VEC>(out, h, b, starts, seg_slots, p, rt);                                 \
  }

#define LORA_KERNELS(T, SUF)                                                                  \
  LORA_KERNELS_V(T, SUF, vec, 16 / sizeof(T))                                                 \
  LORA_KERNELS_V(T, SUF, scalar, 1)                                                           \
  extern "C" __global__ void __launch_bounds__(128) sgmv_shrink_##SUF(                        \
      float* h, const T* x, const T* a, const float* scales, const uint32_t* starts,          \
      const int* seg_slots, LoraParams p, RankTable rt) {                                     \
    sgmv_shrink<T>(h, x, a, scales, starts, seg_slots, p, rt);                                \
  }

LANTERN_FOR_DTYPES(LORA_KERNELS)
