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

//! y (R, out) += bias (out) in 16-byte chunks (8 bfloat16 or 4 float values per thread), for
//! rows of a multiple of 16 bytes and 16-byte aligned y and bias; the same arithmetic per value as
//! BiasOp, so the results are identical. The bias pass after every GEMM is memory-bound; whole
//! chunks move it in 16-byte accesses with one index division per chunk.
template <class T>
__global__ void bias_chunks_kernel(T* y, const T* bias, std::int64_t chunks, std::int64_t chunks_per_row) {
  constexpr int per_chunk = 16 / static_cast<int>(sizeof(T));
  const std::int64_t stride = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += stride) {
    uint4 values = reinterpret_cast<const uint4*>(y)[c];
    const uint4 offsets = reinterpret_cast<const uint4*>(bias)[c % chunks_per_row];
    T* v = reinterpret_cast<T*>(&values);
    const T* b = reinterpret_cast<const T*>(&offsets);
    for (int k = 0; k < per_chunk; ++k) v[k] = store<T>(load(v[k]) + load(b[k]));
    reinterpret_cast<uint4*>(y)[c] = values;
  }
}

//! y (R, out) += bias (out): 16-byte chunks when the shapes and pointers allow, else BiasOp.
template <class T>
void add_bias(T* y, const T* bias, std::int64_t rows, std::int64_t out_features) {
  const auto aligned = [](const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; };
  const std::int64_t row_bytes = out_features * static_cast<std::int64_t>(sizeof(T));
  if (row_bytes % 16 != 0 || !aligned(y) || !aligned(bias) || rows <= 0) {
    for_each(rows * out_features, BiasOp<T>{y, bias, out_features});
    return;
  }
  const std::int64_t chunks_per_row = row_bytes / 16, chunks = rows * chunks_per_row;
  bias_chunks_kernel<T><<<grid_blocks(chunks), elementwise_threads, 0, current_stream()>>>(y, bias, chunks,
                                                                                           chunks_per_row);
  check_launch("tim::cuda bias kernel");
}

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
//! Values of one head each lane of a warp holds in the per-head kernels: j = lane + 32 o.
inline constexpr int head_values_per_lane = max_head_dim / 32;
//! Warps per block of the per-head kernels (one warp per head of one token).
inline constexpr int head_warps_per_block = 8;

//! Where head item `i` of a split reads and writes, and what it is (unit-tested on the host).
struct HeadItem {
  int part = 0;                // 0 q, 1 k, 2 v (qkv split); 0 for a head split
  std::int64_t token = 0;      // n, the rotary row
  std::int64_t source = 0;     // offset of the head's first value in the input
  std::int64_t bias = 0;       // offset in the per-sample bias (B, 3 D) (qkv split)
  std::int64_t target = 0;     // offset in the output (B, nh, N, hd)
};

//! Item i of qkv (B, N, 3, nh, hd) -> q, k, v (B, nh, N, hd): i = (row, part, head), head fastest.
TIM_HD inline HeadItem qkv_split_item(std::int64_t i, std::int64_t tokens, std::int64_t heads, std::int64_t head_dim) {
  HeadItem item;
  const std::int64_t h = i % heads, row = i / (3 * heads), b = row / tokens, dim = heads * head_dim;
  item.part = static_cast<int>((i / heads) % 3);
  item.token = row % tokens;
  const std::int64_t offset = item.part * dim + h * head_dim;
  item.source = row * 3 * dim + offset;
  item.bias = b * 3 * dim + offset;
  item.target = ((b * heads + h) * tokens + item.token) * head_dim;
  return item;
}

//! Item i of rows `row_stride` apart (B, N, ..., nh, hd ...) -> (B, nh, N, hd): i = (row, head).
TIM_HD inline HeadItem split_heads_item(std::int64_t i, std::int64_t tokens, std::int64_t heads, std::int64_t head_dim,
                                        std::int64_t row_stride) {
  HeadItem item;
  const std::int64_t h = i % heads, row = i / heads, b = row / tokens;
  item.token = row % tokens;
  item.source = row * row_stride + h * head_dim;
  item.target = ((b * heads + h) * tokens + item.token) * head_dim;
  return item;
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

//! One head through math's per-head transform with a warp: lane l holds u[j], j = l + 32 o.
//! dst (hd) = prepare_head(src (hd) [+ bias (hd)]): LayerNorm over hd (when norm_weight; the
//! statistics by warp sums), rotary of the pairs (2p, 2p + 1) with math::rotate_pair (the
//! partner value by a lane shuffle; when cos_row), times `scale`. Every lane of the warp calls it.
template <class T>
__device__ void prepare_head_warp(T* dst, const T* src, const T* bias, int head_dim, const T* norm_weight,
                                  const T* norm_bias, double norm_eps, const T* cos_row, const T* sin_row, float scale) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "tim::cuda per-head kernels take float or bfloat16 storage (float arithmetic)");
  const int lane = threadIdx.x % 32;
  float u[head_values_per_lane];
  float sum = 0.0f;
  for (int o = 0; o < head_values_per_lane; ++o) {
    const int j = lane + 32 * o;
    u[o] = j < head_dim ? load(src[j]) + (bias ? load(bias[j]) : 0.0f) : 0.0f;
    sum += u[o];
  }
  if (norm_weight) {
    const float mean = warp_sum(sum) / static_cast<float>(head_dim);
    float squares = 0.0f;
    for (int o = 0; o < head_values_per_lane; ++o)
      if (lane + 32 * o < head_dim) squares += (u[o] - mean) * (u[o] - mean);
    const float rstd = math::layernorm_rstd(warp_sum(squares) / static_cast<float>(head_dim), norm_eps);
    for (int o = 0; o < head_values_per_lane; ++o) {
      const int j = lane + 32 * o;
      if (j < head_dim) u[o] = math::layernorm_value(u[o], mean, rstd, norm_weight, norm_bias, j);
    }
  }
  if (cos_row)
    for (int o = 0; o < head_values_per_lane; ++o) {
      const float partner = __shfl_xor_sync(0xffffffffu, u[o], 1);  // value j ^ 1, held by lane ^ 1
      const int j = lane + 32 * o;
      if (j >= head_dim) continue;
      const bool even = j % 2 == 0;
      float first = even ? u[o] : partner, second = even ? partner : u[o];
      math::rotate_pair(first, second, load(cos_row[j / 2]), load(sin_row[j / 2]));
      u[o] = even ? first : second;
    }
  for (int o = 0; o < head_values_per_lane; ++o) {
    const int j = lane + 32 * o;
    if (j < head_dim) dst[j] = store<T>(scale != 1.0f ? u[o] * scale : u[o]);
  }
}

template <class T>
struct QkvSplitArguments {
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
};

//! One warp per (token, part, head) of qkv: the per-sample bias, then qk-norm, rotary and the
//! query scale on q and k; v copied.
template <class T>
__global__ void __launch_bounds__(32 * head_warps_per_block)
    qkv_split_kernel(QkvSplitArguments<T> a, std::int64_t items) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * head_warps_per_block + threadIdx.x / 32;
  if (i >= items) return;  // whole warps leave together
  const HeadItem item = qkv_split_item(i, a.tokens, a.heads, a.head_dim);
  const int hd = static_cast<int>(a.head_dim);
  T* dst = (item.part == 0 ? a.q : item.part == 1 ? a.k : a.v) + item.target;
  const T* bias = a.sample_bias ? a.sample_bias + item.bias : nullptr;
  if (item.part == 2) {
    prepare_head_warp<T>(dst, a.qkv + item.source, bias, hd, nullptr, nullptr, 0.0, nullptr, nullptr, 1.0f);
    return;
  }
  const std::int64_t rotary_row = item.token * (a.head_dim / 2);
  prepare_head_warp<T>(dst, a.qkv + item.source, bias, hd, item.part == 0 ? a.q_norm_weight : a.k_norm_weight,
                       item.part == 0 ? a.q_norm_bias : a.k_norm_bias, a.norm_eps,
                       a.rotary_cos ? a.rotary_cos + rotary_row : nullptr,
                       a.rotary_sin ? a.rotary_sin + rotary_row : nullptr, item.part == 0 ? load(a.q_scale) : 1.0f);
}

//! One warp per (token, head): cross-attention's q, k and v heads through prepare_head.
template <class T>
__global__ void __launch_bounds__(32 * head_warps_per_block)
    split_heads_kernel(T* out, const T* in, std::int64_t row_stride, const T* norm_weight, const T* norm_bias,
                       double norm_eps, const T* rotary_cos, const T* rotary_sin, std::int64_t tokens,
                       std::int64_t heads, std::int64_t head_dim, T scale, std::int64_t items) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * head_warps_per_block + threadIdx.x / 32;
  if (i >= items) return;
  const HeadItem item = split_heads_item(i, tokens, heads, head_dim, row_stride);
  const std::int64_t rotary_row = item.token * (head_dim / 2);
  prepare_head_warp<T>(out + item.target, in + item.source, nullptr, static_cast<int>(head_dim), norm_weight,
                       norm_bias, norm_eps, rotary_cos ? rotary_cos + rotary_row : nullptr,
                       rotary_sin ? rotary_sin + rotary_row : nullptr, load(scale));
}

//! Blocks for `items` warps of a per-head kernel.
inline unsigned head_blocks(std::int64_t items) {
  const std::int64_t blocks = (items + head_warps_per_block - 1) / head_warps_per_block;
  check(blocks <= std::int64_t{0x7fffffff}, "tim::cuda: ", items, " heads exceed the grid");
  return static_cast<unsigned>(std::max<std::int64_t>(blocks, 1));
}

}  // namespace tim::cuda_detail
