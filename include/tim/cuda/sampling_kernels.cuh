// The sampler's element-wise kernels on the GPU, over the shared formulas: the counter-based
// normal generator (tim/core/random.hpp) and the transports' transitions
// (tim/transport/transports.hpp), all in double as the sampler's state.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, S per-sample elements.
#pragma once

#include <cstdint>

#include "tim/core/random.hpp"
#include "tim/cuda/elementwise.cuh"
#include "tim/math/transport.hpp"

namespace tim::cuda_detail {

//! One thread per block of four normals: out (B, S), row b the stream (seed, first + b, step).
struct NormalOp {
  double* out;
  std::int64_t per_sample, blocks;
  std::uint64_t seed, first_sample;
  std::uint32_t step;
  TIM_HD void operator()(std::int64_t job) const {
    const std::int64_t b = job / blocks, block = job % blocks;
    double lanes[4];
    random::normal_block(lanes, seed, first_sample + static_cast<std::uint64_t>(b), step,
                         static_cast<std::uint32_t>(block));
    for (std::int64_t lane = 0; lane < 4 && 4 * block + lane < per_sample; ++lane)
      out[b * per_sample + 4 * block + lane] = lanes[lane];
  }
};

//! x = a x + b F.
struct TransitionOp {
  double* x;
  const double* F;
  math::TransitionCoefficients<double> c;
  TIM_HD void operator()(std::int64_t i) const { x[i] = math::apply_transition(c, x[i], F[i]); }
};

//! One thread per block of four elements of a row: the transport's stochastic transition with
//! the normals of the stream (seed, first + b, step), as the CPU sampler's update.
template <class Tr>
struct StochasticTransitionOp {
  double* x;
  const double* F;
  std::int64_t per_sample, blocks;
  Tr transport;
  double t, r, stochasticity;
  std::uint64_t seed, first_sample;
  std::uint32_t step;
  TIM_HD void operator()(std::int64_t job) const {
    const std::int64_t b = job / blocks, block = job % blocks;
    double eps[4];
    random::normal_block(eps, seed, first_sample + static_cast<std::uint64_t>(b), step,
                         static_cast<std::uint32_t>(block));
    for (std::int64_t lane = 0; lane < 4 && 4 * block + lane < per_sample; ++lane) {
      const std::int64_t j = b * per_sample + 4 * block + lane;
      x[j] = transport.stochastic_transition(x[j], F[j], t, r, stochasticity, eps[lane]);
    }
  }
};

}  // namespace tim::cuda_detail
