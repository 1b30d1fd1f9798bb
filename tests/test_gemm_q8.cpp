// The q8_0 weight format (tim/core/q8_0.hpp) and its linear layer (tim/cpu/gemm_q8.hpp): quantise/
// dequantise round trips against closed-form bounds, and every kernel variant this CPU can run
// against float64 loops, on shapes that hit every edge (M = 1, 2, 3, 7, 17 rows; K = 1, 31, 32, 33,
// 64, 96, 682 inputs: a lone partial block, one short of a block, whole blocks, one past, odd block
// counts and the shipped model's 682; N = 1, 5, 16, 33, 64 outputs), with and without accumulation
// and bias. Variants the CPU lacks are reported as skipped, by name.
//
// Error bounds (u = 2^-24; per block b of row m and output n: dx, dw the scales, qx, qw the int8 values):
//  - weights: |w - qw dw| <= dw / 2 (round to nearest of w / dw, |w| / dw <= 127.5 by the scale rule).
//  - activations: q = nearbyint(fl(x * fl(127 / amax))), dx = fl(amax / 127): |x - q dx| <= |x| 3u(1+..)
//    + dx / 2 <= dx (1/2 + 381.1 u) (the three roundings each at most u relative, |x| <= 127 dx (1 + u)).
//  - the kernel against the float64 sum over blocks of dx dw (sum of qx qw): the block sums are exact
//    int32 in every variant; a term's scale dx dw and its product with the sum are two roundings, the
//    sum over the nb blocks is split over at most 16 lanes (nb - 1 additions in a lane, 4 levels
//    across lanes), then the accumulated value and the bias: each term is touched by at most
//    nb + 9 roundings, |y - ref| <= gamma_{nb+9} T with T = sum_b dx dw sum_k |qx qw| + |acc| + |bias|
//    (Higham 3.1; T is taken over |qx qw| since a lane's partial sum is bounded by it).
//  - against the unquantised float64 product sum x w: |x w - x^ w^| <= |x - x^| |w| + |x^| |w - w^|, so
//    |y - exact| <= sum_b [ex_b |w|_1,b + dw_b / 2 |x^|_1,b] + gamma_{nb+9} T, ex_b the activation bound.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "tim/core/q8_0.hpp"
#include "tim/cpu/gemm_q8.hpp"

namespace {

using tim::float16;
using tim::cpu_gemm::Q8Variant;

constexpr double u = 1.0 / (1 << 24);

double gamma(std::int64_t n) { return static_cast<double>(n) * u / (1.0 - static_cast<double>(n) * u); }

// The activation quantisation as the kernel's documentation defines it, written again here.
struct QuantisedRow {
  std::vector<int> q;
  std::vector<float> d;
};
QuantisedRow quantise_activations(const float* x, std::int64_t K) {
  QuantisedRow r;
  for (std::int64_t k0 = 0; k0 < K; k0 += 32) {
    const std::int64_t k1 = std::min(K, k0 + 32);
    float amax = 0;
    for (std::int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::abs(x[k]));
    r.d.push_back(amax / 127.0f);
    const float inverse = amax > 0 ? 127.0f / amax : 0.0f;
    for (std::int64_t k = k0; k < k1; ++k) r.q.push_back(static_cast<int>(std::nearbyint(x[k] * inverse)));
  }
  return r;
}

struct Q8Matrix {
  std::int64_t N, K;
  std::vector<float> w;  // the float weights before quantisation
  std::vector<std::int8_t> q;
  std::vector<float16> scales;
  tim::Q8Weight view() const { return {q.data(), scales.data(), N, K}; }
};

Q8Matrix quantised_matrix(std::int64_t N, std::int64_t K, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.3f);
  Q8Matrix m{N, K, std::vector<float>(static_cast<std::size_t>(N * K)), std::vector<std::int8_t>(static_cast<std::size_t>(N * K)),
             std::vector<float16>(static_cast<std::size_t>(N * tim::q8_0_blocks(K)))};
  for (auto& v : m.w) v = normal(rng);
  for (std::int64_t n = 0; n < N; ++n)
    tim::quantize_row_q8_0(m.q.data() + n * K, m.scales.data() + n * tim::q8_0_blocks(K), m.w.data() + n * K, K);
  return m;
}

}  // namespace

TEST_CASE("q8_0: quantise/dequantise round trip within d/2 per value, exact on the grid") {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const std::int64_t K : {1, 31, 32, 33, 64, 95, 682}) {
    std::vector<float> w(static_cast<std::size_t>(K));
    for (auto& v : w) v = normal(rng) * (K == 31 ? 1e-6f : 1.0f);
    if (K == 95) w[40] = 0, w[70] = -3e-7f;  // tiny values next to ordinary ones
    std::vector<std::int8_t> q(w.size());
    std::vector<float16> d(static_cast<std::size_t>(tim::q8_0_blocks(K)));
    tim::quantize_row_q8_0(q.data(), d.data(), w.data(), K);
    std::vector<float> back(w.size());
    tim::dequantize_row_q8_0(back.data(), q.data(), d.data(), K);
    int over = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      const double dk = static_cast<float>(d[static_cast<std::size_t>(k / 32)]);
      over += !(std::abs(static_cast<double>(w[static_cast<std::size_t>(k)]) - back[static_cast<std::size_t>(k)]) <= dk / 2);
      CHECK(std::abs(q[static_cast<std::size_t>(k)]) <= 127);
    }
    CHECK_MESSAGE(over == 0, "K ", K);
    // The scale is max|w| / 127 rounded to float16: each block's largest |q| is 127.
    for (std::int64_t b = 0; b < tim::q8_0_blocks(K); ++b) {
      int qmax = 0;
      double amax = 0;
      for (std::int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) {
        qmax = std::max(qmax, std::abs(static_cast<int>(q[static_cast<std::size_t>(k)])));
        amax = std::max(amax, static_cast<double>(std::abs(w[static_cast<std::size_t>(k)])));
      }
      const double scale = static_cast<float>(d[static_cast<std::size_t>(b)]);
      if (amax / 127 >= std::ldexp(1.0, -14)) {  // a normal float16 scale: one rounding
        CHECK(qmax == 127);
        CHECK(std::abs(scale - amax / 127) <= amax / 127 * std::ldexp(1.0, -11));
      } else {  // subnormal: within one step of 2^-24 above, and amax / d <= 127.5
        CHECK(std::abs(scale - amax / 127) <= std::ldexp(1.0, -24));
        CHECK(amax / scale <= 127.5);
      }
    }
    // Values already on the grid (q d with the block's largest |q| 127) come back exactly.
    for (std::int64_t k = 0; k < K; ++k) w[static_cast<std::size_t>(k)] = back[static_cast<std::size_t>(k)];
    std::vector<std::int8_t> q2(w.size());
    std::vector<float16> d2(d.size());
    tim::quantize_row_q8_0(q2.data(), d2.data(), w.data(), K);
    CHECK(q2 == q);
    for (std::size_t b = 0; b < d.size(); ++b) CHECK(d2[b].bits == d[b].bits);
  }
}

TEST_CASE("q8_0: edge values: zero blocks, float16 subnormal scales, and what cannot be quantised") {
  std::vector<float> w(40, 0.0f);
  std::vector<std::int8_t> q(40, 5);
  std::vector<float16> d(2);
  tim::quantize_row_q8_0(q.data(), d.data(), w.data(), 40);
  CHECK(d[0].bits == 0);
  CHECK(std::all_of(q.begin(), q.end(), [](std::int8_t v) { return v == 0; }));
  // amax / 127 in float16's subnormal range, where nearest rounding alone could leave amax / d > 127.5.
  int checked = 0;
  for (float amax = 1e-7f; amax < 4e-5f; amax *= 1.37f, ++checked) {
    w.assign(32, 0.0f);
    w[3] = amax, w[9] = -amax * 0.77f, w[20] = amax * 0.31f;
    tim::quantize_row_q8_0(q.data(), d.data(), w.data(), 32);
    const double scale = static_cast<float>(d[0]);
    REQUIRE(scale > 0);
    for (int k = 0; k < 32; ++k)
      CHECK(std::abs(w[static_cast<std::size_t>(k)] - q[static_cast<std::size_t>(k)] * scale) <= scale / 2);
  }
  CHECK(checked > 10);
  w.assign(32, 1.0f);
  w[7] = std::nanf("");
  CHECK_THROWS_WITH_AS(tim::quantize_row_q8_0(q.data(), d.data(), w.data(), 32),
                       doctest::Contains("at index 7 is not finite"), tim::Error);
  w[7] = 1e7f;
  CHECK_THROWS_WITH_AS(tim::quantize_row_q8_0(q.data(), d.data(), w.data(), 32),
                       doctest::Contains("too large for a float16 scale"), tim::Error);
}

TEST_CASE("q8_0 linear: the activation quantisation within dx (1/2 + 381.1 u), as its definition") {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const std::int64_t K = 100;
  std::vector<float> x(static_cast<std::size_t>(K));
  for (auto& v : x) v = normal(rng);
  std::vector<std::int8_t> q(128);
  std::vector<float> d(4);
  tim::cpu_gemm::q8_detail::quantize_activations(q.data(), d.data(), x.data(), K, 128);
  const auto mine = quantise_activations(x.data(), K);
  for (std::int64_t k = 0; k < K; ++k) {
    const std::size_t i = static_cast<std::size_t>(k);
    CHECK(static_cast<int>(q[i]) == mine.q[i]);
    const double dx = d[i / 32];
    CHECK(std::abs(x[i] - q[i] * dx) <= dx * (0.5 + 381.1 * u));
  }
  for (std::size_t b = 0; b < 4; ++b) CHECK(d[b] == mine.d[b]);
  for (std::int64_t k = K; k < 128; ++k) CHECK(q[static_cast<std::size_t>(k)] == 0);  // zero padding
}

namespace {

struct Outcome {
  int cases = 0, failures_quantised = 0, failures_exact = 0;
  double worst_quantised = 0, worst_exact = 0;
};

// One problem of M x K by N (random weights and activations), run with `variant` and checked element
// by element against both float64 references and their bounds (file comment).
void check_problem(Outcome& o, std::int64_t M, std::int64_t K, std::int64_t N, Q8Variant variant, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const Q8Matrix w = quantised_matrix(N, K, rng);
  std::vector<float> x(static_cast<std::size_t>(M * K)), bias(static_cast<std::size_t>(N)),
      initial(static_cast<std::size_t>(M * N));
  for (auto& v : x) v = normal(rng);
  for (auto& v : bias) v = normal(rng);
  for (auto& v : initial) v = normal(rng);
  const std::int64_t nb = tim::q8_0_blocks(K);
  for (const bool accumulate : {false, true})
    for (const bool with_bias : {false, true}) {
      std::vector<float> y = initial;
      tim::cpu_gemm::linear_forward_q8(y.data(), x.data(), w.view(), with_bias ? bias.data() : nullptr, M, accumulate,
                                       variant);
      ++o.cases;
      for (std::int64_t m = 0; m < M; ++m) {
        const auto xq = quantise_activations(x.data() + m * K, K);
        for (std::int64_t n = 0; n < N; ++n) {
          double ref = 0, T = 0, exact = 0, quantisation = 0;
          for (std::int64_t b = 0; b < nb; ++b) {
            const double dx = xq.d[static_cast<std::size_t>(b)];
            const double dw = static_cast<float>(w.scales[static_cast<std::size_t>(n * nb + b)]);
            double block = 0, block_abs = 0, w_l1 = 0, xhat_l1 = 0;
            for (std::int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) {
              const double qx = xq.q[static_cast<std::size_t>(k)];
              const double qw = w.q[static_cast<std::size_t>(n * K + k)];
              const double wk = w.w[static_cast<std::size_t>(n * K + k)];
              block += qx * qw, block_abs += std::abs(qx * qw);
              exact += static_cast<double>(x[static_cast<std::size_t>(m * K + k)]) * wk;
              w_l1 += std::abs(wk);
              xhat_l1 += std::abs(qx * dx);
            }
            ref += dx * dw * block;
            T += dx * dw * block_abs;
            quantisation += dx * (0.5 + 381.1 * u) * w_l1 + dw / 2 * xhat_l1;
          }
          const double acc = accumulate ? initial[static_cast<std::size_t>(m * N + n)] : 0.0;
          const double b = with_bias ? bias[static_cast<std::size_t>(n)] : 0.0;
          T += std::abs(acc) + std::abs(b);
          const double out = y[static_cast<std::size_t>(m * N + n)];
          const double rounding = gamma(nb + 9) * T;
          const double e1 = std::abs(out - (ref + acc + b)), e2 = std::abs(out - (exact + acc + b));
          o.worst_quantised = std::max(o.worst_quantised, e1 / rounding);
          o.worst_exact = std::max(o.worst_exact, e2 / (quantisation + rounding));
          o.failures_quantised += !(e1 <= rounding);
          o.failures_exact += !(e2 <= quantisation + rounding);
        }
      }
    }
}

void report(const Outcome& o, const std::string& name) {
  MESSAGE("variant ", name, ": ", o.cases, " cases; worst error / bound: ", o.worst_quantised,
          " (quantised reference), ", o.worst_exact, " (exact product)");
  CHECK(o.cases > 0);
  CHECK(o.failures_quantised == 0);
  CHECK(o.failures_exact == 0);
}

}  // namespace

TEST_CASE("q8_0 linear: every variant this CPU runs, against float64 (quantised and exact products)") {
  const auto& chosen = tim::cpu_gemm::q8_kernel();
  MESSAGE("q8_kernel(): ", chosen.name, " (CPU: ", tim::cpu_features().describe(), ")");
  if (const char* expect = std::getenv("TIM_TEST_EXPECT_Q8_KERNEL")) {
    // ctest's gemm_q8_avx2_machine and gemm_q8_scalar_machine run this with TIM_Q8_MAX_VARIANT set.
    CHECK(std::string(tim::cpu_gemm::q8_variant_name(chosen.variant)) == expect);
  }
  for (const Q8Variant variant : tim::cpu_gemm::q8_variants) {
    const std::string name(tim::cpu_gemm::q8_variant_name(variant));
    std::string why;
    if (!tim::cpu_gemm::q8_variant_supported(variant, &why)) {
      MESSAGE("skipped: q8_0 variant ", name, ": ", why);
      continue;
    }
    SUBCASE(("variant " + name).c_str()) {
      std::mt19937 rng(7);
      Outcome o;
      for (const std::int64_t M : {1, 2, 3, 7, 17})
        for (const std::int64_t K : {32, 64, 96, 33, 31, 1, 682})
          for (const std::int64_t N : {1, 5, 16, 33, 64}) check_problem(o, M, K, N, variant, rng);
      report(o, name);
    }
  }
}

TEST_CASE("q8_0 linear: larger shapes split over the threads, and NaN activations propagate") {
  for (const Q8Variant variant : tim::cpu_gemm::q8_variants) {
    const std::string name(tim::cpu_gemm::q8_variant_name(variant));
    if (!tim::cpu_gemm::q8_variant_supported(variant)) {
      MESSAGE("skipped: q8_0 variant ", name);
      continue;
    }
    std::mt19937 rng(9);
    Outcome o;
    check_problem(o, 9, 1152 + 40, 300, variant, rng);
    report(o, name);

    const Q8Matrix w = quantised_matrix(40, 70, rng);
    std::vector<float> x(3 * 70, 0.25f), y(3 * 40);
    x[5] = std::nanf("");
    tim::cpu_gemm::linear_forward_q8(y.data(), x.data(), w.view(), nullptr, 3, false, variant);
    CHECK(std::all_of(y.begin(), y.begin() + 40, [](float v) { return std::isnan(v); }));
    CHECK(std::none_of(y.begin() + 40, y.end(), [](float v) { return std::isnan(v); }));
  }
}

TEST_CASE("q8_0 linear: a variant the CPU cannot run, and bad names, are errors") {
  CHECK(tim::cpu_gemm::parse_q8_variant("avx2") == Q8Variant::avx2);
  CHECK_THROWS_WITH_AS(tim::cpu_gemm::parse_q8_variant("sse2", "TIM_Q8_KERNEL"),
                       doctest::Contains("TIM_Q8_KERNEL: unknown q8_0 kernel variant \"sse2\""), tim::Error);
  for (const Q8Variant variant : tim::cpu_gemm::q8_variants) {
    std::string why;
    if (tim::cpu_gemm::q8_variant_supported(variant, &why)) continue;
    float y = 0, x = 0;
    CHECK_THROWS_WITH_AS(tim::cpu_gemm::linear_forward_q8(&y, &x, tim::Q8Weight{}, nullptr, 1, false, variant),
                         doctest::Contains("cannot run here"), tim::Error);
  }
}
