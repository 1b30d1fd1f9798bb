// The CPU backend: memory plus the fixed set of static operations the nn/ modules call.
// GEMMs go through Eigen (threaded by OpenMP), or through a CBLAS library when TIM_USE_CBLAS is
// defined (the CMake target tim::blas: OpenBLAS, its OpenMP build, about 1.5x Eigen's rate on
// the network's products, docs/performance.md); every element-wise formula comes from math/.
//
// Shape legend: B batch, N tokens, D hidden, nh heads, hd head dim, R rows of a matrix.
#pragma once

#include <Eigen/Core>
#if defined(TIM_USE_CBLAS)
#include <cblas.h>
#endif
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "tim/core/backend.hpp"
#include "tim/core/memory.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/decoder_ops.hpp"
#include "tim/cpu/dispatch.hpp"
#include "tim/cpu/gemm_bf16.hpp"
#include "tim/cpu/scratch.hpp"
#include "tim/cpu/text_ops.hpp"
#include "tim/cpu/threads.hpp"
#include "tim/cpu/train_ops.hpp"
#include "tim/math/activations.hpp"
#include "tim/math/attention.hpp"
#include "tim/math/embedding.hpp"
#include "tim/math/normalization.hpp"
#include "tim/math/sampling.hpp"
#include "tim/math/text.hpp"

namespace tim {


// tim::cpu is tim::cpu_eigen::cpu or tim::cpu_cblas::cpu (TIM_CPU_ABI, core/config.hpp): its
// GEMMs differ by TIM_USE_CBLAS, so the configuration is part of every name that mentions it.
inline namespace TIM_CPU_ABI {

//! The CPU backend type. Modules are templates over a backend; this one runs on the host.
//! Memory (allocate, fill, the three copies) comes from HostMemory; see tim/core/backend.hpp
//! for the contract.
//! Decoder operations (the latent decoders' convolutions, norms, attention, upsampling) come from
//! cpu_detail::DecoderOps (tim/cpu/decoder_ops.hpp); the training operations (every `*_backward`
//! and the `*_training_forward` variants that save statistics) from cpu_detail::TrainOps
//! (tim/cpu/train_ops.hpp).
struct cpu : HostMemory, cpu_detail::DecoderOps<cpu>, cpu_detail::TrainOps<cpu> {
  //! Runs `body(i)` for i in [0, n) on the backend's threads. The executor for math/ functors.
  template <class Body>
  static void parallel_for(std::int64_t n, Body&& body) {
    detail::ensure_default_threads();
#pragma omp parallel for schedule(static) if (n > 1)
    for (std::int64_t i = 0; i < n; ++i) body(i);
  }
  //! The contract's executor: op(i) for i in [0, n) (parallel_for under its contract name).
  template <class Op>
  static void for_each(std::int64_t n, const Op& op) {
    parallel_for(n, op);
  }

  template <class T>
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  template <class T>
  using Vector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

  //! Whether GEMMs go through CBLAS (TIM_USE_CBLAS, the tim::blas target) rather than Eigen.
  static constexpr bool uses_blas =
#if defined(TIM_USE_CBLAS)
      true;
#else
      false;
#endif

  //! Up to this many rows, blas_gemm runs one matrix-vector product per row.
  static constexpr int small_rows = 4;

  //! y (R, out) (+)= x (R, in) W^T through CBLAS for float and double when TIM_USE_CBLAS is
  //! defined and the extents fit its int; false (nothing done) otherwise, Eigen then runs it.
  //! The library's OpenMP build shares tim's thread count (omp_set_num_threads).
  template <class T>
  static bool blas_gemm([[maybe_unused]] T* y, [[maybe_unused]] const T* x, [[maybe_unused]] const T* w,
                        [[maybe_unused]] std::int64_t rows, [[maybe_unused]] std::int64_t in_features,
                        [[maybe_unused]] std::int64_t out_features, [[maybe_unused]] bool accumulate) {
#if defined(TIM_USE_CBLAS)
    constexpr std::int64_t limit = 0x7fffffff;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (rows <= 0 || in_features <= 0 || out_features <= 0 || rows > limit || in_features > limit ||
          out_features > limit)
        return false;
      const int m = static_cast<int>(rows), n = static_cast<int>(out_features), k = static_cast<int>(in_features);
      if (m <= small_rows) {
        // A few rows (the per-sample adaLN, qkv_d and embedder products of a batch of 1 or 2):
        // one matrix-vector product per row reads W at memory speed; OpenBLAS's GEMM takes
        // 1.4-2.7x longer there (docs/performance.md).
        for (int r = 0; r < m; ++r) {
          if constexpr (std::is_same_v<T, float>)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x + std::int64_t{r} * k, 1,
                        accumulate ? 1.0f : 0.0f, y + std::int64_t{r} * n, 1);
          else
            cblas_dgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0, w, k, x + std::int64_t{r} * k, 1,
                        accumulate ? 1.0 : 0.0, y + std::int64_t{r} * n, 1);
        }
        return true;
      }
      if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, accumulate ? 1.0f : 0.0f, y,
                    n);
      else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0, x, k, w, k, accumulate ? 1.0 : 0.0, y, n);
      return true;
    }
#endif
    return false;
  }

  //! out (R, out_features) = in (R, in_features) * weight (out_features, in_features)^T + bias.
  //! `bias` may be null. With `accumulate`, the product is added to `out` instead.
  template <class T>
  static void linear_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows,
                             std::int64_t in_features, std::int64_t out_features,
                             bool accumulate = false) {
    detail::ensure_default_threads();
    Eigen::Map<RowMajor<T>> y(out, rows, out_features);
    Eigen::Map<const RowMajor<T>> x(in, rows, in_features);
    Eigen::Map<const RowMajor<T>> w(weight, out_features, in_features);
    if (!blas_gemm(out, in, weight, rows, in_features, out_features, accumulate)) {
      if (accumulate)
        y.noalias() += x * w.transpose();
      else
        y.noalias() = x * w.transpose();
    }
    if (bias) y.rowwise() += Eigen::Map<const Vector<T>>(bias, out_features);
  }

  //! The same product with weights stored as bfloat16 or float16 (memory-mapped views), float
  //! activations in and out, in the `precision` the caller chooses (tim/cpu/gemm_bf16.hpp):
  //! float32 widens the weights a panel at a time into per-thread scratch for the float GEMM;
  //! bfloat16 rounds the activations to bfloat16 and runs oneDNN's bfloat16 matmul (float sums)
  //! where cpu_gemm::bf16_kernel() is available, the float32 path otherwise (float16 weights:
  //! always float32).
  template <class W>
    requires(std::is_same_v<W, bfloat16> || std::is_same_v<W, float16>)
  static void linear_forward(float* out, const float* in, const W* weight, const float* bias, std::int64_t rows,
                             std::int64_t in_features, std::int64_t out_features, bool accumulate = false,
                             Precision precision = Precision::float32) {
    if constexpr (std::is_same_v<W, bfloat16>) {
      if (cpu_gemm::effective_precision(precision) == Precision::bfloat16)
        cpu_gemm::linear_bf16(out, in, weight, rows, in_features, out_features, accumulate);
      else
        cpu_gemm::linear_widened(out, in, weight, rows, in_features, out_features, accumulate);
    } else {
      cpu_gemm::linear_widened(out, in, weight, rows, in_features, out_features, accumulate);
    }
    if (bias && rows > 0)
      Eigen::Map<RowMajor<float>>(out, rows, out_features).rowwise() +=
          Eigen::Map<const Vector<float>>(bias, out_features);
  }

  //! The same product with q8_0 weights (io/q8_0.hpp, views of the mapping): float activations
  //! quantised per block of 32 and int8 dot products, cpu_gemm::linear_forward_q8 with the variant
  //! q8_kernel() chose for this CPU.
  static void linear_forward(float* out, const float* in, const Q8Weight& weight, const float* bias, std::int64_t rows,
                             std::int64_t in_features, std::int64_t out_features, bool accumulate = false) {
    check(weight.in == in_features && weight.out == out_features, "linear_forward: q8_0 weight is (", weight.out, ", ",
          weight.in, "), the layer (", out_features, ", ", in_features, ")");
    cpu_gemm::linear_forward_q8(out, in, weight, bias, rows, accumulate);
  }

  //! LayerNorm over the last axis of in (R, cols): (u - mean) / sqrt(var + eps) [* w + b].
  //! `weight` and `bias` may be null (no affine). Variance is the biased one, as PyTorch's.
  //! For float, the rows run in the variant tim/cpu/dispatch.hpp chose by CPUID (AVX2 where the CPU
  //! has it and the baseline does not): the same arithmetic, so the same bits, as math::layernorm_row.
  template <class T>
  static void layernorm_forward(T* out, const T* in, const T* weight, const T* bias,
                                std::int64_t rows, std::int64_t cols, double eps) {
    if constexpr (std::is_same_v<T, float>) {
      const auto kernel = cpu_dispatch::layernorm_rows_kernel(cpu_dispatch::layernorm_variant());
      constexpr std::int64_t chunk = 8;  // rows per call of the kernel
      parallel_for((rows + chunk - 1) / chunk, [&](std::int64_t c) {
        const std::int64_t first = c * chunk;
        kernel(out + first * cols, in + first * cols, std::min(chunk, rows - first), cols, weight, bias, eps);
      });
    } else {
      parallel_for(rows, [&](std::int64_t r) {
        math::layernorm_row(out + r * cols, in + r * cols, cols, weight, bias, eps);
      });
    }
  }

  //! out[i] = silu(gate[i]) * value[i] for rows of `cols` values where gate and value are
  //! read with row strides (so both halves of a fused projection can be passed as views).
  template <class T>
  static void swiglu_forward(T* out, const T* gate, const T* value, std::int64_t rows,
                             std::int64_t cols, std::int64_t gate_stride, std::int64_t value_stride) {
    parallel_for(rows, [&](std::int64_t r) {
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        // math::swiglu's formula, silu(g) v = g / (1 + exp(-g)) v, with Eigen's vectorised exp
        // (within a few ulp of std::exp): the scalar expf loop was 3.5% of a TiM-XL/2 forward.
        using Row = Eigen::Array<T, 1, Eigen::Dynamic>;
        const Eigen::Map<const Row> g(gate + r * gate_stride, cols), v(value + r * value_stride, cols);
        Eigen::Map<Row>(out + r * cols, cols) = g / (T(1) + (-g).exp()) * v;
      } else {
        for (std::int64_t j = 0; j < cols; ++j)
          out[r * cols + j] = math::swiglu(gate[r * gate_stride + j], value[r * value_stride + j]);
      }
    });
  }

  //! gate (n) = gelu_tanh(gate) * up (the Gemma MLP's gate, math::GeluGateOp's formula) with
  //! Eigen's vectorised tanh for float (a rational approximation within a few ulp of std::tanh,
  //! clamped at |z| = 7.9 where 1 - tanh is 2.8e-7): the scalar tanhf loop was 32% of a bfloat16
  //! forward of the 1B text encoder (perf). Other types run the functor.
  template <class T>
  static void gelu_gate_forward(T* gate, const T* up, std::int64_t n) {
    if constexpr (std::is_same_v<T, float>) {
      constexpr std::int64_t chunk = 4096;
      parallel_for((n + chunk - 1) / chunk, [&](std::int64_t c) {
        const std::int64_t first = c * chunk, m = std::min(chunk, n - first);
        using Row = Eigen::Array<float, 1, Eigen::Dynamic>;
        Eigen::Map<Row> g(gate + first, m);
        const Eigen::Map<const Row> u(up + first, m);
        const float k = 0.79788456080286535588f;  // sqrt(2 / pi)
        g = 0.5f * g * (1.0f + (k * (g + 0.044715f * g * g * g)).tanh()) * u;
      });
    } else {
      for_each(n, math::GeluGateOp<T>{gate, up});
    }
  }

  //! out (R, cols) = silu(in) element-wise.
  template <class T>
  static void silu_forward(T* out, const T* in, std::int64_t n) {
    parallel_for(n, [&](std::int64_t i) { out[i] = math::silu(in[i]); });
  }

  //! features (B, 256) = sinusoidal features of scalars s (B), SPEC 3.
  template <class T>
  static void timestep_features_forward(T* features, const T* s, std::int64_t batch) {
    parallel_for(batch * math::timestep_features, [&](std::int64_t i) {
      const std::int64_t b = i / math::timestep_features;
      features[i] = math::timestep_feature(s[b], static_cast<int>(i % math::timestep_features));
    });
  }

  //! x (B, N, D) = modulate(x, shift, scale) with shift/scale (B, D) read from a row of
  //! `mod_stride` values per sample (a chunk of the adaLN output).
  template <class T>
  static void modulate_forward(T* x, const T* shift, const T* scale, std::int64_t batch,
                               std::int64_t tokens, std::int64_t dim, std::int64_t mod_stride) {
    parallel_for(batch * tokens, [&](std::int64_t row) {
      const std::int64_t b = row / tokens;
      T* u = x + row * dim;
      const T* sh = shift + b * mod_stride;
      const T* sc = scale + b * mod_stride;
      for (std::int64_t j = 0; j < dim; ++j) u[j] = math::modulate(u[j], sh[j], sc[j]);
    });
  }

  //! residual (B, N, D) += gate (B, D; row stride mod_stride) * update (B, N, D).
  template <class T>
  static void gated_residual_forward(T* residual, const T* gate, const T* update, std::int64_t batch,
                                     std::int64_t tokens, std::int64_t dim, std::int64_t mod_stride) {
    parallel_for(batch * tokens, [&](std::int64_t row) {
      const T* g = gate + (row / tokens) * mod_stride;
      T* x = residual + row * dim;
      const T* u = update + row * dim;
      for (std::int64_t j = 0; j < dim; ++j) x[j] += g[j] * u[j];
    });
  }

  //! patches (B*N, C*p*p) from x (B, C, H, W): token n = row * w + col, values ordered
  //! (c, pi, pj) as the patch-embedding convolution's weight flattens a patch.
  template <class T>
  static void patchify_forward(T* patches, const T* x, std::int64_t batch, std::int64_t channels,
                               std::int64_t height, std::int64_t width, std::int64_t patch) {
    const std::int64_t h = height / patch, w = width / patch, per_patch = channels * patch * patch;
    parallel_for(batch * h * w, [&](std::int64_t token) {
      const std::int64_t b = token / (h * w), row = (token / w) % h, col = token % w;
      T* dst = patches + token * per_patch;
      for (std::int64_t c = 0; c < channels; ++c)
        for (std::int64_t pi = 0; pi < patch; ++pi)
          for (std::int64_t pj = 0; pj < patch; ++pj)
            *dst++ = x[((b * channels + c) * height + row * patch + pi) * width + col * patch + pj];
    });
  }

  //! out (B, C, H, W) from tokens (B*N, p*p*C) whose values are ordered (pi, pj, c).
  template <class T>
  static void unpatchify_forward(T* out, const T* tokens, std::int64_t batch, std::int64_t channels,
                                 std::int64_t height, std::int64_t width, std::int64_t patch) {
    const std::int64_t h = height / patch, w = width / patch;
    parallel_for(batch * h * w, [&](std::int64_t token) {
      const std::int64_t b = token / (h * w), row = (token / w) % h, col = token % w;
      const T* src = tokens + token * patch * patch * channels;
      for (std::int64_t pi = 0; pi < patch; ++pi)
        for (std::int64_t pj = 0; pj < patch; ++pj)
          for (std::int64_t c = 0; c < channels; ++c)
            out[((b * channels + c) * height + row * patch + pi) * width + col * patch + pj] = *src++;
    });
  }

  //! out (B, D) = table[index[b]] for an embedding table (rows, D).
  template <class T>
  static void embedding_forward(T* out, const T* table, const std::int64_t* index, std::int64_t batch,
                                std::int64_t dim) {
    for (std::int64_t b = 0; b < batch; ++b) copy(out + b * dim, table + index[b] * dim, static_cast<std::size_t>(dim));
  }

  //! out[i] += in[i].
  template <class T>
  static void add_forward(T* out, const T* in, std::int64_t n) {
    parallel_for(n, [&](std::int64_t i) { out[i] += in[i]; });
  }

  //! out[i] = a[i] - b[i] (the interval t_in - r_in of B samples; short, so no threads).
  template <class T>
  static void difference_forward(T* out, const T* a, const T* b, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
  }

  //! The per-head input transform of attention, for one head of one token, in place on `u`
  //! (hd values): math::prepare_head (optional LayerNorm over hd, optional rotary by (cos, sin)
  //! rows of hd/2 values, then a multiplication by `scale`). Both split operations below use
  //! it, so self- and cross-attention prepare their heads with the same arithmetic.
  template <class T>
  static void prepare_head(T* u, std::int64_t head_dim, const T* norm_weight, const T* norm_bias, double norm_eps,
                           const T* cos_row, const T* sin_row, T scale) {
    math::prepare_head(u, head_dim, norm_weight, norm_bias, norm_eps, cos_row, sin_row, scale);
  }

  //! Splits qkv (B, N, 3, nh, hd) into q, k, v (B, nh, N, hd), adding a per-sample bias
  //! `sample_bias` (B, 3D; may be null: the interval-aware qkv_d term), normalising q and k
  //! per head when norm weights are given (LayerNorm over hd, eps `norm_eps`), and rotating q
  //! and k with the tables cos/sin (N, hd/2). q is also multiplied by `q_scale`.
  template <class T>
  static void qkv_split_forward(T* q, T* k, T* v, const T* qkv, const T* sample_bias,
                                const T* q_norm_weight, const T* q_norm_bias, const T* k_norm_weight,
                                const T* k_norm_bias, double norm_eps, const T* rotary_cos,
                                const T* rotary_sin, std::int64_t batch, std::int64_t tokens,
                                std::int64_t heads, std::int64_t head_dim, T q_scale) {
    const std::int64_t dim = heads * head_dim;
    parallel_for(batch * tokens, [&](std::int64_t row) {
      const std::int64_t b = row / tokens, n = row % tokens;
      const T* cos_row = rotary_cos + n * (head_dim / 2);
      const T* sin_row = rotary_sin + n * (head_dim / 2);
      for (int part = 0; part < 3; ++part)
        for (std::int64_t h = 0; h < heads; ++h) {
          T* dst = (part == 0 ? q : part == 1 ? k : v) + ((b * heads + h) * tokens + n) * head_dim;
          const std::int64_t offset = part * dim + h * head_dim;
          const T* src = qkv + row * 3 * dim + offset;
          for (std::int64_t j = 0; j < head_dim; ++j)
            dst[j] = src[j] + (sample_bias ? sample_bias[b * 3 * dim + offset + j] : T(0));
          if (part == 2) continue;
          prepare_head(dst, head_dim, part == 0 ? q_norm_weight : k_norm_weight,
                       part == 0 ? q_norm_bias : k_norm_bias, norm_eps, cos_row, sin_row,
                       part == 0 ? q_scale : T(1));
        }
    });
  }

  //! Gathers one projection's heads: out (B, nh, tokens, hd) from `in`, whose row for token
  //! (b, n) starts at in + (b * tokens + n) * in_row_stride and holds nh heads of hd values
  //! (so a part of a fused projection, e.g. the k or v half of (B*M, 2D), is passed as a
  //! pointer to its first column and the fused width as the stride). Each head then goes
  //! through prepare_head: LayerNorm when `norm_weight` is given, rotary when `rotary_cos`
  //! (tokens, hd/2) is given, times `scale`. Cross-attention uses it for q (norm, rotary,
  //! scale), k (norm only) and v (nothing).
  template <class T>
  static void split_heads_forward(T* out, const T* in, std::int64_t in_row_stride, const T* norm_weight,
                                  const T* norm_bias, double norm_eps, const T* rotary_cos, const T* rotary_sin,
                                  std::int64_t batch, std::int64_t tokens, std::int64_t heads,
                                  std::int64_t head_dim, T scale) {
    parallel_for(batch * tokens, [&](std::int64_t row) {
      const std::int64_t b = row / tokens, n = row % tokens;
      const T* cos_row = rotary_cos ? rotary_cos + n * (head_dim / 2) : nullptr;
      const T* sin_row = rotary_sin ? rotary_sin + n * (head_dim / 2) : nullptr;
      for (std::int64_t h = 0; h < heads; ++h) {
        T* dst = out + ((b * heads + h) * tokens + n) * head_dim;
        copy(dst, in + row * in_row_stride + h * head_dim, static_cast<std::size_t>(head_dim));
        prepare_head(dst, head_dim, norm_weight, norm_bias, norm_eps, cos_row, sin_row, scale);
      }
    });
  }

  //! Softmax attention over heads with as many keys as queries (self-attention); see the
  //! overload below, which this calls with key_tokens = tokens.
  template <class T>
  static void attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch,
                                std::int64_t heads, std::int64_t tokens, std::int64_t head_dim,
                                double scale) {
    attention_forward(out, q, k, v, batch, heads, tokens, tokens, head_dim, scale);
  }

  //! Softmax attention over heads, Nq queries against Nk keys (cross-attention when they
  //! differ): q is (B, nh, Nq, hd), k and v are (B, nh, Nk, hd), all contiguous; out is
  //! (B, Nq, nh, hd) so heads land concatenated per token. out = softmax(scale q k^T) v, no
  //! mask. Scores are built a tile of `query_tile` queries at a time, so scratch memory is
  //! threads x tile x Nk, linear in the token count, never Nq x Nk; it is per-thread memory kept
  //! between calls, so repeated calls allocate nothing.
  template <class T>
  static void attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch,
                                std::int64_t heads, std::int64_t query_tokens, std::int64_t key_tokens,
                                std::int64_t head_dim, double scale) {
    constexpr std::int64_t query_tile = 64;
    // Keys go through the tile products in chunks of at most 128, so every Eigen product is at
    // most 64 x hd x 128 and its packing buffers (<= 128 x 128 values for hd <= 128) come from the
    // stack (EIGEN_STACK_ALLOCATION_LIMIT, 128 KiB), not the heap: no allocation per call (with
    // all keys at once, Eigen packs on the heap from a few thousand keys on).
    constexpr std::int64_t key_chunk = 128;
    const std::int64_t tiles = (query_tokens + query_tile - 1) / query_tile;
    detail::ensure_default_threads();
#pragma omp parallel
    {
      // Scratch of this thread, kept between calls: repeated evaluations allocate nothing.
      T* scratch = detail::thread_scratch<T>(query_tile * (key_tokens + head_dim));
      Eigen::Map<RowMajor<T>> scores(scratch, query_tile, key_tokens);
      Eigen::Map<RowMajor<T>> result(scratch + query_tile * key_tokens, query_tile, head_dim);
#pragma omp for schedule(dynamic)
      for (std::int64_t job = 0; job < batch * heads * tiles; ++job) {
        const std::int64_t bh = job / tiles;
        const std::int64_t first = (job % tiles) * query_tile;
        const std::int64_t rows = std::min(query_tile, query_tokens - first);
        const std::int64_t b = bh / heads, h = bh % heads;
        Eigen::Map<const RowMajor<T>> qm(q + (bh * query_tokens + first) * head_dim, rows, head_dim);
        Eigen::Map<const RowMajor<T>> km(k + bh * key_tokens * head_dim, key_tokens, head_dim);
        Eigen::Map<const RowMajor<T>> vm(v + bh * key_tokens * head_dim, key_tokens, head_dim);
        auto s = scores.topRows(rows);
        for (std::int64_t j = 0; j < key_tokens; j += key_chunk) {
          const std::int64_t c = std::min(key_chunk, key_tokens - j);
          s.middleCols(j, c).noalias() = qm * km.middleRows(j, c).transpose();
        }
        // Scaled in place: `(q k^T) * scale` as one expression evaluates the product into a heap
        // temporary first.
        if (scale != 1.0) s *= T(scale);
        for (std::int64_t i = 0; i < rows; ++i) {
          auto row = s.row(i);
          const T m = row.maxCoeff();
          row = (row.array() - m).exp();
          row /= row.sum();
        }
        auto o = result.topRows(rows);
        o.setZero();
        for (std::int64_t j = 0; j < key_tokens; j += key_chunk) {
          const std::int64_t c = std::min(key_chunk, key_tokens - j);
          o.noalias() += s.middleCols(j, c) * vm.middleRows(j, c);
        }
        for (std::int64_t i = 0; i < rows; ++i) {
          T* dst = out + ((b * query_tokens + first + i) * heads + h) * head_dim;
          for (std::int64_t j = 0; j < head_dim; ++j) dst[j] = o(i, j);
        }
      }
    }
  }

  //! The Gemma-3 text encoder's masked attention (tim/cpu/text_ops.hpp; the reference loop is
  //! math::GemmaAttentionOp, which backends without this operation run through for_each):
  //! out (R, nh*hd) from scaled q (R, nh*hd), k and v (R, nkv*hd), lengths (B) in host memory,
  //! causal with a sliding window of `window` keys (0: none) and the padding keys masked.
  template <class T>
  static void gemma_attention_forward(T* out, const T* q, const T* k, const T* v, const std::int64_t* lengths,
                                      std::int64_t batch, std::int64_t tokens, std::int64_t heads,
                                      std::int64_t kv_heads, std::int64_t head_dim, std::int64_t window) {
    cpu_detail::gemma_attention(out, q, k, v, lengths, batch, tokens, heads, kv_heads, head_dim, window,
                                [](std::int64_t n) { return detail::thread_scratch<T>(n); });
  }

  // ------------------------------------------------------------------------------------------
  // Sampling operations (state in double, SPEC 6), the same functors tim::cuda runs

  //! out[i] = To(in[i]).
  template <class To, class From>
  static void convert(To* out, const From* in, std::size_t n) {
    for_each(static_cast<std::int64_t>(n), math::ConvertOp<To, From>{out, in});
  }
  //! out (B, S) = standard normals: row b is the stream (seed, first_sample + b, step), element e
  //! its e-th number (random::fill_normal). step = random::initial_noise_step gives tim::initial_noise.
  static void normal_forward(double* out, std::int64_t batch, std::int64_t per_sample, std::uint64_t seed,
                             std::uint64_t first_sample, std::uint32_t step) {
    const std::int64_t blocks = (per_sample + 3) / 4;
    for_each(batch * blocks, math::NormalOp{out, per_sample, blocks, seed, first_sample, step});
  }
  //! F (2B, S) = (F_c, F_u): F_c <- F_u + scale (F_c - F_u) over the first `half` = B S values.
  static void guidance_forward(double* F, std::int64_t half, double scale) {
    for_each(half, math::GuidanceOp<double>{F, half, scale});
  }
  //! x (n) = a x + b F: the deterministic transition with the transport's coefficients.
  static void transition_forward(double* x, const double* F, std::int64_t n, math::TransitionCoefficients<double> c) {
    for_each(n, math::TransitionOp<double>{x, F, c});
  }
  //! x (B, S) = transport.stochastic_transition(x, F, t, r, s, eps), eps of row b the stream
  //! (seed, streams[b], step); `streams` (B) is in the backend's memory.
  template <class Tr>
  static void stochastic_transition_forward(double* x, const double* F, const std::uint64_t* streams,
                                            std::int64_t batch, std::int64_t per_sample, const Tr& transport, double t,
                                            double r, double stochasticity, std::uint64_t seed, std::uint32_t step) {
    static_assert(Tr::has_stochastic_transition, "stochastic_transition_forward: the transport has no stochastic step");
    const std::int64_t blocks = (per_sample + 3) / 4;
    for_each(batch * blocks, math::StochasticTransitionOp<Tr>{x, F, streams, per_sample, blocks, transport, t, r,
                                                              stochasticity, seed, step});
  }
};

}  // inline namespace TIM_CPU_ABI

static_assert(Backend<cpu>, "tim::cpu must satisfy the backend contract (tim/core/backend.hpp)");
static_assert(BackendTrainingOps<cpu>, "tim::cpu must have the training operations (tim/core/backend.hpp)");

}  // namespace tim
