// The sampler's element-wise work as functors over the shared formulas, run by every backend's
// executor (tim::cpu::for_each, tim::cuda::for_each): the counter-based normals
// (tim/core/random.hpp), the guidance combination, the transports' transitions
// (tim/math/transport.hpp, tim/transport/transports.hpp) and element-type conversion. The state
// is double, as released (SPEC 6). Each functor is a plain struct of pointers and values, so a
// CUDA kernel takes it by value.
//
// Shape legend: B batch, S per-sample elements.
#pragma once

#include <cstdint>
#include <type_traits>

#include "tim/core/config.hpp"
#include "tim/core/random.hpp"
#include "tim/math/transport.hpp"

namespace tim::math {

//! One call per block of four normals: out (B, S), row b the stream (seed, first + b, step), so
//! element e of row b is random::normal(seed, first + b, step, e).
struct NormalOp {
  double* out;
  std::int64_t per_sample, blocks;  // S and ceil(S / 4)
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

//! Classifier-free guidance on F (2B, S) = (F_c, F_u): F_c <- F_u + scale (F_c - F_u) for the
//! first `half` = B S values (SPEC 6).
template <class Real>
struct GuidanceOp {
  Real* F;
  std::int64_t half;
  Real scale;
  TIM_HD void operator()(std::int64_t j) const { F[j] = F[half + j] + scale * (F[j] - F[half + j]); }
};

//! x = a x + b F, the deterministic transition of any transport.
template <class Real>
struct TransitionOp {
  Real* x;
  const Real* F;
  TransitionCoefficients<Real> c;
  TIM_HD void operator()(std::int64_t i) const { x[i] = apply_transition(c, x[i], F[i]); }
};

//! One call per block of four elements of a row: the transport's stochastic transition with the
//! normals of the stream (streams[b], step) under `seed`, where streams (B) holds each row's
//! sample index (in the backend's memory).
template <class Tr>
struct StochasticTransitionOp {
  double* x;
  const double* F;
  const std::uint64_t* streams;
  std::int64_t per_sample, blocks;
  Tr transport;
  double t, r, stochasticity;
  std::uint64_t seed;
  std::uint32_t step;
  TIM_HD void operator()(std::int64_t job) const {
    const std::int64_t b = job / blocks, block = job % blocks;
    double eps[4];
    random::normal_block(eps, seed, streams[b], step, static_cast<std::uint32_t>(block));
    for (std::int64_t lane = 0; lane < 4 && 4 * block + lane < per_sample; ++lane) {
      const std::int64_t j = b * per_sample + 4 * block + lane;
      x[j] = transport.stochastic_transition(x[j], F[j], t, r, stochasticity, eps[lane]);
    }
  }
};

//! out[i] = To(in[i]) (the sampler's double state to the network's T and back). The storage
//! types (bfloat16, float16) convert through float, their only conversion, as a host
//! static_cast<To>(double) does.
template <class To, class From>
struct ConvertOp {
  To* out;
  const From* in;
  TIM_HD void operator()(std::int64_t i) const {
    if constexpr (std::is_arithmetic_v<To> && std::is_arithmetic_v<From>)
      out[i] = static_cast<To>(in[i]);
    else
      out[i] = static_cast<To>(static_cast<float>(in[i]));
  }
};

}  // namespace tim::math
