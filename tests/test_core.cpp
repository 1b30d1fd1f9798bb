// Core types: float16/bfloat16 conversion against double-precision rounding, Shape and Tensor.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "compare.hpp"
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
