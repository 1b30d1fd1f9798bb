// Every tim::cuda operation against tim::cpu's on seeded random inputs (suite "cuda": needs a
// GPU), in float32 and bfloat16. The CPU reference runs in float on the inputs rounded through
// T, so only the GPU's own arithmetic is measured; tolerances in device_helpers.cuh.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "device_helpers.cuh"

using tim_test::random_values;
using tim_test::to_device;
using tim_test::to_host;
using tim_test::tolerance;

TEST_SUITE("cuda") {

TEST_CASE_TEMPLATE("cuda ops: memory, fill, copy and convert", T, float, tim::bfloat16) {
  auto t = tim::Tensor<T, tim::cuda>::zeros({1000});
  for (float v : to_host(t.data(), 1000)) REQUIRE(v == 0.0f);
  tim::cuda::fill(t.data(), 1000, static_cast<T>(1.5f));
  const auto filled = to_host(t.data(), 1000);
  CHECK(filled.front() == 1.5f);
  CHECK(filled.back() == 1.5f);
  const auto values = random_values<T>(1000, 1);
  auto source = to_device<T>(values);
  auto copy = source.clone();
  CHECK(to_host(copy.data(), 1000) == values);
  auto as_double = tim::Tensor<double, tim::cuda>::empty({1000});
  tim::cuda::convert(as_double.data(), copy.data(), 1000);
  const auto doubles = to_host(as_double.data(), 1000);
  CHECK(doubles == values);
}

TEST_CASE_TEMPLATE("cuda ops: linear (cuBLAS) with and without bias, accumulate", T, float, tim::bfloat16) {
  struct Shape {
    std::int64_t rows, in, out;
  };
  for (const Shape s : {Shape{1, 256, 1152}, Shape{37, 1152, 3456}, Shape{256, 1152, 3072}, Shape{5, 3, 7}}) {
    CAPTURE(s.rows);
    CAPTURE(s.in);
    CAPTURE(s.out);
    const auto x = random_values<T>(s.rows * s.in, 2), w = random_values<T>(s.out * s.in, 3, 0.02);
    const auto bias = random_values<T>(s.out, 4), start = random_values<T>(s.rows * s.out, 5);
    auto dx = to_device<T>(x), dw = to_device<T>(w), db = to_device<T>(bias), dy = to_device<T>(start);
    const auto dstart = to_device<T>(start);
    for (bool with_bias : {false, true})
      for (bool accumulate : {false, true}) {
        CAPTURE(with_bias);
        CAPTURE(accumulate);
        auto expected = start;
        tim::cpu::linear_forward(expected.data(), x.data(), w.data(), with_bias ? bias.data() : nullptr, s.rows, s.in,
                                 s.out, accumulate);
        tim::cuda::copy(dy.data(), dstart.data(), start.size());
        tim::cuda::linear_forward(dy.data(), dx.data(), dw.data(), with_bias ? db.data() : nullptr, s.rows, s.in, s.out,
                                  accumulate);
        const auto actual = to_host(dy.data(), expected.size());
        TIM_CHECK_RELATIVE(actual, expected, tolerance<T>());
      }
  }
}

TEST_CASE_TEMPLATE("cuda ops: layernorm (CUB block reduction), affine or not, in place", T, float, tim::bfloat16) {
  for (std::int64_t cols : {1152, 72, 3, 1000}) {
    CAPTURE(cols);
    const std::int64_t rows = 9;
    const auto x = random_values<T>(rows * cols, 6, 3.0), w = random_values<T>(cols, 7), b = random_values<T>(cols, 8);
    auto dx = to_device<T>(x), dw = to_device<T>(w), db = to_device<T>(b);
    for (bool affine : {false, true}) {
      CAPTURE(affine);
      std::vector<float> expected(x.size());
      tim::cpu::layernorm_forward(expected.data(), x.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr,
                                  rows, cols, 1e-6);
      auto out = tim::Tensor<T, tim::cuda>::empty({rows * cols});
      tim::cuda::layernorm_forward(out.data(), dx.data(), affine ? dw.data() : nullptr, affine ? db.data() : nullptr,
                                   rows, cols, 1e-6);
      TIM_CHECK_RELATIVE(to_host(out.data(), x.size()), expected, tolerance<T>());
      auto in_place = dx.clone();
      tim::cuda::layernorm_forward(in_place.data(), in_place.data(), affine ? dw.data() : nullptr,
                                   affine ? db.data() : nullptr, rows, cols, 1e-6);
      TIM_CHECK_RELATIVE(to_host(in_place.data(), x.size()), expected, tolerance<T>());
    }
  }
}

TEST_CASE_TEMPLATE("cuda ops: element-wise operations", T, float, tim::bfloat16) {
  const std::int64_t B = 3, N = 20, D = 48, stride = 6 * D;

  SUBCASE("swiglu with strides and silu") {
    const std::int64_t rows = 7, cols = 33;
    const auto gate = random_values<T>(rows * 40, 9, 3.0), value = random_values<T>(rows * 50, 10);
    std::vector<float> expected(rows * cols);
    tim::cpu::swiglu_forward(expected.data(), gate.data(), value.data(), rows, cols, 40, 50);
    auto dg = to_device<T>(gate), dv = to_device<T>(value);
    auto out = tim::Tensor<T, tim::cuda>::empty({rows * cols});
    tim::cuda::swiglu_forward(out.data(), dg.data(), dv.data(), rows, cols, 40, 50);
    TIM_CHECK_RELATIVE(to_host(out.data(), expected.size()), expected, tolerance<T>());

    std::vector<float> silu(gate.size());
    tim::cpu::silu_forward(silu.data(), gate.data(), static_cast<std::int64_t>(gate.size()));
    tim::cuda::silu_forward(dg.data(), dg.data(), static_cast<std::int64_t>(gate.size()));
    TIM_CHECK_RELATIVE(to_host(dg.data(), gate.size()), silu, tolerance<T>());
  }

  SUBCASE("timestep features") {
    const auto s = tim_test::rounded<T>({0.0f, 0.5f, 1.0f, 0.031f});
    std::vector<float> expected(4 * 256);
    tim::cpu::timestep_features_forward(expected.data(), s.data(), 4);
    auto ds = to_device<T>(s);
    auto out = tim::Tensor<T, tim::cuda>::empty({4 * 256});
    tim::cuda::timestep_features_forward(out.data(), ds.data(), 4);
    TIM_CHECK_RELATIVE(to_host(out.data(), expected.size()), expected, tolerance<T>());
  }

  SUBCASE("modulate, gated residual, add, difference") {
    const auto x = random_values<T>(B * N * D, 11), modulation = random_values<T>(B * stride, 12);
    const auto update = random_values<T>(B * N * D, 13);
    auto expected = x;
    tim::cpu::modulate_forward(expected.data(), modulation.data(), modulation.data() + D, B, N, D, stride);
    auto dx = to_device<T>(x), dm = to_device<T>(modulation), du = to_device<T>(update);
    tim::cuda::modulate_forward(dx.data(), dm.data(), dm.data() + D, B, N, D, stride);
    TIM_CHECK_RELATIVE(to_host(dx.data(), x.size()), expected, tolerance<T>());

    auto residual = x;
    tim::cpu::gated_residual_forward(residual.data(), modulation.data() + 2 * D, update.data(), B, N, D, stride);
    auto dr = to_device<T>(x);
    tim::cuda::gated_residual_forward(dr.data(), dm.data() + 2 * D, du.data(), B, N, D, stride);
    TIM_CHECK_RELATIVE(to_host(dr.data(), x.size()), residual, tolerance<T>());

    auto sum = x;
    tim::cpu::add_forward(sum.data(), update.data(), static_cast<std::int64_t>(x.size()));
    auto ds = to_device<T>(x);
    tim::cuda::add_forward(ds.data(), du.data(), static_cast<std::int64_t>(x.size()));
    TIM_CHECK_RELATIVE(to_host(ds.data(), x.size()), sum, tolerance<T>());

    std::vector<float> difference(x.size());
    tim::cpu::difference_forward(difference.data(), x.data(), update.data(), static_cast<std::int64_t>(x.size()));
    auto dd = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(x.size())});
    const auto dx_again = to_device<T>(x);
    tim::cuda::difference_forward(dd.data(), dx_again.data(), du.data(), static_cast<std::int64_t>(x.size()));
    TIM_CHECK_RELATIVE(to_host(dd.data(), x.size()), difference, tolerance<T>());
  }

  SUBCASE("patchify, unpatchify, embedding: exact copies") {
    const std::int64_t C = 4, H = 8, W = 12, p = 2, tokens = B * (H / p) * (W / p);
    const auto x = random_values<T>(B * C * H * W, 14);
    std::vector<float> patches(tokens * C * p * p), image(x.size());
    tim::cpu::patchify_forward(patches.data(), x.data(), B, C, H, W, p);
    tim::cpu::unpatchify_forward(image.data(), patches.data(), B, C, H, W, p);
    auto dx = to_device<T>(x);
    auto dp = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(patches.size())});
    auto di = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(image.size())});
    tim::cuda::patchify_forward(dp.data(), dx.data(), B, C, H, W, p);
    tim::cuda::unpatchify_forward(di.data(), dp.data(), B, C, H, W, p);
    CHECK(to_host(dp.data(), patches.size()) == patches);
    CHECK(to_host(di.data(), image.size()) == image);

    const auto table = random_values<T>(11 * D, 15);
    std::vector<std::int64_t> labels(300);
    for (std::size_t b = 0; b < labels.size(); ++b) labels[b] = static_cast<std::int64_t>((b * 7) % 11);
    std::vector<float> rows(labels.size() * D);
    tim::cpu::embedding_forward(rows.data(), table.data(), labels.data(), static_cast<std::int64_t>(labels.size()), D);
    auto dt = to_device<T>(table);
    auto dr = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(rows.size())});
    tim::cuda::embedding_forward(dr.data(), dt.data(), labels.data(), static_cast<std::int64_t>(labels.size()), D);
    CHECK(to_host(dr.data(), rows.size()) == rows);
  }
}

TEST_CASE_TEMPLATE("cuda ops: qkv split and head split (qk-norm, rotary, scale)", T, float, tim::bfloat16) {
  for (std::int64_t head_dim : {8, 64, 72, 96, 128}) {
    CAPTURE(head_dim);
    const std::int64_t B = 2, heads = 3, dim = heads * head_dim, tokens = 12, grid_h = 3;
    const auto qkv = random_values<T>(B * tokens * 3 * dim, 16), bias = random_values<T>(B * 3 * dim, 17);
    const auto qw = random_values<T>(head_dim, 18), qb = random_values<T>(head_dim, 19);
    const auto kw = random_values<T>(head_dim, 20), kb = random_values<T>(head_dim, 21);
    std::vector<float> cos_table(tokens * head_dim / 2), sin_table(cos_table.size());
    for (std::int64_t n = 0; n < tokens; ++n)
      for (std::int64_t pair = 0; pair < head_dim / 2; ++pair) {
        const double angle = tim::math::rotary_angle<double>(n, grid_h, static_cast<int>(head_dim), static_cast<int>(pair));
        cos_table[n * (head_dim / 2) + pair] = static_cast<float>(static_cast<T>(static_cast<float>(std::cos(angle))));
        sin_table[n * (head_dim / 2) + pair] = static_cast<float>(static_cast<T>(static_cast<float>(std::sin(angle))));
      }
    const float scale = static_cast<float>(tim::nn::attention_query_scale<T>(head_dim));
    const std::size_t n = B * tokens * dim;
    std::vector<float> q(n), k(n), v(n);
    tim::cpu::qkv_split_forward(q.data(), k.data(), v.data(), qkv.data(), bias.data(), qw.data(), qb.data(), kw.data(),
                                kb.data(), 1e-5, cos_table.data(), sin_table.data(), B, tokens, heads, head_dim, scale);
    auto dqkv = to_device<T>(qkv), dbias = to_device<T>(bias), dqw = to_device<T>(qw), dqb = to_device<T>(qb);
    auto dkw = to_device<T>(kw), dkb = to_device<T>(kb), dcos = to_device<T>(cos_table), dsin = to_device<T>(sin_table);
    auto dq = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(n)});
    auto dk = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(n)});
    auto dv = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(n)});
    tim::cuda::qkv_split_forward(dq.data(), dk.data(), dv.data(), dqkv.data(), dbias.data(), dqw.data(), dqb.data(),
                                 dkw.data(), dkb.data(), 1e-5, dcos.data(), dsin.data(), B, tokens, heads, head_dim,
                                 static_cast<T>(scale));
    TIM_CHECK_RELATIVE(to_host(dq.data(), n), q, tolerance<T>());
    TIM_CHECK_RELATIVE(to_host(dk.data(), n), k, tolerance<T>());
    TIM_CHECK_RELATIVE(to_host(dv.data(), n), v, tolerance<T>());

    // Cross-attention's query (norm, rotary, scale) from a (rows, D) projection and its key
    // (norm only) from the first half of a fused (rows, 2D) one.
    std::vector<float> heads_out(n);
    tim::cpu::split_heads_forward(heads_out.data(), qkv.data(), 2 * dim, kw.data(), kb.data(), 1e-5, cos_table.data(),
                                  sin_table.data(), B, tokens, heads, head_dim, scale);
    tim::cuda::split_heads_forward(dq.data(), dqkv.data(), 2 * dim, dkw.data(), dkb.data(), 1e-5, dcos.data(),
                                   dsin.data(), B, tokens, heads, head_dim, static_cast<T>(scale));
    TIM_CHECK_RELATIVE(to_host(dq.data(), n), heads_out, tolerance<T>());
  }
}

TEST_CASE_TEMPLATE("cuda ops: attention, self and cross, never an N x N buffer", T, float, tim::bfloat16) {
  struct Case {
    std::int64_t batch, heads, queries, keys, head_dim;
  };
  for (const Case c : {Case{2, 3, 17, 17, 8}, Case{1, 16, 256, 256, 72}, Case{2, 12, 64, 64, 64}, Case{1, 2, 100, 100, 96},
                       Case{1, 2, 33, 33, 128}, Case{1, 1, 1, 1, 64}, Case{2, 4, 20, 77, 72}, Case{1, 3, 40, 1, 16},
                       Case{1, 2, 1024, 1024, 64}}) {
    CAPTURE(c.batch);
    CAPTURE(c.heads);
    CAPTURE(c.queries);
    CAPTURE(c.keys);
    CAPTURE(c.head_dim);
    const std::int64_t bh = c.batch * c.heads;
    const auto q = random_values<T>(bh * c.queries * c.head_dim, 22, 0.5);
    const auto k = random_values<T>(bh * c.keys * c.head_dim, 23);
    const auto v = random_values<T>(bh * c.keys * c.head_dim, 24);
    std::vector<float> expected(q.size());
    tim::cpu::attention_forward(expected.data(), q.data(), k.data(), v.data(), c.batch, c.heads, c.queries, c.keys,
                                c.head_dim, 1.0);
    auto dq = to_device<T>(q), dk = to_device<T>(k), dv = to_device<T>(v);
    auto out = tim::Tensor<T, tim::cuda>::empty({static_cast<std::int64_t>(q.size())});
    tim::cuda::attention_forward(out.data(), dq.data(), dk.data(), dv.data(), c.batch, c.heads, c.queries, c.keys,
                                 c.head_dim, 1.0);
    TIM_CHECK_RELATIVE(to_host(out.data(), expected.size()), expected, tolerance<T>());
  }
}

}  // TEST_SUITE
