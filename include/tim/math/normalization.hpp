// LayerNorm of one row, written once: the CPU loop calls layernorm_row per row; the CUDA kernel
// reduces a row's statistics across a thread block and applies layernorm_value per element.
#pragma once

#include <cmath>
#include <cstdint>

#include "tim/core/config.hpp"

namespace tim::math {

//! 1 / sqrt(var + eps): the reciprocal standard deviation of a LayerNorm row.
template <class T>
TIM_HD inline T layernorm_rstd(T var, double eps) {
  using std::sqrt;
  return T(1) / sqrt(var + T(eps));
}

//! One normalised value (u - mean) * rstd [* weight] [+ bias]; null weight/bias mean no affine.
//! Parameters of another storage type W (bfloat16 weights of a float computation) are converted.
template <class T, class W>
TIM_HD inline T layernorm_value(T u, T mean, T rstd, const W* weight, const W* bias, std::int64_t j) {
  T v = (u - mean) * rstd;
  if (weight) v = v * static_cast<T>(weight[j]);
  if (bias) v = v + static_cast<T>(bias[j]);
  return v;
}

//! One RMS-normalised value u * rstd * weight[j] + bias[j], rstd = layernorm_rstd(mean of u^2,
//! eps) (the DC-AE decoder's RMSNorm over channels; the CPU and CUDA decoders both call it).
template <class T>
TIM_HD inline T rms_norm_value(T u, T rstd, const T* weight, const T* bias, std::int64_t j) {
  return u * rstd * weight[j] + bias[j];
}

//! out[j] = (u[j] - mean) / sqrt(var + eps) * weight[j] + bias[j] over one row of `cols`
//! values (biased variance, as PyTorch). Null `weight`/`bias` mean no affine. `out` may be `u`.
template <class T, class W = T>
TIM_HD inline void layernorm_row(T* out, const T* u, std::int64_t cols, const W* weight, const W* bias,
                                 double eps) {
  T mean = 0;
  for (std::int64_t j = 0; j < cols; ++j) mean += u[j];
  mean /= T(cols);
  T var = 0;
  for (std::int64_t j = 0; j < cols; ++j) var += (u[j] - mean) * (u[j] - mean);
  var /= T(cols);
  const T rstd = layernorm_rstd(var, eps);
  for (std::int64_t j = 0; j < cols; ++j) out[j] = layernorm_value(u[j], mean, rstd, weight, bias, j);
}

}  // namespace tim::math
