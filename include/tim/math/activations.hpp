// Scalar activations and the adaLN modulation, written once for every backend, with the
// derivatives their backward passes use.
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

//! d silu(u) / du = s (1 + u (1 - s)) with s = sigmoid(u).
template <class T>
TIM_HD inline T silu_derivative(T u) {
  using std::exp;
  const T s = T(1) / (T(1) + exp(-u));
  return s * (T(1) + u * (T(1) - s));
}

//! Backward of out = silu(gate) * value: dgate = dout value silu'(gate), dvalue = dout silu(gate).
template <class T>
TIM_HD inline void swiglu_backward(T& dgate, T& dvalue, T dout, T gate, T value) {
  dgate = dout * value * silu_derivative(gate);
  dvalue = dout * silu(gate);
}

//! adaLN modulation: u * (1 + scale) + shift.
template <class T>
TIM_HD inline T modulate(T u, T shift, T scale) {
  return u * (T(1) + scale) + shift;
}

}  // namespace tim::math
