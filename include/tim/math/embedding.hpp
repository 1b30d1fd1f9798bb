// Positional mathematics of the network: sinusoidal time features and the released 2-D rotary
// embedding (SPEC sections 3 and 4).
#pragma once

#include <cmath>
#include <cstdint>

#include "tim/core/config.hpp"

namespace tim::math {

//! Number of sinusoidal features fed to a timestep embedder (SPEC 3: half = 128).
inline constexpr int timestep_features = 256;

//! Feature `i` (0..255) of the sinusoidal embedding of scalar `s`:
//! cos(s f_i) for i < 128, sin(s f_{i-128}) otherwise, with f_k = exp(-ln(10000) k / 128).
template <class T>
TIM_HD inline T timestep_feature(T s, int i) {
  using std::cos;
  using std::exp;
  using std::log;
  using std::sin;
  constexpr int half = timestep_features / 2;
  const int k = i < half ? i : i - half;
  const T frequency = exp(-log(T(10000)) * T(k) / T(half));
  const T angle = s * frequency;
  return i < half ? cos(angle) : sin(angle);
}

//! Rotary angle of element pair `pair` (0 .. hd/2 - 1) of a head of size `head_dim`, for token
//! `token` on a grid of `grid_h` rows: SPEC 4 exactly as released. The first half of the head
//! uses a(n) = n mod grid_h, the second half b(n) = floor(n / grid_h), with
//! f_k = 10000^(-2k/dh), dh = hd/2, each frequency shared by one adjacent pair.
template <class T>
TIM_HD inline T rotary_angle(std::int64_t token, std::int64_t grid_h, int head_dim, int pair) {
  using std::pow;
  const int dh = head_dim / 2;
  const int pairs_per_half = dh / 2;
  const bool second_half = pair >= pairs_per_half;
  const int k = second_half ? pair - pairs_per_half : pair;
  const std::int64_t position = second_half ? token / grid_h : token % grid_h;
  const T frequency = T(1) / pow(T(10000), T(2 * k) / T(dh));
  return T(position) * frequency;
}

//! Rotates the adjacent pair (u0, u1) by the angle whose cosine and sine are given.
template <class T>
TIM_HD inline void rotate_pair(T& u0, T& u1, T cos_angle, T sin_angle) {
  const T a = u0 * cos_angle - u1 * sin_angle;
  const T b = u1 * cos_angle + u0 * sin_angle;
  u0 = a;
  u1 = b;
}

//! Backward of rotate_pair: (d0, d1), the gradient of the rotated pair, becomes the gradient of
//! the pair before the rotation (the transposed rotation, i.e. the rotation by minus the angle).
template <class T>
TIM_HD inline void rotate_pair_backward(T& d0, T& d1, T cos_angle, T sin_angle) {
  const T a = d0 * cos_angle + d1 * sin_angle;
  const T b = d1 * cos_angle - d0 * sin_angle;
  d0 = a;
  d1 = b;
}

}  // namespace tim::math
