// tim::nn::forward_flops (nn/flops.hpp, used by `tim bench` and the benchmarks) against the work
// the networks actually do: a backend that is tim::cpu plus a counter of every matrix product it
// is asked for (2 M N K per Linear; 2 x 2 Nq Nk hd per head of attention), run through whole
// C2I and T2I forwards of the golden models at several sizes. The formula and the counter are
// written independently; they must agree exactly.
#include <doctest/doctest.h>

#include <random>

#include "golden_source.hpp"
#include "tim/nn/flops.hpp"
#include "tim/tim.hpp"

namespace {

//! tim::cpu with its matrix products counted.
struct counting_cpu : tim::cpu {
  static inline double flops = 0;

  template <class T>
  static void linear_forward(T* out, const T* in, const T* weight, const T* bias, std::int64_t rows,
                             std::int64_t in_features, std::int64_t out_features, bool accumulate = false) {
    flops += 2.0 * static_cast<double>(rows) * static_cast<double>(in_features) * static_cast<double>(out_features);
    tim::cpu::linear_forward(out, in, weight, bias, rows, in_features, out_features, accumulate);
  }
  template <class T>
  static void attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t heads,
                                std::int64_t tokens, std::int64_t head_dim, double scale) {
    attention_forward(out, q, k, v, batch, heads, tokens, tokens, head_dim, scale);
  }
  template <class T>
  static void attention_forward(T* out, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t heads,
                                std::int64_t query_tokens, std::int64_t key_tokens, std::int64_t head_dim,
                                double scale) {
    // QK^T (Nq x Nk x hd) and PV (Nq x hd x Nk) for every (sample, head).
    flops += 2.0 * 2.0 * static_cast<double>(batch * heads) * static_cast<double>(query_tokens) *
             static_cast<double>(key_tokens) * static_cast<double>(head_dim);
    tim::cpu::attention_forward(out, q, k, v, batch, heads, query_tokens, key_tokens, head_dim, scale);
  }
};

template <class T>
tim::Tensor<T, counting_cpu> random_tensor(const tim::Shape& shape, std::mt19937& engine, float lo, float hi) {
  auto host = tim::Tensor<T>::empty(shape);
  std::uniform_real_distribution<float> uniform(lo, hi);
  for (std::int64_t i = 0; i < host.numel(); ++i) host.data()[i] = static_cast<T>(uniform(engine));
  return tim::to_backend<counting_cpu>(host);
}

}  // namespace

TEST_CASE("forward_flops: C2I networks do exactly the counted matrix products") {
  std::mt19937 engine(5);
  // new_condition variants (one, two or three time embedders), interval qkv, patch 2 and 4.
  for (const std::string name : {"plain", "cond_r", "cond_t_r_tr", "cond_t_tr", "patch4", "nonsquare"}) {
    CAPTURE(name);
    auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
    tim_test::ParametersOnly parameters(file);
    const auto model = tim::nn::load_c2i<float, counting_cpu>(parameters);
    const auto& c = model.config;
    for (const auto [batch, height, width] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 8, 8},
                                              {3, 8, 16}, {2, 16, 4}}) {
      if (height % c.patch || width % c.patch) continue;
      CAPTURE(batch);
      CAPTURE(height);
      CAPTURE(width);
      const auto x = random_tensor<float>({batch, c.in_channels, height, width}, engine, -1, 1);
      const auto t = random_tensor<float>({batch}, engine, 0.5f, 1);
      const auto r = random_tensor<float>({batch}, engine, 0, 0.5f);
      auto labels = tim::Tensor<std::int64_t>::empty({batch});
      for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = b % c.num_classes;
      tim::Tensor<float, counting_cpu> out;
      counting_cpu::flops = 0;
      model.forward(out, x, t, r, labels);
      CHECK(counting_cpu::flops > 0);
      CHECK(tim::nn::forward_flops(c, batch, height, width) == counting_cpu::flops);
    }
  }
}

TEST_CASE("forward_flops: T2I networks do exactly the counted matrix products") {
  std::mt19937 engine(6);
  for (const std::string name : {"plain", "square", "nonsquare"}) {
    CAPTURE(name);
    auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, "golden_t2i"));
    tim_test::ParametersOnly parameters(file);
    const auto model = tim::nn::load_t2i<float, counting_cpu>(parameters);
    const auto& c = model.config;
    for (const auto [batch, height, width, tokens] :
         {std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>{1, 8, 8, 5}, {2, 8, 16, 1}, {3, 16, 8, 7}}) {
      CAPTURE(batch);
      CAPTURE(tokens);
      const auto x = random_tensor<float>({batch, c.in_channels, height, width}, engine, -1, 1);
      const auto t = random_tensor<float>({batch}, engine, 0.5f, 1);
      const auto r = random_tensor<float>({batch}, engine, 0, 0.5f);
      const auto cap_feats = random_tensor<float>({batch, tokens, c.caption_dim}, engine, -1, 1);
      tim::Tensor<float, counting_cpu> out;
      counting_cpu::flops = 0;
      model.forward(out, x, t, r, cap_feats);
      CHECK(counting_cpu::flops > 0);
      CHECK(tim::nn::forward_flops(c, batch, height, width, tokens) == counting_cpu::flops);
    }
  }
}
