// The CUDA kernels the DC-AE decoder's operations add to those of tim/cuda/decoder_kernels.cuh
// (tim::cuda's decoder operations, tim/cuda/decoder_ops.cuh), float, channels-last: RMSNorm over
// channels (sum of squares in double), depthwise and grouped 1x1 convolutions, the ReLU linear
// attention (its sums over pixels in double, over slices of pixels added in a fixed order), pixel
// shuffle, the channel-repeat shortcuts and ReLU. Each is the device twin of a tim::cpu decoder
// operation (tim/cpu/decoder_ops.hpp) over the same formulas (tim/math/decoder.hpp); the sums run
// in double, in another fixed order (warp lanes, pixel slices), so results agree to float
// rounding, not bit for bit. The math is in host-and-device (TIM_HD) functors that
// tests/cuda/test_cuda_dc_ae.cu runs on the host against the CPU operations.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, H, W spatial size, P pixels (rows), C channels (Ci in, Co out), k kernel
// size, n channels per group, nh heads, hd head dim, E = (hd + 1) hd the linear attention's sums
// per head.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "tim/core/error.hpp"
#include "tim/cuda/decoder_kernels.cuh"
#include "tim/math/decoder.hpp"

namespace tim::cuda_detail::decoder {

// ------------------------------------------------------------------------------------------------
// RMSNorm over channels

//! out (P, C) = in / sqrt(mean_c in^2 + eps) * weight + bias [+ residual], as
//! tim::cpu::rms_norm_channels_forward; `out` may be `in` or `residual`. The kernel sums a row's squares
//! (square) in double, turns the sum into the row's float rstd (rstd), then writes each value
//! (operator()).
struct RmsNormChannels {
  float* out;
  const float* in;
  const float* weight;    // (C)
  const float* bias;      // (C)
  const float* residual;  // (P, C) or null
  int channels;
  double eps;
  TIM_HD double square(std::int64_t r, int j) const {
    const double u = in[r * channels + j];
    return u * u;
  }
  TIM_HD float rstd(double squares) const { return math::rms_norm_rstd<float>(squares, channels, eps); }
  TIM_HD void operator()(float row_rstd, std::int64_t r, int j) const {
    const std::int64_t i = r * channels + j;
    const float value = math::rms_norm_value(in[i], row_rstd, weight, bias, j);
    out[i] = residual ? value + residual[i] : value;
  }
};

inline constexpr int rms_norm_warps = 8;  // rows per block: a warp per row

//! A warp per row (grid-stride): the row's squares summed per lane, then across the warp by xor
//! shuffles (every lane ends with the same total); then the lanes write the row's values. Each
//! lane reads a value before it writes it, and all reads of a row finish at the shuffles before
//! any write, so `out` may alias `in` or `residual`. (A template, Op = RmsNormChannels, so that
//! every translation unit including this header may instantiate it.)
template <class Op>
__global__ void __launch_bounds__(32 * rms_norm_warps) rms_norm_kernel(std::int64_t rows, Op op) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * rms_norm_warps;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * rms_norm_warps + threadIdx.x / 32; r < rows;
       r += stride) {  // r is the same for the whole warp: the shuffles see all 32 lanes
    double squares = 0;
    for (int j = lane; j < op.channels; j += 32) squares += op.square(r, j);
    for (int offset = 16; offset > 0; offset /= 2) squares += __shfl_xor_sync(0xffffffffu, squares, offset);
    const float row_rstd = op.rstd(squares);
    for (int j = lane; j < op.channels; j += 32) op(row_rstd, r, j);
  }
}

//! y (P, C) = RMSNorm(x) [+ residual] on the device; y may be x or residual.
inline void rms_norm(float* y, const float* x, const float* weight, const float* bias, std::int64_t rows,
                     std::int64_t channels, double eps, const float* residual = nullptr) {
  if (rows <= 0 || channels <= 0) return;
  check(channels <= std::numeric_limits<int>::max(), "tim::cuda DC-AE: ", channels, " channels too many");
  const std::int64_t blocks = std::min((rows + rms_norm_warps - 1) / rms_norm_warps, cuda_detail::elementwise_max_blocks);
  rms_norm_kernel<<<static_cast<unsigned>(blocks), 32 * rms_norm_warps, 0, cuda_detail::current_stream()>>>(
      rows, RmsNormChannels{y, x, weight, bias, residual, static_cast<int>(channels), eps});
  cuda_detail::check_launch("tim::cuda DC-AE RMSNorm");
}

// ------------------------------------------------------------------------------------------------
// Convolutions

//! Row r = output pixel (b, y, x) of out (B, H, W, C), column c = channel: the depthwise k x k
//! 'same' convolution of in (B, H, W, C) with weight (k, k, C) and bias (C; may be null), taps in
//! the order of tim::cpu::depthwise_conv2d_forward. `out` must not be `in`.
struct DepthwiseConv {
  struct Pixel {
    std::int64_t b, y, x;
  };
  float* out;
  const float* in;
  const float* weight;
  const float* bias;
  std::int64_t height, width;
  int channels, kernel;
  TIM_HD Pixel row(std::int64_t r) const { return {r / (height * width), (r / width) % height, r % width}; }
  TIM_HD void operator()(const Pixel& p, std::int64_t r, int c) const {
    float sum = bias ? bias[c] : 0.0f;
    for (int ky = 0; ky < kernel; ++ky) {
      const std::int64_t sy = math::same_padding_source(p.y, ky, kernel);
      if (sy < 0 || sy >= height) continue;
      for (int kx = 0; kx < kernel; ++kx) {
        const std::int64_t sx = math::same_padding_source(p.x, kx, kernel);
        if (sx < 0 || sx >= width) continue;
        sum += weight[(ky * kernel + kx) * channels + c] * in[((p.b * height + sy) * width + sx) * channels + c];
      }
    }
    out[r * channels + c] = sum;
  }
};

//! Row r = pixel of out (P, G n), column j = g n + o: the grouped 1x1 convolution
//! sum_i in[r, g n + i] weight_t[g, i, o] of tim::cpu::grouped_pointwise_forward (weight_t (G, n, n) as
//! (group, in, out)), summed over i in order. `out` must not be `in`.
struct GroupedPointwise {
  float* out;
  const float* in;
  const float* weight_t;
  int channels, group_channels;
  TIM_HD const float* row(std::int64_t r) const { return in + r * channels; }
  TIM_HD void operator()(const float* u, std::int64_t r, int j) const {
    const int n = group_channels, o = j % n, first = j - o;  // first = g n
    const float* w = weight_t + static_cast<std::int64_t>(first) * n + o;  // weight_t[g, 0, o]; in-stride n
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) sum += u[first + i] * w[i * n];
    out[r * channels + j] = sum;
  }
};

// ------------------------------------------------------------------------------------------------
// ReLU linear attention

inline constexpr int linear_attention_threads = 256;
inline constexpr int linear_attention_max_head_dim = 64;
inline constexpr int linear_attention_tile = 64;  // pixels staged in shared memory at once
//! Sums each thread of the partial-sums kernel owns: ceil(E / threads) at the largest hd.
inline constexpr int linear_attention_sums_per_thread =
    ((linear_attention_max_head_dim + 1) * linear_attention_max_head_dim + linear_attention_threads - 1) /
    linear_attention_threads;
//! Default pixels per slice of the linear attention's sums (DcAeDecoder::attention_slice_pixels).
inline constexpr std::int64_t linear_attention_slice = 256;

//! The sums of one (sample, head) of the linear attention over one slice of its pixels. Sum
//! i = e hd + d of the E = (hd + 1) hd: sum_m v[m, e] relu(k[m, d]) for e < hd (V^T K), and
//! sum_m relu(k[m, d]) for e = hd (ksum, as a v of ones). Block (bh, s) of the kernel stages a
//! tile of pixels in shared memory (load, load_one), then adds each of its sums over the tile in
//! pixel order (tile_sum); partial (B nh, slices, E) receives the slice's sums.
struct LinearAttentionPartial {
  double* partial;    // (B nh, slices, E)
  const float* qkv;   // (B, P, nh 3 hd): head h's q, k, v at channels 3 hd h, + hd, + 2 hd
  std::int64_t pixels, slice_pixels;
  int heads, head_dim;

  TIM_HD int entries() const { return (head_dim + 1) * head_dim; }
  TIM_HD std::int64_t row_width() const { return static_cast<std::int64_t>(heads) * 3 * head_dim; }
  //! Pixel 0's q of (sample, head) bh.
  TIM_HD const float* head(std::int64_t bh) const {
    return qkv + (bh / heads) * pixels * row_width() + (bh % heads) * 3 * head_dim;
  }
  //! Tile value i < count hd (pixel first + i / hd, channel i % hd): keys (tile, hd) = relu(k),
  //! values (tile, hd + 1) = v.
  TIM_HD void load(float* keys, float* values, const float* head_pixels, std::int64_t first, int i) const {
    const int t = i / head_dim, d = i % head_dim;
    const float* at = head_pixels + (first + t) * row_width();
    keys[t * head_dim + d] = math::relu_feature(at[head_dim + d]);
    values[t * (head_dim + 1) + d] = at[2 * head_dim + d];
  }
  //! The column of ones of tile pixel t (values[t, hd]), for ksum.
  TIM_HD void load_one(float* values, int t) const { values[t * (head_dim + 1) + head_dim] = 1.0f; }
  //! `sum` plus sum i over the tile's `count` pixels, in pixel order, in double.
  TIM_HD double tile_sum(double sum, const float* keys, const float* values, int count, int i) const {
    const int e = i / head_dim, d = i % head_dim;
    for (int t = 0; t < count; ++t)
      sum += static_cast<double>(values[t * (head_dim + 1) + e]) * static_cast<double>(keys[t * head_dim + d]);
    return sum;
  }
};

//! Block (bh, s) = (blockIdx.x, blockIdx.y): the E sums of (sample, head) bh over pixels
//! [s slice, (s + 1) slice) into partial[bh, s, :]; thread t owns sums t, t + 256, ...
//! (Op = LinearAttentionPartial; a template for the same reason as rms_norm_kernel.)
template <class Op>
__global__ void __launch_bounds__(linear_attention_threads) linear_attention_partial_kernel(Op op) {
  constexpr int threads = linear_attention_threads, tile = linear_attention_tile;
  __shared__ float keys[tile * linear_attention_max_head_dim];
  __shared__ float values[tile * (linear_attention_max_head_dim + 1)];
  const std::int64_t bh = blockIdx.x, slice = blockIdx.y;
  const int entries = op.entries();
  const float* head_pixels = op.head(bh);
  const std::int64_t first = slice * op.slice_pixels,
                     last = op.pixels < first + op.slice_pixels ? op.pixels : first + op.slice_pixels;
  double sums[linear_attention_sums_per_thread];
#pragma unroll
  for (int s = 0; s < linear_attention_sums_per_thread; ++s) sums[s] = 0.0;
  for (std::int64_t start = first; start < last; start += tile) {
    const int count = static_cast<int>(last - start < tile ? last - start : tile);
    __syncthreads();  // every thread is done reading the previous tile
    for (int i = threadIdx.x; i < count * op.head_dim; i += threads) op.load(keys, values, head_pixels, start, i);
    for (int t = threadIdx.x; t < count; t += threads) op.load_one(values, t);
    __syncthreads();  // the tile is complete
#pragma unroll
    for (int s = 0; s < linear_attention_sums_per_thread; ++s) {
      const int i = static_cast<int>(threadIdx.x) + s * threads;
      if (i < entries) sums[s] = op.tile_sum(sums[s], keys, values, count, i);
    }
  }
  double* out = op.partial + (bh * gridDim.y + slice) * entries;
#pragma unroll
  for (int s = 0; s < linear_attention_sums_per_thread; ++s) {
    const int i = static_cast<int>(threadIdx.x) + s * threads;
    if (i < entries) out[i] = sums[s];
  }
}

//! Row bh = (sample, head), column i = sum: the slices' partial sums added in slice order, stored
//! transposed as state (B nh, hd, hd + 1): state[bh, d, e] = sum i = e hd + d, so that the output
//! reads V^T K's row e at stride hd + 1 and ksum as column hd.
struct LinearAttentionFinish {
  double* state;
  const double* partial;  // (B nh, slices, E)
  std::int64_t slices;
  int head_dim;
  TIM_HD const double* row(std::int64_t bh) const { return partial + bh * slices * (head_dim + 1) * head_dim; }
  TIM_HD void operator()(const double* head_partial, std::int64_t bh, int i) const {
    const int entries = (head_dim + 1) * head_dim, e = i / head_dim, d = i % head_dim;
    double total = 0;
    for (std::int64_t s = 0; s < slices; ++s) total += head_partial[s * entries + i];
    state[bh * entries + d * (head_dim + 1) + e] = total;
  }
};

//! Row r = pixel (b, p), column j = h hd + e: out[r, h hd + e] = (V^T K q)_e / (ksum . q + eps)
//! with q = relu(q of head h at pixel r), from state (B nh, hd, hd + 1) of LinearAttentionFinish,
//! the products with q in double in the order of tim::cpu::relu_linear_attention_forward. out (B, P,
//! out_stride): columns [0, nh hd) of each row written.
struct LinearAttentionApply {
  float* out;
  const float* qkv;      // (B, P, nh 3 hd)
  const double* state;   // (B nh, hd, hd + 1)
  std::int64_t pixels, out_stride;
  int heads, head_dim;
  double eps;
  //! Sample b's head 0 state.
  TIM_HD const double* row(std::int64_t r) const {
    return state + (r / pixels) * heads * (head_dim + 1) * head_dim;
  }
  TIM_HD void operator()(const double* sample_state, std::int64_t r, int j) const {
    const int hd = head_dim, h = j / hd, e = j % hd;
    const float* q = qkv + r * heads * 3 * hd + h * 3 * hd;
    const double* s = sample_state + static_cast<std::int64_t>(h) * (hd + 1) * hd;
    double denominator = eps, numerator = 0;
    for (int d = 0; d < hd; ++d) {
      const double qd = math::relu_feature(static_cast<double>(q[d]));
      denominator += s[d * (hd + 1) + hd] * qd;
      numerator += s[d * (hd + 1) + e] * qd;
    }
    out[r * out_stride + j] = static_cast<float>(numerator / denominator);
  }
};

//! tim::cpu::relu_linear_attention_forward on the device: out (B, P, out_stride) channels [0, nh hd) from
//! qkv (B, P, nh 3 hd). The sums over pixels: one block per (sample, head, slice of
//! `slice_pixels` pixels; more when 65535 slices would not cover P), then added in slice order.
inline void relu_linear_attention(float* out, std::int64_t out_stride, const float* qkv, std::int64_t batch,
                                  std::int64_t pixels, std::int64_t heads, std::int64_t head_dim, double eps,
                                  std::int64_t slice_pixels = linear_attention_slice) {
  if (batch <= 0 || pixels <= 0 || heads <= 0) return;
  check(head_dim >= 1 && head_dim <= linear_attention_max_head_dim, "tim::cuda DC-AE: head dim ", head_dim,
        " must be in [1, ", linear_attention_max_head_dim, "]");
  check(slice_pixels >= 1, "tim::cuda DC-AE: attention slices of ", slice_pixels, " pixels");
  const std::int64_t max_slices = 65535;  // gridDim.y
  slice_pixels = std::max(slice_pixels, (pixels + max_slices - 1) / max_slices);
  const std::int64_t slices = (pixels + slice_pixels - 1) / slice_pixels, bhs = batch * heads;
  check(bhs <= std::numeric_limits<int>::max(), "tim::cuda DC-AE: ", bhs, " attention heads exceed the grid");
  const int hd = static_cast<int>(head_dim);
  const std::int64_t entries = (head_dim + 1) * head_dim;
  const auto sums = scratch<double>(bhs * slices * entries + bhs * entries);  // partial, then state
  double* partial = sums.get();
  double* state = sums.get() + bhs * slices * entries;
  const dim3 grid(static_cast<unsigned>(bhs), static_cast<unsigned>(slices));
  linear_attention_partial_kernel<<<grid, linear_attention_threads, 0, cuda_detail::current_stream()>>>(
      LinearAttentionPartial{partial, qkv, pixels, slice_pixels, static_cast<int>(heads), hd});
  cuda_detail::check_launch("tim::cuda DC-AE linear attention sums");
  for_each_row(bhs, entries, LinearAttentionFinish{state, partial, slices, hd});
  for_each_row(batch * pixels, heads * head_dim,
               LinearAttentionApply{out, qkv, state, pixels, out_stride, static_cast<int>(heads), hd, eps});
}

// ------------------------------------------------------------------------------------------------
// Upsampling, shortcuts, ReLU

//! The source pixel of an output pixel of a 2x upsampling and its sub-pixel (math::upsample_phase).
struct UpsampleSource {
  const float* pixel;
  int phase;
};

//! Row r = output pixel (b, y, x) of out (B, 2H, 2W, C), column c: tim::cpu::pixel_shuffle2x_forward,
//! out[b, y, x, c] = in[b, y / 2, x / 2, 4c + 2 (y % 2) + x % 2] for in (B, H, W, 4C).
struct PixelShuffle2x {
  float* out;
  const float* in;
  std::int64_t height, width;  // of in
  int channels;                // C of out
  TIM_HD UpsampleSource row(std::int64_t r) const {
    const std::int64_t x = r % (2 * width), y = (r / (2 * width)) % (2 * height), b = r / (4 * width * height);
    return {in + ((b * height + y / 2) * width + x / 2) * 4 * channels, static_cast<int>(math::upsample_phase(y, x))};
  }
  TIM_HD void operator()(const UpsampleSource& s, std::int64_t r, int c) const {
    out[r * channels + c] = s.pixel[math::pixel_shuffle_channel(c, s.phase)];
  }
};

//! Row r = output pixel (b, y, x) of out (B, 2H, 2W, Co), column c: tim::cpu::upsample_shortcut_forward,
//! out[b, y, x, c] += in[b, y / 2, x / 2, (4c + phase) / r] with phase 2 (y % 2) + x % 2 and
//! r = 4 Co / Ci repeats, for in (B, H, W, Ci).
struct UpsampleShortcut {
  float* out;
  const float* in;
  std::int64_t height, width;  // of in
  int in_channels, out_channels, repeats;
  TIM_HD UpsampleSource row(std::int64_t r) const {
    const std::int64_t x = r % (2 * width), y = (r / (2 * width)) % (2 * height), b = r / (4 * width * height);
    return {in + ((b * height + y / 2) * width + x / 2) * in_channels, static_cast<int>(math::upsample_phase(y, x))};
  }
  TIM_HD void operator()(const UpsampleSource& s, std::int64_t r, int c) const {
    out[r * out_channels + c] += s.pixel[math::upsample_shortcut_channel(c, s.phase, repeats)];
  }
};

//! Row r = pixel, column c: out (P, Ci r)[r, c] += in (P, Ci)[r, c / r] (tim::cpu::repeat_channels_add_forward).
struct RepeatChannelsAdd {
  float* out;
  const float* in;
  int in_channels, out_channels, repeats;
  TIM_HD const float* row(std::int64_t r) const { return in + r * in_channels; }
  TIM_HD void operator()(const float* u, std::int64_t r, int c) const { out[r * out_channels + c] += u[c / repeats]; }
};

//! out[i] = math::relu(in[i]) (tim::cpu::relu_forward); `out` may be `in`.
struct Relu {
  float* out;
  const float* in;
  TIM_HD void operator()(std::int64_t i) const { out[i] = math::relu(in[i]); }
};

}  // namespace tim::cuda_detail::decoder
