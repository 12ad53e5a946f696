// Token sampling on device (semantics: kernels/src/sampling.rs).
// * argmax_<T>: greedy rows straight from the logits (NaN counts as -inf, ties -> lowest index).
// * sample_prepare_<T>: logits (any float dtype, row stride) -> f32 work rows, NaN -> -inf.
// * sample_penalties: sparse per-row entries (token, seen, output count, bias) applied in place.
// * sample_main: one 1024-thread block per row: greedy, or temperature sampling with
//   top-k / min-p / top-p, using fixed-point masses W = trunc(exp((x - max) / T) * 2^40) so that
//   every sum is an exact, order-independent integer; the sorted order (logit desc, index asc)
//   is never materialised: radix selects (8 bits per pass) over order-preserving float keys find
//   the thresholds, and ties are resolved by index with a block scan.
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define FIXED_SCALE 1099511627776.0f  // 2^40

struct SampleParams {
  int vocab;
  long long row_stride;  // elements between logits rows
};

__device__ __forceinline__ float sanitize(float x) { return isnan(x) ? -LANTERN_INF : x; }

__device__ __forceinline__ uint32_t fkey(float x) {
  const uint32_t b = __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_to_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ unsigned long long fixed_mass(float x, float m, float inv_t) {
  if (x == -LANTERN_INF) return 0ull;
  const float w = expf((x - m) * inv_t);
  if (!(w > 0.f)) return 0ull;
  return (unsigned long long)(w * FIXED_SCALE);
}

// ---- block reductions (blockDim.x == SAMPLE_THREADS) ----
__device__ unsigned long long block_sum_u64(unsigned long long x, unsigned long long* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  __syncthreads();
  if (lane == 0) sh[warp] = x;
  __syncthreads();
  unsigned long long r = lane < (SAMPLE_THREADS / 32) ? sh[lane] : 0ull;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}

// Exclusive prefix sum over threads in thread order; every thread gets its own prefix.
__device__ unsigned long long block_exclusive_scan_u64(unsigned long long x,
                                                       unsigned long long* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long inc = x;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long y = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += y;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    unsigned long long v = sh[lane];
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long y = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += y;
    }
    sh[lane] = v;  // inclusive prefix of warp sums
  }
  __syncthreads();
  const unsigned long long before = warp > 0 ? sh[warp - 1] : 0ull;
  return before + inc - x;
}

// Best (value desc, index asc) over the block; every thread gets it.
__device__ void block_argmax(float& v, uint32_t& i, float* shv, uint32_t* shi) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
  __syncthreads();
  if (lane == 0) { shv[warp] = v; shi[warp] = i; }
  __syncthreads();
  v = shv[lane];
  i = shi[lane];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
}

template <typename T>
__device__ void row_argmax(const T* __restrict__ row, int vocab, float& best, uint32_t& idx,
                           float* shv, uint32_t* shi) {
  best = -LANTERN_INF;
  idx = 0xffffffffu;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float x = sanitize(to_f(row[j]));
    if (x > best || (x == best && (uint32_t)j < idx)) { best = x; idx = j; }
  }
  block_argmax(best, idx, shv, shi);
  if (idx == 0xffffffffu) idx = 0;
}

template <typename T>
__device__ void argmax_kernel(uint32_t* __restrict__ out, const T* __restrict__ logits,
                              const SampleParams p) {
  __shared__ float shv[32];
  __shared__ uint32_t shi[32];
  float best;
  uint32_t idx;
  row_argmax<T>(logits + blockIdx.x * p.row_stride, p.vocab, best, idx, shv, shi);
  if (threadIdx.x == 0) out[blockIdx.x] = idx;
}

template <typename T>
__device__ void prepare_kernel(float* __restrict__ work, const T* __restrict__ logits,
                               const SampleParams p) {
  const long long row = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j < p.vocab) work[row * p.vocab + j] = sanitize(to_f(logits[row * p.row_stride + j]));
}

// params row: [temperature, top_k, top_p, min_p, repetition, presence, frequency, uniform]
extern "C" __global__ void sample_penalties(float* __restrict__ work,
                                            const float* __restrict__ params,
                                            const uint32_t* __restrict__ offsets,
                                            const uint32_t* __restrict__ entries, int vocab) {
  const int row = blockIdx.x;
  const float rep = params[row * 8 + 4], pres = params[row * 8 + 5], freq = params[row * 8 + 6];
  for (uint32_t e = offsets[row] + threadIdx.x; e < offsets[row + 1]; e += blockDim.x) {
    const uint32_t tok = entries[e * 4], seen = entries[e * 4 + 1], cnt = entries[e * 4 + 2];
    const float bias = __uint_as_float(entries[e * 4 + 3]);
    if (tok >= (uint32_t)vocab) continue;
    float* xp = work + (long long)row * vocab + tok;
    float x = *xp + bias;
    if (rep != 1.f && seen) x = x > 0.f ? __fdiv_rn(x, rep) : __fmul_rn(x, rep);
    // Explicit roundings (no FMA contraction), so the CPU implementation matches bit for bit.
    if (cnt > 0) x = __fsub_rn(x, __fadd_rn(pres, __fmul_rn(freq, (float)cnt)));
    *xp = sanitize(x);
  }
}

struct Hist {
  uint32_t cnt[256];
  unsigned long long mass[256];
  uint32_t digit;
  uint32_t cnt_gt;
  unsigned long long mass_gt;
};

struct Sel {
  uint32_t key;
  uint32_t cnt_gt;          // elements with key > key
  unsigned long long mass_gt;
  unsigned long long w_eq;  // mass of one element with this key
};

// Finds the key K such that (by_mass ? mass : count) of elements with key > K is < target and
// of elements with key >= K is >= target (target >= 1 and <= the row total).
__device__ Sel radix_select(const float* __restrict__ row, int vocab, float m, float inv_t,
                            bool by_mass, unsigned long long target, Hist* h) {
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) { h->cnt_gt = 0; h->mass_gt = 0; }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) { h->cnt[d] = 0; h->mass[d] = 0; }
    __syncthreads();
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
      const float x = row[j];
      const uint32_t k = fkey(x);
      if ((k & mask) == prefix) {
        const uint32_t d = (k >> shift) & 255u;
        atomicAdd(&h->cnt[d], 1u);
        const unsigned long long w = fixed_mass(x, m, inv_t);
        if (w) atomicAdd(&h->mass[d], w);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t cg = h->cnt_gt;
      unsigned long long mg = h->mass_gt;
      int sel = -1, last_nonempty = -1;
      for (int d = 255; d >= 0; --d) {
        if (h->cnt[d] == 0) continue;
        last_nonempty = d;
        const bool hit = by_mass ? (mg + h->mass[d] >= target) : (cg + h->cnt[d] >= target);
        if (hit) { sel = d; break; }
        cg += h->cnt[d];
        mg += h->mass[d];
      }
      if (sel < 0) {  // target beyond the total (not reached by callers): take the last bin
        sel = last_nonempty < 0 ? 0 : last_nonempty;
        if (last_nonempty >= 0) { cg -= h->cnt[sel]; mg -= h->mass[sel]; }
      }
      h->digit = (uint32_t)sel;
      h->cnt_gt = cg;
      h->mass_gt = mg;
    }
    __syncthreads();
    prefix |= h->digit << shift;
    mask |= 255u << shift;
    __syncthreads();
  }
  Sel s;
  s.key = prefix;
  s.cnt_gt = h->cnt_gt;
  s.mass_gt = h->mass_gt;
  s.w_eq = fixed_mass(key_to_float(prefix), m, inv_t);
  __syncthreads();
  return s;
}

// Index of the j-th (1-based) element with key `key`, in index order.
__device__ uint32_t nth_with_key(const float* __restrict__ row, int vocab, uint32_t key,
                                 unsigned long long j, unsigned long long* sh, uint32_t* result) {
  const int chunk = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
  const int lo = min(vocab, (int)threadIdx.x * chunk), hi = min(vocab, lo + chunk);
  unsigned long long c = 0;
  for (int i = lo; i < hi; ++i) c += fkey(row[i]) == key;
  if (threadIdx.x == 0) *result = 0xffffffffu;
  const unsigned long long before = block_exclusive_scan_u64(c, sh);
  if (before < j && j <= before + c) {
    unsigned long long seen = before;
    for (int i = lo; i < hi; ++i) {
      if (fkey(row[i]) == key && ++seen == j) { *result = i; break; }
    }
  }
  __syncthreads();
  return *result;
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_main(uint32_t* __restrict__ out, const float* __restrict__ work,
                const float* __restrict__ params, int vocab) {
  __shared__ float shv[32];
  __shared__ uint32_t shi[32];
  __shared__ unsigned long long shu[32];
  __shared__ Hist hist;
  __shared__ uint32_t result;
  const int rowi = blockIdx.x;
  const float* row = work + (long long)rowi * vocab;
  const float* pr = params + rowi * 8;
  const float temp = pr[0], top_p = pr[2], min_p = pr[3], u = pr[7];
  const int top_k = (int)pr[1];

  float m;
  uint32_t amax;
  row_argmax<float>(row, vocab, m, amax, shv, shi);
  if (temp <= 0.f || top_k == 1 || !isfinite(m)) {
    if (threadIdx.x == 0) out[rowi] = amax;
    return;
  }
  const float inv_t = 1.f / temp;
  // Total mass of the row.
  unsigned long long part = 0;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) part += fixed_mass(row[j], m, inv_t);
  const unsigned long long total_all = block_sum_u64(part, shu);

  const bool filtered = top_k > 0 || top_p < 1.f || min_p > 0.f;
  if (!filtered) {
    // Walk the CDF in index order.
    const unsigned long long target =
        min((unsigned long long)floor((double)u * (double)total_all), total_all - 1);
    const int chunk = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int lo = min(vocab, (int)threadIdx.x * chunk), hi = min(vocab, lo + chunk);
    unsigned long long c = 0;
    for (int i = lo; i < hi; ++i) c += fixed_mass(row[i], m, inv_t);
    if (threadIdx.x == 0) result = amax;
    const unsigned long long before = block_exclusive_scan_u64(c, shu);
    if (before <= target && target < before + c) {
      unsigned long long cum = before;
      for (int i = lo; i < hi; ++i) {
        cum += fixed_mass(row[i], m, inv_t);
        if (cum > target) { result = i; break; }
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) out[rowi] = result;
    return;
  }

  // Candidates: the first n_cand of the sorted order; `total` is their mass.
  const unsigned n_cand = top_k > 0 ? min((unsigned)top_k, (unsigned)vocab) : (unsigned)vocab;
  unsigned long long total = total_all;
  if (n_cand < (unsigned)vocab) {
    const Sel s = radix_select(row, vocab, m, inv_t, false, n_cand, &hist);
    total = s.mass_gt + (unsigned long long)(n_cand - s.cnt_gt) * s.w_eq;
  }
  unsigned n_keep = n_cand;
  if (min_p > 0.f) {
    unsigned long long c = 0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
      const float x = row[j];
      c += (x != -LANTERN_INF) && expf((x - m) * inv_t) >= min_p;
    }
    const unsigned long long cm = block_sum_u64(c, shu);
    n_keep = max(1u, min(n_keep, (unsigned)cm));
  }
  unsigned n = n_keep;
  // Weight of the kept prefix: known without another select when it is all candidates or
  // the top-p prefix.
  unsigned long long mass_keep = total;
  bool mass_known = n_keep == n_cand;
  if (top_p < 1.f) {
    unsigned long long tp = (unsigned long long)ceil((double)top_p * (double)total);
    if (tp < 1) tp = 1;
    if (tp <= total_all) {
      const Sel s = radix_select(row, vocab, m, inv_t, true, tp, &hist);
      const unsigned long long need = tp - s.mass_gt;
      const unsigned long long j = s.w_eq > 0 ? (need + s.w_eq - 1) / s.w_eq : 1;
      const unsigned long long np = max((unsigned long long)s.cnt_gt + j, 1ull);
      if (np < (unsigned long long)n) {
        n = (unsigned)np;
        mass_keep = s.mass_gt + j * s.w_eq;
        mass_known = true;
      }
    }
  }
  if (!mass_known) {
    const Sel s = radix_select(row, vocab, m, inv_t, false, n, &hist);
    mass_keep = s.mass_gt + (unsigned long long)(n - s.cnt_gt) * s.w_eq;
  }
  if (mass_keep == 0) {
    if (threadIdx.x == 0) out[rowi] = amax;
    return;
  }
  const unsigned long long target =
      min((unsigned long long)floor((double)u * (double)mass_keep), mass_keep - 1) + 1;
  const Sel s = radix_select(row, vocab, m, inv_t, true, target, &hist);
  const unsigned long long need = target - s.mass_gt;
  const unsigned long long j = s.w_eq > 0 ? (need + s.w_eq - 1) / s.w_eq : 1;
  const uint32_t idx = nth_with_key(row, vocab, s.key, j, shu, &result);
  if (threadIdx.x == 0) out[rowi] = idx == 0xffffffffu ? amax : idx;
}

#define SAMPLE_KERNELS(T, SUF)                                                                \
  extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)                                \
      argmax_##SUF(uint32_t* out, const T* logits, SampleParams p) {                          \
    argmax_kernel<T>(out, logits, p);                                                         \
  }                                                                                           \
  extern "C" __global__ void sample_prepare_##SUF(float* work, const T* logits,               \
                                                  SampleParams p) {                           \
    prepare_kernel<T>(work, logits, p);                                                       \
  }

LANTERN_FOR_DTYPES(SAMPLE_KERNELS)
