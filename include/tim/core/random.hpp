// The counter-based random generator: Philox4x32-10 and the standard-normal stream the sampler
// draws its noise from. Every number is a pure function of (seed, sample, step, element), so the
// same seed gives the same noise for a sample whatever the batch it is in, on any thread, and
// (TIM_HD) in a CUDA kernel.
//
// Layout (docs/sampling.md, "The random generator"), for a CUDA kernel to reproduce:
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (element / 4, step, sample & 0xffffffff, sample >> 32)
//   words   = philox4x32_10(counter, key) = (w0, w1, w2, w3)
//   u(w)    = (w + 0.5) / 2^32                         strictly inside (0, 1), exact in double
//   lanes   = Box-Muller in double on (w0, w1) and (w2, w3):
//             R = sqrt(-2 ln u(w_a)), theta = 2 pi u(w_b), lane 2j = R cos theta, lane 2j+1 = R sin theta
//   normal(seed, sample, step, element) = lane (element % 4) of block element / 4.
// The sampler uses step = i for the noise of step i; the initial noise uses step
// `initial_noise_step` (0xffffffff). tools/reference/philox.py is an independent Python copy.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "tim/core/config.hpp"

namespace tim::random {

//! Philox4x32 round multipliers and Weyl key increments (Salmon et al., SC11; Random123).
inline constexpr std::uint32_t philox_m0 = 0xD2511F53u;
inline constexpr std::uint32_t philox_m1 = 0xCD9E8D57u;
inline constexpr std::uint32_t philox_w0 = 0x9E3779B9u;
inline constexpr std::uint32_t philox_w1 = 0xBB67AE85u;

//! The `step` word of the initial-noise stream (steps of a sampling run are 0 .. N-1).
inline constexpr std::uint32_t initial_noise_step = 0xFFFFFFFFu;

//! Four 32-bit words: a Philox counter or output block.
struct Words4 {
  std::uint32_t v[4];
};

//! Philox4x32 with `rounds` rounds (10 is the standard, published variant): the bijection of the
//! 128-bit `counter` selected by the 64-bit key (k0, k1). Each round is
//!   (c0, c1, c2, c3) -> (hi(m1 c2) ^ c1 ^ k0, lo(m1 c2), hi(m0 c0) ^ c3 ^ k1, lo(m0 c0)),
//! and the key is bumped by (w0, w1) between rounds.
TIM_HD inline Words4 philox4x32(Words4 counter, std::uint32_t k0, std::uint32_t k1, int rounds = 10) {
  std::uint32_t c0 = counter.v[0], c1 = counter.v[1], c2 = counter.v[2], c3 = counter.v[3];
  for (int i = 0; i < rounds; ++i) {
    if (i > 0) {
      k0 += philox_w0;
      k1 += philox_w1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(philox_m0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(philox_m1) * c2;
    const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

//! A 32-bit word as a uniform number strictly inside (0, 1): (w + 0.5) / 2^32, exact in double.
TIM_HD inline double uniform_open(std::uint32_t word) {
  return (static_cast<double>(word) + 0.5) * (1.0 / 4294967296.0);
}

//! The Philox output block `block` of the stream (seed, sample, step): layout at the top.
TIM_HD inline Words4 stream_block(std::uint64_t seed, std::uint64_t sample, std::uint32_t step,
                                  std::uint32_t block) {
  const Words4 counter{{block, step, static_cast<std::uint32_t>(sample), static_cast<std::uint32_t>(sample >> 32)}};
  return philox4x32(counter, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

//! The four standard normals of block `block` (elements 4 block .. 4 block + 3), by Box-Muller in
//! double on the word pairs (w0, w1) and (w2, w3).
TIM_HD inline void normal_block(double out[4], std::uint64_t seed, std::uint64_t sample, std::uint32_t step,
                                std::uint32_t block) {
  using std::cos;
  using std::log;
  using std::sin;
  using std::sqrt;
  constexpr double two_pi = 6.283185307179586476925286766559;
  const Words4 w = stream_block(seed, sample, step, block);
  for (int pair = 0; pair < 2; ++pair) {
    const double radius = sqrt(-2.0 * log(uniform_open(w.v[2 * pair])));
    const double theta = two_pi * uniform_open(w.v[2 * pair + 1]);
    out[2 * pair] = radius * cos(theta);
    out[2 * pair + 1] = radius * sin(theta);
  }
}

//! Standard normal number `element` of the stream (seed, sample, step). Elements of one sample
//! may number up to 2^34. Computes a whole block; loops over many elements should call
//! normal_block once per four elements (as fill_normal does).
TIM_HD inline double normal(std::uint64_t seed, std::uint64_t sample, std::uint32_t step, std::uint64_t element) {
  double lanes[4];
  normal_block(lanes, seed, sample, step, static_cast<std::uint32_t>(element / 4));
  return lanes[element % 4];
}

//! out[e] = normal(seed, sample, step, e) for e in [0, count), count <= 2^34.
inline void fill_normal(double* out, std::uint64_t count, std::uint64_t seed, std::uint64_t sample,
                        std::uint32_t step) {
  double lanes[4];
  for (std::uint64_t first = 0; first < count; first += 4) {
    normal_block(lanes, seed, sample, step, static_cast<std::uint32_t>(first / 4));
    for (std::uint64_t lane = 0; lane < 4 && first + lane < count; ++lane) out[first + lane] = lanes[lane];
  }
}

//! Most elements one sample's stream can address (the block index is one 32-bit word).
inline constexpr std::uint64_t max_elements_per_sample = std::uint64_t{4} << 32;

}  // namespace tim::random
