// Helpers of the CUDA device tests: moving float test data to the device in T and back, the
// inputs rounded through T (so the CPU reference sees exactly the values the GPU sees), and the
// tolerance of each precision.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "compare.hpp"
#include "tim/cuda/tim.cuh"
#include "tim/tim.hpp"  // the CPU backend, the reference of every device test

namespace tim_test {

//! What for_each does on the device, on the host: op(i) for i in [0, n).
template <class Op>
void run_on_host(std::int64_t n, const Op& op) {
  for (std::int64_t i = 0; i < n; ++i) op(i);
}

//! What the decoders' for_each_row does on the device, on the host: op(op.row(r), r, j) for every
//! row r and column j.
template <class Op>
void run_rows_on_host(std::int64_t rows, std::int64_t cols, const Op& op) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto at = op.row(r);
    for (std::int64_t j = 0; j < cols; ++j) op(at, r, static_cast<int>(j));
  }
}

//! `host` converted to T on a new device tensor of shape (n).
template <class T>
tim::Tensor<T, tim::cuda> to_device(const std::vector<float>& host) {
  std::vector<T> converted(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) converted[i] = static_cast<T>(host[i]);
  auto t = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(host.size())});
  tim::cuda::copy_from_host(t.data(), converted.data(), converted.size());
  return t;
}

//! n values of T at `device`, in float (waits for the device).
template <class T>
std::vector<float> to_host(const T* device, std::size_t n) {
  std::vector<T> values(n);
  tim::cuda::copy_to_host(values.data(), device, n);
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(values[i]);
  return out;
}

//! `values` rounded to T and back: the inputs a T computation really sees.
template <class T>
std::vector<float> rounded(std::vector<float> values) {
  for (auto& v : values) v = static_cast<float>(static_cast<T>(v));
  return values;
}

//! Seeded N(0, scale^2) values rounded through T.
template <class T>
std::vector<float> random_values(std::size_t n, std::uint32_t seed, double scale = 1.0) {
  return rounded<T>(random_vector<float>(n, seed, scale));
}

//! Largest |gpu - cpu| relative to the largest |cpu| accepted for a precision: float32 kernels
//! differ from the CPU only in summation order and libm ulps; bfloat16 rounds every stored value
//! (2^-9 relative) and GEMM outputs before the bias.
template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1.5e-2;
}

#define TIM_CHECK_RELATIVE(actual, expected, limit)                                                        \
  do {                                                                                                     \
    REQUIRE((actual).size() == (expected).size());                                                         \
    const double tim_error_ = ::tim_test::relative_error((actual).data(), (expected).data(), (actual).size()); \
    const auto tim_close_ = ::tim_test::all_close((actual).data(), (expected).data(), (actual).size(), 0.0, 0.0); \
    INFO("relative error ", tim_error_, " (limit ", (limit), "); ", tim_close_.report);                     \
    CHECK(tim_error_ <= (limit));                                                                          \
  } while (0)

}  // namespace tim_test
