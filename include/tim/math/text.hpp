// The Gemma-3 text decoder's element-wise mathematics, written once as TIM_HD functors that every
// backend runs through its executor (for_each): the scaled embedding lookup, the RMSNorm with
// (1 + w), q/k head preparation (RMSNorm over hd, rotate-half rotary, scale), the GELU (tanh)
// gate, and causal attention with a sliding window, grouped-query heads and a padding mask.
//
// Shape legend: B prompts, N tokens, R = B*N rows, D hidden, nh query heads, nkv key/value heads,
// hd head dim, Hm MLP hidden.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tim/core/config.hpp"

namespace tim::math {

//! A stored weight (float, double, or a 16-bit storage type converting through float) as T.
template <class T, class W>
TIM_HD inline T widen(W w) {
  if constexpr (std::is_arithmetic_v<W>)
    return static_cast<T>(w);
  else
    return static_cast<T>(static_cast<float>(w));
}

//! GELU with the tanh approximation (PyTorch's approximate='tanh', Gemma's gelu_pytorch_tanh).
template <class T>
TIM_HD inline T gelu_tanh(T u) {
  using std::tanh;
  const T k = T(0.79788456080286535588);  // sqrt(2 / pi)
  return T(0.5) * u * (T(1) + tanh(k * (u + T(0.044715) * u * u * u)));
}

//! out (R, D) = table[ids[r]] * normalizer, one element per call; ids (R) in the backend's memory.
template <class T, class W>
struct ScaledEmbeddingOp {
  T* out;
  const W* table;  // (V, D)
  const std::int64_t* ids;
  std::int64_t dim;
  T normalizer;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / dim, j = i % dim;
    out[i] = widen<T>(table[ids[r] * dim + j]) * normalizer;
  }
};

//! One row of Gemma's RMSNorm: out = u / sqrt(mean(u^2) + eps) * scale, where scale = 1 + weight
//! (precomputed). The mean of squares is summed in double. out may equal u.
template <class T>
TIM_HD inline void gemma_rms_norm_row(T* out, const T* u, const T* scale, std::int64_t cols, double eps) {
  using std::sqrt;
  double squares = 0;
  for (std::int64_t j = 0; j < cols; ++j) squares += static_cast<double>(u[j]) * static_cast<double>(u[j]);
  const T rstd = static_cast<T>(1.0 / sqrt(squares / static_cast<double>(cols) + eps));
  for (std::int64_t j = 0; j < cols; ++j) out[j] = u[j] * rstd * scale[j];
}

//! RMSNorm of rows of `cols` values, one row per call (x (R, cols) in place or into out).
template <class T>
struct GemmaRmsNormOp {
  T* out;
  const T* in;
  const T* scale;  // (cols): 1 + weight
  std::int64_t cols;
  double eps;
  TIM_HD void operator()(std::int64_t r) const { gemma_rms_norm_row(out + r * cols, in + r * cols, scale, cols, eps); }
};

//! q or k heads in place, one (row, head) per call: RMSNorm over hd with `scale` (1 + q_norm or
//! k_norm), the rotate-half rotary of the row's position n = r mod N (pair (j, j + hd/2) turned by
//! the angle in cos/sin (N, hd/2)), then times `factor` (q: 1/sqrt(query_pre_attn_scalar); k: 1).
//! x is (R, heads, hd).
template <class T>
struct GemmaHeadOp {
  T* x;
  const T* scale;  // (hd)
  const T* cos;    // (N, hd/2)
  const T* sin;    // (N, hd/2)
  std::int64_t tokens, heads, head_dim;
  double eps;
  T factor;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / heads, n = r % tokens, half = head_dim / 2;
    T* u = x + i * head_dim;
    gemma_rms_norm_row(u, u, scale, head_dim, eps);
    const T* c = cos + n * half;
    const T* s = sin + n * half;
    for (std::int64_t j = 0; j < half; ++j) {
      const T a = u[j], b = u[j + half];
      u[j] = (a * c[j] - b * s[j]) * factor;
      u[j + half] = (b * c[j] + a * s[j]) * factor;
    }
  }
};

//! gate (R, Hm) = gelu_tanh(gate) * up, one element per call.
template <class T>
struct GeluGateOp {
  T* gate;
  const T* up;
  TIM_HD void operator()(std::int64_t i) const { gate[i] = gelu_tanh(gate[i]) * up[i]; }
};

//! Whether query i of a prompt with `length` real tokens sees key j: causal (j <= i), a real token
//! (j < length; right padding), and within the window when `window` > 0 (i - j < window).
TIM_HD inline bool gemma_key_visible(std::int64_t i, std::int64_t j, std::int64_t length, std::int64_t window) {
  return j <= i && j < length && (window <= 0 || i - j < window);
}

//! Masked softmax attention, one (query row, head) per call, online softmax over the visible keys
//! (no score buffer): out (R, nh*hd) row r head h = sum_j softmax_j(q.k_j) v_j, q (R, nh*hd)
//! already scaled, k and v (R, nkv*hd); query head h reads key/value head h / (nh / nkv). A row
//! with no visible key gives zeros. Accumulates in double.
template <class T>
struct GemmaAttentionOp {
  T* out;
  const T* q;
  const T* k;
  const T* v;
  const std::int64_t* lengths;  // (B) real tokens per prompt
  std::int64_t tokens, heads, kv_heads, head_dim, window;
  TIM_HD void operator()(std::int64_t i) const {
    using std::exp;
    const std::int64_t r = i / heads, h = i % heads, b = r / tokens, n = r % tokens;
    const std::int64_t g = h / (heads / kv_heads), kv_width = kv_heads * head_dim;
    const T* qi = q + r * heads * head_dim + h * head_dim;
    T* o = out + r * heads * head_dim + h * head_dim;
    for (std::int64_t d = 0; d < head_dim; ++d) o[d] = T(0);
    double running_max = 0, total = 0;
    bool any = false;
    const std::int64_t first = window > 0 && n - window + 1 > 0 ? n - window + 1 : 0;
    for (std::int64_t j = first; j <= n; ++j) {
      if (!gemma_key_visible(n, j, lengths[b], window)) continue;
      const T* kj = k + (b * tokens + j) * kv_width + g * head_dim;
      const T* vj = v + (b * tokens + j) * kv_width + g * head_dim;
      T dot = T(0);
      for (std::int64_t d = 0; d < head_dim; ++d) dot += qi[d] * kj[d];
      const double s = static_cast<double>(dot);
      double weight = 1;
      if (!any) {
        running_max = s, any = true;
      } else if (s > running_max) {
        const double correction = exp(running_max - s);
        total *= correction;
        for (std::int64_t d = 0; d < head_dim; ++d) o[d] = static_cast<T>(static_cast<double>(o[d]) * correction);
        running_max = s;
      } else {
        weight = exp(s - running_max);
      }
      total += weight;
      for (std::int64_t d = 0; d < head_dim; ++d) o[d] += static_cast<T>(weight) * vj[d];
    }
    if (any)
      for (std::int64_t d = 0; d < head_dim; ++d) o[d] = static_cast<T>(static_cast<double>(o[d]) / total);
  }
};

}  // namespace tim::math
