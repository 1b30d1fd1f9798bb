// CPU backend operations against double-precision naive loops written here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "compare.hpp"
#include "tim/tim.hpp"

using tim::cpu;
using tim_test::random_vector;

TEST_CASE_TEMPLATE("linear_forward matches a naive loop", T, float, double) {
  const int rows = 37, in = 53, out = 29;
  auto x = random_vector<T>(rows * in, 1), w = random_vector<T>(out * in, 2), b = random_vector<T>(out, 3);
  std::vector<double> expected(rows * out);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double acc = static_cast<double>(b[o]);
      for (int i = 0; i < in; ++i) acc += static_cast<double>(x[r * in + i]) * static_cast<double>(w[o * in + i]);
      expected[r * out + o] = acc;
    }
  std::vector<T> y(rows * out);
  cpu::linear_forward(y.data(), x.data(), w.data(), b.data(), rows, in, out);
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  TIM_CHECK_CLOSE(y.data(), expected.data(), y.size(), tol, tol);

  // No bias, accumulating into existing values.
  std::vector<T> acc(rows * out, T(1));
  cpu::linear_forward(acc.data(), x.data(), w.data(), static_cast<const T*>(nullptr), rows, in, out, true);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) expected[r * out + o] += 1.0 - static_cast<double>(b[o]);
  TIM_CHECK_CLOSE(acc.data(), expected.data(), acc.size(), tol, tol);
}

TEST_CASE_TEMPLATE("layernorm_forward matches a naive loop, with and without affine", T, float, double) {
  const int rows = 11, cols = 48;
  auto x = random_vector<T>(rows * cols, 4, 3.0), w = random_vector<T>(cols, 5), b = random_vector<T>(cols, 6);
  for (int affine = 0; affine < 2; ++affine) {
    std::vector<double> expected(rows * cols);
    for (int r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int j = 0; j < cols; ++j) mean += x[r * cols + j];
      mean /= cols;
      for (int j = 0; j < cols; ++j) var += (x[r * cols + j] - mean) * (x[r * cols + j] - mean);
      var /= cols;
      for (int j = 0; j < cols; ++j) {
        double v = (x[r * cols + j] - mean) / std::sqrt(var + 1e-5);
        expected[r * cols + j] = affine ? v * double(w[j]) + double(b[j]) : v;
      }
    }
    std::vector<T> y(rows * cols);
    cpu::layernorm_forward(y.data(), x.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr,
                           rows, cols, 1e-5);
    const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-13;
    TIM_CHECK_CLOSE(y.data(), expected.data(), y.size(), tol, tol);
  }
}

TEST_CASE_TEMPLATE("swiglu over long rows and a wide range (vectorised exp) against double", T, float, double) {
  // Rows long enough for whole SIMD packets plus a tail; gates from -30 to 30 reach exp's
  // saturation on both sides.
  const std::int64_t rows = 3, cols = 203;
  std::vector<T> gate(rows * cols), value(rows * cols), out(rows * cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    gate[static_cast<std::size_t>(i)] = static_cast<T>(-30.0 + 60.0 * static_cast<double>(i) / (rows * cols - 1));
    value[static_cast<std::size_t>(i)] = static_cast<T>(1.0 + 0.5 * std::sin(0.1 * static_cast<double>(i)));
  }
  cpu::swiglu_forward(out.data(), gate.data(), value.data(), rows, cols, cols, cols);
  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double a = static_cast<double>(gate[i]), v = static_cast<double>(value[i]);
    const double expected = a / (1 + std::exp(-a)) * v;
    worst = std::max(worst, std::abs(static_cast<double>(out[i]) - expected) / std::max(std::abs(expected), 1e-30));
  }
  MESSAGE("largest relative error ", worst);
  CHECK(worst <= (std::is_same_v<T, float> ? 1e-6 : 1e-14));
}

TEST_CASE("swiglu, silu and modulate follow their formulas") {
  const int rows = 5, cols = 7;
  auto g = random_vector<double>(rows * 2 * cols, 8), out = std::vector<double>(rows * cols);
  // gate = first half of each row, value = second half (a fused projection layout)
  cpu::swiglu_forward(out.data(), g.data(), g.data() + cols, rows, cols, 2 * cols, 2 * cols);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < cols; ++j) {
      const double a = g[r * 2 * cols + j], v = g[r * 2 * cols + cols + j];
      CHECK(out[r * cols + j] == doctest::Approx(a / (1 + std::exp(-a)) * v).epsilon(1e-14));
    }
  std::vector<double> s(rows * cols);
  cpu::silu_forward(s.data(), g.data(), rows * cols);
  CHECK(s[3] == doctest::Approx(g[3] / (1 + std::exp(-g[3]))).epsilon(1e-14));

  const int batch = 2, tokens = 3, dim = 4, stride = 12;
  auto x = random_vector<double>(batch * tokens * dim, 9), mod = random_vector<double>(batch * stride, 10);
  auto y = x;
  cpu::modulate_forward(y.data(), mod.data(), mod.data() + dim, batch, tokens, dim, stride);
  for (int b = 0; b < batch; ++b)
    for (int n = 0; n < tokens; ++n)
      for (int j = 0; j < dim; ++j) {
        const int i = (b * tokens + n) * dim + j;
        CHECK(y[i] == doctest::Approx(x[i] * (1 + mod[b * stride + dim + j]) + mod[b * stride + j]).epsilon(1e-14));
      }
  auto r = x;
  cpu::gated_residual_forward(r.data(), mod.data() + 2 * dim, y.data(), batch, tokens, dim, stride);
  for (int i = 0; i < batch * tokens * dim; ++i) {
    const int b = i / (tokens * dim), j = i % dim;
    CHECK(r[i] == doctest::Approx(x[i] + mod[b * stride + 2 * dim + j] * y[i]).epsilon(1e-14));
  }
}

TEST_CASE("timestep features are cosines then sines of s exp(-ln(1e4) k/128)") {
  const double s[2] = {0.37, 523.0};
  std::vector<double> f(2 * 256);
  cpu::timestep_features_forward(f.data(), s, 2);
  for (int b = 0; b < 2; ++b)
    for (int k = 0; k < 128; ++k) {
      const double freq = std::pow(10000.0, -k / 128.0);
      CHECK(f[b * 256 + k] == doctest::Approx(std::cos(s[b] * freq)).epsilon(1e-12));
      CHECK(f[b * 256 + 128 + k] == doctest::Approx(std::sin(s[b] * freq)).epsilon(1e-12));
    }
}

TEST_CASE("rotary angles follow the released indexing on a non-square grid") {
  // hd = 16: dh = 8, 4 pairs per half. Grid h = 3 rows, w = 5 columns.
  const int head_dim = 16;
  const std::int64_t grid_h = 3;
  for (std::int64_t n = 0; n < 15; ++n)
    for (int pair = 0; pair < 8; ++pair) {
      const int k = pair % 4;
      const double position = pair < 4 ? double(n % grid_h) : double(n / grid_h);
      const double expected = position / std::pow(10000.0, 2.0 * k / 8.0);
      CHECK(tim::math::rotary_angle<double>(n, grid_h, head_dim, pair) == doctest::Approx(expected).epsilon(1e-15));
    }
}

TEST_CASE_TEMPLATE("attention_forward matches naive softmax attention", T, float, double) {
  for (int tokens : {5, 64, 150}) {
    const int batch = 2, heads = 3, hd = 8;
    const size_t n = size_t(batch) * heads * tokens * hd;
    auto q = random_vector<T>(n, 20 + tokens), k = random_vector<T>(n, 21 + tokens), v = random_vector<T>(n, 22 + tokens);
    const double scale = 1 / std::sqrt(double(hd));
    std::vector<double> expected(n);
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < heads; ++h) {
        const size_t base = (size_t(b) * heads + h) * tokens * hd;
        for (int i = 0; i < tokens; ++i) {
          std::vector<double> p(tokens);
          double m = -1e300, sum = 0;
          for (int j = 0; j < tokens; ++j) {
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += double(q[base + i * hd + d]) * double(k[base + j * hd + d]);
            p[j] = dot * scale;
            m = std::max(m, p[j]);
          }
          for (int j = 0; j < tokens; ++j) sum += (p[j] = std::exp(p[j] - m));
          for (int d = 0; d < hd; ++d) {
            double acc = 0;
            for (int j = 0; j < tokens; ++j) acc += p[j] / sum * double(v[base + j * hd + d]);
            expected[((size_t(b) * tokens + i) * heads + h) * hd + d] = acc;
          }
        }
      }
    std::vector<T> out(n);
    cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), batch, heads, tokens, hd, scale);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    TIM_CHECK_CLOSE(out.data(), expected.data(), n, tol, tol);
  }
}

TEST_CASE("thread count is configurable and validated") {
  CHECK(tim::physical_core_count() >= 1);
  const int before = tim::num_threads();
  tim::set_num_threads(1);
  CHECK(tim::num_threads() == 1);
  tim::set_num_threads(before);
  CHECK_THROWS_AS(tim::set_num_threads(0), tim::Error);
}

#if defined(TIM_EXPECT_BLAS)
TEST_CASE("cpu: this test program runs the GEMM path it was built for (CBLAS or Eigen)") {
  CHECK(tim::cpu::uses_blas == (TIM_EXPECT_BLAS != 0));
  MESSAGE("GEMMs through ", std::string(tim::cpu::uses_blas ? "CBLAS" : "Eigen"));
}
#endif
