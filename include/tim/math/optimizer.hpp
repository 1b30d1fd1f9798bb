// The optimizer's element-wise formulas as functors (TIM_HD), run by a backend's executor
// (Backend::for_each): one AdamW update, a scale (gradient clipping) and the EMA's lerp. The
// scalar coefficients (bias corrections, step size) are computed once per step in double by
// tim/train/optimizer.hpp and passed in already rounded to T, as PyTorch passes Python floats to
// its tensor kernels. Each functor is a plain struct of pointers and values, so a CUDA kernel
// can take it by value.
#pragma once

#include <cmath>
#include <cstdint>

#include "tim/core/config.hpp"

namespace tim::math {

//! One AdamW step of one tensor, in the order of torch.optim.AdamW's single-tensor algorithm
//! (the one PyTorch runs for CPU tensors):
//!   p  <- p * decay_factor                     decay_factor = 1 - lr weight_decay
//!   m  <- m + (1 - beta1) (g - m)              (torch's lerp for a weight below 0.5)
//!   v  <- v beta2 + (1 - beta2) g g
//!   p  <- p - step_size m / (sqrt(v) / sqrt_bias_correction2 + eps)
//! with step_size = lr / (1 - beta1^k), sqrt_bias_correction2 = sqrt(1 - beta2^k) at step k >= 1.
template <class T>
struct AdamWOp {
  T* param;
  T* exp_avg;     // m
  T* exp_avg_sq;  // v
  const T* grad;
  T decay_factor, one_minus_beta1, beta2, one_minus_beta2, step_size, sqrt_bias_correction2, eps;
  TIM_HD void operator()(std::int64_t i) const {
    using std::sqrt;
    const T g = grad[i];
    T p = param[i] * decay_factor;
    const T m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i]);
    const T v = exp_avg_sq[i] * beta2 + one_minus_beta2 * (g * g);
    const T denominator = sqrt(v) / sqrt_bias_correction2 + eps;
    p = p + (-step_size) * (m / denominator);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p;
  }
};

//! x <- x * factor (the clip coefficient applied to a gradient).
template <class T>
struct ScaleOp {
  T* x;
  T factor;
  TIM_HD void operator()(std::int64_t i) const { x[i] = x[i] * factor; }
};

//! The EMA update as torch.lerp(ema, param, weight) with weight = 1 - decay < 0.5:
//! ema <- ema + weight (param - ema).
template <class T>
struct EmaOp {
  T* ema;
  const T* param;
  T weight;
  TIM_HD void operator()(std::int64_t i) const { ema[i] = ema[i] + weight * (param[i] - ema[i]); }
};

}  // namespace tim::math
