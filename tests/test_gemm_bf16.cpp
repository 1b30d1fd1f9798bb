// Linear layers with bfloat16/float16 weights (tim/cpu/gemm_bf16.hpp, tim::cpu::linear_forward's
// 16-bit overload): every kernel variant against a float64 naive loop on shapes that hit every
// edge (1 to 5 rows: the matrix-vector and the GEMM path; output features below, at and past a
// panel of 256; odd input features, below and past a panel depth of 512), with and without
// accumulation and bias. Variants the machine cannot run are reported as skipped, by name.
//
// Error bounds (u_f = 2^-24 float's unit roundoff, u_b = 2^-8 bfloat16's; S = sum_k |x_k| |w_k|):
//  - float32 variant: the weights widen exactly, so y is a float dot product of K terms in some
//    order (blocked, FMA or not): |y - y_exact| <= gamma_K S with gamma_K = K u_f / (1 - K u_f)
//    (Higham, Accuracy and Stability, 3.1); an accumulated value and a bias are two more terms.
//  - bfloat16 variant: x_k is rounded to nearest even, x~_k = x_k (1 + d_k), |d_k| <= u_b; the
//    products x~_k w_k of two 8-bit significands are exact in float; the sum is a float sum. So
//    |y - y_exact| <= u_b S + gamma_K (1 + u_b) S. Against the reference computed from the
//    rounded activations in double the first term vanishes: |y - y~| <= gamma_K S~, which fails if
//    the rounding is not to nearest even (truncation errs by up to 2 u_b per product).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tim/tim.hpp"

namespace {

struct Problem {
  std::int64_t M, K, N;
  std::vector<float> x, bias, initial;
  std::vector<double> w;  // the weights' exact values (representable in the 16-bit type)
};

template <class W>
Problem make_problem(std::int64_t M, std::int64_t K, std::int64_t N, std::uint32_t seed, std::vector<W>& stored) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p{M, K, N, {}, {}, {}, {}};
  p.x.resize(static_cast<std::size_t>(M * K));
  for (auto& v : p.x) v = normal(rng);
  stored.resize(static_cast<std::size_t>(N * K));
  p.w.resize(stored.size());
  for (std::size_t i = 0; i < stored.size(); ++i) {
    stored[i] = W(normal(rng) * 0.5f);
    p.w[i] = static_cast<float>(stored[i]);
  }
  p.bias.resize(static_cast<std::size_t>(N));
  for (auto& v : p.bias) v = normal(rng);
  p.initial.resize(static_cast<std::size_t>(M * N));
  for (auto& v : p.initial) v = normal(rng);
  return p;
}

double gamma(std::int64_t K) {
  const double u = std::ldexp(1.0, -24);
  return static_cast<double>(K) * u / (1.0 - static_cast<double>(K) * u);
}

//! Runs `run(out)` (out starting as p.initial) and checks every element against the float64 loop
//! over activations `round(x)`: |out - ref| <= activation_u S + gamma_n (1 + activation_u) T, where
//! the accumulated value and the bias count as further terms of the float sum: n = K (+1 each),
//! T = S (+ their magnitudes).
template <class Run, class Round>
int check_variant(const Problem& p, bool accumulate, bool with_bias, double activation_u, Round round, Run run) {
  std::vector<float> out = p.initial;
  run(out.data(), with_bias ? p.bias.data() : nullptr, accumulate);
  int failures = 0;
  double worst = 0;
  for (std::int64_t r = 0; r < p.M; ++r)
    for (std::int64_t n = 0; n < p.N; ++n) {
      double exact = 0, S = 0;
      for (std::int64_t k = 0; k < p.K; ++k) {
        const double xv = round(p.x[static_cast<std::size_t>(r * p.K + k)]);
        const double wv = p.w[static_cast<std::size_t>(n * p.K + k)];
        exact += xv * wv;
        S += std::abs(xv * wv);
      }
      // The accumulated value and the bias are further (exact, unrounded) terms of the float sum.
      std::int64_t terms = p.K;
      double T = S;
      if (accumulate) {
        const double v = p.initial[static_cast<std::size_t>(r * p.N + n)];
        exact += v, T += std::abs(v), ++terms;
      }
      if (with_bias) {
        const double v = p.bias[static_cast<std::size_t>(n)];
        exact += v, T += std::abs(v), ++terms;
      }
      const double bound = activation_u * S + gamma(terms) * (1 + activation_u) * T;
      const double error = std::abs(out[static_cast<std::size_t>(r * p.N + n)] - exact);
      worst = std::max(worst, error / bound);
      if (!(error <= bound)) ++failures;
    }
  if (failures)
    MESSAGE("M ", p.M, " K ", p.K, " N ", p.N, std::string(accumulate ? " accumulate" : ""),
            std::string(with_bias ? " bias" : ""), ": ", failures, " elements over the bound (worst error/bound ", worst,
            ")");
  return failures;
}

const std::int64_t rows[] = {1, 2, 3, 4, 5, 37};
const std::int64_t outs[] = {1, 15, 17, 256, 300};
const std::int64_t ins[] = {1, 3, 31, 512, 1027};

double identity(float v) { return v; }
double to_bf16(float v) { return static_cast<float>(tim::bfloat16(v)); }

template <class W, class Run, class Round>
void check_all(double activation_u, Round round, Run run) {
  std::uint32_t seed = 1;
  int failures = 0, cases = 0;
  for (const auto M : rows)
    for (const auto N : outs)
      for (const auto K : ins) {
        std::vector<W> stored;
        const auto p = make_problem<W>(M, K, N, seed++, stored);
        for (const bool accumulate : {false, true}) {
          const bool with_bias = accumulate == (K % 2 == 1);  // both combinations over the shapes
          failures += check_variant(p, accumulate, with_bias, activation_u, round,
                                    [&](float* out, const float* bias, bool acc) { run(out, p, stored, bias, acc); });
          ++cases;
        }
      }
  MESSAGE(cases, " shape/accumulate/bias cases");
  CHECK(failures == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit weights: variant float32 (widened panels) against float64", W, tim::bfloat16, tim::float16) {
  check_all<W>(0.0, identity, [](float* out, const Problem& p, const std::vector<W>& w, const float* bias, bool acc) {
    tim::cpu::linear_forward(out, p.x.data(), w.data(), bias, p.M, p.K, p.N, acc, tim::Precision::float32);
  });
}

TEST_CASE("bfloat16 weights: variant bfloat16 (oneDNN) against float64 and against rounded activations") {
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (const char* expect = std::getenv("TIM_TEST_EXPECT_BF16_KERNEL")) {
    // ctest's gemm_bf16_fallback runs this with oneDNN limited to AVX-512 without BF16.
    CHECK(kernel.available == (std::string(expect) == "1"));
  }
  if (!kernel.available) {
    MESSAGE("skipped: variant bfloat16 (oneDNN matmul): ", kernel.reason);
    // What runs instead is the float32 variant, exactly.
    std::vector<tim::bfloat16> w;
    const auto p = make_problem<tim::bfloat16>(5, 1027, 300, 7, w);
    std::vector<float> a(static_cast<std::size_t>(p.M * p.N)), b(a.size());
    tim::cpu::linear_forward(a.data(), p.x.data(), w.data(), nullptr, p.M, p.K, p.N, false, tim::Precision::bfloat16);
    tim::cpu::linear_forward(b.data(), p.x.data(), w.data(), nullptr, p.M, p.K, p.N, false, tim::Precision::float32);
    CHECK(a == b);
    CHECK(tim::cpu_gemm::effective_precision(tim::Precision::bfloat16) == tim::Precision::float32);
    CHECK_THROWS_AS(tim::cpu_gemm::linear_bf16(a.data(), p.x.data(), w.data(), p.M, p.K, p.N, false), tim::Error);
    return;
  }
  MESSAGE("variant bfloat16: ", kernel.name, " (CPU: ", tim::cpu_features().describe(), ")");
  auto run = [](float* out, const Problem& p, const std::vector<tim::bfloat16>& w, const float* bias, bool acc) {
    tim::cpu::linear_forward(out, p.x.data(), w.data(), bias, p.M, p.K, p.N, acc, tim::Precision::bfloat16);
  };
  SUBCASE("exact activations: bound u_b S + gamma_K (1 + u_b) S") { check_all<tim::bfloat16>(std::ldexp(1.0, -8), identity, run); }
  SUBCASE("activations rounded to nearest even first: bound gamma_K S") { check_all<tim::bfloat16>(0.0, to_bf16, run); }
}

TEST_CASE("bfloat16 activation rounding equals bfloat16::from_float (nearest even, NaN, infinities)") {
  std::vector<float> in;
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 100000; ++i) {
    const std::uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    in.push_back(f);
  }
  for (const std::uint32_t u : {0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00001u,
                                0x7f800001u, 0x80000000u, 0x00000001u, 0x3f80ffffu}) {
    float f;
    std::memcpy(&f, &u, 4);
    in.push_back(f);
  }
  std::vector<tim::bfloat16> out(in.size());
  tim::cpu_gemm::round_to_bfloat16(out.data(), in.data(), static_cast<std::int64_t>(in.size()));
  int mismatches = 0;
  for (std::size_t i = 0; i < in.size(); ++i) mismatches += out[i].bits != tim::bfloat16::from_float(in[i]);
  CHECK(mismatches == 0);
  CHECK(out[in.size() - 10].bits == 0x3f80);  // 1 + 2^-8 exactly halfway: to the even 1.0
  CHECK(out[in.size() - 9].bits == 0x3f82);   // 1 + 3 * 2^-8: halfway, to the even 1 + 2^-6
}

TEST_CASE("precision names parse, and bad ones are named") {
  CHECK(tim::parse_precision("float") == tim::Precision::float32);
  CHECK(tim::parse_precision("float32") == tim::Precision::float32);
  CHECK(tim::parse_precision("bfloat16") == tim::Precision::bfloat16);
  CHECK_THROWS_WITH_AS(tim::parse_precision("half", "--text-precision"),
                       doctest::Contains("--text-precision: expected \"float\" or \"bfloat16\", got \"half\""),
                       tim::Error);
}

TEST_CASE("bfloat16 weights: variant bfloat16 from several threads at once gives the serial bits") {
  // oneDNN's default scratchpad is shared by its primitives, so a primitive may only run on the
  // thread that created it (gemm_bf16.hpp keeps one per thread). tim::PerSampleNetwork runs one
  // sample per thread; sharing one primitive between them computed NaNs at random.
  if (!tim::cpu_gemm::bf16_kernel().available) {
    MESSAGE("skipped: variant bfloat16 (oneDNN matmul): ", tim::cpu_gemm::bf16_kernel().reason);
    return;
  }
  struct Shape {
    std::int64_t M, K, N;
  };
  for (const Shape s : {Shape{37, 1027, 300}, Shape{1, 512, 256}, Shape{64, 256, 768}}) {
    std::vector<tim::bfloat16> w;
    const auto p = make_problem<tim::bfloat16>(s.M, s.K, s.N, 11, w);
    std::vector<float> serial(static_cast<std::size_t>(p.M * p.N));
    tim::cpu_gemm::linear_bf16(serial.data(), p.x.data(), w.data(), p.M, p.K, p.N, false);
    constexpr int threads = 4, repeats = 30;
    std::vector<int> mismatches(threads, 0);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        std::vector<float> out(serial.size());
        for (int r = 0; r < repeats; ++r) {
          tim::cpu_gemm::linear_bf16(out.data(), p.x.data(), w.data(), p.M, p.K, p.N, false);
          if (std::memcmp(out.data(), serial.data(), out.size() * sizeof(float)) != 0) ++mismatches[t];
        }
      });
    for (auto& th : pool) th.join();
    INFO("M=", s.M, " K=", s.K, " N=", s.N);
    for (int t = 0; t < threads; ++t) CHECK(mismatches[t] == 0);
  }
}
