// The CPU's masked attention of the Gemma-3 text encoder (tim/text/gemma.hpp): the arithmetic of
// math::GemmaAttentionOp (causal, sliding window, padding mask, grouped-query heads) with the
// scores and the weighted sum of values as Eigen products over tiles of 64 queries, instead of one
// scalar loop per query row. Scratch: a tile of scores per thread (64 x N), kept between calls.
//
// Shape legend: B prompts, N tokens, R = B*N rows, nh query heads, nkv key/value heads, hd head dim.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "tim/cpu/threads.hpp"
#include "tim/math/text.hpp"

namespace tim::cpu_detail {

//! out (R, nh*hd) = softmax(q k^T + mask) v per head, q (R, nh*hd) already scaled, k and v
//! (R, nkv*hd), `lengths` (B) real tokens per prompt (host memory); a query row with no visible
//! key gives zeros. See math::GemmaAttentionOp for the reference loop.
template <class T, class Scratch>
void gemma_attention(T* out, const T* q, const T* k, const T* v, const std::int64_t* lengths, std::int64_t batch,
                     std::int64_t tokens, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                     std::int64_t window, Scratch&& scratch_of) {
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  constexpr std::int64_t tile = 64;
  const std::int64_t tiles = (tokens + tile - 1) / tile, q_width = heads * head_dim, kv_width = kv_heads * head_dim;
  const std::int64_t group = heads / kv_heads;
  detail::ensure_default_threads();
#pragma omp parallel
  {
    T* scratch = scratch_of(tile * tokens);
#pragma omp for schedule(dynamic)
    for (std::int64_t job = 0; job < batch * heads * tiles; ++job) {
      const std::int64_t b = job / (heads * tiles), h = (job / tiles) % heads, first = (job % tiles) * tile;
      const std::int64_t rows = std::min(tile, tokens - first), g = h / group;
      const std::int64_t keys = std::min(first + rows, lengths[b]);  // keys [0, keys) can be visible
      for (std::int64_t i = 0; i < rows; ++i)
        std::fill_n(out + (b * tokens + first + i) * q_width + h * head_dim, head_dim, T(0));
      if (keys <= 0) continue;
      Eigen::Map<const Matrix, 0, Stride> qm(q + (b * tokens + first) * q_width + h * head_dim, rows, head_dim,
                                             Stride(q_width));
      Eigen::Map<const Matrix, 0, Stride> km(k + b * tokens * kv_width + g * head_dim, keys, head_dim,
                                             Stride(kv_width));
      Eigen::Map<const Matrix, 0, Stride> vm(v + b * tokens * kv_width + g * head_dim, keys, head_dim,
                                             Stride(kv_width));
      Eigen::Map<Matrix> s(scratch, rows, keys);
      s.noalias() = qm * km.transpose();
      for (std::int64_t i = 0; i < rows; ++i) {
        const std::int64_t n = first + i;
        T* row = s.data() + i * keys;
        double top = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < keys; ++j)
          if (math::gemma_key_visible(n, j, lengths[b], window)) top = std::max(top, static_cast<double>(row[j]));
        if (top == -std::numeric_limits<double>::infinity()) {
          std::fill_n(row, keys, T(0));
          continue;
        }
        double total = 0;
        for (std::int64_t j = 0; j < keys; ++j) {
          const double e = math::gemma_key_visible(n, j, lengths[b], window) ? std::exp(static_cast<double>(row[j]) - top) : 0.0;
          row[j] = static_cast<T>(e);
          total += e;
        }
        const T inverse = static_cast<T>(1.0 / total);
        for (std::int64_t j = 0; j < keys; ++j) row[j] *= inverse;
      }
      Eigen::Map<Matrix, 0, Stride> om(out + (b * tokens + first) * q_width + h * head_dim, rows, head_dim,
                                       Stride(q_width));
      om.noalias() = s * vm;
    }
  }
}

}  // namespace tim::cpu_detail
