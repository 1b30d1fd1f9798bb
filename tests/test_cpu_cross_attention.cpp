// The CPU operations cross-attention adds: attention with different query and key counts, and
// the per-projection head split (norm + rotary on q, norm only on k, nothing on v), against
// naive double-precision loops written here.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "compare.hpp"
#include "tim/tim.hpp"

using tim::cpu;
using tim_test::random_vector;

namespace {

// Naive softmax attention in double: q (B, nh, Nq, hd), k, v (B, nh, Nk, hd) -> (B, Nq, nh, hd).
template <class T>
std::vector<double> naive_attention(const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                                    int batch, int heads, int nq, int nk, int hd, double scale) {
  std::vector<double> out(size_t(batch) * nq * heads * hd);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      const size_t qbase = (size_t(b) * heads + h) * nq * hd, kbase = (size_t(b) * heads + h) * nk * hd;
      for (int i = 0; i < nq; ++i) {
        std::vector<double> p(nk);
        double m = -1e300, sum = 0;
        for (int j = 0; j < nk; ++j) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += double(q[qbase + i * hd + d]) * double(k[kbase + j * hd + d]);
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        for (int j = 0; j < nk; ++j) sum += (p[j] = std::exp(p[j] - m));
        for (int d = 0; d < hd; ++d) {
          double acc = 0;
          for (int j = 0; j < nk; ++j) acc += p[j] / sum * double(v[kbase + j * hd + d]);
          out[((size_t(b) * nq + i) * heads + h) * hd + d] = acc;
        }
      }
    }
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("attention_forward with Nq queries and Nk keys matches naive attention", T, float, double) {
  // One key, fewer keys than a tile, more keys than queries, several query tiles.
  const int cases[][2] = {{5, 1}, {64, 7}, {150, 3}, {7, 150}, {130, 64}};
  for (const auto& [nq, nk] : cases) {
    CAPTURE(nq);
    CAPTURE(nk);
    const int batch = 2, heads = 3, hd = 8;
    auto q = random_vector<T>(size_t(batch) * heads * nq * hd, 30 + nq);
    auto k = random_vector<T>(size_t(batch) * heads * nk * hd, 31 + nk);
    auto v = random_vector<T>(size_t(batch) * heads * nk * hd, 32 + nk);
    const double scale = 1 / std::sqrt(double(hd));
    const auto expected = naive_attention(q, k, v, batch, heads, nq, nk, hd, scale);
    std::vector<T> out(expected.size());
    cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), batch, heads, nq, nk, hd, scale);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    TIM_CHECK_CLOSE(out.data(), expected.data(), out.size(), tol, tol);
  }
}

TEST_CASE("the self-attention overload is the general one with Nk = Nq, bit for bit") {
  const int batch = 2, heads = 2, tokens = 70, hd = 8;
  const size_t n = size_t(batch) * heads * tokens * hd;
  auto q = random_vector<float>(n, 41), k = random_vector<float>(n, 42), v = random_vector<float>(n, 43);
  std::vector<float> self(n), general(n);
  cpu::attention_forward(self.data(), q.data(), k.data(), v.data(), batch, heads, tokens, hd, 0.3);
  cpu::attention_forward(general.data(), q.data(), k.data(), v.data(), batch, heads, tokens, tokens, hd, 0.3);
  CHECK(self == general);
}

TEST_CASE_TEMPLATE("split_heads_forward: norm, rotary and scale per head, from a strided part", T, float, double) {
  // in: (B, tokens, stride) with the part at column `offset`; out: (B, nh, tokens, hd).
  const int batch = 2, tokens = 6, heads = 2, hd = 8, dim = heads * hd, stride = 2 * dim, offset = dim;
  const double eps = 1e-5;
  const T scale = T(0.35);
  auto in = random_vector<T>(size_t(batch) * tokens * stride, 51);
  auto weight = random_vector<T>(hd, 52), bias = random_vector<T>(hd, 53);
  std::vector<T> cos_table(size_t(tokens) * hd / 2), sin_table(cos_table.size());
  for (int n = 0; n < tokens; ++n)
    for (int pair = 0; pair < hd / 2; ++pair) {
      const double angle = tim::math::rotary_angle<double>(n, 2, hd, pair);  // a 2 x 3 grid
      cos_table[n * hd / 2 + pair] = T(std::cos(angle));
      sin_table[n * hd / 2 + pair] = T(std::sin(angle));
    }
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    const bool with_norm = variant != 2, with_rotary = variant == 0;
    std::vector<double> expected(size_t(batch) * heads * tokens * hd);
    for (int b = 0; b < batch; ++b)
      for (int n = 0; n < tokens; ++n)
        for (int h = 0; h < heads; ++h) {
          std::vector<double> u(hd);
          for (int j = 0; j < hd; ++j) u[j] = double(in[(size_t(b) * tokens + n) * stride + offset + h * hd + j]);
          if (with_norm) {
            double mean = 0, var = 0;
            for (double x : u) mean += x / hd;
            for (double x : u) var += (x - mean) * (x - mean) / hd;
            for (int j = 0; j < hd; ++j) u[j] = (u[j] - mean) / std::sqrt(var + eps) * double(weight[j]) + double(bias[j]);
          }
          if (with_rotary)
            for (int pair = 0; pair < hd / 2; ++pair) {
              const double angle = tim::math::rotary_angle<double>(n, 2, hd, pair);
              const double u0 = u[2 * pair], u1 = u[2 * pair + 1];
              u[2 * pair] = u0 * std::cos(angle) - u1 * std::sin(angle);
              u[2 * pair + 1] = u1 * std::cos(angle) + u0 * std::sin(angle);
            }
          for (int j = 0; j < hd; ++j)
            expected[((size_t(b) * heads + h) * tokens + n) * hd + j] = u[j] * (with_rotary ? double(scale) : 1.0);
        }
    std::vector<T> out(expected.size());
    cpu::split_heads_forward(out.data(), in.data() + offset, stride, with_norm ? weight.data() : nullptr,
                             with_norm ? bias.data() : nullptr, eps, with_rotary ? cos_table.data() : nullptr,
                             with_rotary ? sin_table.data() : nullptr, batch, tokens, heads, hd,
                             with_rotary ? scale : T(1));
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    TIM_CHECK_CLOSE(out.data(), expected.data(), out.size(), tol, tol);
  }
}

TEST_CASE("split_heads_forward and qkv_split_forward prepare heads with the same arithmetic") {
  // The q part of a fused qkv through both operations must agree bit for bit (no sample bias).
  const int batch = 2, tokens = 5, heads = 2, hd = 8, dim = heads * hd;
  auto qkv = random_vector<float>(size_t(batch) * tokens * 3 * dim, 61);
  auto qw = random_vector<float>(hd, 62), qb = random_vector<float>(hd, 63);
  auto kw = random_vector<float>(hd, 64), kb = random_vector<float>(hd, 65);
  std::vector<float> cos_table(size_t(tokens) * hd / 2), sin_table(cos_table.size());
  for (size_t i = 0; i < cos_table.size(); ++i) {
    cos_table[i] = std::cos(0.3f * float(i));
    sin_table[i] = std::sin(0.3f * float(i));
  }
  const size_t n = size_t(batch) * heads * tokens * hd;
  std::vector<float> q(n), k(n), v(n), q2(n), k2(n), v2(n);
  cpu::qkv_split_forward(q.data(), k.data(), v.data(), qkv.data(), static_cast<const float*>(nullptr), qw.data(),
                         qb.data(), kw.data(), kb.data(), 1e-5, cos_table.data(), sin_table.data(), batch, tokens,
                         heads, hd, 0.25f);
  cpu::split_heads_forward(q2.data(), qkv.data(), 3 * dim, qw.data(), qb.data(), 1e-5, cos_table.data(),
                           sin_table.data(), batch, tokens, heads, hd, 0.25f);
  cpu::split_heads_forward(k2.data(), qkv.data() + dim, 3 * dim, kw.data(), kb.data(), 1e-5, cos_table.data(),
                           sin_table.data(), batch, tokens, heads, hd, 1.0f);
  cpu::split_heads_forward(v2.data(), qkv.data() + 2 * dim, 3 * dim, static_cast<const float*>(nullptr),
                           static_cast<const float*>(nullptr), 1e-5, static_cast<const float*>(nullptr),
                           static_cast<const float*>(nullptr), batch, tokens, heads, hd, 1.0f);
  CHECK(q == q2);
  CHECK(k == k2);
  CHECK(v == v2);
}
