// Elementwise/row kernels: RMSNorm (optionally fused with the residual add), rotary embedding
// in place from a cos/sin table indexed by position (half-rotation / neox style), SiLU-and-mul.
// All math in f32; results rounded once to the storage type.
#include "common.cuh"

// out[r] = x'[r] * rsqrt(mean(x'[r]^2) + eps) * w, where x' = x + residual (rounded to T and
// written to residual_out) when residual != nullptr, else x' = x. One block per row.
template <typename T, int VEC>
__device__ void rms_norm(T* __restrict__ out, T* __restrict__ residual_out, const T* __restrict__ x,
                         const T* __restrict__ residual, const T* __restrict__ w, int hidden,
                         float eps) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  const T* xr = x + row * hidden;
  const T* rr = residual ? residual + row * hidden : nullptr;
  const int nvec = hidden / VEC;
  float ss = 0.f;
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
    float a[VEC];
    load_vec<T, VEC>(xr + i * VEC, a);
    if (rr) {
      float b[VEC];
      load_vec<T, VEC>(rr + i * VEC, b);
#pragma unroll
      for (int e = 0; e < VEC; ++e) a[e] = to_f(from_f<T>(a[e] + b[e]));
      store_vec<T, VEC>(residual_out + row * hidden + i * VEC, a);
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) ss = fmaf(a[e], a[e], ss);
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / (float)hidden + eps);
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
    float a[VEC], g[VEC];
    load_vec<T, VEC>(xr + i * VEC, a);
    if (rr) {
      float b[VEC];
      load_vec<T, VEC>(rr + i * VEC, b);
#pragma unroll
      for (int e = 0; e < VEC; ++e) a[e] = to_f(from_f<T>(a[e] + b[e]));
    }
    load_vec<T, VEC>(w + i * VEC, g);
#pragma unroll
    for (int e = 0; e < VEC; ++e) a[e] = a[e] * inv * g[e];
    store_vec<T, VEC>(out + row * hidden + i * VEC, a);
  }
}

// x (tokens, heads, head_dim) with strides (s0, s1, 1), rotated in place:
// for i < head_dim / 2 with c = cos[pos][i], s = sin[pos][i]:
//   x[i] <- x[i] c - x[i + half] s,  x[i + half] <- x[i + half] c + x[i] s.
// Tokens whose position is >= max_pos are left untouched. One block per token.
template <typename T>
__device__ void rope(T* __restrict__ x, const T* __restrict__ cos_t, const T* __restrict__ sin_t,
                     const uint32_t* __restrict__ positions, int heads, int head_dim, long long s0,
                     long long s1, int max_pos) {
  const int tok = blockIdx.x;
  const uint32_t pos = positions[tok];
  if (pos >= (uint32_t)max_pos) return;
  const int half = head_dim / 2;
  const T* c = cos_t + (long long)pos * half;
  const T* sn = sin_t + (long long)pos * half;
  for (int i = threadIdx.x; i < heads * half; i += blockDim.x) {
    const int h = i / half, d = i % half;
    T* row = x + tok * s0 + h * s1;
    const float a = to_f(row[d]), b = to_f(row[d + half]);
    const float cv = to_f(c[d]), sv = to_f(sn[d]);
    row[d] = from_f<T>(a * cv - b * sv);
    row[d + half] = from_f<T>(b * cv + a * sv);
  }
}

// out (rows, n) = silu(gate) * up; gate/up rows at strides gs/us (unit last stride).
template <typename T, int VEC>
__device__ void silu_mul(T* __restrict__ out, const T* __restrict__ gate, const T* __restrict__ up,
                         int n, long long gs, long long us) {
  const long long row = blockIdx.y;
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
  if (i >= n) return;
  float g[VEC], u[VEC], o[VEC];
  load_vec<T, VEC>(gate + row * gs + i, g);
  load_vec<T, VEC>(up + row * us + i, u);
#pragma unroll
  for (int e = 0; e < VEC; ++e) o[e] = g[e] / (1.f + expf(-g[e])) * u[e];
  store_vec<T, VEC>(out + row * n + i, o);
}

#define NORM_KERNELS(T, SUF)                                                                  \
  extern "C" __global__ void __launch_bounds__(1024)                                          \
      rms_norm_##SUF(T* out, T* res_out, const T* x, const T* res, const T* w, int hidden,    \
                     float eps) {                                                              \
    rms_norm<T, 1>(out, res_out, x, res, w, hidden, eps);                                     \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(1024)                                          \
      rms_norm_vec_##SUF(T* out, T* res_out, const T* x, const T* res, const T* w,            \
                         int hidden, float eps) {                                              \
    rms_norm<T, 16 / sizeof(T)>(out, res_out, x, res, w, hidden, eps);                        \
  }                                                                                           \
  extern "C" __global__ void rope_##SUF(T* x, const T* c, const T* s, const uint32_t* pos,    \
                                        int heads, int head_dim, long long s0, long long s1,  \
                                        int max_pos) {                                        \
    rope<T>(x, c, s, pos, heads, head_dim, s0, s1, max_pos);                                  \
  }                                                                                           \
  extern "C" __global__ void silu_mul_##SUF(T* out, const T* g, const T* u, int n,            \
                                            long long gs, long long us) {                     \
    silu_mul<T, 1>(out, g, u, n, gs, us);                                                     \
  }                                                                                           \
  extern "C" __global__ void silu_mul_vec_##SUF(T* out, const T* g, const T* u, int n,        \
                                                long long gs, long long us) {                 \
    silu_mul<T, 16 / sizeof(T)>(out, g, u, n, gs, us);                                       \
  }

LANTERN_FOR_DTYPES(NORM_KERNELS)
