// LayerNorm of one row, written once: the CPU loop calls it per row, a GPU kernel per block.
#pragma once

#include <cmath>
#include <cstdint>

#include "tim/core/config.hpp"

namespace tim::math {

//! out[j] = (u[j] - mean) / sqrt(var + eps) * weight[j] + bias[j] over one row of `cols`
//! values (biased variance, as PyTorch). Null `weight`/`bias` mean no affine. `out` may be `u`.
template <class T>
TIM_HD inline void layernorm_row(T* out, const T* u, std::int64_t cols, const T* weight, const T* bias,
                                 double eps) {
  using std::sqrt;
  T mean = 0;
  for (std::int64_t j = 0; j < cols; ++j) mean += u[j];
  mean /= T(cols);
  T var = 0;
  for (std::int64_t j = 0; j < cols; ++j) var += (u[j] - mean) * (u[j] - mean);
  var /= T(cols);
  const T rstd = T(1) / sqrt(var + T(eps));
  for (std::int64_t j = 0; j < cols; ++j) {
    T v = (u[j] - mean) * rstd;
    if (weight) v = v * weight[j];
    if (bias) v = v + bias[j];
    out[j] = v;
  }
}

}  // namespace tim::math
