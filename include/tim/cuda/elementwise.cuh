// The element-wise kernels of the tim::cuda backend: one grid-stride executor (for_each) and a
// small functor per operation whose body calls the shared math/ formula, so the arithmetic is
// the code the CPU backend runs (and tests) in its loops. Values are loaded into the compute
// type (float for float and bfloat16 storage) and rounded once when stored. The functors are
// host-and-device (TIM_HD), so the tests can run their index arithmetic on the host against
// tim::cpu without a GPU.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, N tokens, D hidden, nh heads, hd head dim, R rows, C channels,
// H x W latent, p patch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "tim/core/dtype.hpp"
#include "tim/cuda/runtime.cuh"
#include "tim/math/activations.hpp"
#include "tim/math/attention.hpp"
#include "tim/math/embedding.hpp"

namespace tim::cuda_detail {

//! The arithmetic type of a storage type: float for float and bfloat16 (bfloat16 storage with
//! float arithmetic), double for double.
template <class T>
using compute_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
TIM_HD inline compute_t<T> load(const T& value) {
  return static_cast<compute_t<T>>(value);
}
template <class T, class C>
TIM_HD inline T store(C value) {
  return static_cast<T>(value);
}

//! Threads per block of the element-wise kernels.
inline constexpr int elementwise_threads = 256;
//! Most blocks one element-wise launch uses; a grid-stride loop covers the rest.
inline constexpr std::int64_t elementwise_max_blocks = 65536;

//! Blocks of `threads` for a grid-stride loop over `n` items: ceil(n / threads), at least 1, at
//! most elementwise_max_blocks.
inline unsigned grid_blocks(std::int64_t n, int threads = elementwise_threads) {
  const std::int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, elementwise_max_blocks));
}

template <class Op>
__global__ void for_each_kernel(std::int64_t n, Op op) {
  const std::int64_t stride = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) op(i);
}

//! Runs op(i) for i in [0, n) on the current stream: the executor of every functor below.
template <class Op>
void for_each(std::int64_t n, const Op& op) {
  if (n <= 0) return;
  for_each_kernel<<<grid_blocks(n), elementwise_threads, 0, current_stream()>>>(n, op);
  check_launch("tim::cuda element-wise kernel");
}

template <class T>
struct FillOp {
  T* data;
  T value;
  TIM_HD void operator()(std::int64_t i) const { data[i] = value; }
};

//! out[i] = To(in[i]) (the sampler's double state to and from the network's precision).
template <class To, class From>
struct ConvertOp {
  To* out;
  const From* in;
  TIM_HD void operator()(std::int64_t i) const {
    if constexpr (std::is_same_v<To, bfloat16>)
      out[i] = bfloat16(static_cast<float>(in[i]));
    else
      out[i] = static_cast<To>(static_cast<compute_t<From>>(in[i]));
  }
};

//! y (R, out) += bias (out), after the GEMM.
template <class T>
struct BiasOp {
  T* y;
  const T* bias;
  std::int64_t out_features;
  TIM_HD void operator()(std::int64_t i) const {
    y[i] = store<T>(load(y[i]) + load(bias[i % out_features]));
  }
};

template <class T>
struct SwigluOp {
  T* out;
  const T* gate;
  const T* value;
  std::int64_t cols, gate_stride, value_stride;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / cols, j = i % cols;
    out[i] = store<T>(math::swiglu(load(gate[r * gate_stride + j]), load(value[r * value_stride + j])));
  }
};

template <class T>
struct SiluOp {
  T* out;
  const T* in;
  TIM_HD void operator()(std::int64_t i) const { out[i] = store<T>(math::silu(load(in[i]))); }
};

//! features (B, 256) from scalars s (B).
template <class T>
struct TimestepFeaturesOp {
  T* features;
  const T* s;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t b = i / math::timestep_features;
    features[i] = store<T>(math::timestep_feature(load(s[b]), static_cast<int>(i % math::timestep_features)));
  }
};

//! x (B, N, D) = modulate(x, shift, scale), shift/scale rows `mod_stride` apart per sample.
template <class T>
struct ModulateOp {
  T* x;
  const T* shift;
  const T* scale;
  std::int64_t tokens, dim, mod_stride;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t row = i / dim, j = i % dim, b = row / tokens;
    x[i] = store<T>(math::modulate(load(x[i]), load(shift[b * mod_stride + j]), load(scale[b * mod_stride + j])));
  }
};

//! residual (B, N, D) += gate (B, D; stride mod_stride) * update (B, N, D).
template <class T>
struct GatedResidualOp {
  T* residual;
  const T* gate;
  const T* update;
  std::int64_t tokens, dim, mod_stride;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t row = i / dim, j = i % dim, b = row / tokens;
    residual[i] = store<T>(load(residual[i]) + load(gate[b * mod_stride + j]) * load(update[i]));
  }
};

//! patches (B*N, C p p) from x (B, C, H, W), one thread per patch value ordered (c, pi, pj).
template <class T>
struct PatchifyOp {
  T* patches;
  const T* x;
  std::int64_t channels, height, width, patch;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t per_patch = channels * patch * patch, h = height / patch, w = width / patch;
    const std::int64_t token = i / per_patch, k = i % per_patch;
    const std::int64_t c = k / (patch * patch), pi = (k / patch) % patch, pj = k % patch;
    const std::int64_t b = token / (h * w), row = (token / w) % h, col = token % w;
    patches[i] = x[((b * channels + c) * height + row * patch + pi) * width + col * patch + pj];
  }
};

//! out (B, C, H, W) from tokens (B*N, p p C) ordered (pi, pj, c), one thread per pixel value.
template <class T>
struct UnpatchifyOp {
  T* out;
  const T* tokens;
  std::int64_t channels, height, width, patch;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t h = height / patch, w = width / patch;
    const std::int64_t x = i % width, y = (i / width) % height, c = (i / (width * height)) % channels;
    const std::int64_t b = i / (width * height * channels);
    const std::int64_t row = y / patch, pi = y % patch, col = x / patch, pj = x % patch;
    const std::int64_t token = (b * h + row) * w + col;
    out[i] = tokens[token * patch * patch * channels + (pi * patch + pj) * channels + c];
  }
};

//! Labels per launch of the embedding gather; they travel as a kernel argument (2 KiB).
inline constexpr int embedding_indices_per_launch = 256;

//! out rows [first, first + count) (D each) = table rows index[0 .. count).
template <class T>
struct EmbeddingOp {
  T* out;
  const T* table;
  std::int64_t dim;
  std::int64_t index[embedding_indices_per_launch];
  TIM_HD void operator()(std::int64_t i) const { out[i] = table[index[i / dim] * dim + i % dim]; }
};

template <class T>
struct AddOp {
  T* out;
  const T* in;
  TIM_HD void operator()(std::int64_t i) const { out[i] = store<T>(load(out[i]) + load(in[i])); }
};

template <class T>
struct DifferenceOp {
  T* out;
  const T* a;
  const T* b;
  TIM_HD void operator()(std::int64_t i) const { out[i] = store<T>(load(a[i]) - load(b[i])); }
};

//! Largest head dim the per-head kernels (splits and attention) accept.
inline constexpr std::int64_t max_head_dim = 128;

//! One thread per (token, part, head) of qkv (B, N, 3, nh, hd) -> q, k, v (B, nh, N, hd):
//! adds the per-sample bias, then math::prepare_head on q and k (qk-norm, rotary, q scale) in
//! the compute type, on a private copy of the head.
template <class T>
struct QkvSplitOp {
  T* q;
  T* k;
  T* v;
  const T* qkv;
  const T* sample_bias;
  const T* q_norm_weight;
  const T* q_norm_bias;
  const T* k_norm_weight;
  const T* k_norm_bias;
  double norm_eps;
  const T* rotary_cos;
  const T* rotary_sin;
  std::int64_t tokens, heads, head_dim;
  T q_scale;

  TIM_HD void operator()(std::int64_t i) const {
    using C = compute_t<T>;
    const std::int64_t h = i % heads, part = (i / heads) % 3, row = i / (3 * heads);
    const std::int64_t b = row / tokens, n = row % tokens, dim = heads * head_dim;
    const std::int64_t offset = part * dim + h * head_dim;
    const T* src = qkv + row * 3 * dim + offset;
    C u[max_head_dim];
    for (std::int64_t j = 0; j < head_dim; ++j)
      u[j] = load(src[j]) + (sample_bias ? load(sample_bias[b * 3 * dim + offset + j]) : C(0));
    if (part != 2)
      math::prepare_head(u, head_dim, part == 0 ? q_norm_weight : k_norm_weight, part == 0 ? q_norm_bias : k_norm_bias,
                         norm_eps, rotary_cos + n * (head_dim / 2), rotary_sin + n * (head_dim / 2),
                         part == 0 ? load(q_scale) : C(1));
    T* dst = (part == 0 ? q : part == 1 ? k : v) + ((b * heads + h) * tokens + n) * head_dim;
    for (std::int64_t j = 0; j < head_dim; ++j) dst[j] = store<T>(u[j]);
  }
};

//! One thread per (token, head): out (B, nh, tokens, hd) from rows `in_row_stride` apart,
//! each head through math::prepare_head (cross-attention's q, k and v).
template <class T>
struct SplitHeadsOp {
  T* out;
  const T* in;
  std::int64_t in_row_stride;
  const T* norm_weight;
  const T* norm_bias;
  double norm_eps;
  const T* rotary_cos;
  const T* rotary_sin;
  std::int64_t tokens, heads, head_dim;
  T scale;

  TIM_HD void operator()(std::int64_t i) const {
    using C = compute_t<T>;
    const std::int64_t h = i % heads, row = i / heads;
    const std::int64_t b = row / tokens, n = row % tokens;
    const T* src = in + row * in_row_stride + h * head_dim;
    C u[max_head_dim];
    for (std::int64_t j = 0; j < head_dim; ++j) u[j] = load(src[j]);
    math::prepare_head(u, head_dim, norm_weight, norm_bias, norm_eps,
                       rotary_cos ? rotary_cos + n * (head_dim / 2) : static_cast<const T*>(nullptr),
                       rotary_sin ? rotary_sin + n * (head_dim / 2) : static_cast<const T*>(nullptr), load(scale));
    T* dst = out + ((b * heads + h) * tokens + n) * head_dim;
    for (std::int64_t j = 0; j < head_dim; ++j) dst[j] = store<T>(u[j]);
  }
};

}  // namespace tim::cuda_detail
