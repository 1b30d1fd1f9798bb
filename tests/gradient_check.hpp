// Central-difference gradients for the backward-pass tests, and the comparison they use.
//
// The loss of every check is L = sum_i w_i y_i with fixed random weights w (so dL/dy = w is the
// `dout` the backward receives). For an input u, dL/du ~ (L(u + h) - L(u - h)) / (2h). In double
// the error of that estimate has two parts: truncation, h^2 |L'''| / 6, and rounding, about
// eps |L| / h with eps = 2^-53 = 1.1e-16 (each L is a sum of O(100) terms of O(1), so its own
// rounding is a few eps |L|). With h = 1e-5 and |L|, |L'''| of order 1 to 10 (inputs of unit
// scale, smooth operations) both parts are about 1e-10 to 1e-9, against gradients of order
// 0.1 to 1: relative errors near 1e-9, three orders below the 1e-6 the tests require. A wrong
// formula (a dropped term, a wrong sign, a transposed index) moves a gradient by O(1) of its size.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace tim_test {

//! The step of the central differences (see above).
inline constexpr double gradient_step = 1e-5;
//! The largest relative error (max |analytic - numeric| / max |numeric| over a tensor) accepted.
inline constexpr double gradient_tolerance = 1e-6;

//! dL/du[i] for every i by central differences of `loss` (which reads u), restoring u.
template <class T>
std::vector<double> numeric_gradient(T* u, std::size_t n, const std::function<double()>& loss,
                                     double h = gradient_step) {
  std::vector<double> g(n);
  for (std::size_t i = 0; i < n; ++i) {
    const T saved = u[i];
    u[i] = static_cast<T>(static_cast<double>(saved) + h);
    const double plus = loss();
    u[i] = static_cast<T>(static_cast<double>(saved) - h);
    const double minus = loss();
    u[i] = saved;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

//! sum_i w_i y_i.
template <class A, class B>
double weighted_sum(const A* w, const B* y, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(w[i]) * static_cast<double>(y[i]);
  return s;
}

//! max |a - b| / max |b|: the relative error of a gradient tensor against its reference.
template <class A, class B>
double gradient_error(const A* actual, const B* expected, std::size_t n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(actual[i]) - static_cast<double>(expected[i])));
    scale = std::max(scale, std::abs(static_cast<double>(expected[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

//! Checks an analytic gradient against the numeric one: relative error within `tolerance`, and
//! the reference is not vacuous (some entry of size > 1e-3).
template <class A>
void check_gradient(const std::string& name, const A* analytic, const std::vector<double>& numeric,
                    double tolerance = gradient_tolerance) {
  const double error = gradient_error(analytic, numeric.data(), numeric.size());
  double largest = 0;
  for (double g : numeric) largest = std::max(largest, std::abs(g));
  INFO(name, ": ", numeric.size(), " values, relative error ", error, " (largest |gradient| ", largest, ")");
  CHECK(error <= tolerance);
  CHECK(largest > 1e-3);
}

}  // namespace tim_test
