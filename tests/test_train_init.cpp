// The released initialisation of a fresh network (tim/train/init.hpp) against its definition in
// tools/reference/train.py's init_weights: which tensors are zero or one exactly, the xavier
// bound and variance of every linear, the N(0, 0.02^2) tensors' variance (each within 5 standard
// deviations of the estimate), the network output F = 0, determinism per seed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "tim/tim.hpp"
#include "tim/train/init.hpp"

namespace {

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

TEST_CASE("init_c2i: the released initialisation (train.py's init_weights)") {
  // D = 64 with L = 24, 3 channels, patch 2: fan_in != fan_out in most linears.
  const auto config = tim::train::c2i_training_config(3, 64, 2, 4, 2, 24, 4.0, 10);
  const auto model = tim::train::init_c2i<double>(config, 11);
  int zero = 0, one = 0, xavier = 0, normal = 0;
  tim::nn::for_each_parameter(
      [&](const std::string& name, const tim::Tensor<double>& t) {
        CAPTURE(name);
        const double* v = t.data();
        const auto n = static_cast<std::size_t>(t.numel());
        double sum_sq = 0, max_abs = 0;
        for (std::size_t i = 0; i < n; ++i) {
          sum_sq += v[i] * v[i];
          max_abs = std::max(max_abs, std::fabs(v[i]));
        }
        const double mean_sq = sum_sq / static_cast<double>(n);
        const bool embedder_mlp = name.rfind("t_embedder.mlp.", 0) == 0 || name.rfind("delta_embedder.mlp.", 0) == 0;
        if (ends_with(name, ".bias") || ends_with(name, "adaLN_modulation.fc2.weight") ||
            name == "final_layer.linear.weight") {
          ++zero;
          CHECK(max_abs == 0.0);
        } else if (ends_with(name, "_norm.weight")) {
          ++one;
          for (std::size_t i = 0; i < n; ++i) REQUIRE(v[i] == 1.0);
        } else if (name == "y_embedder.embedding_table.weight" || embedder_mlp) {
          ++normal;
          // E[w^2] = s^2, the estimate's standard deviation sqrt(2) s^2 / sqrt(n).
          const double s2 = 0.02 * 0.02;
          CHECK(std::fabs(mean_sq - s2) <= 5.0 * std::sqrt(2.0) * s2 / std::sqrt(static_cast<double>(n)));
        } else {
          ++xavier;
          REQUIRE(t.rank() == 2);  // the patch embedding as held, (D, C p p)
          const double a = std::sqrt(6.0 / static_cast<double>(t.dim(0) + t.dim(1)));
          // U(-a, a): E[w^2] = a^2 / 3, Var(w^2) = a^4 / 5 - a^4 / 9 = 4 a^4 / 45.
          CHECK(max_abs <= a);
          CHECK(max_abs >= a * (1.0 - 20.0 / static_cast<double>(n)));  // P(miss) = (1 - 20/n)^n ~ e^-20
          CHECK(std::fabs(mean_sq - a * a / 3.0) <= 5.0 * std::sqrt(4.0 / 45.0) * a * a / std::sqrt(static_cast<double>(n)));
        }
      },
      model);
  // 2 blocks: qkv, qkv_d, proj, adaLN fc1_g/fc1_x, mlp fc1_g/fc1_x/fc2 = 8 each, the final adaLN's 2, the patch embedding.
  CHECK(xavier == 2 * 8 + 2 + 1);
  CHECK(normal == 5);  // label table, two linears of each of the two embedders
  CHECK(one == 4);
  CHECK(zero > 0);

  SUBCASE("the network starts at F = 0, and the weights are a function of the seed") {
    const std::int64_t B = 2, H = 4, W = 6;
    auto x = tim::Tensor<double>::empty({B, 3, H, W});
    for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::sin(0.37 * static_cast<double>(i));
    auto t = tim::Tensor<double>::empty({B}), r = tim::Tensor<double>::empty({B});
    t.data()[0] = 0.7, t.data()[1] = 0.3, r.data()[0] = 0.2, r.data()[1] = 0.3;
    auto labels = tim::Tensor<std::int64_t>::empty({B});
    labels.data()[0] = 3, labels.data()[1] = 10;
    tim::Tensor<double> out;
    model.forward(out, x, t, r, labels);
    for (std::int64_t i = 0; i < out.numel(); ++i) REQUIRE(out.data()[i] == 0.0);

    const auto same = tim::train::init_c2i<double>(config, 11), other = tim::train::init_c2i<double>(config, 12);
    bool all_same = true, any_other = false;
    tim::nn::for_each_parameter(
        [&](const std::string&, const tim::Tensor<double>& a, const tim::Tensor<double>& b, const tim::Tensor<double>& c) {
          for (std::int64_t i = 0; i < a.numel(); ++i) {
            all_same = all_same && a.data()[i] == b.data()[i];
            any_other = any_other || a.data()[i] != c.data()[i];
          }
        },
        model, same, other);
    CHECK(all_same);
    CHECK(any_other);
  }
}

TEST_CASE("c2i_training_config: bad sizes are errors naming the key") {
  CHECK_THROWS_WITH_AS(tim::train::c2i_training_config(1, 64, 2, 5, 2, 24, 4.0, 10),
                       doctest::Contains("num_heads must divide hidden_size"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::c2i_training_config(1, 24, 2, 4, 2, 24, 4.0, 10),
                       doctest::Contains("multiple of 4"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::c2i_training_config(1, 64, 0, 4, 2, 24, 4.0, 10), doctest::Contains("depth"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::c2i_training_config(1, 64, 2, 4, 2, 24, 4.0, 0), doctest::Contains("num_classes"),
                       tim::Error);
}
