// Decoder operations of the CUDA backend: the static operations the latent decoders (tim/vae/)
// call, with the meaning and arguments of tim::cpu's (tim/cpu/decoder_ops.hpp), in a base that
// tim::cuda derives from (CRTP: `Backend` is tim::cuda, whose linear_forward they use). float only,
// device pointers, enqueued on tim::cuda::stream(). The kernels are in tim/cuda/decoder_kernels.cuh
// and dc_ae_kernels.cuh; sums run in double where the CPU's do (GroupNorm and RMSNorm statistics,
// the linear attention's sums and products), in another fixed order, so results agree with the
// CPU to float rounding.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, C channels (Ci in, Co out), H, W spatial size, P = H*W pixels (rows), G
// groups, k kernel size, K = k*k*Ci im2col row width, n channels per group, nh heads, hd head dim.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "tim/core/error.hpp"
#include "tim/cuda/dc_ae_kernels.cuh"
#include "tim/cuda/decoder_kernels.cuh"
#include "tim/cuda/runtime.cuh"
#include "tim/math/decoder.hpp"

namespace tim::cuda_detail {

template <class Backend>
struct DecoderOps {
  // ------------------------------------------------------------------------------------------
  // Decoder operations

  //! Largest im2col block (values) conv2d_forward builds at once by default: 2^25 floats, 128 MiB.
  static constexpr std::int64_t im2col_block_elements = std::int64_t{1} << 25;
  //! Largest block of attention scores (query rows x keys) by default: 2^26 floats, 256 MiB.
  static constexpr std::int64_t score_block_elements = std::int64_t{1} << 26;
  //! Default pixels per slice of the linear attention's sums (one thread block per sample, head, slice).
  static constexpr std::int64_t linear_attention_slice_pixels = decoder::linear_attention_slice;
  //! Largest head dim relu_linear_attention_forward takes (its sums live in shared memory).
  static constexpr std::int64_t linear_attention_max_head_dim = decoder::linear_attention_max_head_dim;

  //! out (B, P, C) = in (B, C, P) * scale.
  static void to_channels_last_forward(float* out, const float* in, std::int64_t batch, std::int64_t channels,
                                       std::int64_t pixels, float scale) {
    for_each(batch * pixels * channels, decoder::ToChannelsLastScaled{out, in, channels, pixels, scale});
  }

  //! out (B, C, P) from in (B, P, C).
  static void to_channels_first_forward(float* out, const float* in, std::int64_t batch, std::int64_t channels,
                                        std::int64_t pixels) {
    for_each(batch * channels * pixels, decoder::ToChannelsFirst{out, in, channels, pixels});
  }

  //! GroupNorm (+ SiLU) of in (B, P, C): the statistics in two passes in double over slices of
  //! pixels, the slices' sums added in order; then the values, a pixel row per block. out may be in.
  static void group_norm_forward(float* out, const float* in, const float* weight, const float* bias,
                                 std::int64_t batch, std::int64_t pixels, std::int64_t channels, std::int64_t groups,
                                 double eps, bool apply_silu) {
    check(groups >= 1 && channels % groups == 0, "group_norm: ", channels, " channels are not divisible by ", groups,
          " groups");
    decoder::group_norm(out, in, weight, bias, batch, pixels, channels, groups, eps, apply_silu);
  }

  //! out (B, 2H, 2W, C) = nearest 2x upsampling of in (B, H, W, C).
  static void upsample_nearest2x_forward(float* out, const float* in, std::int64_t batch, std::int64_t height,
                                         std::int64_t width, std::int64_t channels) {
    decoder::for_each_row(batch * 4 * height * width, channels,
                          decoder::UpsampleNearest2x{out, in, height, width, static_cast<int>(channels)});
  }

  //! out (B, H, W, Co) = stride-1 'same' convolution of in (B, H, W, Ci) + bias (+= with
  //! `accumulate`), weight (Co, k, k, Ci): a 1x1 is one GEMM, a k x k one im2col blocks of
  //! math::rows_per_block(B H W, K, block_elements) rows in `columns` (its size), each times the
  //! weights by cuBLAS.
  static void conv2d_forward(float* out, const float* in, const float* weight, const float* bias, std::int64_t batch,
                             std::int64_t height, std::int64_t width, std::int64_t in_channels,
                             std::int64_t out_channels, std::int64_t kernel, bool accumulate, float* columns,
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
      decoder::for_each_row(rows, row_width,
                            decoder::Im2col{columns, in, first, height, width, static_cast<int>(in_channels),
                                            static_cast<int>(kernel)});
      Backend::linear_forward(out + first * out_channels, columns, weight, bias, rows, row_width, out_channels,
                              accumulate);
    }
  }

  //! Values of the `scores` scratch pixel_attention_forward needs: a block of
  //! math::rows_per_block(P, P, block_elements) query rows of P scores.
  static std::int64_t pixel_attention_scratch_elements(std::int64_t pixels, std::int64_t block_elements) {
    return math::rows_per_block(pixels, pixels, block_elements) * pixels;
  }

  //! out (B, P, C) = softmax(scale q k^T) v for q, k, v (B, P, C), one head of C channels. Per
  //! sample, a block of query rows at a time (as many as `block_elements` scores hold): scores
  //! (rows, P) = scale q k^T by one cuBLAS GEMM, the row softmax, then out (rows, C) = scores v by
  //! another. `scores` holds pixel_attention_scratch_elements(P, block_elements) values.
  static void pixel_attention_forward(float* out, const float* q, const float* k, const float* v, std::int64_t batch,
                                      std::int64_t pixels, std::int64_t channels, double scale, float* scores,
                                      std::int64_t block_elements) {
    using decoder::as_int;
    const std::int64_t C = channels, block = math::rows_per_block(pixels, pixels, block_elements);
    const float alpha = static_cast<float>(scale), one = 1, zero = 0;
    const int n_keys = as_int(pixels, "pixels"), c_int = as_int(C, "channels");
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t first = 0; first < pixels; first += block) {
        const std::int64_t m = std::min(block, pixels - first);
        const float* qb = q + (b * pixels + first) * C;
        const float* kb = k + b * pixels * C;
        const float* vb = v + b * pixels * C;
        float* ob = out + (b * pixels + first) * C;
        // Row-major scores (m, P) = q_block (m, C) k^T, i.e. column-major (P x m) = k (P x C) q^T.
        check_cublas(cublasSgemm(cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, n_keys, as_int(m, "rows"), c_int, &alpha,
                                 kb, c_int, qb, c_int, &zero, scores, n_keys),
                     "cublasSgemm (decoder attention scores)");
        decoder::softmax_rows_kernel<decoder::softmax_threads>
            <<<static_cast<unsigned>(m), decoder::softmax_threads, 0, current_stream()>>>(scores, pixels);
        check_launch("tim::cuda decoder attention softmax");
        // Row-major out (m, C) = scores (m, P) v (P, C), i.e. column-major (C x m) = v^T (C x P) scores^T.
        check_cublas(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, c_int, as_int(m, "rows"), n_keys, &one, vb,
                                 c_int, scores, n_keys, &zero, ob, c_int),
                     "cublasSgemm (decoder attention output)");
      }
  }

  //! RMSNorm over the channels of in (P, C) [+ residual], a warp per row, squares in double; out
  //! may be in or residual.
  static void rms_norm_channels_forward(float* out, const float* in, const float* weight, const float* bias,
                                        std::int64_t rows, std::int64_t channels, double eps, const float* residual) {
    decoder::rms_norm(out, in, weight, bias, rows, channels, eps, residual);
  }

  //! out (B, H, W, C) = depthwise k x k convolution of in (B, H, W, C) + bias (may be null); out != in.
  static void depthwise_conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                       std::int64_t batch, std::int64_t height, std::int64_t width,
                                       std::int64_t channels, std::int64_t kernel) {
    decoder::for_each_row(batch * height * width, channels,
                          decoder::DepthwiseConv{out, in, weight, bias, height, width, static_cast<int>(channels),
                                                 static_cast<int>(kernel)});
  }

  //! out (P, G n) = grouped 1x1 convolution of in (P, G n) with weight_t (G, n, n); out != in.
  static void grouped_pointwise_forward(float* out, const float* in, const float* weight_t, std::int64_t rows,
                                        std::int64_t groups, std::int64_t group_channels) {
    decoder::for_each_row(rows, groups * group_channels,
                          decoder::GroupedPointwise{out, in, weight_t, static_cast<int>(groups * group_channels),
                                                    static_cast<int>(group_channels)});
  }

  //! The ReLU linear attention, out (B, P, out_stride) channels [0, nh hd) from qkv (B, P, nh 3 hd):
  //! the sums over pixels per (sample, head, slice of `slice_pixels` pixels; more when 65535 slices
  //! would not cover P), added in slice order. hd <= linear_attention_max_head_dim.
  static void relu_linear_attention_forward(float* out, std::int64_t out_stride, const float* qkv,
                                            std::int64_t batch, std::int64_t pixels, std::int64_t heads,
                                            std::int64_t head_dim, double eps, std::int64_t slice_pixels) {
    decoder::relu_linear_attention(out, out_stride, qkv, batch, pixels, heads, head_dim, eps, slice_pixels);
  }

  //! out (B, 2H, 2W, C) = pixel shuffle of in (B, H, W, 4C).
  static void pixel_shuffle2x_forward(float* out, const float* in, std::int64_t batch, std::int64_t height,
                                      std::int64_t width, std::int64_t channels) {
    decoder::for_each_row(batch * 4 * height * width, channels,
                          decoder::PixelShuffle2x{out, in, height, width, static_cast<int>(channels)});
  }

  //! out (B, 2H, 2W, Co) += the upsampling shortcut of in (B, H, W, Ci); Ci must divide 4 Co.
  static void upsample_shortcut_forward(float* out, const float* in, std::int64_t batch, std::int64_t height,
                                        std::int64_t width, std::int64_t in_channels, std::int64_t out_channels) {
    const std::int64_t repeats = 4 * out_channels / in_channels;
    check(repeats >= 1 && repeats * in_channels == 4 * out_channels, "upsample_shortcut: ", in_channels,
          " input channels do not divide 4 x ", out_channels, " output channels");
    decoder::for_each_row(batch * 4 * height * width, out_channels,
                          decoder::UpsampleShortcut{out, in, height, width, static_cast<int>(in_channels),
                                                    static_cast<int>(out_channels), static_cast<int>(repeats)});
  }

  //! out (P, Ci r) += in (P, Ci) with each channel repeated r times.
  static void repeat_channels_add_forward(float* out, const float* in, std::int64_t rows, std::int64_t in_channels,
                                          std::int64_t repeats) {
    decoder::for_each_row(rows, in_channels * repeats,
                          decoder::RepeatChannelsAdd{out, in, static_cast<int>(in_channels),
                                                     static_cast<int>(in_channels * repeats),
                                                     static_cast<int>(repeats)});
  }

  //! out = math::relu(in) over n values; out may be in.
  static void relu_forward(float* out, const float* in, std::int64_t n) { for_each(n, decoder::Relu{out, in}); }
};

}  // namespace tim::cuda_detail
