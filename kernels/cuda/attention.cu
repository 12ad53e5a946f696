// Paged attention over a flattened varlen batch (see kernels/src/attention.rs for semantics).
//
// * attn_rows: one warp per (query row, kv head, chunk of its GQA query heads, context split).
//   Used for the rows of sequences with query_len <= rows_max_qlen (decode tokens). Lanes split
//   head_dim in 16-byte vectors; the warp walks 32 / P keys at a time (P lanes per key) with an
//   online softmax per lane group, merged by shuffles at the end. With num_splits > 1 each split
//   writes an unnormalised partial (acc, max, sum) and attn_reduce combines them (split-K).
//   Padding rows (past cu_seqlens_q[num_seqs]) are written as zeros here.
// * attn_tile: one block per (tile of query positions, sequence, kv head) for sequences with
//   query_len > rows_max_qlen (prefill chunks): K/V tiles of 32 keys are staged in shared memory
//   as f32 and reused by every query row of the tile (all GQA heads of the kv head); causal
//   masking by absolute position, so chunks resuming after a cached prefix work unchanged.
// Scores are kept in base 2 (q is pre-scaled by scale * log2(e)); all math is f32.
#include "common.cuh"

#define LOG2E 1.4426950408889634f

struct AttnParams {
  int num_tokens, num_seqs, num_heads, num_kv_heads, head_dim, block_size, max_blocks;
  int group;            // num_heads / num_kv_heads
  int heads_per_chunk;  // query heads per warp in attn_rows (<= GMAX)
  int num_chunks;       // ceil(group / heads_per_chunk)
  int num_splits;       // context splits of attn_rows
  int rows_max_qlen;    // sequences with query_len <= this use attn_rows
  int num_blocks;       // cache blocks (guard against bad block ids)
  float scale;
};

// Sequence owning batch row `row`, or -1 for padding rows.
__device__ __forceinline__ int find_seq(const uint32_t* __restrict__ cu, int num_seqs, int row) {
  if (num_seqs <= 0 || (uint32_t)row >= cu[num_seqs]) return -1;
  int lo = 0, hi = num_seqs - 1;  // largest s with cu[s] <= row
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= (uint32_t)row) lo = mid; else hi = mid - 1;
  }
  return lo;
}

constexpr int ROWS_WARPS = 4;
constexpr int ROWS_UNROLL = 4;

template <typename T, int VEC, int NV, int GMAX>
__device__ void attn_rows(T* __restrict__ out, float* __restrict__ part_acc,
                          float* __restrict__ part_ml, const T* __restrict__ q,
                          const T* __restrict__ kc, const T* __restrict__ vc,
                          const uint32_t* __restrict__ tables, const uint32_t* __restrict__ cu,
                          const uint32_t* __restrict__ ctx_lens, const AttnParams p) {
  const int lane = threadIdx.x & 31;
  const long long wg = (long long)blockIdx.x * ROWS_WARPS + (threadIdx.x >> 5);
  const long long total = (long long)p.num_tokens * p.num_kv_heads * p.num_chunks;
  if (wg >= total) return;
  const int chunk = (int)(wg % p.num_chunks);
  const long long rest = wg / p.num_chunks;
  const int kvh = (int)(rest % p.num_kv_heads);
  const int row = (int)(rest / p.num_kv_heads);
  const int split = blockIdx.y;
  const int D = p.head_dim;
  const int h0 = kvh * p.group + chunk * p.heads_per_chunk;
  const int nh = min(p.heads_per_chunk, p.group - chunk * p.heads_per_chunk);

  const int s = find_seq(cu, p.num_seqs, row);
  if (s < 0) {  // padding row: zeros (written once, by split 0)
    if (split == 0) {
      for (int g = 0; g < nh; ++g)
        for (int d = lane; d < D; d += 32) out[((long long)row * p.num_heads + h0 + g) * D + d] = from_f<T>(0.f);
    }
    return;
  }
  const int qlen = (int)(cu[s + 1] - cu[s]);
  if (qlen > p.rows_max_qlen) return;  // prefill sequence: attn_tile
  const int ctx = (int)ctx_lens[s];
  const int len = ctx - qlen + (row - (int)cu[s]) + 1;  // causal: positions 0..len-1
  const int per = (len + p.num_splits - 1) / p.num_splits;
  const int t0 = split * per;
  const int t1 = min(len, t0 + per);

  const int nvec = D / VEC;
  int P = 1;  // lanes per key: power of two >= ceil(nvec / NV), <= 32
  while (P < 32 && P * NV < nvec) P <<= 1;
  const int KPI = 32 / P;  // keys per warp iteration
  const int lk = lane / P, li = lane % P;

  // This lane's slice of the (pre-scaled) queries.
  float qr[GMAX][NV][VEC];
  float acc[GMAX][NV][VEC];
  float m[GMAX], l[GMAX];
  const float qscale = p.scale * LOG2E;
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    m[g] = -LANTERN_INF;
    l[g] = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int v = li + j * P;
      float tmp[VEC];
      if (g < nh && v < nvec) {
        load_vec<T, VEC>(q + ((long long)row * p.num_heads + h0 + g) * D + v * VEC, tmp);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) tmp[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        qr[g][j][e] = tmp[e] * qscale;
        acc[g][j][e] = 0.f;
      }
    }
  }

  const uint32_t* table = tables + (long long)s * p.max_blocks;
  const long long row_stride = (long long)p.num_kv_heads * D;
  for (int tb = t0; tb < t1; tb += KPI * ROWS_UNROLL) {
    Packed<T, VEC> kv[ROWS_UNROLL][NV], vv[ROWS_UNROLL][NV];
    bool valid[ROWS_UNROLL];
#pragma unroll
    for (int u = 0; u < ROWS_UNROLL; ++u) {
      const int t = tb + u * KPI + lk;
      valid[u] = t < t1;
      long long base = 0;
      if (valid[u]) {
        const int bi = t / p.block_size;
        const uint32_t blk = bi < p.max_blocks ? table[bi] : 0xffffffffu;
        valid[u] = blk < (uint32_t)p.num_blocks;
        base = ((long long)blk * p.block_size + t % p.block_size) * row_stride + (long long)kvh * D;
      }
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int v = li + j * P;
        if (valid[u] && v < nvec) {
          load_packed<T, VEC>(kc + base + v * VEC, kv[u][j]);
          load_packed<T, VEC>(vc + base + v * VEC, vv[u][j]);
        } else {
          zero_packed<T, VEC>(kv[u][j]);
          zero_packed<T, VEC>(vv[u][j]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < ROWS_UNROLL; ++u) {
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < NV; ++j)
#pragma unroll
          for (int e = 0; e < VEC; ++e) dot = fmaf(qr[g][j][e], to_f(kv[u][j].e[e]), dot);
        dot = group_sum(dot, P);
        if (valid[u] && g < nh) {
          const float mn = fmaxf(m[g], dot);
          const float alpha = exp2f(m[g] - mn);  // m = -inf -> 0
          const float pe = exp2f(dot - mn);
          l[g] = l[g] * alpha + pe;
          m[g] = mn;
#pragma unroll
          for (int j = 0; j < NV; ++j)
#pragma unroll
            for (int e = 0; e < VEC; ++e)
              acc[g][j][e] = fmaf(pe, to_f(vv[u][j].e[e]), acc[g][j][e] * alpha);
        }
      }
    }
  }

  // Merge the KPI lane groups (each saw a different subset of keys).
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    for (int o = P; o < 32; o <<= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float lo_ = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float mn = fmaxf(m[g], mo);
      const float a = (m[g] == -LANTERN_INF) ? 0.f : exp2f(m[g] - mn);
      const float b = (mo == -LANTERN_INF) ? 0.f : exp2f(mo - mn);
      l[g] = l[g] * a + lo_ * b;
      m[g] = mn;
#pragma unroll
      for (int j = 0; j < NV; ++j)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float ao = __shfl_xor_sync(0xffffffffu, acc[g][j][e], o);
          acc[g][j][e] = acc[g][j][e] * a + ao * b;
        }
    }
  }
  if (lk != 0) return;
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (g >= nh) break;
    const int h = h0 + g;
    if (p.num_splits == 1) {
      const float inv = l[g] > 0.f ? 1.f / l[g] : 0.f;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int v = li + j * P;
        if (v < nvec) {
          float o[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) o[e] = acc[g][j][e] * inv;
          store_vec<T, VEC>(out + ((long long)row * p.num_heads + h) * D + v * VEC, o);
        }
      }
    } else {
      const long long part = ((long long)row * p.num_heads + h) * p.num_splits + split;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int v = li + j * P;
        if (v < nvec)
#pragma unroll
          for (int e = 0; e < VEC; ++e) part_acc[part * D + v * VEC + e] = acc[g][j][e];
      }
      if (li == 0) {
        part_ml[part * 2] = m[g];
        part_ml[part * 2 + 1] = l[g];
      }
    }
  }
}

// Combines the split partials of attn_rows: one block per (row, head).
template <typename T>
__device__ void attn_reduce(T* __restrict__ out, const float* __restrict__ part_acc,
                            const float* __restrict__ part_ml, const uint32_t* __restrict__ cu,
                            const AttnParams p) {
  const int row = blockIdx.x / p.num_heads, h = blockIdx.x % p.num_heads;
  const int s = find_seq(cu, p.num_seqs, row);
  if (s < 0 || (int)(cu[s + 1] - cu[s]) > p.rows_max_qlen) return;
  const long long base = ((long long)row * p.num_heads + h) * p.num_splits;
  float mx = -LANTERN_INF;
  for (int i = 0; i < p.num_splits; ++i) mx = fmaxf(mx, part_ml[(base + i) * 2]);
  float denom = 0.f;
  for (int i = 0; i < p.num_splits; ++i) {
    const float mi = part_ml[(base + i) * 2];
    if (mi != -LANTERN_INF) denom += part_ml[(base + i) * 2 + 1] * exp2f(mi - mx);
  }
  const float inv = denom > 0.f ? 1.f / denom : 0.f;
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float a = 0.f;
    for (int i = 0; i < p.num_splits; ++i) {
      const float mi = part_ml[(base + i) * 2];
      if (mi != -LANTERN_INF) a += part_acc[(base + i) * p.head_dim + d] * exp2f(mi - mx);
    }
    out[((long long)row * p.num_heads + h) * p.head_dim + d] = from_f<T>(a * inv);
  }
}

constexpr int TILE_THREADS = 128;
constexpr int TILE_K = 32;      // keys per shared-memory tile
constexpr int TILE_R = 32;      // query vectors (positions x GQA heads) per block

// Dynamic shared memory of attn_tile, in floats.
__host__ __device__ constexpr int tile_smem_floats(int D) {
  return TILE_R * D + TILE_K * (D + 1) + TILE_K * D + TILE_R * TILE_K + 3 * TILE_R;
}

template <typename T, int VEC, int DMAX>
__device__ void attn_tile(T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ kc,
                          const T* __restrict__ vc, const uint32_t* __restrict__ tables,
                          const uint32_t* __restrict__ cu, const uint32_t* __restrict__ ctx_lens,
                          const AttnParams p) {
  extern __shared__ float smem[];
  const int D = p.head_dim, G = p.group;
  const int s = blockIdx.y, kvh = blockIdx.z;
  const int qlen = (int)(cu[s + 1] - cu[s]);
  if (qlen <= p.rows_max_qlen) return;
  const int tq = max(1, TILE_R / G);  // query positions per block
  const int j0 = blockIdx.x * tq;
  if (j0 >= qlen) return;
  const int nq = min(tq, qlen - j0);
  const int R = nq * G;  // query vectors of this block, r = jj * G + g
  const int ctx = (int)ctx_lens[s];
  const int qpos0 = ctx - qlen + j0;
  const int kend = qpos0 + nq;  // keys 0..kend-1 are visible to some row

  float* Qs = smem;                      // [TILE_R][D]
  float* Ks = Qs + TILE_R * D;           // [TILE_K][D + 1]
  float* Vs = Ks + TILE_K * (D + 1);     // [TILE_K][D]
  float* S = Vs + TILE_K * D;            // [TILE_R][TILE_K]
  float* m_s = S + TILE_R * TILE_K;      // [TILE_R]
  float* l_s = m_s + TILE_R;
  float* a_s = l_s + TILE_R;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float qscale = p.scale * LOG2E;
  const int nvec = D / VEC;
  for (int i = tid; i < TILE_R * nvec; i += TILE_THREADS) {
    const int r = i / nvec, d = (i % nvec) * VEC;
    float tmp[VEC];
    if (r < R) {
      const long long tok = (long long)cu[s] + j0 + r / G;
      const int h = kvh * G + r % G;
      load_vec<T, VEC>(q + (tok * p.num_heads + h) * D + d, tmp);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) tmp[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) Qs[r * D + d + e] = tmp[e] * qscale;
  }
  if (tid < TILE_R) {
    m_s[tid] = -LANTERN_INF;
    l_s[tid] = 0.f;
  }
  constexpr int RPT = TILE_R / (TILE_THREADS / 32);  // rows per thread (8)
  constexpr int DPT = DMAX / 32;                      // head_dim columns per thread
  float acc[RPT][DPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i)
#pragma unroll
    for (int j = 0; j < DPT; ++j) acc[i][j] = 0.f;

  const uint32_t* table = tables + (long long)s * p.max_blocks;
  const long long row_stride = (long long)p.num_kv_heads * D;
  for (int kt0 = 0; kt0 < kend; kt0 += TILE_K) {
    __syncthreads();  // previous tile fully consumed (and Qs/m_s initialised)
    for (int i = tid; i < TILE_K * nvec; i += TILE_THREADS) {
      const int k = i / nvec, d = (i % nvec) * VEC;
      const int t = kt0 + k;
      float kt[VEC], vt[VEC];
      bool ok = t < kend && t / p.block_size < p.max_blocks;
      long long base = 0;
      if (ok) {
        const uint32_t blk = table[t / p.block_size];
        ok = blk < (uint32_t)p.num_blocks;
        base = ((long long)blk * p.block_size + t % p.block_size) * row_stride + (long long)kvh * D;
      }
      if (ok) {
        load_vec<T, VEC>(kc + base + d, kt);
        load_vec<T, VEC>(vc + base + d, vt);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) kt[e] = vt[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        Ks[k * (D + 1) + d + e] = kt[e];
        Vs[k * D + d + e] = vt[e];
      }
    }
    __syncthreads();
    // Scores: thread -> key `lane`, rows warp + 4 i (each K element loaded once for 8 rows).
    {
      const int k = lane;
      const int t = kt0 + k;
      float dot[RPT];
#pragma unroll
      for (int i = 0; i < RPT; ++i) dot[i] = 0.f;
      const float* krow = Ks + k * (D + 1);
      for (int d = 0; d < D; ++d) {
        const float kv = krow[d];
#pragma unroll
        for (int i = 0; i < RPT; ++i) dot[i] = fmaf(Qs[(warp + 4 * i) * D + d], kv, dot[i]);
      }
#pragma unroll
      for (int i = 0; i < RPT; ++i) {
        const int r = warp + 4 * i;
        const bool vis = r < R && t <= qpos0 + r / G;
        S[r * TILE_K + k] = vis ? dot[i] : -LANTERN_INF;
      }
    }
    __syncthreads();
    // Online softmax: warp -> rows warp + 4 i, lane -> key.
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const int r = warp + 4 * i;
      const float x = S[r * TILE_K + lane];
      const float mo = m_s[r];
      const float mn = fmaxf(mo, warp_max(x));
      const float pe = (x == -LANTERN_INF) ? 0.f : exp2f(x - mn);
      const float sum = warp_sum(pe);
      S[r * TILE_K + lane] = pe;
      if (lane == 0) {
        const float alpha = (mo == -LANTERN_INF) ? 0.f : exp2f(mo - mn);
        l_s[r] = l_s[r] * alpha + sum;
        m_s[r] = mn;
        a_s[r] = alpha;
      }
    }
    __syncthreads();
    // P V: thread -> columns lane + 32 j, rows warp + 4 i; per key, RPT probabilities and
    // DPT values feed RPT x DPT multiply-adds.
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const float alpha = a_s[warp + 4 * i];
#pragma unroll
      for (int j = 0; j < DPT; ++j) acc[i][j] *= alpha;
    }
    for (int k = 0; k < TILE_K; ++k) {
      float pr[RPT], vv[DPT];
#pragma unroll
      for (int i = 0; i < RPT; ++i) pr[i] = S[(warp + 4 * i) * TILE_K + k];
#pragma unroll
      for (int j = 0; j < DPT; ++j) {
        const int d = lane + 32 * j;
        vv[j] = d < D ? Vs[k * D + d] : 0.f;
      }
#pragma unroll
      for (int i = 0; i < RPT; ++i)
#pragma unroll
        for (int j = 0; j < DPT; ++j) acc[i][j] = fmaf(pr[i], vv[j], acc[i][j]);
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int r = warp + 4 * i;
    if (r >= R) continue;
    const float inv = l_s[r] > 0.f ? 1.f / l_s[r] : 0.f;
    const long long tok = (long long)cu[s] + j0 + r / G;
    const int h = kvh * G + r % G;
#pragma unroll
    for (int j = 0; j < DPT; ++j) {
      const int d = lane + 32 * j;
      if (d < D) out[(tok * p.num_heads + h) * D + d] = from_f<T>(acc[i][j] * inv);
    }
  }
}

#define ROWS_KERNEL(T, SUF, NAME, VEC, NV, G)                                                 \
  extern "C" __global__ void __launch_bounds__(ROWS_WARPS * 32)                               \
      NAME##_##SUF(T* out, float* part_acc, float* part_ml, const T* q, const T* kc,         \
                   const T* vc, const uint32_t* tables, const uint32_t* cu,                   \
                   const uint32_t* ctx_lens, AttnParams p) {                                  \
    attn_rows<T, VEC, NV, G>(out, part_acc, part_ml, q, kc, vc, tables, cu, ctx_lens, p);    \
  }

#define TILE_KERNEL(T, SUF, NAME, VEC, DMAX)                                                  \
  extern "C" __global__ void __launch_bounds__(TILE_THREADS)                                  \
      NAME##_##SUF(T* out, const T* q, const T* kc, const T* vc, const uint32_t* tables,      \
                   const uint32_t* cu, const uint32_t* ctx, AttnParams p) {                   \
    attn_tile<T, VEC, DMAX>(out, q, kc, vc, tables, cu, ctx, p);                              \
  }

#define ATTN_KERNELS(T, SUF)                                                                  \
  ROWS_KERNEL(T, SUF, attn_rows_vec_g1, 16 / sizeof(T), 1, 1)                                \
  ROWS_KERNEL(T, SUF, attn_rows_vec_g2, 16 / sizeof(T), 1, 2)                                \
  ROWS_KERNEL(T, SUF, attn_rows_vec_g4, 16 / sizeof(T), 1, 4)                                \
  ROWS_KERNEL(T, SUF, attn_rows_vec_g8, 16 / sizeof(T), 1, 8)                                \
  ROWS_KERNEL(T, SUF, attn_rows_scalar_g1, 1, 8, 1)                                          \
  ROWS_KERNEL(T, SUF, attn_rows_scalar_g2, 1, 8, 2)                                          \
  ROWS_KERNEL(T, SUF, attn_rows_scalar_g4, 1, 8, 4)                                          \
  ROWS_KERNEL(T, SUF, attn_rows_scalar_g8, 1, 8, 8)                                          \
  extern "C" __global__ void attn_reduce_##SUF(T* out, const float* part_acc,                \
                                               const float* part_ml, const uint32_t* cu,      \
                                               AttnParams p) {                                \
    attn_reduce<T>(out, part_acc, part_ml, cu, p);                                            \
  }                                                                                           \
  TILE_KERNEL(T, SUF, attn_tile_vec_d128, 16 / sizeof(T), 128)                                \
  TILE_KERNEL(T, SUF, attn_tile_vec_d256, 16 / sizeof(T), 256)                                \
  TILE_KERNEL(T, SUF, attn_tile_scalar_d128, 1, 128)                                          \
  TILE_KERNEL(T, SUF, attn_tile_scalar_d256, 1, 256)

LANTERN_FOR_DTYPES(ATTN_KERNELS)
