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

//! The number of partial sums layernorm_statistics keeps: value j of a row goes to sum j mod 16,
//! the 16 sums are then added as a fixed tree. Sixteen independent accumulators are what a
//! compiler turns into vector additions without reassociating anything (one 512-bit, two 256-bit
//! or four 128-bit registers), so the row's statistics are the same bits whatever the vector width
//! (and whatever variant tim/cpu/dispatch.hpp runs), and more accurate than one running sum.
inline constexpr int layernorm_lanes = 16;

//! sum over j of f(u[j]) in layernorm_lanes partial sums (see above), for one row of `cols` values.
template <class T, class F>
TIM_HD inline T lane_sum(const T* u, std::int64_t cols, F f) {
  T acc[layernorm_lanes] = {};
  std::int64_t j = 0;
  for (; j + layernorm_lanes <= cols; j += layernorm_lanes)
    for (int l = 0; l < layernorm_lanes; ++l) acc[l] += f(u[j + l]);
  for (int l = 0; j < cols; ++j, ++l) acc[l] += f(u[j]);
  for (int width = layernorm_lanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0];
}

//! The statistics of one LayerNorm row of `cols` values: the mean and rstd = 1 / sqrt(var + eps)
//! with the biased variance (two passes, as PyTorch; each a lane_sum). layernorm_row uses exactly
//! these; the training forward saves them for the backward.
template <class T>
TIM_HD inline void layernorm_statistics(const T* u, std::int64_t cols, double eps, T& mean, T& rstd) {
  mean = lane_sum(u, cols, [](T x) { return x; }) / T(cols);
  const T m = mean;
  const T var = lane_sum(u, cols, [m](T x) { return (x - m) * (x - m); }) / T(cols);
  rstd = layernorm_rstd(var, eps);
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
  T mean, rstd;
  layernorm_statistics(u, cols, eps, mean, rstd);
  for (std::int64_t j = 0; j < cols; ++j) out[j] = layernorm_value(u[j], mean, rstd, weight, bias, j);
}

//! Backward of one LayerNorm row y = (u - mean) rstd [* weight] [+ bias], given dy (`dout`) and
//! the statistics the forward saved: with g = dout [* weight] and xhat = (u - mean) rstd,
//! dx = rstd (g - mean(g) - xhat mean(g xhat)), written to `dx` or added to it (`accumulate`).
//! `dx` may be `dout` when not accumulating. The affine parameters' gradients (sums over rows)
//! are the caller's: dweight += dout xhat, dbias += dout.
template <class T, class W = T>
TIM_HD inline void layernorm_row_backward(T* dx, const T* dout, const T* u, T mean, T rstd, const W* weight,
                                          std::int64_t cols, bool accumulate) {
  T sum_g = 0, sum_gx = 0;
  for (std::int64_t j = 0; j < cols; ++j) {
    const T g = weight ? dout[j] * static_cast<T>(weight[j]) : dout[j];
    sum_g += g;
    sum_gx += g * (u[j] - mean) * rstd;
  }
  const T mean_g = sum_g / T(cols), mean_gx = sum_gx / T(cols);
  for (std::int64_t j = 0; j < cols; ++j) {
    const T g = weight ? dout[j] * static_cast<T>(weight[j]) : dout[j];
    const T d = rstd * (g - mean_g - (u[j] - mean) * rstd * mean_gx);
    dx[j] = accumulate ? dx[j] + d : d;
  }
}

}  // namespace tim::math
