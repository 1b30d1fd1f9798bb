// Element type conversion of host tensors: tim::cast<To>(tensor), e.g. the sampler's double
// state to float for a file, or float inputs to double for a model that takes double.
#pragma once

#include <cstdint>
#include <type_traits>

#include "tim/core/tensor.hpp"

namespace tim {

//! A new owning host tensor of the same shape whose elements are `static_cast<To>` of `in`'s:
//! widening (float -> double) is exact, narrowing rounds to nearest as C++ does (double ->
//! bfloat16 rounds through float). An empty tensor (no data) gives an empty tensor. Always a
//! copy, also when To is From.
//! Example: `tim::Tensor<float> latents = tim::cast<float>(result.x);`
template <class To, class From>
Tensor<To, cpu> cast(const Tensor<From, cpu>& in) {
  if (in.empty_tensor()) return {};
  auto out = Tensor<To, cpu>::empty(in.shape());
  const From* source = in.data();
  To* target = out.data();
  const std::int64_t n = in.numel();
  for (std::int64_t i = 0; i < n; ++i) target[i] = static_cast<To>(source[i]);
  return out;
}

}  // namespace tim
