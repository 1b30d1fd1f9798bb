// The per-head input transform of attention (qk-norm, 2-D rotary, query scale), written once:
// the CPU backend applies it to each head of each token in a loop, the CUDA backend in one
// thread per head. Its backward is written here too, for the training backward passes.
#pragma once

#include <cstdint>

#include "tim/core/config.hpp"
#include "tim/math/embedding.hpp"
#include "tim/math/normalization.hpp"

namespace tim::math {

//! In place on one head `u` (hd values): optional LayerNorm over hd (affine, eps `norm_eps`;
//! skipped when `norm_weight` is null), optional rotary by (cos, sin) rows of hd/2 values
//! (skipped when `cos_row` is null), then a multiplication by `scale`. Parameters may be stored
//! in another type W than the computation's T (bfloat16 weights, float arithmetic).
template <class T, class W = T>
TIM_HD inline void prepare_head(T* u, std::int64_t head_dim, const W* norm_weight, const W* norm_bias,
                                double norm_eps, const W* cos_row, const W* sin_row, T scale) {
  if (norm_weight) layernorm_row(u, u, head_dim, norm_weight, norm_bias, norm_eps);
  if (cos_row)
    for (std::int64_t pair = 0; pair < head_dim / 2; ++pair)
      rotate_pair(u[2 * pair], u[2 * pair + 1], static_cast<T>(cos_row[pair]), static_cast<T>(sin_row[pair]));
  if (scale != T(1))
    for (std::int64_t j = 0; j < head_dim; ++j) u[j] *= scale;
}

//! Backward of prepare_head for one head. `d` (hd values) holds the gradient of the prepared head
//! on entry and the gradient of its input `u` on return; `u` is the input as prepare_head saw it
//! and `mean`, `rstd` its LayerNorm statistics (used only when `norm_weight` is given). The
//! LayerNorm's parameter gradients are added to `dnorm_weight`, `dnorm_bias` (hd each).
template <class T, class W = T>
TIM_HD inline void prepare_head_backward(T* d, const T* u, std::int64_t head_dim, const W* norm_weight, T mean,
                                         T rstd, T* dnorm_weight, T* dnorm_bias, const W* cos_row, const W* sin_row,
                                         T scale) {
  if (scale != T(1))
    for (std::int64_t j = 0; j < head_dim; ++j) d[j] *= scale;
  if (cos_row)
    for (std::int64_t pair = 0; pair < head_dim / 2; ++pair)
      rotate_pair_backward(d[2 * pair], d[2 * pair + 1], static_cast<T>(cos_row[pair]), static_cast<T>(sin_row[pair]));
  if (norm_weight) {
    for (std::int64_t j = 0; j < head_dim; ++j) {
      dnorm_weight[j] += d[j] * (u[j] - mean) * rstd;
      dnorm_bias[j] += d[j];
    }
    layernorm_row_backward(d, d, u, mean, rstd, norm_weight, head_dim, false);
  }
}

}  // namespace tim::math
