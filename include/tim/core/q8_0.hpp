// The q8_0 weight format: a (N, K) matrix cut along K into blocks of 32 consecutive values (the
// last block of a row is shorter when K is not a multiple of 32), each block stored as one float16
// scale d and 32 int8 values q in [-127, 127] with w ~ q d (the idea of ggml's q8_0; our code).
// Quantising and dequantising one row, and the view of a quantised matrix the kernels read
// (cpu/gemm_q8.hpp). How it is stored in safetensors: io/q8_0.hpp and docs/safetensors.md.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"

namespace tim {

//! Values per q8_0 block (along the input dimension K).
inline constexpr std::int64_t q8_0_block = 32;

//! Blocks of one row of K values: ceil(K / 32).
constexpr std::int64_t q8_0_blocks(std::int64_t K) { return (K + q8_0_block - 1) / q8_0_block; }

//! A q8_0 weight matrix W (out, in) as the kernels read it, e.g. views into a memory-mapped file:
//! q (out, in) int8 row-major, scales (out, q8_0_blocks(in)) float16 row-major;
//! W[n][k] = q[n * in + k] * float(scales[n * q8_0_blocks(in) + k / 32]).
struct Q8Weight {
  const std::int8_t* q = nullptr;    // (out, in)
  const float16* scales = nullptr;   // (out, blocks(in))
  std::int64_t out = 0, in = 0;
};

//! The float16 scale of a block whose largest magnitude is `amax` (finite, >= 0): amax / 127
//! rounded to float16 (nearest even), raised by one float16 step when that rounding left
//! amax / d above 127.5 (possible only among float16's subnormals), so every |w| / d <= 127.5 and
//! each value's error is at most d / 2. Zero for an all-zero block. Throws tim::Error when
//! amax / 127 exceeds float16's range (amax above about 8.3e6).
inline float16 q8_0_scale(float amax) {
  float16 d(amax / 127.0f);
  check(std::isfinite(static_cast<float>(d)), "q8_0: a block's largest magnitude ", amax,
        " is too large for a float16 scale (at most 65504 * 127)");
  if (amax > 0 && static_cast<double>(amax) / static_cast<float>(d) > 127.5) ++d.bits;  // positive: next larger
  return d;
}

//! Quantises one row of K floats: scales[b] = q8_0_scale(max |w| over block b) and
//! q[k] = round-half-to-even(w[k] / d) clamped to [-127, 127] (0 where d is 0), so
//! |w[k] - q[k] d| <= d / 2, and values already of the form q d (|q| <= 127, the block's largest
//! |q| being 127) come back exactly. Throws tim::Error on a NaN or infinite value (naming its index).
inline void quantize_row_q8_0(std::int8_t* q, float16* scales, const float* w, std::int64_t K) {
  for (std::int64_t b = 0; b * q8_0_block < K; ++b) {
    const std::int64_t k0 = b * q8_0_block, k1 = std::min(K, k0 + q8_0_block);
    float amax = 0;
    for (std::int64_t k = k0; k < k1; ++k) {
      check(std::isfinite(w[k]), "q8_0: value ", w[k], " at index ", k, " is not finite");
      amax = std::max(amax, std::abs(w[k]));
    }
    const float16 d16 = q8_0_scale(amax);
    scales[b] = d16;
    const double d = static_cast<float>(d16);
    for (std::int64_t k = k0; k < k1; ++k) {
      // In double: w / d is exact to far below the rounding's half-way tolerance.
      const double r = d > 0 ? std::nearbyint(static_cast<double>(w[k]) / d) : 0.0;
      q[k] = static_cast<std::int8_t>(std::clamp(r, -127.0, 127.0));
    }
  }
}

//! w[k] = q[k] * float(scales[k / 32]) for one row of K values (exact in float: an 8-bit integer
//! times a float16).
inline void dequantize_row_q8_0(float* w, const std::int8_t* q, const float16* scales, std::int64_t K) {
  for (std::int64_t k = 0; k < K; ++k) w[k] = static_cast<float>(q[k]) * static_cast<float>(scales[k / q8_0_block]);
}

}  // namespace tim
