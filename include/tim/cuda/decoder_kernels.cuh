// The CUDA kernels of the convolutional latent decoders' operations (tim::cuda's decoder
// operations, tim/cuda/decoder_ops.cuh), float, channels-last (B, H, W, C) like tim::cpu's
// (tim/cpu/decoder_ops.hpp): layout changes, nearest 2x upsampling, im2col blocks, GroupNorm (+
// SiLU) with double statistics, and the row softmax of single-head attention. Per-pixel kernels
// run one pixel row per block-stride step with the threads across its channels (for_each_row), so
// the 64-bit index arithmetic happens once per row, not once per value. The functors are
// host-and-device (TIM_HD) over the formulas of tim/math/decoder.hpp: tests/cuda/test_cuda_vae.cu
// runs them on the host against the CPU operations.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, H, W spatial size, C channels (Ci in, Co out), G groups, P = H*W pixels,
// k kernel size, K = k*k*Ci im2col row width.
#pragma once

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>

#include "tim/core/error.hpp"
#include "tim/cuda/elementwise.cuh"
#include "tim/cuda/runtime.cuh"
#include "tim/math/decoder.hpp"

namespace tim::cuda_detail::decoder {

using cuda_detail::for_each;

//! Device scratch memory for the temporaries of one decoder operation (statistics, partial sums),
//! stream-ordered (cudaMallocAsync / cudaFreeAsync on the current stream, from the device's default
//! memory pool), so neither the allocation nor the free waits for the device, as cudaMalloc and
//! cudaFree do (cudaFree synchronises the device). Only for memory that never leaves the
//! operation that made it, on this host thread: the free is ordered on the stream that was current
//! at allocation. Devices without memory pools get ordinary allocations. The decoders' activations
//! live in their workspace (tim/vae/modules.hpp), not here.
template <class T>
std::shared_ptr<T> scratch(std::int64_t count) {
  static const bool pools = [] {
    int supported = 0;
    return cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, cuda_detail::current_device()) ==
               cudaSuccess &&
           supported != 0;
  }();
  void* p = nullptr;
  const std::size_t bytes = static_cast<std::size_t>(std::max<std::int64_t>(count, 1)) * sizeof(T);
  const cudaStream_t stream = cuda_detail::current_stream();
  const cudaError_t status = pools ? cudaMallocAsync(&p, bytes, stream) : cudaMalloc(&p, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    fail("tim::cuda: cannot allocate ", bytes, " bytes of device scratch memory: ", cudaGetErrorString(status));
  }
  ++cuda_detail::scratch_allocation_counter();  // tim::cuda::scratch_allocation_count()
  if (!pools) return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { (void)cudaFree(q); });
  return std::shared_ptr<T>(static_cast<T*>(p), [stream](T* q) { (void)cudaFreeAsync(q, stream); });
}

inline constexpr int row_threads = 128;

template <class Op>
__global__ void __launch_bounds__(row_threads) for_each_row_kernel(std::int64_t rows, int cols, Op op) {
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const auto at = op.row(r);
    for (int j = threadIdx.x; j < cols; j += row_threads) op(at, r, j);
  }
}

//! Runs op(op.row(r), r, j) for every row r in [0, rows) and column j in [0, cols) on the current
//! stream: a block per row (grid-stride), its threads across the columns. `op.row(r)` holds what
//! the row's values share (pixel coordinates), computed once per row and thread.
template <class Op>
void for_each_row(std::int64_t rows, std::int64_t cols, const Op& op) {
  if (rows <= 0 || cols <= 0) return;
  check(cols <= std::numeric_limits<int>::max(), "tim::cuda decoder: row width ", cols, " too large");
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>(rows, cuda_detail::elementwise_max_blocks));
  for_each_row_kernel<<<blocks, row_threads, 0, cuda_detail::current_stream()>>>(rows, static_cast<int>(cols), op);
  cuda_detail::check_launch("tim::cuda decoder row kernel");
}

//! out (B, P, L) = in (B, L, P) * scale: the latents to channels-last, divided by the scaling factor.
struct ToChannelsLastScaled {
  float* out;
  const float* in;
  std::int64_t channels, pixels;
  float scale;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t c = i % channels, p = (i / channels) % pixels, b = i / (channels * pixels);
    out[i] = in[(b * channels + c) * pixels + p] * scale;
  }
};

//! out (B, C, P) from in (B, P, C).
struct ToChannelsFirst {
  float* out;
  const float* in;
  std::int64_t channels, pixels;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t p = i % pixels, c = (i / pixels) % channels, b = i / (channels * pixels);
    out[i] = in[(b * pixels + p) * channels + c];
  }
};

//! Row r = output pixel (b, y, x) of out (B, 2H, 2W, C) = nearest 2x upsampling of in (B, H, W, C);
//! column j = channel.
struct UpsampleNearest2x {
  float* out;
  const float* in;
  std::int64_t height, width;
  int channels;
  TIM_HD const float* row(std::int64_t r) const {  // the source pixel's channels
    const std::int64_t x = r % (2 * width), y = (r / (2 * width)) % (2 * height), b = r / (4 * width * height);
    return in + ((b * height + y / 2) * width + x / 2) * channels;
  }
  TIM_HD void operator()(const float* source, std::int64_t r, int j) const { out[r * channels + j] = source[j]; }
};

//! Row r of a block of the im2col matrix (B*H*W, k*k*Ci) of in (B, H, W, Ci), for pixel first + r,
//! zero padding k/2: column j = (ky k + kx) Ci + ci (the layout of the (Co, k, k, Ci) weights, as
//! tim::cpu::conv2d_forward builds it).
struct Im2col {
  struct Pixel {
    std::int64_t b, y, x;
  };
  float* columns;
  const float* in;
  std::int64_t first, height, width;
  int in_channels, kernel;
  TIM_HD Pixel row(std::int64_t r) const {
    const std::int64_t pixel = first + r;
    return {pixel / (height * width), (pixel / width) % height, pixel % width};
  }
  TIM_HD void operator()(const Pixel& p, std::int64_t r, int j) const {
    const int ci = j % in_channels, kk = j / in_channels;
    const std::int64_t sy = math::same_padding_source(p.y, kk / kernel, kernel);
    const std::int64_t sx = math::same_padding_source(p.x, kk % kernel, kernel);
    const bool outside = sy < 0 || sy >= height || sx < 0 || sx >= width;
    columns[r * kernel * kernel * in_channels + j] =
        outside ? 0.0f : in[((p.b * height + sy) * width + sx) * in_channels + ci];
  }
};

//! Row r = pixel of (B, P, C) channels-last, column j = channel: out = GroupNorm(in) [then SiLU]
//! with the per-(sample, group) mean and rstd of group_statistics; `out` may be `in`.
struct GroupNormApply {
  float* out;
  const float* in;
  const float* weight;
  const float* bias;
  const float* mean;  // (B, G)
  const float* rstd;  // (B, G)
  std::int64_t pixels;
  int channels, groups;
  bool apply_silu;
  TIM_HD std::int64_t row(std::int64_t r) const { return (r / pixels) * groups; }  // b G
  TIM_HD void operator()(std::int64_t first_group, std::int64_t r, int j) const {
    const std::int64_t bg = first_group + j / (channels / groups), i = r * channels + j;
    out[i] = math::group_norm_value(in[i], mean[bg], rstd[bg], weight, bias, j, apply_silu);
  }
};

inline constexpr int group_norm_threads = 256;

//! Slices of pixels one (sample, group) is summed over in parallel: enough blocks to fill the
//! device (about 4 per SM), each slice at least 256 pixels.
inline std::int64_t group_norm_slices(std::int64_t batch_groups, std::int64_t pixels, int sms) {
  const std::int64_t wanted = (4 * static_cast<std::int64_t>(sms) + batch_groups - 1) / batch_groups;
  return std::clamp<std::int64_t>(wanted, 1, std::max<std::int64_t>(1, pixels / 256));
}

//! Block (bg, s) = (blockIdx.x, blockIdx.y): the sum over slice s of the pixels of sample b's group
//! g of u (pass 0) or (u - mean[bg])^2 (pass 1), in double, into partial[bg * slices + s].
// The kernels below are templates (on their block size) so that several translation units of one
// program may include this header, as the kernels of tim/cuda/*.cuh are.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    group_partial_sums_kernel(double* partial, const float* in, const double* mean, std::int64_t pixels,
                              int channels, int groups, std::int64_t slice_pixels) {
  using Reduce = cub::BlockReduce<double, Threads>;
  __shared__ typename Reduce::TempStorage storage;
  const std::int64_t bg = blockIdx.x, b = bg / groups, slice = blockIdx.y;
  const int per_group = channels / groups;
  const std::int64_t first = slice * slice_pixels, last = pixels < first + slice_pixels ? pixels : first + slice_pixels;
  const float* base = in + b * pixels * channels + (bg % groups) * per_group;
  const double center = mean ? mean[bg] : 0.0;
  double sum = 0;
  for (std::int64_t p = first + threadIdx.x; p < last; p += Threads)
    for (int c = 0; c < per_group; ++c) {
      const double d = static_cast<double>(base[p * channels + c]) - center;
      sum += mean ? d * d : d;
    }
  const double total = Reduce(storage).Sum(sum);
  if (threadIdx.x == 0) partial[bg * gridDim.y + slice] = total;
}

//! Thread bg: adds its `slices` partial sums in order; pass 0 stores the mean (and its float),
//! pass 1 the float rstd from the variance.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    group_finish_kernel(double* mean, float* mean_out, float* rstd_out, const double* partial,
                        std::int64_t batch_groups, std::int64_t slices, double count, double eps, bool variance_pass) {
  const std::int64_t bg = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bg >= batch_groups) return;
  double total = 0;
  for (std::int64_t s = 0; s < slices; ++s) total += partial[bg * slices + s];
  if (!variance_pass) {
    mean[bg] = total / count;
    mean_out[bg] = static_cast<float>(mean[bg]);
  } else {
    rstd_out[bg] = static_cast<float>(math::layernorm_rstd(total / count, eps));
  }
}

inline constexpr int softmax_threads = 256;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

//! Each row of s (rows, cols) replaced by its softmax (max subtracted, float).
template <int Threads>
__global__ void __launch_bounds__(Threads) softmax_rows_kernel(float* s, std::int64_t cols) {
  using Reduce = cub::BlockReduce<float, Threads>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ float shared;
  float* row = s + static_cast<std::int64_t>(blockIdx.x) * cols;
  float largest = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = threadIdx.x; j < cols; j += Threads) largest = fmaxf(largest, row[j]);
  const float row_max = Reduce(storage).Reduce(largest, MaxOp{});
  if (threadIdx.x == 0) shared = row_max;
  __syncthreads();
  const float m = shared;
  float sum = 0;
  for (std::int64_t j = threadIdx.x; j < cols; j += Threads) {
    const float e = expf(row[j] - m);
    row[j] = e;
    sum += e;
  }
  __syncthreads();  // the storage is reused and `shared` rewritten
  const float total = Reduce(storage).Sum(sum);
  if (threadIdx.x == 0) shared = 1.0f / total;
  __syncthreads();
  const float inverse = shared;
  for (std::int64_t j = threadIdx.x; j < cols; j += Threads) row[j] *= inverse;
}

//! y (B, P, C) = GroupNorm(x) with G groups [then SiLU], channels-last, on the device; y may be x.
//! The statistics: two passes in double over slices of pixels (group_partial_sums_kernel), the
//! slices' sums added in order (group_finish_kernel); then the values, a pixel row per block.
inline void group_norm(float* y, const float* x, const float* weight, const float* bias, std::int64_t batch,
                       std::int64_t pixels, std::int64_t channels, std::int64_t groups, double eps, bool silu) {
  const std::int64_t bgs = batch * groups;
  int device = 0, sms = 0;
  cuda_detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  cuda_detail::check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                          "cudaDeviceGetAttribute");
  const std::int64_t slices = group_norm_slices(bgs, pixels, sms);
  const std::int64_t slice_pixels = (pixels + slices - 1) / slices;
  const auto partial = scratch<double>(bgs * slices + bgs);  // partial sums, then the double means
  double* mean = partial.get() + bgs * slices;
  const auto stats = scratch<float>(2 * bgs);
  float* mean_float = stats.get();
  float* rstd = stats.get() + bgs;
  const dim3 grid(static_cast<unsigned>(bgs), static_cast<unsigned>(slices));
  const auto finish_blocks = static_cast<unsigned>((bgs + 127) / 128);
  const double count = static_cast<double>(pixels * (channels / groups));
  for (const bool variance_pass : {false, true}) {
    group_partial_sums_kernel<group_norm_threads><<<grid, group_norm_threads, 0, cuda_detail::current_stream()>>>(
        partial.get(), x, variance_pass ? mean : nullptr, pixels, static_cast<int>(channels), static_cast<int>(groups),
        slice_pixels);
    cuda_detail::check_launch("tim::cuda GroupNorm partial sums");
    group_finish_kernel<128><<<finish_blocks, 128, 0, cuda_detail::current_stream()>>>(
        mean, mean_float, rstd, partial.get(), bgs, slices, count, eps, variance_pass);
    cuda_detail::check_launch("tim::cuda GroupNorm statistics");
  }
  for_each_row(batch * pixels, channels,
               GroupNormApply{y, x, weight, bias, mean_float, rstd, pixels, static_cast<int>(channels),
                              static_cast<int>(groups), silu});
}

inline int as_int(std::int64_t value, const char* what) {
  check(value > 0 && value <= std::numeric_limits<int>::max(), "tim::cuda decoder: ", what, " ", value,
        " does not fit cuBLAS's int");
  return static_cast<int>(value);
}

}  // namespace tim::cuda_detail::decoder
