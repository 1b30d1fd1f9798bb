// Scalar activations and the adaLN modulation, written once for every backend.
#pragma once

#include <cmath>

#include "tim/core/config.hpp"

namespace tim::math {

//! SiLU (swish): u * sigmoid(u).
template <class T>
TIM_HD inline T silu(T u) {
  using std::exp;
  return u / (T(1) + exp(-u));
}

//! SwiGLU gate: silu(gate) * value.
template <class T>
TIM_HD inline T swiglu(T gate, T value) {
  return silu(gate) * value;
}

//! adaLN modulation: u * (1 + scale) + shift.
template <class T>
TIM_HD inline T modulate(T u, T shift, T scale) {
  return u * (T(1) + scale) + shift;
}

}  // namespace tim::math
