// TiM networks whose linear weights stay in the checkpoint's dtype (nn::WeightStorage, bfloat16 and
// float16 views of the mapping, tim/nn/modules.hpp). The 16-bit checkpoints are made here from the
// float64 golden C2I files (tests/data/golden) and a random T2I checkpoint, every value rounded to
// the 16-bit type; the reference is the same rounded file loaded as a double network (the 16-bit
// values widen exactly; the double network matches the PyTorch float64 reference within 1e-10,
// test_c2i_golden.cpp), and the float network with the rounded weights widened on load.
//
// Error bounds (u_f = 2^-24, u_b = 2^-8, gamma_n = n u_f / (1 - n u_f); S = sum_k |x_k||w_k| + |b|):
//  - one Linear, float32 precision: the stored and the widened weights hold the same values, so
//    both outputs are float sums of the same K + 1 terms in different orders (panels, sgemv vs
//    sgemm): each within gamma_{K+1} S of the exact sum, so within 2 gamma_{K+1} S of each other.
//  - one Linear, bfloat16 precision: the activations are rounded (relative u_b each), the products
//    exact, the sums in float: within u_b S + gamma_{K+1} (1 + u_b) S of the exact sum.
//  - whole network, float32 precision: a float forward of the same weights, held to the float
//    golden criterion (max |out - out_double| <= 1e-4 max |out_double|, test_c2i_golden.cpp).
//  - whole network, bfloat16 precision: to first order each of the G linear layers on the longest
//    chain of products (patch embedding, 4 per block on the token path, final; 2 embedder and 2
//    adaLN on the conditioning path that modulates them) adds at most u_b relative, so
//    G u_b of the largest output; and more than the float criterion, or the bfloat16 path did not run.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "random_t2i_checkpoint.hpp"
#include "tim/core/cast.hpp"
#include "tim/tim.hpp"

namespace {

using tim::DType;
using tim::nn::LoadOptions;
using tim::nn::WeightLoading;
using tim::nn::WeightStorage;

constexpr double float_criterion = 1e-4;  // the float golden tests' relative error

//! `source`'s tensors with every floating value rounded to `dtype` (BF16 or F16) and stored so,
//! except the tensors `keep_float` names, stored as F32.
template <class Source>
tim::io::SafetensorsFile rounded_checkpoint(const Source& source, DType dtype,
                                            const std::function<bool(const std::string&)>& keep_float = {}) {
  tim::io::SafetensorsWriter writer;
  for (const auto& [key, value] : source.metadata()) writer.set_metadata(key, value);
  for (const auto& info : source.tensors()) {
    const auto values = source.template load<double>(info.name, info.shape);
    const auto n = static_cast<std::size_t>(values.numel());
    if (keep_float && keep_float(info.name)) {
      std::vector<float> f(n);
      for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<float>(values.data()[i]);
      writer.add(info.name, DType::F32, info.shape, f.data());
      continue;
    }
    std::vector<std::uint16_t> bits(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto v = static_cast<float>(values.data()[i]);
      bits[i] = dtype == DType::BF16 ? tim::bfloat16::from_float(v) : tim::float16::from_float(v);
    }
    writer.add(info.name, dtype, info.shape, bits.data());
  }
  return tim::io::SafetensorsFile::from_bytes(writer.to_bytes(), "rounded checkpoint");
}

//! The 16-bit member a Linear holds for `dtype`.
template <class Linear>
const void* stored_data(const Linear& linear, DType dtype) {
  return dtype == DType::BF16 ? static_cast<const void*>(linear.weight_bf16.data())
                              : static_cast<const void*>(linear.weight_f16.data());
}

//! Checks that `linear` (loaded from tensor `name` of `file`) holds its weight as a view of the
//! file's bytes in `dtype`, and nothing in float.
template <class Linear>
void check_view(const Linear& linear, const tim::io::SafetensorsFile& file, const std::string& name, DType dtype) {
  CAPTURE(name);
  CHECK(linear.storage == (dtype == DType::BF16 ? WeightStorage::bfloat16 : WeightStorage::float16));
  CHECK(linear.weight.empty_tensor());
  CHECK(stored_data(linear, dtype) == static_cast<const void*>(file.bytes(name).data()));
}

//! The stored weights of the blocks and the final layer are views; the patch embedding (a
//! convolution weight, loaded as T) is float.
template <class Model>
void check_block_views(const Model& model, const tim::io::SafetensorsFile& file, DType dtype) {
  for (std::size_t i = 0; i < model.blocks.size(); ++i) {
    const std::string b = "blocks." + std::to_string(i);
    const auto& block = model.blocks[i];
    check_view(block.attn.qkv, file, b + ".attn.qkv.weight", dtype);
    check_view(block.attn.proj, file, b + ".attn.proj.weight", dtype);
    check_view(block.mlp.fc1_g, file, b + ".mlp.fc1_g.weight", dtype);
    check_view(block.mlp.fc2, file, b + ".mlp.fc2.weight", dtype);
    check_view(block.adaln.fc1_x, file, b + ".adaLN_modulation.fc1_x.weight", dtype);
  }
  check_view(model.final_layer.linear, file, "final_layer.linear.weight", dtype);
  CHECK(model.x_embedder.proj.storage == WeightStorage::value);
}

//! G, the linear layers on the longest chain of products (see the header).
std::int64_t chained_linears(std::int64_t depth) { return 1 + 4 * depth + 1 + 2 + 2; }

}  // namespace

TEST_CASE_TEMPLATE("stored weights: one Linear with 16-bit weights against the widened one and float64", W,
                   tim::bfloat16, tim::float16) {
  const DType dtype = tim::dtype_of<W>();
  // K past a panel depth (512) and odd, N past a panel (256); 1 row (sgemv) and 7 (sgemm).
  const std::int64_t K = 613, N = 301;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<W> w(static_cast<std::size_t>(N * K));
  std::vector<double> w_exact(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) {
    w[i] = W(normal(rng) * 0.05f);
    w_exact[i] = static_cast<float>(w[i]);
  }
  std::vector<float> bias(static_cast<std::size_t>(N));
  for (auto& v : bias) v = normal(rng);
  tim::io::SafetensorsWriter writer;
  writer.add("layer.weight", dtype, {N, K}, w.data());
  writer.add("layer.bias", DType::F32, {N}, bias.data());
  const auto file = tim::io::SafetensorsFile::from_bytes(writer.to_bytes(), "one linear");

  const auto load = [&](const LoadOptions& options) {
    tim::nn::ParameterReader<tim::io::SafetensorsFile> reader{file, {}, options};
    tim::nn::Linear<float, tim::cpu> linear;
    linear.load(reader, "layer", K, N);
    return linear;
  };
  const auto stored = load({});
  const auto widened = load({.weights = WeightLoading::widened});
  CHECK(stored.storage == (dtype == DType::BF16 ? WeightStorage::bfloat16 : WeightStorage::float16));
  CHECK(stored_data(stored, dtype) == static_cast<const void*>(file.bytes("layer.weight").data()));
  CHECK(widened.storage == WeightStorage::value);
  CHECK(widened.weight.numel() == N * K);
  CHECK(stored.parameter_count() == widened.parameter_count());

  const double gamma = (K + 1) * std::ldexp(1.0, -24) / (1.0 - (K + 1) * std::ldexp(1.0, -24));
  for (const std::int64_t rows : {1, 7}) {
    CAPTURE(rows);
    std::vector<float> x(static_cast<std::size_t>(rows * K));
    for (auto& v : x) v = normal(rng);
    std::vector<float> a(static_cast<std::size_t>(rows * N)), b(a.size());
    stored.forward(a.data(), x.data(), rows);
    widened.forward(b.data(), x.data(), rows);
    int failures = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t n = 0; n < N; ++n) {
        double exact = bias[static_cast<std::size_t>(n)], S = std::abs(exact);
        for (std::int64_t k = 0; k < K; ++k) {
          const double p = static_cast<double>(x[static_cast<std::size_t>(r * K + k)]) *
                           w_exact[static_cast<std::size_t>(n * K + k)];
          exact += p;
          S += std::abs(p);
        }
        const auto i = static_cast<std::size_t>(r * N + n);
        if (!(std::abs(a[i] - exact) <= gamma * S) || !(std::abs(a[i] - b[i]) <= 2 * gamma * S)) ++failures;
      }
    CHECK(failures == 0);
  }
}

TEST_CASE("stored weights: one Linear with bfloat16 weights in bfloat16 precision against float64") {
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (!kernel.available) {
    MESSAGE("skipped: stored weights in bfloat16 precision (oneDNN matmul): ", kernel.reason);
    return;
  }
  const std::int64_t K = 613, N = 301, rows = 7;
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<tim::bfloat16> w(static_cast<std::size_t>(N * K));
  for (auto& v : w) v = tim::bfloat16(normal(rng) * 0.05f);
  tim::io::SafetensorsWriter writer;
  writer.add("layer.weight", DType::BF16, {N, K}, w.data());
  const auto file = tim::io::SafetensorsFile::from_bytes(writer.to_bytes(), "one linear");
  tim::nn::ParameterReader<tim::io::SafetensorsFile> reader{file, {}, {.precision = tim::Precision::bfloat16}};
  tim::nn::Linear<float, tim::cpu> linear;
  linear.load(reader, "layer", K, N, /*with_bias=*/false);
  REQUIRE(linear.precision == tim::Precision::bfloat16);
  std::vector<float> x(static_cast<std::size_t>(rows * K)), y(static_cast<std::size_t>(rows * N));
  for (auto& v : x) v = normal(rng);
  linear.forward(y.data(), x.data(), rows);
  const double u_b = std::ldexp(1.0, -8);
  const double gamma = K * std::ldexp(1.0, -24) / (1.0 - K * std::ldexp(1.0, -24));
  int failures = 0, rounded = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t n = 0; n < N; ++n) {
      double exact = 0, S = 0, of_rounded = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        const float xk = x[static_cast<std::size_t>(r * K + k)];
        const double wk = static_cast<float>(w[static_cast<std::size_t>(n * K + k)]);
        exact += xk * wk;
        of_rounded += static_cast<double>(static_cast<float>(tim::bfloat16(xk))) * wk;
        S += std::abs(xk * wk);
      }
      const double got = y[static_cast<std::size_t>(r * N + n)];
      if (!(std::abs(got - exact) <= u_b * S + gamma * (1 + u_b) * S)) ++failures;
      // The rounded activations' sum is what ran (float sums of exact products).
      if (std::abs(got - of_rounded) <= gamma * (1 + u_b) * S) ++rounded;
    }
  CHECK(failures == 0);
  CHECK(rounded == rows * N);
}

TEST_CASE_TEMPLATE("stored weights: C2I golden networks from 16-bit checkpoints, views, against float64", W,
                   tim::bfloat16, tim::float16) {
  const DType dtype = tim::dtype_of<W>();
  for (const std::string name : {"square", "nonsquare", "cond_t_r_tr", "patch4"}) {
    CAPTURE(name);
    const auto golden = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
    const tim_test::ParametersOnly parameters(golden);
    const auto file = rounded_checkpoint(parameters, dtype);
    const auto reference = tim::nn::load_c2i<double>(file);  // the rounded values, exactly
    const auto stored = tim::nn::load_c2i<float>(file);
    const auto widened = tim::nn::load_c2i<float>(file, {}, {.weights = WeightLoading::widened});
    check_block_views(stored, file, dtype);
    CHECK(widened.blocks[0].attn.qkv.storage == WeightStorage::value);
    CHECK(stored.parameter_count() == reference.parameter_count());

    const auto x = golden.load<double>("input.x"), t = golden.load<double>("input.t"), r = golden.load<double>("input.r");
    const auto y = golden.load<std::int64_t>("input.y");
    tim::Tensor<double> expected;
    reference.forward(expected, x, t, r, y);
    const auto xf = tim::cast<float>(x), tf = tim::cast<float>(t), rf = tim::cast<float>(r);
    tim::Tensor<float> out_stored, out_widened;
    stored.forward(out_stored, xf, tf, rf, y);
    widened.forward(out_widened, xf, tf, rf, y);
    const auto n = static_cast<std::size_t>(expected.numel());
    const double e_stored = tim_test::relative_error(out_stored.data(), expected.data(), n);
    const double e_widened = tim_test::relative_error(out_widened.data(), expected.data(), n);
    const double e_between = tim_test::relative_error(out_stored.data(), out_widened.data(), n);
    MESSAGE("C2I ", name, " ", tim::dtype_name(dtype), " stored: ", e_stored, " widened: ", e_widened,
            " between: ", e_between, " (relative to the largest output)");
    CHECK(e_stored <= float_criterion);
    CHECK(e_widened <= float_criterion);
    CHECK(e_between <= 2 * float_criterion);
    // The rounding made a different network: the 16-bit file is not a copy of the float64 one.
    tim::Tensor<double> unrounded;
    tim::nn::load_c2i<double>(parameters).forward(unrounded, x, t, r, y);
    CHECK(tim_test::relative_error(unrounded.data(), expected.data(), n) > 1e-6);
  }
}

TEST_CASE("stored weights: a mixed checkpoint keeps each tensor's own dtype") {
  const auto golden = tim::io::SafetensorsFile::open(tim_test::golden_path("square"));
  const tim_test::ParametersOnly parameters(golden);
  const auto file = rounded_checkpoint(parameters, DType::BF16, [](const std::string& n) {
    return n.rfind("final_layer.", 0) == 0 || n.rfind("t_embedder.", 0) == 0;
  });
  const auto stored = tim::nn::load_c2i<float>(file);
  CHECK(stored.final_layer.linear.storage == WeightStorage::value);
  CHECK(static_cast<const void*>(stored.final_layer.linear.weight.data()) ==
        static_cast<const void*>(file.bytes("final_layer.linear.weight").data()));  // a float view
  CHECK(stored.t_embedder.linear_1.storage == WeightStorage::value);
  check_view(stored.blocks[0].attn.qkv, file, "blocks.0.attn.qkv.weight", DType::BF16);
  const auto reference = tim::nn::load_c2i<double>(file);
  const auto x = golden.load<double>("input.x"), t = golden.load<double>("input.t"), r = golden.load<double>("input.r");
  const auto y = golden.load<std::int64_t>("input.y");
  tim::Tensor<double> expected;
  reference.forward(expected, x, t, r, y);
  tim::Tensor<float> out;
  stored.forward(out, tim::cast<float>(x), tim::cast<float>(t), tim::cast<float>(r), y);
  CHECK(tim_test::relative_error(out.data(), expected.data(), static_cast<std::size_t>(out.numel())) <= float_criterion);
}

TEST_CASE("stored weights: C2I in bfloat16 precision against float64") {
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (!kernel.available) {
    MESSAGE("skipped: C2I with bfloat16 weights in bfloat16 precision (oneDNN matmul): ", kernel.reason);
    return;
  }
  for (const std::string name : {"square", "nonsquare"}) {
    CAPTURE(name);
    const auto golden = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
    const auto file = rounded_checkpoint(tim_test::ParametersOnly(golden), DType::BF16);
    const auto reference = tim::nn::load_c2i<double>(file);
    const auto model = tim::nn::load_c2i<float>(file, {}, {.precision = tim::Precision::bfloat16});
    check_block_views(model, file, DType::BF16);
    CHECK(model.blocks[0].attn.qkv.precision == tim::Precision::bfloat16);
    const auto x = golden.load<double>("input.x"), t = golden.load<double>("input.t"), r = golden.load<double>("input.r");
    const auto y = golden.load<std::int64_t>("input.y");
    tim::Tensor<double> expected;
    reference.forward(expected, x, t, r, y);
    tim::Tensor<float> out;
    model.forward(out, tim::cast<float>(x), tim::cast<float>(t), tim::cast<float>(r), y);
    const double error = tim_test::relative_error(out.data(), expected.data(), static_cast<std::size_t>(out.numel()));
    const double bound = static_cast<double>(chained_linears(model.config.depth)) * std::ldexp(1.0, -8);
    MESSAGE("C2I ", name, " bfloat16 precision: relative error ", error, " (bound ", bound, ", ", kernel.name, ")");
    CHECK(error <= bound);
    CHECK(error > float_criterion);
  }
}

TEST_CASE_TEMPLATE("stored weights: T2I from 16-bit checkpoints, views, against float64", W, tim::bfloat16,
                   tim::float16) {
  const DType dtype = tim::dtype_of<W>();
  const auto config = tim_test::t2i_config(64, 2, 4, 2, 4, 24, 32);
  const auto random = tim_test::random_t2i_checkpoint(config, 5);
  const auto file = rounded_checkpoint(random, dtype);
  const auto reference = tim::nn::load_t2i<double>(file);
  const auto stored = tim::nn::load_t2i<float>(file);
  const auto widened = tim::nn::load_t2i<float>(file, {}, {.weights = WeightLoading::widened});
  check_block_views(stored, file, dtype);
  for (std::size_t i = 0; i < stored.blocks.size(); ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".cross_attn";
    check_view(stored.blocks[i].cross_attn.q, file, b + ".q.weight", dtype);
    check_view(stored.blocks[i].cross_attn.kv, file, b + ".kv.weight", dtype);
  }
  check_view(stored.y_embedder.mlp.fc1_g, file, "y_embedder.mlp.fc1_g.weight", dtype);

  const std::int64_t B = 2, M = 5;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto x = tim::Tensor<double>::empty({B, 4, 8, 8});
  auto caption = tim::Tensor<double>::empty({B, M, config.caption_dim});
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = normal(rng);
  for (std::int64_t i = 0; i < caption.numel(); ++i) caption.data()[i] = normal(rng);
  auto t = tim::Tensor<double>::empty({B}), r = tim::Tensor<double>::empty({B});
  t.data()[0] = 0.9, t.data()[1] = 0.4, r.data()[0] = 0.3, r.data()[1] = 0.1;
  tim::Tensor<double> expected;
  reference.forward(expected, x, t, r, caption);
  const auto xf = tim::cast<float>(x), tf = tim::cast<float>(t), rf = tim::cast<float>(r);
  const auto cf = tim::cast<float>(caption);
  tim::Tensor<float> out_stored, out_widened;
  stored.forward(out_stored, xf, tf, rf, cf);
  widened.forward(out_widened, xf, tf, rf, cf);
  const auto n = static_cast<std::size_t>(expected.numel());
  const double e_stored = tim_test::relative_error(out_stored.data(), expected.data(), n);
  const double e_widened = tim_test::relative_error(out_widened.data(), expected.data(), n);
  MESSAGE("T2I ", tim::dtype_name(dtype), " stored: ", e_stored, " widened: ", e_widened);
  CHECK(e_stored <= float_criterion);
  CHECK(e_widened <= float_criterion);

  if (dtype == DType::BF16) {
    const auto& kernel = tim::cpu_gemm::bf16_kernel();
    if (!kernel.available) {
      MESSAGE("skipped: T2I with bfloat16 weights in bfloat16 precision (oneDNN matmul): ", kernel.reason);
      return;
    }
    const auto fast = tim::nn::load_t2i<float>(file, {}, {.precision = tim::Precision::bfloat16});
    tim::Tensor<float> out;
    fast.forward(out, xf, tf, rf, cf);
    const double error = tim_test::relative_error(out.data(), expected.data(), n);
    // The caption path adds the caption embedder's 3 and the cross-attention's q/kv and proj per block.
    const double bound = static_cast<double>(chained_linears(config.depth) + 3 + 3 * config.depth) * std::ldexp(1.0, -8);
    MESSAGE("T2I bfloat16 precision: relative error ", error, " (bound ", bound, ")");
    CHECK(error <= bound);
    CHECK(error > float_criterion);
  }
}

TEST_CASE("stored weights: training refuses a network whose weights are held as stored") {
  const auto golden = tim::io::SafetensorsFile::open(tim_test::golden_path("square"));
  const auto file = rounded_checkpoint(tim_test::ParametersOnly(golden), DType::BF16);
  const auto stored = tim::nn::load_c2i<float>(file);
  CHECK_THROWS_WITH_AS(tim::nn::clone_parameters(stored), doctest::Contains("WeightLoading::widened"), tim::Error);
  const auto widened = tim::nn::load_c2i<float>(file, {}, {.weights = WeightLoading::widened});
  CHECK_NOTHROW(tim::nn::clone_parameters(widened));
}
