// Test helpers: seeded random fills and an all-close comparison that reports the largest
// difference and the first mismatches, |a - b| <= atol + rtol |b|.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <vector>

namespace tim_test {

template <class T>
std::vector<T> random_vector(std::size_t n, std::uint32_t seed, double scale = 1.0) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(normal(generator));
  return v;
}

struct Closeness {
  bool ok = true;
  double max_abs = 0, max_rel = 0;
  std::string report;
};

//! Compares `actual` against `expected` element-wise; the report names the worst element and
//! the first five mismatches.
template <class A, class B>
Closeness all_close(const A* actual, const B* expected, std::size_t n, double rtol, double atol = 0) {
  Closeness c;
  std::ostringstream out;
  int shown = 0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double a = static_cast<double>(actual[i]), b = static_cast<double>(expected[i]);
    const double diff = std::abs(a - b);
    const double rel = diff / std::max(std::abs(b), 1e-300);
    if (diff > c.max_abs) {
      c.max_abs = diff;
      worst = i;
    }
    c.max_rel = std::max(c.max_rel, std::min(rel, diff));
    if (!(diff <= atol + rtol * std::abs(b))) {
      c.ok = false;
      if (shown++ < 5) out << "  [" << i << "] got " << a << " expected " << b << '\n';
    }
  }
  std::ostringstream head;
  head.precision(17);
  head << "n=" << n << " max |diff|=" << c.max_abs << " at [" << worst << "]";
  if (n) head << " (got " << static_cast<double>(actual[worst]) << ", expected " << static_cast<double>(expected[worst]) << ")";
  c.report = head.str() + "\n" + out.str();
  return c;
}

//! Relative error of the whole tensor: max |a - b| / max |b|.
template <class A, class B>
double relative_error(const A* actual, const B* expected, std::size_t n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(actual[i]) - static_cast<double>(expected[i])));
    scale = std::max(scale, std::abs(static_cast<double>(expected[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace tim_test

#define TIM_CHECK_CLOSE(actual, expected, n, rtol, atol)                                   \
  do {                                                                                     \
    auto tim_closeness_ = ::tim_test::all_close((actual), (expected), (n), (rtol), (atol)); \
    INFO(tim_closeness_.report);                                                           \
    CHECK(tim_closeness_.ok);                                                              \
  } while (0)
