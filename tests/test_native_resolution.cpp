// Native resolution: the largest token grid the issue asks for (128 x 128 = 16384 tokens) in
// bounded memory. The tiled attention is checked there against naive double attention on
// sampled query rows, and a tiny T2I network runs a forward at that size without an N x N
// buffer (16384^2 floats would be 1 GiB; the test allows 256 MiB of peak-memory growth).
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <cmath>
#include <vector>

#include "compare.hpp"
#include "random_t2i_checkpoint.hpp"
#include "tim/tim.hpp"

namespace {

// Peak resident memory of this process so far, in bytes (Linux reports kilobytes).
double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

}  // namespace

TEST_CASE("tiled attention at 16384 tokens matches naive attention on sampled query rows") {
  const int tokens = 128 * 128, hd = 16;  // one head of one sample
  auto q = tim_test::random_vector<float>(size_t(tokens) * hd, 71);
  auto k = tim_test::random_vector<float>(size_t(tokens) * hd, 72);
  auto v = tim_test::random_vector<float>(size_t(tokens) * hd, 73);
  const double scale = 1 / std::sqrt(double(hd));
  std::vector<float> out(size_t(tokens) * hd);
  const double before = peak_rss_bytes();
  tim::cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), 1, 1, tokens, hd, scale);
  const double growth = peak_rss_bytes() - before;
  MESSAGE("attention at N = 16384: peak memory growth ", growth / (1 << 20), " MiB");
  CHECK(growth < 256.0 * (1 << 20));
  for (int row : {0, 1, 63, 64, 4097, 8191, 12345, 16383}) {
    CAPTURE(row);
    std::vector<double> p(tokens);
    double m = -1e300, sum = 0;
    for (int j = 0; j < tokens; ++j) {
      double dot = 0;
      for (int d = 0; d < hd; ++d) dot += double(q[size_t(row) * hd + d]) * double(k[size_t(j) * hd + d]);
      p[j] = dot * scale;
      m = std::max(m, p[j]);
    }
    for (int j = 0; j < tokens; ++j) sum += (p[j] = std::exp(p[j] - m));
    std::vector<double> expected(hd, 0.0);
    for (int j = 0; j < tokens; ++j)
      for (int d = 0; d < hd; ++d) expected[d] += p[j] / sum * double(v[size_t(j) * hd + d]);
    TIM_CHECK_CLOSE(out.data() + size_t(row) * hd, expected.data(), size_t(hd), 1e-4, 1e-5);
  }
}

TEST_CASE("a T2I network runs at 128 x 128 tokens in bounded memory, float agreeing with double") {
  // p = 1 on a 128 x 128 latent: N = 16384 tokens. D 8, one head (hd 8), depth 1, M 6.
  const auto config = tim_test::t2i_config(/*hidden=*/8, /*depth=*/1, /*heads=*/1, /*patch=*/1, /*channels=*/4,
                                           /*caption_dim=*/16, /*adaln_hidden=*/8);
  const auto checkpoint = tim_test::random_t2i_checkpoint(config);
  const std::int64_t B = 1, H = 128, W = 128, M = 6;
  auto x = tim::Tensor<float>::empty({B, 4, H, W});
  auto noise = tim_test::random_vector<float>(static_cast<std::size_t>(x.numel()), 81);
  std::copy(noise.begin(), noise.end(), x.data());
  auto captions = tim::Tensor<float>::empty({B, M, 16});
  auto features = tim_test::random_vector<float>(static_cast<std::size_t>(captions.numel()), 82);
  std::copy(features.begin(), features.end(), captions.data());
  auto t = tim::Tensor<float>::empty({B}), r = tim::Tensor<float>::empty({B});
  t.data()[0] = 0.8f;
  r.data()[0] = 0.3f;

  auto model = tim::nn::load_t2i<float>(checkpoint);
  tim::Tensor<float> out;
  const double before = peak_rss_bytes();
  model.forward(out, x, t, r, captions);
  const double growth = peak_rss_bytes() - before;
  MESSAGE("T2I forward at 128 x 128 tokens: peak memory growth ", growth / (1 << 20), " MiB");
  CHECK(growth < 256.0 * (1 << 20));
  REQUIRE(out.shape() == tim::Shape{B, 4, H, W});
  for (std::int64_t i = 0; i < out.numel(); ++i) REQUIRE(std::isfinite(out.data()[i]));

  // The same network in double: float accumulation over 16384 keys stays within 1e-4.
  auto model64 = tim::nn::load_t2i<double>(checkpoint);
  auto x64 = tim::Tensor<double>::empty(x.shape());
  auto captions64 = tim::Tensor<double>::empty(captions.shape());
  std::copy(x.data(), x.data() + x.numel(), x64.data());
  std::copy(captions.data(), captions.data() + captions.numel(), captions64.data());
  auto t64 = tim::Tensor<double>::empty({B}), r64 = tim::Tensor<double>::empty({B});
  t64.data()[0] = 0.8;
  r64.data()[0] = 0.3;
  tim::Tensor<double> out64;
  model64.forward(out64, x64, t64, r64, captions64);
  const double error = tim_test::relative_error(out.data(), out64.data(), static_cast<std::size_t>(out.numel()));
  MESSAGE("float vs double at 16384 tokens: relative error ", error);
  CHECK(error <= 1e-4);
}
