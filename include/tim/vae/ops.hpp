// The CPU operations of the convolutional latent decoders (tim/vae/sd_vae.hpp): layout changes,
// GroupNorm (optionally fused with SiLU), nearest 2x upsampling and stride-1 'same' convolutions
// as im2col + the backend's GEMM. Activations are channels-last, so a pixel's channels are one
// contiguous row: 1x1 convolutions and attention projections are plain GEMMs over pixels.
//
// Shape legend: B batch, C channels (Ci in, Co out), H, W spatial size, P = H*W pixels,
// G GroupNorm groups, k kernel size (1 or 3), K = k*k*Ci im2col row width.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/shape.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/math/activations.hpp"
#include "tim/math/normalization.hpp"

namespace tim::vae {

namespace detail {

//! The shape of tensor `name` in a decoder checkpoint, required to have `rank` dimensions;
//! `kind` ("an SD VAE (AutoencoderKL)") names the checkpoint the loader expects, in messages.
template <class Source>
Shape checkpoint_shape(const Source& source, const std::string& name, int rank, const char* expected,
                       const char* kind) {
  check(source.contains(name), "checkpoint: missing tensor '", name, "' (expected shape ", expected, "; is this ",
        kind, " checkpoint?)");
  const Shape shape = source.info(name).shape;
  check(shape.rank() == rank, "checkpoint: tensor '", name, "' has shape ", shape, ", expected ", expected);
  return shape;
}

}  // namespace detail

//! out (B, H, W, C) from in (B, C, H, W).
template <class T>
void nchw_to_nhwc_forward(T* out, const T* in, std::int64_t batch, std::int64_t channels, std::int64_t height,
                          std::int64_t width) {
  const std::int64_t pixels = height * width;
  cpu::parallel_for(batch * pixels, [&](std::int64_t row) {
    const std::int64_t b = row / pixels, p = row % pixels;
    for (std::int64_t c = 0; c < channels; ++c) out[row * channels + c] = in[(b * channels + c) * pixels + p];
  });
}

//! out (B, C, H, W) from in (B, H, W, C).
template <class T>
void nhwc_to_nchw_forward(T* out, const T* in, std::int64_t batch, std::int64_t channels, std::int64_t height,
                          std::int64_t width) {
  const std::int64_t pixels = height * width;
  cpu::parallel_for(batch * channels, [&](std::int64_t plane) {
    const std::int64_t b = plane / channels, c = plane % channels;
    for (std::int64_t p = 0; p < pixels; ++p) out[plane * pixels + p] = in[(b * pixels + p) * channels + c];
  });
}

//! GroupNorm of x (B, P, C) channels-last: for each sample and group of C/G consecutive
//! channels, (u - mean) * rstd * weight[c] + bias[c] with mean and biased variance over the
//! group's P * C/G values (PyTorch's nn.GroupNorm), then SiLU when `apply_silu`. The statistics
//! are accumulated in double whatever T is (a group holds up to ~10^6 values). `out` may be `in`.
template <class T>
void group_norm_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t batch, std::int64_t pixels,
                        std::int64_t channels, std::int64_t groups, double eps, bool apply_silu) {
  check(groups >= 1 && channels % groups == 0, "group_norm: ", channels, " channels are not divisible by ", groups,
        " groups");
  const std::int64_t per_group = channels / groups;
  const double count = static_cast<double>(pixels * per_group);
  // The statistics go over blocks of pixels, each block summing all G groups of its contiguous
  // rows (one read of the tensor per pass, not one per group); the per-block partial sums are
  // then added in block order, so the result does not depend on the thread count.
  constexpr std::int64_t block_pixels = 256;
  const std::int64_t blocks = (pixels + block_pixels - 1) / block_pixels;
  std::vector<double> partial(static_cast<std::size_t>(batch * blocks * groups));
  std::vector<double> group_mean(static_cast<std::size_t>(batch * groups));  // (B, G)
  const auto block_pass = [&](bool squares) {
    std::fill(partial.begin(), partial.end(), 0.0);
    cpu::parallel_for(batch * blocks, [&](std::int64_t job) {
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
          total[static_cast<std::size_t>(b * groups + g)] += partial[static_cast<std::size_t>((b * blocks + k) * groups + g)];
    for (auto& t : total) t /= count;
    return total;
  };
  // mean, rstd: (B, G). Two passes (mean, then squared deviations), as the reference does.
  group_mean = block_pass(false);
  const std::vector<double> variance = block_pass(true);
  std::vector<T> mean(group_mean.size()), rstd(group_mean.size());
  for (std::size_t i = 0; i < mean.size(); ++i) {
    mean[i] = static_cast<T>(group_mean[i]);
    rstd[i] = static_cast<T>(math::layernorm_rstd(variance[i], eps));
  }
  cpu::parallel_for(batch * pixels, [&](std::int64_t row) {
    const std::int64_t b = row / pixels;
    const T* u = in + row * channels;
    T* v = out + row * channels;
    for (std::int64_t c = 0; c < channels; ++c) {
      const auto bg = static_cast<std::size_t>(b * groups + c / per_group);
      const T value = math::layernorm_value(u[c], mean[bg], rstd[bg], weight, bias, c);
      v[c] = apply_silu ? math::silu(value) : value;
    }
  });
}

//! out (B, 2H, 2W, C) = nearest-neighbour 2x upsampling of in (B, H, W, C).
template <class T>
void upsample_nearest2x_forward(T* out, const T* in, std::int64_t batch, std::int64_t height, std::int64_t width,
                                std::int64_t channels) {
  const std::int64_t out_height = 2 * height, out_width = 2 * width;
  cpu::parallel_for(batch * out_height, [&](std::int64_t row) {
    const std::int64_t b = row / out_height, y = row % out_height;
    for (std::int64_t x = 0; x < out_width; ++x)
      cpu::copy(out + (row * out_width + x) * channels, in + ((b * height + y / 2) * width + x / 2) * channels,
                static_cast<std::size_t>(channels));
  });
}

//! Largest im2col buffer conv2d_forward builds at once, in elements: the pixels are processed in
//! chunks so that a 256x256 image at 128 channels does not need a (P, 9 * 128) matrix at once.
inline constexpr std::int64_t im2col_chunk_elements = std::int64_t{1} << 21;

//! Stride-1 convolution with zero padding k/2 ('same'), channels-last:
//! out (B, H, W, Co) = conv(in (B, H, W, Ci)) + bias, or += with `accumulate` (a residual).
//! `weight` is (Co, k, k, Ci), i.e. PyTorch's (Co, Ci, k, k) with the input channels moved last
//! (Conv2d::load does that), so an im2col row is k*k contiguous copies of Ci values. A 1x1
//! convolution is one GEMM over the pixels; a k x k one fills `columns` (scratch, grown as needed)
//! with (pixels, K) rows a chunk at a time (at most `chunk_elements` values; tests make it small)
//! and multiplies each chunk.
template <class T>
void conv2d_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t batch, std::int64_t height,
                    std::int64_t width, std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel,
                    bool accumulate, std::vector<T>& columns,
                    std::int64_t chunk_elements = im2col_chunk_elements) {
  const std::int64_t pixels = batch * height * width;
  if (kernel == 1) {
    cpu::linear_forward(out, in, weight, bias, pixels, in_channels, out_channels, accumulate);
    return;
  }
  const std::int64_t row_width = kernel * kernel * in_channels, pad = kernel / 2;
  const std::int64_t chunk = std::max<std::int64_t>(1, std::min(pixels, chunk_elements / row_width));
  if (columns.size() < static_cast<std::size_t>(chunk * row_width)) columns.resize(static_cast<std::size_t>(chunk * row_width));
  for (std::int64_t first = 0; first < pixels; first += chunk) {
    const std::int64_t rows = std::min(chunk, pixels - first);
    T* cols = columns.data();
    cpu::parallel_for(rows, [&](std::int64_t r) {
      const std::int64_t pixel = first + r;
      const std::int64_t b = pixel / (height * width), y = (pixel / width) % height, x = pixel % width;
      T* dst = cols + r * row_width;
      for (std::int64_t ky = 0; ky < kernel; ++ky)
        for (std::int64_t kx = 0; kx < kernel; ++kx, dst += in_channels) {
          const std::int64_t sy = y + ky - pad, sx = x + kx - pad;
          if (sy < 0 || sy >= height || sx < 0 || sx >= width)
            std::fill(dst, dst + in_channels, T(0));
          else
            cpu::copy(dst, in + ((b * height + sy) * width + sx) * in_channels, static_cast<std::size_t>(in_channels));
        }
    });
    cpu::linear_forward(out + first * out_channels, cols, weight, bias, rows, row_width, out_channels, accumulate);
  }
}

}  // namespace tim::vae
