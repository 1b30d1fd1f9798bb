// Decoder operations of the CPU backend: the static operations the latent decoders (tim/vae/)
// call, in a base that tim::cpu derives from (CRTP: `Backend` is tim::cpu, whose parallel_for,
// copy and linear_forward they use). Activations are channels-last (B, H, W, C), so a pixel's
// channels are one contiguous row and 1x1 convolutions are plain GEMMs over pixels. The scalar
// formulas are those of tim/math/decoder.hpp, which tim::cuda's kernels run too.
//
// Shape legend: B batch, C channels (Ci in, Co out), H, W spatial size, P = H*W pixels (rows), G
// GroupNorm groups, k kernel size, K = k*k*Ci im2col row width, n channels per group, nh heads,
// hd head dim.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/math/decoder.hpp"

namespace tim::cpu_detail {

template <class Backend>
struct DecoderOps {
  // ------------------------------------------------------------------------------------------
  // Decoder operations

  //! Largest im2col block (values) conv2d_forward builds at once by default (2^21).
  static constexpr std::int64_t im2col_block_elements = std::int64_t{1} << 21;
  //! Default score block of pixel_attention_forward; unused here (tiles of 64 queries per thread).
  static constexpr std::int64_t score_block_elements = 0;
  //! Default pixel slice of relu_linear_attention_forward's sums; unused here (one pass per head).
  static constexpr std::int64_t linear_attention_slice_pixels = 0;
  //! Largest head dim relu_linear_attention_forward takes (any).
  static constexpr std::int64_t linear_attention_max_head_dim = std::numeric_limits<std::int64_t>::max();

  //! out (B, P, C) = in (B, C, P) * scale: latents to channels-last, divided by the scaling factor.
  template <class T>
  static void to_channels_last_forward(T* out, const T* in, std::int64_t batch, std::int64_t channels,
                                       std::int64_t pixels, T scale) {
    Backend::parallel_for(batch * pixels, [&](std::int64_t row) {
      const std::int64_t b = row / pixels, p = row % pixels;
      for (std::int64_t c = 0; c < channels; ++c) out[row * channels + c] = in[(b * channels + c) * pixels + p] * scale;
    });
  }

  //! out (B, C, P) from in (B, P, C).
  template <class T>
  static void to_channels_first_forward(T* out, const T* in, std::int64_t batch, std::int64_t channels,
                                        std::int64_t pixels) {
    Backend::parallel_for(batch * channels, [&](std::int64_t plane) {
      const std::int64_t b = plane / channels, c = plane % channels;
      for (std::int64_t p = 0; p < pixels; ++p) out[plane * pixels + p] = in[(b * pixels + p) * channels + c];
    });
  }

  //! GroupNorm of in (B, P, C): for each sample and group of C/G consecutive channels,
  //! (u - mean) * rstd * weight[c] + bias[c] with mean and biased variance over the group's
  //! P * C/G values (PyTorch's nn.GroupNorm), then SiLU when `apply_silu`. The statistics are
  //! accumulated in double (two passes) over blocks of 256 pixels whose sums are added in block
  //! order, so the result does not depend on the thread count. `out` may be `in`.
  template <class T>
  static void group_norm_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t batch,
                                 std::int64_t pixels, std::int64_t channels, std::int64_t groups, double eps,
                                 bool apply_silu) {
    check(groups >= 1 && channels % groups == 0, "group_norm: ", channels, " channels are not divisible by ", groups,
          " groups");
    const std::int64_t per_group = channels / groups;
    const double count = static_cast<double>(pixels * per_group);
    constexpr std::int64_t block_pixels = 256;
    const std::int64_t blocks = (pixels + block_pixels - 1) / block_pixels;
    std::vector<double> partial(static_cast<std::size_t>(batch * blocks * groups));
    std::vector<double> group_mean(static_cast<std::size_t>(batch * groups));  // (B, G)
    const auto block_pass = [&](bool squares) {
      std::fill(partial.begin(), partial.end(), 0.0);
      Backend::parallel_for(batch * blocks, [&](std::int64_t job) {
        const std::int64_t b = job / blocks, first = (job % blocks) * block_pixels;
        const std::int64_t last = std::min(pixels, first + block_pixels);
        double* sums = partial.data() + job * groups;
        const double* means = group_mean.data() + b * groups;
        for (std::int64_t p = first; p < last; ++p) {
          const T* u = in + (b * pixels + p) * channels;
          for (std::int64_t g = 0; g < groups; ++g) {
            double sum = 0;
            for (std::int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
              const double value = static_cast<double>(u[c]);
              sum += squares ? (value - means[g]) * (value - means[g]) : value;
            }
            sums[g] += sum;
          }
        }
      });
      std::vector<double> total(static_cast<std::size_t>(batch * groups), 0.0);
      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t k = 0; k < blocks; ++k)
          for (std::int64_t g = 0; g < groups; ++g)
            total[static_cast<std::size_t>(b * groups + g)] +=
                partial[static_cast<std::size_t>((b * blocks + k) * groups + g)];
      for (auto& t : total) t /= count;
      return total;
    };
    group_mean = block_pass(false);
    const std::vector<double> variance = block_pass(true);
    std::vector<T> mean(group_mean.size()), rstd(group_mean.size());
    for (std::size_t i = 0; i < mean.size(); ++i) {
      mean[i] = static_cast<T>(group_mean[i]);
      rstd[i] = static_cast<T>(math::layernorm_rstd(variance[i], eps));
    }
    Backend::parallel_for(batch * pixels, [&](std::int64_t row) {
      const std::int64_t b = row / pixels;
      const T* u = in + row * channels;
      T* v = out + row * channels;
      for (std::int64_t c = 0; c < channels; ++c) {
        const auto bg = static_cast<std::size_t>(b * groups + c / per_group);
        v[c] = math::group_norm_value(u[c], mean[bg], rstd[bg], weight, bias, c, apply_silu);
      }
    });
  }

  //! out (B, 2H, 2W, C) = nearest-neighbour 2x upsampling of in (B, H, W, C).
  template <class T>
  static void upsample_nearest2x_forward(T* out, const T* in, std::int64_t batch, std::int64_t height,
                                         std::int64_t width, std::int64_t channels) {
    const std::int64_t out_height = 2 * height, out_width = 2 * width;
    Backend::parallel_for(batch * out_height, [&](std::int64_t row) {
      const std::int64_t b = row / out_height, y = row % out_height;
      for (std::int64_t x = 0; x < out_width; ++x)
        Backend::copy(out + (row * out_width + x) * channels, in + ((b * height + y / 2) * width + x / 2) * channels,
                      static_cast<std::size_t>(channels));
    });
  }

  //! Stride-1 'same' convolution (zero padding k/2), channels-last: out (B, H, W, Co) =
  //! conv(in (B, H, W, Ci)) + bias (may be null), or += with `accumulate`. `weight` is (Co, k, k,
  //! Ci), PyTorch's (Co, Ci, k, k) with the input channels last, so an im2col row is k*k copies of
  //! Ci contiguous values. A 1x1 is one GEMM over the pixels; a k x k one fills `columns` with
  //! math::rows_per_block(B H W, K, block_elements) rows at a time (its size) and multiplies each block.
  template <class T>
  static void conv2d_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t batch,
                             std::int64_t height, std::int64_t width, std::int64_t in_channels,
                             std::int64_t out_channels, std::int64_t kernel, bool accumulate, T* columns,
                             std::int64_t block_elements) {
    const std::int64_t pixels = batch * height * width;
    if (kernel == 1) {
      Backend::linear_forward(out, in, weight, bias, pixels, in_channels, out_channels, accumulate);
      return;
    }
    const std::int64_t row_width = kernel * kernel * in_channels;
    const std::int64_t chunk = math::rows_per_block(pixels, row_width, block_elements);
    for (std::int64_t first = 0; first < pixels; first += chunk) {
      const std::int64_t rows = std::min(chunk, pixels - first);
      Backend::parallel_for(rows, [&](std::int64_t r) {
        const std::int64_t pixel = first + r;
        const std::int64_t b = pixel / (height * width), y = (pixel / width) % height, x = pixel % width;
        T* dst = columns + r * row_width;
        for (std::int64_t ky = 0; ky < kernel; ++ky)
          for (std::int64_t kx = 0; kx < kernel; ++kx, dst += in_channels) {
            const std::int64_t sy = math::same_padding_source(y, ky, kernel);
            const std::int64_t sx = math::same_padding_source(x, kx, kernel);
            if (sy < 0 || sy >= height || sx < 0 || sx >= width)
              std::fill(dst, dst + in_channels, T(0));
            else
              Backend::copy(dst, in + ((b * height + sy) * width + sx) * in_channels,
                            static_cast<std::size_t>(in_channels));
          }
      });
      Backend::linear_forward(out + first * out_channels, columns, weight, bias, rows, row_width, out_channels,
                              accumulate);
    }
  }

  //! Values of the `scores` scratch pixel_attention_forward needs: none here.
  static std::int64_t pixel_attention_scratch_elements(std::int64_t /*pixels*/, std::int64_t /*block_elements*/) {
    return 0;
  }

  //! Single-head softmax attention over the pixels: out (B, P, C) = softmax(scale q k^T) v with q,
  //! k, v (B, P, C) (the SD VAE's mid-block attention, one head of C channels): the backend's
  //! attention_forward with nh = 1. `scores` and `block_elements` are not used (may be null, 0).
  template <class T>
  static void pixel_attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch,
                                      std::int64_t pixels, std::int64_t channels, double scale, T* /*scores*/,
                                      std::int64_t /*block_elements*/) {
    Backend::attention_forward(out, q, k, v, batch, 1, pixels, channels, scale);
  }

  //! RMSNorm over the channels of in (P, C): out = in / sqrt(mean_c in^2 + eps) * weight + bias,
  //! plus `residual` (P, C) when it is not null; the mean of squares in double. `out` may be `in`
  //! or `residual`.
  template <class T>
  static void rms_norm_channels_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows,
                                        std::int64_t channels, double eps, const T* residual) {
    Backend::parallel_for(rows, [&](std::int64_t r) {
      const T* u = in + r * channels;
      double squares = 0;
      for (std::int64_t c = 0; c < channels; ++c) squares += static_cast<double>(u[c]) * static_cast<double>(u[c]);
      const T rstd = math::rms_norm_rstd<T>(squares, channels, eps);
      T* v = out + r * channels;
      const T* skip = residual ? residual + r * channels : nullptr;
      for (std::int64_t c = 0; c < channels; ++c) {
        const T value = math::rms_norm_value(u[c], rstd, weight, bias, c);
        v[c] = skip ? value + skip[c] : value;
      }
    });
  }

  //! Depthwise stride-1 'same' convolution, channels-last: out (B, H, W, C), out[b, y, x, c] =
  //! bias[c] + sum over taps (in order ky, kx) of weight[ky, kx, c] in[b, y + ky - k/2, x + kx - k/2, c].
  //! `weight` is (k, k, C) (PyTorch's (C, 1, k, k) transposed); `bias` may be null. out != in.
  template <class T>
  static void depthwise_conv2d_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t batch,
                                       std::int64_t height, std::int64_t width, std::int64_t channels,
                                       std::int64_t kernel) {
    Backend::parallel_for(batch * height, [&](std::int64_t row) {
      const std::int64_t b = row / height, y = row % height;
      for (std::int64_t x = 0; x < width; ++x) {
        T* v = out + (row * width + x) * channels;
        if (bias)
          Backend::copy(v, bias, static_cast<std::size_t>(channels));
        else
          std::fill(v, v + channels, T(0));
        for (std::int64_t ky = 0; ky < kernel; ++ky) {
          const std::int64_t sy = math::same_padding_source(y, ky, kernel);
          if (sy < 0 || sy >= height) continue;
          for (std::int64_t kx = 0; kx < kernel; ++kx) {
            const std::int64_t sx = math::same_padding_source(x, kx, kernel);
            if (sx < 0 || sx >= width) continue;
            const T* u = in + ((b * height + sy) * width + sx) * channels;
            const T* w = weight + (ky * kernel + kx) * channels;
            for (std::int64_t c = 0; c < channels; ++c) v[c] += w[c] * u[c];
          }
        }
      }
    });
  }

  //! Grouped 1x1 convolution without bias: out[r, g n + o] = sum_i (in order) in[r, g n + i]
  //! weight_t[g, i, o] for in (P, G n); `weight_t` (G, n, n) is PyTorch's (G n, n, 1, 1) transposed
  //! within each group. out != in.
  template <class T>
  static void grouped_pointwise_forward(T* out, const T* in, const T* weight_t, std::int64_t rows,
                                        std::int64_t groups, std::int64_t group_channels) {
    const std::int64_t n = group_channels, channels = groups * n;
    Backend::parallel_for(rows, [&](std::int64_t r) {
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

  //! The ReLU linear attention of EfficientViT (diffusers' SanaMultiscaleLinearAttention): per
  //! sample and head, with q, k through math::relu_feature over the P pixels,
  //!   out[n] = sum_m v[m] (k[m] . q[n]) / (sum_m k[m] . q[n] + eps) = (V^T K) q[n] / (ksum . q[n] + eps).
  //! qkv (B, P, nh 3 hd): head h reads q, k, v at channels 3 hd h, + hd, + 2 hd. out (B, P,
  //! out_stride): head h writes channels [hd h, hd h + hd); others are left alone. The sums over
  //! pixels and the products with q are in double, one pass per head (`slice_pixels` not used).
  template <class T>
  static void relu_linear_attention_forward(T* out, std::int64_t out_stride, const T* qkv, std::int64_t batch,
                                            std::int64_t pixels, std::int64_t heads, std::int64_t head_dim,
                                            double eps, std::int64_t /*slice_pixels*/) {
    const std::int64_t hd = head_dim, row = heads * 3 * hd;
    Backend::parallel_for(batch * heads, [&](std::int64_t job) {
      const std::int64_t b = job / heads, h = job % heads;
      const T* base = qkv + b * pixels * row + h * 3 * hd;
      std::vector<double> kv(static_cast<std::size_t>(hd * hd), 0.0), ksum(static_cast<std::size_t>(hd), 0.0);
      std::vector<double> k(static_cast<std::size_t>(hd)), q(static_cast<std::size_t>(hd));
      for (std::int64_t p = 0; p < pixels; ++p) {
        const T* at = base + p * row;
        for (std::int64_t d = 0; d < hd; ++d) {
          k[d] = math::relu_feature(static_cast<double>(at[hd + d]));
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
          q[d] = math::relu_feature(static_cast<double>(at[d]));
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

  //! out (B, 2H, 2W, C) = pixel shuffle of in (B, H, W, 4C): out[b, 2y + i, 2x + j, c] =
  //! in[b, y, x, 4c + 2i + j] (PyTorch's F.pixel_shuffle with factor 2, channels-last).
  template <class T>
  static void pixel_shuffle2x_forward(T* out, const T* in, std::int64_t batch, std::int64_t height,
                                      std::int64_t width, std::int64_t channels) {
    const std::int64_t out_width = 2 * width;
    Backend::parallel_for(batch * 2 * height, [&](std::int64_t row) {
      const std::int64_t b = row / (2 * height), y = (row % (2 * height)) / 2;
      for (std::int64_t x = 0; x < out_width; ++x) {
        const T* u = in + ((b * height + y) * width + x / 2) * 4 * channels;
        const std::int64_t phase = math::upsample_phase(row, x);
        T* v = out + (row * out_width + x) * channels;
        for (std::int64_t c = 0; c < channels; ++c) v[c] = u[math::pixel_shuffle_channel(c, phase)];
      }
    });
  }

  //! out (B, 2H, 2W, Co) += the DC-AE upsampling shortcut of in (B, H, W, Ci): pixel_shuffle(in
  //! with each channel repeated r = 4 Co / Ci times), out[b, 2y + i, 2x + j, c] +=
  //! in[b, y, x, (4c + 2i + j) / r]. Nearest upsampling when Ci = Co. Ci must divide 4 Co.
  template <class T>
  static void upsample_shortcut_forward(T* out, const T* in, std::int64_t batch, std::int64_t height,
                                        std::int64_t width, std::int64_t in_channels, std::int64_t out_channels) {
    const std::int64_t repeats = 4 * out_channels / in_channels, out_width = 2 * width;
    check(repeats >= 1 && repeats * in_channels == 4 * out_channels, "upsample_shortcut: ", in_channels,
          " input channels do not divide 4 x ", out_channels, " output channels");
    Backend::parallel_for(batch * 2 * height, [&](std::int64_t row) {
      const std::int64_t b = row / (2 * height), y = (row % (2 * height)) / 2;
      for (std::int64_t x = 0; x < out_width; ++x) {
        const T* u = in + ((b * height + y) * width + x / 2) * in_channels;
        const std::int64_t phase = math::upsample_phase(row, x);
        T* v = out + (row * out_width + x) * out_channels;
        for (std::int64_t c = 0; c < out_channels; ++c) v[c] += u[math::upsample_shortcut_channel(c, phase, repeats)];
      }
    });
  }

  //! out (P, Ci r) += in (P, Ci) with each channel repeated r times: out[p, c] += in[p, c / r]
  //! (PyTorch's repeat_interleave along channels; the DC-AE decoder's input shortcut).
  template <class T>
  static void repeat_channels_add_forward(T* out, const T* in, std::int64_t rows, std::int64_t in_channels,
                                          std::int64_t repeats) {
    const std::int64_t out_channels = in_channels * repeats;
    Backend::parallel_for(rows, [&](std::int64_t r) {
      const T* u = in + r * in_channels;
      T* v = out + r * out_channels;
      for (std::int64_t c = 0; c < out_channels; ++c) v[c] += u[c / repeats];
    });
  }

  //! out = math::relu(in) element-wise over n values; `out` may be `in`.
  template <class T>
  static void relu_forward(T* out, const T* in, std::int64_t n) {
    Backend::parallel_for(n, [&](std::int64_t i) { out[i] = math::relu(in[i]); });
  }
};

}  // namespace tim::cpu_detail
