// The scalar pieces of the latent decoders' operations (tim/vae/), written once as TIM_HD
// functions: tim::cpu's decoder operations (tim/cpu/decoder_ops.hpp) call them in their loops and
// tim::cuda's kernels (tim/cuda/decoder_kernels.cuh, linear_attention.cuh) per element, so the two
// backends share every formula and index mapping; they differ only in how the work is split.
//
// Shape legend: C channels, k kernel size, K = k*k*Ci im2col row width, P pixels.
#pragma once

#include <cstdint>

#include "tim/core/config.hpp"
#include "tim/math/activations.hpp"
#include "tim/math/normalization.hpp"

namespace tim::math {

//! One GroupNorm output (u - mean) * rstd * weight[c] + bias[c], through SiLU when `apply_silu`.
template <class T>
TIM_HD inline T group_norm_value(T u, T mean, T rstd, const T* weight, const T* bias, std::int64_t c,
                                 bool apply_silu) {
  const T value = layernorm_value(u, mean, rstd, weight, bias, c);
  return apply_silu ? silu(value) : value;
}

//! The reciprocal RMS of a row of `channels` values whose squares sum to `squares` (in double),
//! rounded once to T: 1 / sqrt(squares / channels + eps).
template <class T>
TIM_HD inline T rms_norm_rstd(double squares, std::int64_t channels, double eps) {
  return static_cast<T>(layernorm_rstd(squares / static_cast<double>(channels), eps));
}

//! The ReLU activation: 0 for x < 0, else x (a NaN stays NaN).
template <class T>
TIM_HD inline T relu(T x) {
  return x < T(0) ? T(0) : x;
}

//! The linear attention's feature map max(0, x) of q and k: x where x > 0, else 0.
template <class T>
TIM_HD inline T relu_feature(T x) {
  return T(0) < x ? x : T(0);
}

//! Rows of the im2col matrix a convolution over `pixels` output pixels builds at once when it may
//! use `block_elements` values: as many rows of K as fit, at least 1, at most `pixels`.
TIM_HD inline std::int64_t rows_per_block(std::int64_t pixels, std::int64_t row_width, std::int64_t block_elements) {
  const std::int64_t fit = block_elements / row_width;
  const std::int64_t rows = fit < pixels ? fit : pixels;
  return rows < 1 ? 1 : rows;
}

//! The source coordinate of tap `tap` (0 <= tap < k) of a stride-1 'same' (zero padding k/2)
//! convolution at output coordinate `y`; outside [0, n) it reads zero.
TIM_HD inline std::int64_t same_padding_source(std::int64_t y, std::int64_t tap, std::int64_t kernel) {
  return y + tap - kernel / 2;
}

//! The sub-pixel of output pixel (y, x) of a 2x upsampling: 2 (y % 2) + x % 2.
TIM_HD inline std::int64_t upsample_phase(std::int64_t y, std::int64_t x) { return 2 * (y % 2) + x % 2; }

//! The input channel a pixel shuffle by 2 reads for output channel c at sub-pixel `phase`: 4c + phase
//! (PyTorch's F.pixel_shuffle).
TIM_HD inline std::int64_t pixel_shuffle_channel(std::int64_t c, std::int64_t phase) { return 4 * c + phase; }

//! The input channel the DC-AE upsampling shortcut reads for output channel c at sub-pixel `phase`:
//! pixel_shuffle(repeat_interleave(x, r)), i.e. (4c + phase) / r with r = 4 Co / Ci repeats.
TIM_HD inline std::int64_t upsample_shortcut_channel(std::int64_t c, std::int64_t phase, std::int64_t repeats) {
  return (4 * c + phase) / repeats;
}

}  // namespace tim::math
