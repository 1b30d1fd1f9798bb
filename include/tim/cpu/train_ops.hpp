// Training operations of the CPU backend: the `*_backward` of every network operation, and the
// `*_training_forward` variants that also save what a backward needs (LayerNorm statistics, the
// qk-norm statistics, attention's per-row logsumexp). A base that tim::cpu derives from (CRTP:
// `Backend` is tim::cpu, whose parallel_for it uses), as cpu_detail::DecoderOps. The element-wise
// formulas are those of tim/math/ (silu_derivative, swiglu_backward, layernorm_row_backward,
// prepare_head_backward), which a GPU backend runs too.
//
// Conventions. Gradients are prefixed d (dx, dweight). Parameter gradients (dweight, dbias,
// dnorm_weight, dtable) are ADDED to (as PyTorch's .grad: zero them once per step); activation
// gradients are written, or added when the operation says so (`accumulate`). Every reduction
// runs in an order fixed by the shapes alone (column blocks, jobs reduced in job order), never by
// thread timing, so a backward gives the same bits on every run with the same thread count.
// No operation allocates after its first call: scratch is per-thread memory kept between calls.
// The timestep features have no backward: t and r are data, never trained through (the DDE
// derivative of the objective is a finite difference of forwards, SPEC 7).
//
// Shape legend: B batch, N tokens (Nq queries, Nk keys), D hidden, nh heads, hd head dim, R rows.
#pragma once

#include <Eigen/Core>
#if defined(TIM_USE_CBLAS)
#include <cblas.h>
#endif
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "tim/core/memory.hpp"
#include "tim/cpu/threads.hpp"
#include "tim/math/activations.hpp"
#include "tim/math/attention.hpp"
#include "tim/math/normalization.hpp"

namespace tim::cpu_detail {

//! The calling thread's scratch buffer for one `Tag` (see tagged_scratch).
template <class Tag, class T>
struct TaggedScratch {
  std::shared_ptr<T> data;
  std::int64_t size = 0;

  static TaggedScratch& of_this_thread() {
    thread_local TaggedScratch buffer;
    return buffer;
  }
};

//! `n` elements of scratch owned by the calling thread for one `Tag`, 64-byte aligned, grown on
//! demand and kept for the thread's lifetime. Distinct tags are distinct buffers, so an operation
//! can hold a buffer shared by its team (taken before the parallel region) and per-thread ones.
template <class Tag, class T>
T* tagged_scratch(std::int64_t n) {
  auto& buffer = TaggedScratch<Tag, T>::of_this_thread();
  if (buffer.size < n) {
    buffer.data = HostMemory::allocate<T>(static_cast<std::size_t>(std::max<std::int64_t>(n, 1)));
    buffer.size = n;
  }
  return buffer.data.get();
}

//! Elements the calling thread's `Tag` scratch holds (the most any call has asked for since
//! release_tagged_scratch): lets a test observe what an operation takes.
template <class Tag, class T>
std::int64_t tagged_scratch_elements() {
  return TaggedScratch<Tag, T>::of_this_thread().size;
}

//! Frees the calling thread's `Tag` scratch (the next call allocates what it needs).
template <class Tag, class T>
void release_tagged_scratch() {
  TaggedScratch<Tag, T>::of_this_thread() = {};
}

// The scratch buffers of the operations below, one tag each.
struct QkvStatisticsTag;
struct QkvPartialTag;
struct QkvBackwardTag;
struct AttentionForwardTag;
struct AttentionBackwardTag;

template <class Backend>
struct TrainOps {
  template <class T>
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  template <class T>
  using StridedRows = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;

  //! Queries per tile of attention_backward (and attention_training_forward).
  static constexpr std::int64_t attention_query_tile = 64;
  //! Keys per Eigen product in attention (packing buffers stay on the stack, as attention_forward).
  static constexpr std::int64_t attention_key_chunk = 128;
  //! Columns per job of the column-sum reductions (bias, norm and modulation gradients).
  static constexpr std::int64_t column_block = 64;

  //! c (m, n) = op(a) op(b) (+ c with `accumulate`), all row-major; op(a) is (m, k).
  template <class T>
  static void gemm(T* c, const T* a, bool transpose_a, const T* b, bool transpose_b, std::int64_t m, std::int64_t n,
                   std::int64_t k, bool accumulate) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
      if (!accumulate) std::fill(c, c + m * n, T(0));
      return;
    }
    detail::ensure_default_threads();
#if defined(TIM_USE_CBLAS)
    constexpr std::int64_t limit = 0x7fffffff;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (m <= limit && n <= limit && k <= limit) {
        const int lda = static_cast<int>(transpose_a ? m : k), ldb = static_cast<int>(transpose_b ? k : n);
        const auto ta = transpose_a ? CblasTrans : CblasNoTrans, tb = transpose_b ? CblasTrans : CblasNoTrans;
        if constexpr (std::is_same_v<T, float>)
          cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c,
                      int(n));
        else
          cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0, a, lda, b, ldb, accumulate ? 1.0 : 0.0, c,
                      int(n));
        return;
      }
    }
#endif
    Eigen::Map<RowMajor<T>> cm(c, m, n);
    Eigen::Map<const RowMajor<T>> am(a, transpose_a ? k : m, transpose_a ? m : k);
    Eigen::Map<const RowMajor<T>> bm(b, transpose_b ? n : k, transpose_b ? k : n);
    if (!accumulate) cm.setZero();
    if (transpose_a && transpose_b)
      cm.noalias() += am.transpose() * bm.transpose();
    else if (transpose_a)
      cm.noalias() += am.transpose() * bm;
    else if (transpose_b)
      cm.noalias() += am * bm.transpose();
    else
      cm.noalias() += am * bm;
  }

  //! sums[j] (+)= sum over the R rows of f(r, j) for j < cols, in blocks of column_block columns
  //! (one job per block, rows in order): the deterministic column reduction of the backward.
  template <class T, class F>
  static void column_sums(T* sums, std::int64_t rows, std::int64_t cols, const F& f) {
    const std::int64_t blocks = (cols + column_block - 1) / column_block;
    Backend::parallel_for(blocks, [&](std::int64_t block) {
      const std::int64_t first = block * column_block, last = std::min(cols, first + column_block);
      T partial[column_block] = {};
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = first; j < last; ++j) partial[j - first] += f(r, j);
      for (std::int64_t j = first; j < last; ++j) sums[j] += partial[j - first];
    });
  }

  //! Backward of linear_forward (y (R, out) = x (R, in) W^T + b): dweight (out, in) += dy^T x,
  //! dbias (out) += the column sums of dy, then dx (R, in) = dy W (added to dx with
  //! `accumulate_dx`). Any of dx, dweight, dbias may be null (not wanted). The parameter
  //! gradients are taken first, so dx may be x (the input is not needed after).
  template <class T>
  static void linear_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* weight, std::int64_t rows,
                              std::int64_t in_features, std::int64_t out_features, bool accumulate_dx = false) {
    if (dweight) gemm(dweight, dy, true, x, false, out_features, in_features, rows, true);
    if (dbias) column_sums(dbias, rows, out_features, [&](std::int64_t r, std::int64_t j) { return dy[r * out_features + j]; });
    if (dx) gemm(dx, dy, false, weight, false, rows, in_features, out_features, accumulate_dx);
  }

  //! layernorm_forward that also saves the statistics of every row: mean (R) and rstd (R) =
  //! 1 / sqrt(var + eps) (math::layernorm_statistics, the values layernorm_forward uses).
  template <class T>
  static void layernorm_training_forward(T* out, T* mean, T* rstd, const T* in, const T* weight, const T* bias,
                                         std::int64_t rows, std::int64_t cols, double eps) {
    // The statistics once, then the values exactly as math::layernorm_row applies them.
    Backend::parallel_for(rows, [&](std::int64_t r) {
      const T* u = in + r * cols;
      math::layernorm_statistics(u, cols, eps, mean[r], rstd[r]);
      const T m = mean[r], s = rstd[r];
      for (std::int64_t j = 0; j < cols; ++j) out[r * cols + j] = math::layernorm_value(u[j], m, s, weight, bias, j);
    });
  }

  //! Backward of LayerNorm over the last axis of in (R, cols) from the saved mean and rstd (R):
  //! dx (R, cols) = math::layernorm_row_backward (added to dx with `accumulate`); with affine,
  //! dweight += sum over rows of dout xhat and dbias += sum of dout (null `weight`: no affine,
  //! dweight and dbias unused). dx may be dout when not accumulating.
  template <class T>
  static void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* in, const T* mean,
                                 const T* rstd, const T* weight, std::int64_t rows, std::int64_t cols,
                                 bool accumulate = false) {
    if (weight) {
      if (dweight)
        column_sums(dweight, rows, cols, [&](std::int64_t r, std::int64_t j) {
          return dout[r * cols + j] * (in[r * cols + j] - mean[r]) * rstd[r];
        });
      if (dbias) column_sums(dbias, rows, cols, [&](std::int64_t r, std::int64_t j) { return dout[r * cols + j]; });
    }
    Backend::parallel_for(rows, [&](std::int64_t r) {
      math::layernorm_row_backward(dx + r * cols, dout + r * cols, in + r * cols, mean[r], rstd[r], weight, cols,
                                   accumulate);
    });
  }

  //! Backward of modulate_forward (y = u (1 + scale) + shift over (B, N, D), shift and scale rows
  //! `mod_stride` apart): dshift (B, D) += sum over tokens of dout, dscale += sum of dout u, and
  //! du (B, N, D) = dout (1 + scale). du may be dout. dshift, dscale have the stride mod_stride.
  template <class T>
  static void modulate_backward(T* du, T* dshift, T* dscale, const T* dout, const T* u, const T* scale,
                                std::int64_t batch, std::int64_t tokens, std::int64_t dim, std::int64_t mod_stride) {
    for (std::int64_t b = 0; b < batch; ++b) {
      const T* g = dout + b * tokens * dim;
      const T* x = u + b * tokens * dim;
      column_sums(dshift + b * mod_stride, tokens, dim, [&](std::int64_t n, std::int64_t j) { return g[n * dim + j]; });
      column_sums(dscale + b * mod_stride, tokens, dim,
                  [&](std::int64_t n, std::int64_t j) { return g[n * dim + j] * x[n * dim + j]; });
    }
    Backend::parallel_for(batch * tokens, [&](std::int64_t row) {
      const T* sc = scale + (row / tokens) * mod_stride;
      for (std::int64_t j = 0; j < dim; ++j) du[row * dim + j] = dout[row * dim + j] * (T(1) + sc[j]);
    });
  }

  //! Backward of gated_residual_forward (residual += gate update): the residual's gradient passes
  //! through unchanged (nothing to do), dupdate (B, N, D) = dresidual gate and dgate (B, D; stride
  //! mod_stride) += sum over tokens of dresidual update.
  template <class T>
  static void gated_residual_backward(T* dupdate, T* dgate, const T* dresidual, const T* gate, const T* update,
                                      std::int64_t batch, std::int64_t tokens, std::int64_t dim,
                                      std::int64_t mod_stride) {
    for (std::int64_t b = 0; b < batch; ++b) {
      const T* g = dresidual + b * tokens * dim;
      const T* x = update + b * tokens * dim;
      column_sums(dgate + b * mod_stride, tokens, dim,
                  [&](std::int64_t n, std::int64_t j) { return g[n * dim + j] * x[n * dim + j]; });
    }
    Backend::parallel_for(batch * tokens, [&](std::int64_t row) {
      const T* ga = gate + (row / tokens) * mod_stride;
      for (std::int64_t j = 0; j < dim; ++j) dupdate[row * dim + j] = dresidual[row * dim + j] * ga[j];
    });
  }

  //! Backward of swiglu_forward (out = silu(gate) value, rows of `cols`): dgate and dvalue are
  //! written with the row strides of gate and value (math::swiglu_backward).
  template <class T>
  static void swiglu_backward(T* dgate, T* dvalue, const T* dout, const T* gate, const T* value, std::int64_t rows,
                              std::int64_t cols, std::int64_t gate_stride, std::int64_t value_stride) {
    Backend::parallel_for(rows, [&](std::int64_t r) {
      for (std::int64_t j = 0; j < cols; ++j)
        math::swiglu_backward(dgate[r * gate_stride + j], dvalue[r * value_stride + j], dout[r * cols + j],
                              gate[r * gate_stride + j], value[r * value_stride + j]);
    });
  }

  //! Backward of silu_forward: din (n) = dout silu'(in). din may be dout.
  template <class T>
  static void silu_backward(T* din, const T* dout, const T* in, std::int64_t n) {
    Backend::parallel_for(n, [&](std::int64_t i) { din[i] = dout[i] * math::silu_derivative(in[i]); });
  }

  //! Backward of embedding_forward (out (B, D) = table[index[b]]): dtable rows index[b] += dout
  //! row b (a scatter-add in sample order; index in host memory).
  template <class T>
  static void embedding_backward(T* dtable, const T* dout, const std::int64_t* index, std::int64_t batch,
                                 std::int64_t dim) {
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t j = 0; j < dim; ++j) dtable[index[b] * dim + j] += dout[b * dim + j];
  }

  //! Backward of patchify_forward: dx (B, C, H, W) from dpatches (B*N, C*p*p). Patches do not
  //! overlap, so this is the inverse permutation (every pixel written once).
  template <class T>
  static void patchify_backward(T* dx, const T* dpatches, std::int64_t batch, std::int64_t channels,
                                std::int64_t height, std::int64_t width, std::int64_t patch) {
    const std::int64_t h = height / patch, w = width / patch, per_patch = channels * patch * patch;
    Backend::parallel_for(batch * h * w, [&](std::int64_t token) {
      const std::int64_t b = token / (h * w), row = (token / w) % h, col = token % w;
      const T* src = dpatches + token * per_patch;
      for (std::int64_t c = 0; c < channels; ++c)
        for (std::int64_t pi = 0; pi < patch; ++pi)
          for (std::int64_t pj = 0; pj < patch; ++pj)
            dx[((b * channels + c) * height + row * patch + pi) * width + col * patch + pj] = *src++;
    });
  }

  //! Backward of unpatchify_forward: dtokens (B*N, p*p*C), values ordered (pi, pj, c), from
  //! dout (B, C, H, W) (the inverse permutation).
  template <class T>
  static void unpatchify_backward(T* dtokens, const T* dout, std::int64_t batch, std::int64_t channels,
                                  std::int64_t height, std::int64_t width, std::int64_t patch) {
    const std::int64_t h = height / patch, w = width / patch;
    Backend::parallel_for(batch * h * w, [&](std::int64_t token) {
      const std::int64_t b = token / (h * w), row = (token / w) % h, col = token % w;
      T* dst = dtokens + token * patch * patch * channels;
      for (std::int64_t pi = 0; pi < patch; ++pi)
        for (std::int64_t pj = 0; pj < patch; ++pj)
          for (std::int64_t c = 0; c < channels; ++c)
            *dst++ = dout[((b * channels + c) * height + row * patch + pi) * width + col * patch + pj];
    });
  }

  //! qkv_split_forward that also saves the qk-norm statistics of every head of every token:
  //! q_mean, q_rstd, k_mean, k_rstd (B, nh, N) (unused, may be null, without the norms).
  template <class T>
  static void qkv_split_training_forward(T* q, T* k, T* v, T* q_mean, T* q_rstd, T* k_mean, T* k_rstd, const T* qkv,
                                         const T* sample_bias, const T* q_norm_weight, const T* q_norm_bias,
                                         const T* k_norm_weight, const T* k_norm_bias, double norm_eps,
                                         const T* rotary_cos, const T* rotary_sin, std::int64_t batch,
                                         std::int64_t tokens, std::int64_t heads, std::int64_t head_dim, T q_scale) {
    const std::int64_t dim = heads * head_dim;
    Backend::qkv_split_forward(q, k, v, qkv, sample_bias, q_norm_weight, q_norm_bias, k_norm_weight, k_norm_bias,
                               norm_eps, rotary_cos, rotary_sin, batch, tokens, heads, head_dim, q_scale);
    if (!q_norm_weight && !k_norm_weight) return;
    Backend::parallel_for(batch * tokens, [&](std::int64_t row) {
      const std::int64_t b = row / tokens, n = row % tokens;
      T* u = tagged_scratch<QkvStatisticsTag, T>(head_dim);
      for (int part = 0; part < 2; ++part) {
        if (!(part == 0 ? q_norm_weight : k_norm_weight)) continue;
        for (std::int64_t h = 0; h < heads; ++h) {
          const std::int64_t offset = part * dim + h * head_dim, stat = (b * heads + h) * tokens + n;
          for (std::int64_t j = 0; j < head_dim; ++j)
            u[j] = qkv[row * 3 * dim + offset + j] + (sample_bias ? sample_bias[b * 3 * dim + offset + j] : T(0));
          math::layernorm_statistics(u, head_dim, norm_eps, part == 0 ? q_mean[stat] : k_mean[stat],
                                     part == 0 ? q_rstd[stat] : k_rstd[stat]);
        }
      }
    });
  }

  //! Backward of qkv_split_forward. From dq, dk, dv (B, nh, N, hd), the forward's qkv (B*N, 3D),
  //! sample_bias (B, 3D, may be null) and the saved qk-norm statistics: dqkv (B*N, 3D) is written;
  //! dsample_bias (B, 3D; may be null) += its sum over tokens (the gradient of the qkv_d term);
  //! the q/k norm parameter gradients (hd each) are added to when the norm weights are given.
  //! Jobs are (sample, part, head); the norm gradients are summed per job, then in job order.
  template <class T>
  static void qkv_split_backward(T* dqkv, T* dsample_bias, T* dq_norm_weight, T* dq_norm_bias, T* dk_norm_weight,
                                 T* dk_norm_bias, const T* dq, const T* dk, const T* dv, const T* qkv,
                                 const T* sample_bias, const T* q_norm_weight, const T* k_norm_weight,
                                 const T* q_mean, const T* q_rstd, const T* k_mean, const T* k_rstd,
                                 const T* rotary_cos, const T* rotary_sin, std::int64_t batch, std::int64_t tokens,
                                 std::int64_t heads, std::int64_t head_dim, T q_scale) {
    const std::int64_t dim = heads * head_dim, jobs = batch * 3 * heads;
    // Per-job norm gradients (weight then bias, hd each), shared by the team.
    T* partial = tagged_scratch<QkvPartialTag, T>(jobs * 2 * head_dim);
    std::fill(partial, partial + jobs * 2 * head_dim, T(0));
    Backend::parallel_for(jobs, [&](std::int64_t job) {
      const std::int64_t b = job / (3 * heads), part = (job / heads) % 3, h = job % heads;
      const std::int64_t offset = part * dim + h * head_dim;
      const T* norm_weight = part == 0 ? q_norm_weight : part == 1 ? k_norm_weight : nullptr;
      const T* mean = part == 0 ? q_mean : k_mean;
      const T* rstd = part == 0 ? q_rstd : k_rstd;
      const T* dsrc = part == 0 ? dq : part == 1 ? dk : dv;
      T* buffer = tagged_scratch<QkvBackwardTag, T>(2 * head_dim);
      T *d = buffer, *u = buffer + head_dim;
      T* dweight = partial + job * 2 * head_dim;
      for (std::int64_t n = 0; n < tokens; ++n) {
        const std::int64_t row = b * tokens + n, stat = (b * heads + h) * tokens + n;
        const T* g = dsrc + ((b * heads + h) * tokens + n) * head_dim;
        for (std::int64_t j = 0; j < head_dim; ++j) d[j] = g[j];
        if (part < 2) {
          for (std::int64_t j = 0; j < head_dim; ++j)
            u[j] = qkv[row * 3 * dim + offset + j] + (sample_bias ? sample_bias[b * 3 * dim + offset + j] : T(0));
          math::prepare_head_backward(d, u, head_dim, norm_weight, norm_weight ? mean[stat] : T(0),
                                      norm_weight ? rstd[stat] : T(1), dweight, dweight + head_dim,
                                      rotary_cos + n * (head_dim / 2), rotary_sin + n * (head_dim / 2),
                                      part == 0 ? q_scale : T(1));
        }
        for (std::int64_t j = 0; j < head_dim; ++j) {
          dqkv[row * 3 * dim + offset + j] = d[j];
          if (dsample_bias) dsample_bias[b * 3 * dim + offset + j] += d[j];
        }
      }
    });
    for (std::int64_t job = 0; job < jobs; ++job) {
      const std::int64_t part = (job / heads) % 3;
      T* dweight = part == 0 ? dq_norm_weight : part == 1 ? dk_norm_weight : nullptr;
      T* dbias = part == 0 ? dq_norm_bias : part == 1 ? dk_norm_bias : nullptr;
      if (!dweight || !(part == 0 ? q_norm_weight : k_norm_weight)) continue;
      for (std::int64_t j = 0; j < head_dim; ++j) {
        dweight[j] += partial[job * 2 * head_dim + j];
        dbias[j] += partial[job * 2 * head_dim + head_dim + j];
      }
    }
  }

  //! attention_forward that also saves the logsumexp of every score row, lse (B, nh, Nq) =
  //! m + log(sum exp(s - m)) with s = scale q k^T and m its row maximum: what the backward needs
  //! to recompute the probabilities exp(s - lse) a tile at a time. Same tiles and arithmetic as
  //! attention_forward, so `out` is the same.
  template <class T>
  static void attention_training_forward(T* out, T* lse, const T* q, const T* k, const T* v, std::int64_t batch,
                                         std::int64_t heads, std::int64_t query_tokens, std::int64_t key_tokens,
                                         std::int64_t head_dim, double scale) {
    constexpr std::int64_t tile = attention_query_tile, key_chunk = attention_key_chunk;
    const std::int64_t tiles = (query_tokens + tile - 1) / tile;
    detail::ensure_default_threads();
#pragma omp parallel
    {
      T* scratch = tagged_scratch<AttentionForwardTag, T>(tile * (key_tokens + head_dim));
      Eigen::Map<RowMajor<T>> scores(scratch, tile, key_tokens);
      Eigen::Map<RowMajor<T>> result(scratch + tile * key_tokens, tile, head_dim);
#pragma omp for schedule(dynamic)
      for (std::int64_t job = 0; job < batch * heads * tiles; ++job) {
        const std::int64_t bh = job / tiles, first = (job % tiles) * tile;
        const std::int64_t rows = std::min(tile, query_tokens - first);
        const std::int64_t b = bh / heads, h = bh % heads;
        Eigen::Map<const RowMajor<T>> qm(q + (bh * query_tokens + first) * head_dim, rows, head_dim);
        Eigen::Map<const RowMajor<T>> km(k + bh * key_tokens * head_dim, key_tokens, head_dim);
        Eigen::Map<const RowMajor<T>> vm(v + bh * key_tokens * head_dim, key_tokens, head_dim);
        auto s = scores.topRows(rows);
        for (std::int64_t j = 0; j < key_tokens; j += key_chunk) {
          const std::int64_t c = std::min(key_chunk, key_tokens - j);
          s.middleCols(j, c).noalias() = qm * km.middleRows(j, c).transpose();
        }
        if (scale != 1.0) s *= T(scale);
        for (std::int64_t i = 0; i < rows; ++i) {
          auto row = s.row(i);
          const T m = row.maxCoeff();
          row = (row.array() - m).exp();
          const T sum = row.sum();
          row /= sum;
          lse[bh * query_tokens + first + i] = m + std::log(sum);
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

  //! Elements of per-thread scratch attention_backward uses for `key_tokens` keys: two score
  //! tiles (probabilities and their gradient, attention_query_tile x Nk) and one value per query
  //! of the tile. Linear in the keys: there is never an Nq x Nk buffer.
  static constexpr std::int64_t attention_backward_scratch_elements(std::int64_t key_tokens, std::int64_t /*head_dim*/) {
    return attention_query_tile * (2 * key_tokens + 1);
  }

  //! Backward of attention_forward (out = softmax(scale q k^T) v per head) by recomputation, as
  //! flash attention does: for each tile of queries the probabilities P = exp(scale q k^T - lse)
  //! are rebuilt from the saved logsumexp, then dv += P^T dO, dP = dO v^T,
  //! dS = P (dP - rowsum(dO o)), dq = scale dS k, dk += scale dS^T q. q, dq are (B, nh, Nq, hd);
  //! k, v, dk, dv (B, nh, Nk, hd); out, dout (B, Nq, nh, hd) as attention_forward writes them;
  //! lse (B, nh, Nq) from attention_training_forward. dq, dk, dv are written. One job per
  //! (sample, head) runs its query tiles in order, so dk and dv have one writer each and a fixed
  //! summation order. Scratch: attention_backward_scratch_elements per thread.
  template <class T>
  static void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                                 const T* lse, std::int64_t batch, std::int64_t heads, std::int64_t query_tokens,
                                 std::int64_t key_tokens, std::int64_t head_dim, double scale) {
    constexpr std::int64_t tile = attention_query_tile, key_chunk = attention_key_chunk;
    const std::int64_t row_stride = heads * head_dim;
    detail::ensure_default_threads();
#pragma omp parallel
    {
      T* scratch = tagged_scratch<AttentionBackwardTag, T>(attention_backward_scratch_elements(key_tokens, head_dim));
      Eigen::Map<RowMajor<T>> probabilities(scratch, tile, key_tokens);
      Eigen::Map<RowMajor<T>> dprobabilities(scratch + tile * key_tokens, tile, key_tokens);
      T* delta = scratch + 2 * tile * key_tokens;
#pragma omp for schedule(dynamic)
      for (std::int64_t bh = 0; bh < batch * heads; ++bh) {
        const std::int64_t b = bh / heads, h = bh % heads;
        Eigen::Map<const RowMajor<T>> km(k + bh * key_tokens * head_dim, key_tokens, head_dim);
        Eigen::Map<const RowMajor<T>> vm(v + bh * key_tokens * head_dim, key_tokens, head_dim);
        Eigen::Map<RowMajor<T>> dkm(dk + bh * key_tokens * head_dim, key_tokens, head_dim);
        Eigen::Map<RowMajor<T>> dvm(dv + bh * key_tokens * head_dim, key_tokens, head_dim);
        dkm.setZero();
        dvm.setZero();
        for (std::int64_t first = 0; first < query_tokens; first += tile) {
          const std::int64_t rows = std::min(tile, query_tokens - first);
          Eigen::Map<const RowMajor<T>> qm(q + (bh * query_tokens + first) * head_dim, rows, head_dim);
          Eigen::Map<RowMajor<T>> dqm(dq + (bh * query_tokens + first) * head_dim, rows, head_dim);
          const std::int64_t token_row = (b * query_tokens + first) * heads + h;
          StridedRows<T> dom(dout + token_row * head_dim, rows, head_dim, Eigen::OuterStride<>(row_stride));
          StridedRows<T> om(out + token_row * head_dim, rows, head_dim, Eigen::OuterStride<>(row_stride));
          auto p = probabilities.topRows(rows);
          auto dp = dprobabilities.topRows(rows);
          for (std::int64_t j = 0; j < key_tokens; j += key_chunk) {
            const std::int64_t c = std::min(key_chunk, key_tokens - j);
            p.middleCols(j, c).noalias() = qm * km.middleRows(j, c).transpose();
            dp.middleCols(j, c).noalias() = dom * vm.middleRows(j, c).transpose();
          }
          if (scale != 1.0) p *= T(scale);
          for (std::int64_t i = 0; i < rows; ++i) {
            p.row(i) = (p.row(i).array() - lse[bh * query_tokens + first + i]).exp();
            delta[i] = dom.row(i).dot(om.row(i));
          }
          for (std::int64_t j = 0; j < key_tokens; j += key_chunk) {
            const std::int64_t c = std::min(key_chunk, key_tokens - j);
            dvm.middleRows(j, c).noalias() += p.middleCols(j, c).transpose() * dom;
          }
          // dS (in dp) = P (dP - delta), times the score scale: the gradient of q k^T.
          for (std::int64_t i = 0; i < rows; ++i)
            dp.row(i) = (p.row(i).array() * (dp.row(i).array() - delta[i]) * T(scale)).matrix();
          dqm.setZero();
          for (std::int64_t j = 0; j < key_tokens; j += key_chunk) {
            const std::int64_t c = std::min(key_chunk, key_tokens - j);
            dqm.noalias() += dp.middleCols(j, c) * km.middleRows(j, c);
            dkm.middleRows(j, c).noalias() += dp.middleCols(j, c).transpose() * qm;
          }
        }
      }
    }
  }
};

}  // namespace tim::cpu_detail
