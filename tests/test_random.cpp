// The counter-based generator: Philox4x32-10 against the published known-answer vectors, the
// normal stream against values of the independent Python copy (tools/reference/philox.py), and
// the properties the sampler relies on (open unit interval, independence of the key words).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "tim/core/random.hpp"

namespace {

using tim::random::Words4;

void check_block(Words4 counter, std::uint32_t k0, std::uint32_t k1, Words4 expected) {
  const Words4 got = tim::random::philox4x32(counter, k0, k1);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(got.v[i] == expected.v[i]);
  }
}

}  // namespace

TEST_CASE("philox4x32-10: Random123 known-answer vectors") {
  check_block({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  check_block({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
              {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  check_block({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
              {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST_CASE("philox: the round count matters (7 rounds differ from 10)") {
  const auto ten = tim::random::philox4x32({{0, 0, 0, 0}}, 0, 0, 10);
  const auto seven = tim::random::philox4x32({{0, 0, 0, 0}}, 0, 0, 7);
  CHECK(ten.v[0] != seven.v[0]);
}

TEST_CASE("uniform_open: strictly inside (0, 1), exact at both ends") {
  CHECK(tim::random::uniform_open(0) == std::ldexp(1.0, -33));
  CHECK(tim::random::uniform_open(0xffffffffu) == 1.0 - std::ldexp(1.0, -33));
  CHECK(tim::random::uniform_open(0xffffffffu) < 1.0);
  CHECK(tim::random::uniform_open(0x80000000u) == 0.5 + std::ldexp(1.0, -33));
}

TEST_CASE("normal stream: values of the independent Python implementation (philox.py)") {
  // From `python tools/reference/philox.py` (Python floats are IEEE doubles; libm's log, cos,
  // sin are the same functions here, so equality is expected to the last bit or two).
  struct Known {
    std::uint64_t seed, sample;
    std::uint32_t step;
    std::uint64_t element;
    double value;
  };
  const Known known[] = {
      {0, 0, 0, 0, 0.9911376799303855},
      {42, 3, 7, 5, 1.0094727556413514},
      {(std::uint64_t{1} << 40) + 5, (std::uint64_t{1} << 33) + 1, 11, 1001, -1.7564300475140655},
  };
  for (const auto& k : known) {
    CAPTURE(k.seed);
    CAPTURE(k.element);
    CHECK(tim::random::normal(k.seed, k.sample, k.step, k.element) == doctest::Approx(k.value).epsilon(1e-15));
  }
}

TEST_CASE("normal stream: layout (element / 4 is the counter, lanes are Box-Muller pairs)") {
  const std::uint64_t seed = 0x0123456789abcdefull, sample = 0x00000002fedcba98ull;
  const std::uint32_t step = 9;
  const auto w = tim::random::philox4x32({{3, step, 0xfedcba98u, 0x2u}}, 0x89abcdefu, 0x01234567u);
  const double radius = std::sqrt(-2.0 * std::log(tim::random::uniform_open(w.v[2])));
  const double theta = 6.283185307179586476925286766559 * tim::random::uniform_open(w.v[3]);
  CHECK(tim::random::normal(seed, sample, step, 14) == radius * std::cos(theta));
  CHECK(tim::random::normal(seed, sample, step, 15) == radius * std::sin(theta));

  std::vector<double> filled(23);
  tim::random::fill_normal(filled.data(), filled.size(), seed, sample, step);
  for (std::uint64_t e = 0; e < filled.size(); ++e) CHECK(filled[e] == tim::random::normal(seed, sample, step, e));
}

TEST_CASE("normal stream: every key word changes the numbers; moments are standard") {
  const double base = tim::random::normal(1, 2, 3, 4);
  std::set<double> variants{base,
                            tim::random::normal(1 + (std::uint64_t{1} << 32), 2, 3, 4),
                            tim::random::normal(1, 2 + (std::uint64_t{1} << 32), 3, 4),
                            tim::random::normal(1, 2, 4, 4),
                            tim::random::normal(1, 2, 3, 4 + 4)};
  CHECK(variants.size() == 5);

  const std::size_t n = 1 << 18;
  std::vector<double> v(n);
  tim::random::fill_normal(v.data(), n, 7, 0, 0);
  double mean = 0, second = 0, fourth = 0;
  for (double x : v) {
    mean += x;
    second += x * x;
    fourth += x * x * x * x;
  }
  mean /= n;
  second /= n;
  fourth /= n;
  INFO("mean ", mean, " E[x^2] ", second, " E[x^4] ", fourth);
  CHECK(std::abs(mean) < 5.0 / std::sqrt(double(n)));
  CHECK(std::abs(second - 1.0) < 0.02);
  CHECK(std::abs(fourth - 3.0) < 0.1);
}
