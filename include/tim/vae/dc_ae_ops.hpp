// The CPU operations the DC-AE decoder (tim/vae/dc_ae.hpp) adds to those of tim/vae/ops.hpp:
// RMSNorm over channels, depthwise and grouped 1x1 convolutions, the ReLU linear attention of
// EfficientViT blocks, pixel shuffle and the channel-repeat shortcuts. Activations are
// channels-last (a pixel's channels are one contiguous row), as in ops.hpp.
//
// Shape legend: B batch, H, W spatial size, P pixels (rows), C channels (Ci in, Co out), k kernel
// size, G groups, n channels per group, nh heads, hd head dim.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/math/normalization.hpp"

namespace tim::vae {

//! RMSNorm over the channels of x (P, C): out = x / sqrt(mean_c x^2 + eps) * weight + bias, plus
//! `residual` (P, C) when it is not null. The mean of squares is accumulated in double. `out` may
//! be `in` or `residual`.
template <class T>
void rms_norm_channels_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows,
                               std::int64_t channels, double eps, const T* residual = nullptr) {
  cpu::parallel_for(rows, [&](std::int64_t r) {
    const T* u = in + r * channels;
    double squares = 0;
    for (std::int64_t c = 0; c < channels; ++c) squares += static_cast<double>(u[c]) * static_cast<double>(u[c]);
    const T rstd = static_cast<T>(math::layernorm_rstd(squares / static_cast<double>(channels), eps));
    T* v = out + r * channels;
    const T* skip = residual ? residual + r * channels : nullptr;
    for (std::int64_t c = 0; c < channels; ++c) {
      const T value = math::rms_norm_value(u[c], rstd, weight, bias, c);
      v[c] = skip ? value + skip[c] : value;
    }
  });
}

//! Depthwise stride-1 'same' convolution (zero padding k/2), channels-last: out (B, H, W, C) with
//! out[b, y, x, c] = bias[c] + sum over taps of weight[ky, kx, c] * in[b, y + ky - k/2, x + kx - k/2, c].
//! `weight` is (k, k, C), i.e. PyTorch's (C, 1, k, k) transposed; `bias` (C) may be null.
template <class T>
void depthwise_conv2d_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t batch,
                              std::int64_t height, std::int64_t width, std::int64_t channels, std::int64_t kernel) {
  const std::int64_t pad = kernel / 2;
  cpu::parallel_for(batch * height, [&](std::int64_t row) {
    const std::int64_t b = row / height, y = row % height;
    for (std::int64_t x = 0; x < width; ++x) {
      T* v = out + (row * width + x) * channels;
      if (bias)
        cpu::copy(v, bias, static_cast<std::size_t>(channels));
      else
        std::fill(v, v + channels, T(0));
      for (std::int64_t ky = 0; ky < kernel; ++ky) {
        const std::int64_t sy = y + ky - pad;
        if (sy < 0 || sy >= height) continue;
        for (std::int64_t kx = 0; kx < kernel; ++kx) {
          const std::int64_t sx = x + kx - pad;
          if (sx < 0 || sx >= width) continue;
          const T* u = in + ((b * height + sy) * width + sx) * channels;
          const T* w = weight + (ky * kernel + kx) * channels;
          for (std::int64_t c = 0; c < channels; ++c) v[c] += w[c] * u[c];
        }
      }
    }
  });
}

//! Grouped 1x1 convolution without bias: G groups of n consecutive channels, each its own n x n
//! map: out[r, g n + o] = sum_i in[r, g n + i] * W[g n + o, i] for x (P, G n). `weight_t` is
//! (G, n_in, n_out), i.e. PyTorch's (G n, n, 1, 1) transposed within each group.
template <class T>
void grouped_pointwise_forward(T* out, const T* in, const T* weight_t, std::int64_t rows, std::int64_t groups,
                               std::int64_t group_channels) {
  const std::int64_t n = group_channels, channels = groups * n;
  cpu::parallel_for(rows, [&](std::int64_t r) {
    const T* u = in + r * channels;
    T* v = out + r * channels;
    std::fill(v, v + channels, T(0));
    for (std::int64_t g = 0; g < groups; ++g) {
      T* vg = v + g * n;
      const T* wg = weight_t + g * n * n;
      for (std::int64_t i = 0; i < n; ++i) {
        const T a = u[g * n + i];
        for (std::int64_t o = 0; o < n; ++o) vg[o] += a * wg[i * n + o];
      }
    }
  });
}

//! The ReLU linear attention of EfficientViT (diffusers' SanaMultiscaleLinearAttention): for each
//! sample and head, with q = relu(q), k = relu(k) over the P pixels,
//!   out[n] = sum_m v[m] (k[m] . q[n]) / (sum_m k[m] . q[n] + eps) = (V^T K) q[n] / (ksum . q[n] + eps).
//! qkv (B, P, nh * 3 hd): head h reads q, k, v from channels [3 hd h, 3 hd h + hd), the next hd,
//! the next hd. out (B, P, out_stride): head h writes channels [hd h, hd h + hd); other channels
//! are left alone. The sums over pixels (V^T K: hd x hd, ksum: hd) and the products with q are
//! in double: the sums run over up to 64^2 pixels at 512 px, and v's signs let them cancel.
template <class T>
void relu_linear_attention_forward(T* out, std::int64_t out_stride, const T* qkv, std::int64_t batch,
                                   std::int64_t pixels, std::int64_t heads, std::int64_t head_dim, double eps) {
  const std::int64_t hd = head_dim, row = heads * 3 * hd;
  cpu::parallel_for(batch * heads, [&](std::int64_t job) {
    const std::int64_t b = job / heads, h = job % heads;
    const T* base = qkv + b * pixels * row + h * 3 * hd;
    std::vector<double> kv(static_cast<std::size_t>(hd * hd), 0.0), ksum(static_cast<std::size_t>(hd), 0.0);
    std::vector<double> k(static_cast<std::size_t>(hd)), q(static_cast<std::size_t>(hd));
    for (std::int64_t p = 0; p < pixels; ++p) {
      const T* at = base + p * row;
      for (std::int64_t d = 0; d < hd; ++d) {
        k[d] = std::max(0.0, static_cast<double>(at[hd + d]));
        ksum[d] += k[d];
      }
      for (std::int64_t e = 0; e < hd; ++e) {
        const double v = static_cast<double>(at[2 * hd + e]);
        double* kv_row = kv.data() + e * hd;
        for (std::int64_t d = 0; d < hd; ++d) kv_row[d] += v * k[d];
      }
    }
    for (std::int64_t p = 0; p < pixels; ++p) {
      const T* at = base + p * row;
      double denominator = eps;
      for (std::int64_t d = 0; d < hd; ++d) {
        q[d] = std::max(0.0, static_cast<double>(at[d]));
        denominator += ksum[d] * q[d];
      }
      T* o = out + (b * pixels + p) * out_stride + h * hd;
      for (std::int64_t e = 0; e < hd; ++e) {
        const double* kv_row = kv.data() + e * hd;
        double numerator = 0;
        for (std::int64_t d = 0; d < hd; ++d) numerator += kv_row[d] * q[d];
        o[e] = static_cast<T>(numerator / denominator);
      }
    }
  });
}

//! out (B, 2H, 2W, C) = pixel shuffle of in (B, H, W, 4C): out[b, 2y + i, 2x + j, c] = in[b, y, x, 4c + 2i + j]
//! (PyTorch's F.pixel_shuffle with factor 2, channels-last).
template <class T>
void pixel_shuffle2x_forward(T* out, const T* in, std::int64_t batch, std::int64_t height, std::int64_t width,
                             std::int64_t channels) {
  const std::int64_t out_width = 2 * width;
  cpu::parallel_for(batch * 2 * height, [&](std::int64_t row) {
    const std::int64_t b = row / (2 * height), y = (row % (2 * height)) / 2, i = row % 2;
    for (std::int64_t x = 0; x < out_width; ++x) {
      const T* u = in + ((b * height + y) * width + x / 2) * 4 * channels + 2 * i + x % 2;
      T* v = out + (row * out_width + x) * channels;
      for (std::int64_t c = 0; c < channels; ++c) v[c] = u[4 * c];
    }
  });
}

//! The shortcut of a DC-AE 2x upsampling block, added to out (B, 2H, 2W, Co): pixel_shuffle(in
//! with each channel repeated r = 4 Co / Ci times), i.e. out[b, 2y + i, 2x + j, c] +=
//! in[b, y, x, (4c + 2i + j) / r] for in (B, H, W, Ci). Nearest upsampling when r = 4 (Ci = Co).
template <class T>
void upsample_shortcut_forward(T* out, const T* in, std::int64_t batch, std::int64_t height, std::int64_t width,
                               std::int64_t in_channels, std::int64_t out_channels) {
  const std::int64_t repeats = 4 * out_channels / in_channels, out_width = 2 * width;
  check(repeats >= 1 && repeats * in_channels == 4 * out_channels, "upsample_shortcut: ", in_channels,
        " input channels do not divide 4 x ", out_channels, " output channels");
  cpu::parallel_for(batch * 2 * height, [&](std::int64_t row) {
    const std::int64_t b = row / (2 * height), y = (row % (2 * height)) / 2, i = row % 2;
    for (std::int64_t x = 0; x < out_width; ++x) {
      const T* u = in + ((b * height + y) * width + x / 2) * in_channels;
      const std::int64_t phase = 2 * i + x % 2;
      T* v = out + (row * out_width + x) * out_channels;
      for (std::int64_t c = 0; c < out_channels; ++c) v[c] += u[(4 * c + phase) / repeats];
    }
  });
}

//! out (P, Ci r) += in (P, Ci) with each channel repeated r times: out[p, c] += in[p, c / r]
//! (PyTorch's repeat_interleave along channels; the DC-AE decoder's input shortcut).
template <class T>
void repeat_channels_add_forward(T* out, const T* in, std::int64_t rows, std::int64_t in_channels,
                                 std::int64_t repeats) {
  const std::int64_t out_channels = in_channels * repeats;
  cpu::parallel_for(rows, [&](std::int64_t r) {
    const T* u = in + r * in_channels;
    T* v = out + r * out_channels;
    for (std::int64_t c = 0; c < out_channels; ++c) v[c] += u[c / repeats];
  });
}

//! x = max(x, 0) element-wise, in place.
template <class T>
void relu_inplace_forward(T* x, std::int64_t n) {
  cpu::parallel_for(n, [&](std::int64_t i) { x[i] = std::max(x[i], T(0)); });
}

}  // namespace tim::vae
