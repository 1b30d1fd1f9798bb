// The row-reduction kernels of the tim::cuda backend: LayerNorm over the last axis, one thread
// block per row, the mean and the variance reduced with CUB's BlockReduce (two passes, as the
// CPU's math::layernorm_row), each value then written through math::layernorm_value.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: R rows, cols the normalised width (D, hd or the caption width Dc).
#pragma once

#include <cub/block/block_reduce.cuh>

#include <cstdint>

#include "tim/cuda/elementwise.cuh"
#include "tim/math/normalization.hpp"

namespace tim::cuda_detail {

//! Threads per row of the LayerNorm kernel.
inline constexpr int layernorm_threads = 256;

//! out (R, cols) = LayerNorm(in) [* weight + bias]; `out` may be `in`. Block `blockIdx.x` handles
//! rows blockIdx.x, blockIdx.x + gridDim.x, ...
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    layernorm_kernel(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows, std::int64_t cols,
                     double eps) {
  using C = compute_t<T>;
  using Reduce = cub::BlockReduce<C, Threads>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ C shared_mean, shared_rstd;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* u = in + row * cols;
    T* o = out + row * cols;
    C sum = 0;
    for (std::int64_t j = threadIdx.x; j < cols; j += Threads) sum += load(u[j]);
    const C total = Reduce(storage).Sum(sum);
    if (threadIdx.x == 0) shared_mean = total / C(cols);
    __syncthreads();
    const C mean = shared_mean;
    C squares = 0;
    for (std::int64_t j = threadIdx.x; j < cols; j += Threads) {
      const C d = load(u[j]) - mean;
      squares += d * d;
    }
    const C var_total = Reduce(storage).Sum(squares);
    if (threadIdx.x == 0) shared_rstd = math::layernorm_rstd(var_total / C(cols), eps);
    __syncthreads();
    const C rstd = shared_rstd;
    for (std::int64_t j = threadIdx.x; j < cols; j += Threads)
      o[j] = store<T>(math::layernorm_value(load(u[j]), mean, rstd, weight, bias, j));
    __syncthreads();  // shared_mean / storage are reused by the next row
  }
}

//! Blocks of the LayerNorm launch for `rows` rows: one per row, at most 2^20 (grid-stride).
inline unsigned layernorm_blocks(std::int64_t rows) {
  return static_cast<unsigned>(std::clamp<std::int64_t>(rows, 1, std::int64_t{1} << 20));
}

template <class T>
void layernorm(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows, std::int64_t cols,
               double eps) {
  if (rows <= 0 || cols <= 0) return;
  layernorm_kernel<T, layernorm_threads>
      <<<layernorm_blocks(rows), layernorm_threads, 0, current_stream()>>>(out, in, weight, bias, rows, cols, eps);
  check_launch("tim::cuda layernorm kernel");
}

}  // namespace tim::cuda_detail
