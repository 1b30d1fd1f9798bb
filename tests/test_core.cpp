// Core types: float16/bfloat16 conversion against double-precision rounding, Shape and Tensor.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "compare.hpp"
#include "tim/core/cast.hpp"
#include "tim/core/decimal.hpp"
#include "tim/tim.hpp"

namespace {
// Reference rounding of a double to a binary format with `mantissa_bits` explicit bits and
// minimum normal exponent `min_exponent`, round to nearest even (done in long double steps).
double round_to_format(double x, int mantissa_bits, int min_exponent, double max_finite) {
  if (std::isnan(x) || x == 0) return x;
  int exponent;
  std::frexp(x, &exponent);  // x = m 2^exponent, 0.5 <= |m| < 1
  exponent = std::max(exponent - 1, min_exponent);
  const double quantum = std::ldexp(1.0, exponent - mantissa_bits);
  double q = x / quantum;
  double r = std::nearbyint(q);  // default rounding mode: to nearest even
  double result = r * quantum;
  // overflow: values at or beyond the midpoint between max_finite and the next power round to inf
  const double limit = max_finite + std::ldexp(1.0, std::ilogb(max_finite) - mantissa_bits - 1);
  if (std::abs(x) >= limit) return std::copysign(std::numeric_limits<double>::infinity(), x);
  return result;
}
}  // namespace

TEST_CASE("float16 round trip of every bit pattern") {
  for (std::uint32_t bits = 0; bits < 65536; ++bits) {
    const float f = tim::float16::to_float(static_cast<std::uint16_t>(bits));
    if (std::isnan(f)) {
      CHECK(std::isnan(static_cast<float>(tim::float16(f))));
      continue;
    }
    REQUIRE(tim::float16::from_float(f) == bits);
  }
  CHECK(tim::float16::to_float(0x3c00) == 1.0f);
  CHECK(tim::float16::to_float(0x7bff) == 65504.0f);
  CHECK(tim::float16::to_float(0x0001) == std::ldexp(1.0f, -24));
}

TEST_CASE("float16 rounding matches a double-precision reference") {
  auto values = tim_test::random_vector<float>(200000, 7, 1.0);
  for (std::size_t i = 0; i < values.size(); ++i) {
    float x = values[i] * std::ldexp(1.0f, static_cast<int>(i % 44) - 28);  // 2^-28 .. 2^15
    const double expected = round_to_format(x, 10, -14, 65504.0);
    const float got = tim::float16(x);
    REQUIRE_MESSAGE(static_cast<double>(got) == expected, "x = " << x);
  }
  CHECK(std::isinf(static_cast<float>(tim::float16(65520.0f))));
  CHECK(static_cast<float>(tim::float16(65519.0f)) == 65504.0f);
}

TEST_CASE("bfloat16 rounding matches a double-precision reference") {
  auto values = tim_test::random_vector<float>(200000, 11, 1.0);
  for (std::size_t i = 0; i < values.size(); ++i) {
    float x = values[i] * std::ldexp(1.0f, static_cast<int>(i % 200) - 100);
    const double expected = round_to_format(x, 7, -126, 3.3895313892515355e38);
    REQUIRE_MESSAGE(static_cast<double>(static_cast<float>(tim::bfloat16(x))) == expected, "x = " << x);
  }
  for (std::uint32_t bits = 0; bits < 65536; ++bits) {
    const float f = tim::bfloat16::to_float(static_cast<std::uint16_t>(bits));
    if (!std::isnan(f)) REQUIRE(tim::bfloat16::from_float(f) == bits);
  }
  CHECK(std::isnan(static_cast<float>(tim::bfloat16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("Shape counts elements and rejects bad extents") {
  tim::Shape s{2, 3, 4};
  CHECK(s.numel() == 24);
  CHECK(s.rank() == 3);
  CHECK(s.str() == "[2, 3, 4]");
  CHECK(tim::Shape{}.numel() == 1);
  CHECK_THROWS_AS(tim::Shape({2, -1}), tim::Error);
  CHECK_THROWS_WITH_AS(tim::Shape({1LL << 40, 1LL << 40}), doctest::Contains("overflows"), tim::Error);
}

TEST_CASE("Tensor owns, views, reshapes and slices") {
  auto t = tim::Tensor<float>::zeros({4, 3});
  CHECK(t.numel() == 12);
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  for (int i = 0; i < 12; ++i) CHECK(t.data()[i] == 0.0f);
  for (int i = 0; i < 12; ++i) t.data()[i] = static_cast<float>(i);
  auto rows = t.slice(1, 2);
  CHECK(rows.shape() == tim::Shape{2, 3});
  CHECK(rows.data()[0] == 3.0f);
  auto flat = t.reshape({12});
  CHECK(flat.data() == t.data());
  CHECK_THROWS_WITH_AS(t.reshape({5}), doctest::Contains("reshape"), tim::Error);
  CHECK_THROWS_AS(t.slice(3, 2), tim::Error);
  auto copy = t.clone();
  copy.data()[0] = 42;
  CHECK(t.data()[0] == 0.0f);
  CHECK(t.dim(-1) == 3);
}

TEST_CASE("dtype names parse and convert") {
  CHECK(tim::parse_dtype("BF16") == tim::DType::BF16);
  CHECK_THROWS_WITH_AS(tim::parse_dtype("F8"), doctest::Contains("unknown dtype 'F8'"), tim::Error);
  const std::uint16_t half_bits[2] = {0x3c00, 0xc000};  // 1, -2
  float out[2];
  tim::convert_elements(half_bits, tim::DType::F16, out, 2);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == -2.0f);
}

TEST_CASE("shortest_decimal: the fewest %g digits that read back exactly") {
  CHECK(tim::shortest_decimal(0.6) == "0.6");
  CHECK(tim::shortest_decimal(2.5) == "2.5");
  CHECK(tim::shortest_decimal(1.0) == "1");
  CHECK(tim::shortest_decimal(0.0) == "0");
  CHECK(tim::shortest_decimal(-0.1) == "-0.1");
  CHECK(tim::shortest_decimal(1.0 / 3.0) == "0.3333333333333333");
  CHECK(tim::shortest_decimal(0.1 + 0.2) == "0.30000000000000004");
  CHECK(tim::shortest_decimal(100.0) == "1e+02");  // %g's spelling, exact
  CHECK(tim::shortest_decimal(1e-05) == "1e-05");
  CHECK(tim::shortest_decimal(1.5707963267948966) == "1.5707963267948966");
  CHECK(tim::shortest_decimal(std::numeric_limits<double>::infinity()) == "inf");
  CHECK(tim::shortest_decimal(-std::numeric_limits<double>::infinity()) == "-inf");
  // Every spelling reads back to the same double, for values spread over the whole range.
  std::uint64_t state = 12345;
  for (int i = 0; i < 2000; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    double value;
    const std::uint64_t bits = state & 0x7fefffffffffffffULL;  // finite, positive
    std::memcpy(&value, &bits, sizeof value);
    const std::string text = tim::shortest_decimal(value);
    REQUIRE(std::strtod(text.c_str(), nullptr) == value);
    // One digit fewer would not read back (unless it is already a single digit).
    char shorter[400];
    int digits = 0;
    bool significant = false;  // leading zeros (0.000123) are not significant digits
    for (char ch : text.substr(0, text.find('e'))) {
      significant = significant || (ch >= '1' && ch <= '9');
      digits += significant && ch >= '0' && ch <= '9';
    }
    if (digits > 1) {
      std::snprintf(shorter, sizeof shorter, "%.*g", digits - 1, value);
      CHECK(std::strtod(shorter, nullptr) != value);
    }
  }
}

TEST_CASE("cast: element conversion of host tensors, shape kept, always a copy") {
  auto f = tim::Tensor<float>::empty({2, 3});
  const float values[6] = {0.1f, -2.5f, 3.0e38f, 1e-40f, 0.0f, 7.0f};
  std::copy_n(values, 6, f.data());
  const auto d = tim::cast<double>(f);
  REQUIRE(d.shape() == tim::Shape{2, 3});
  for (int i = 0; i < 6; ++i) CHECK(d.data()[i] == static_cast<double>(values[i]));  // widening is exact
  // Narrowing rounds to nearest: 0.1 (double) -> the float nearest to it.
  auto wide = tim::Tensor<double>::empty({3});
  wide.data()[0] = 0.1;
  wide.data()[1] = 1e300;  // beyond float: inf
  wide.data()[2] = -1.0 / 3.0;
  const auto narrow = tim::cast<float>(wide);
  CHECK(narrow.data()[0] == 0.1f);
  CHECK(std::isinf(narrow.data()[1]));
  CHECK(narrow.data()[2] == -1.0f / 3.0f);
  // To bfloat16 and back: 1 + 2^-8 is halfway between bfloat16 1 and 1 + 2^-7, ties to even (1).
  auto halves = tim::Tensor<double>::empty({2});
  halves.data()[0] = 1.0 + std::ldexp(1.0, -8);
  halves.data()[1] = 3.0;
  const auto bf = tim::cast<tim::bfloat16>(halves);
  CHECK(static_cast<float>(bf.data()[0]) == 1.0f);
  CHECK(static_cast<float>(bf.data()[1]) == 3.0f);
  CHECK(tim::cast<double>(bf).data()[1] == 3.0);
  // Same type: a deep copy.
  auto copy = tim::cast<float>(f);
  copy.data()[0] = 42;
  CHECK(f.data()[0] == 0.1f);
  CHECK(copy.data() != f.data());
  // Empty stays empty.
  CHECK(tim::cast<double>(tim::Tensor<float>{}).empty_tensor());
  // Integers to floating.
  auto labels = tim::Tensor<std::int64_t>::empty({2});
  labels.data()[0] = -3;
  labels.data()[1] = 1000;
  const auto as_double = tim::cast<double>(labels);
  CHECK(as_double.data()[0] == -3.0);
  CHECK(as_double.data()[1] == 1000.0);
}
