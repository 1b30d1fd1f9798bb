// TiM networks whose linear weights are q8_0 (nn::WeightStorage::q8_0: int8 values and float16
// scales per 32 inputs, views of the mapping, multiplied by cpu_gemm::linear_forward_q8). The q8_0
// checkpoints are made here from the float64 golden C2I files (tests/data/golden) and a random T2I
// checkpoint: every matrix io::q8_0_eligible picks is quantised with the library's quantiser
// (tim::quantize_row_q8_0, itself tested in test_gemm_q8.cpp), everything else stored as float32.
// Beside each, the test writes the dequantised file itself (w = q * d computed here in double,
// every other tensor the same float32): loaded as a double network it is the reference (the double
// network matches the PyTorch float64 reference within 1e-10, test_c2i_golden.cpp).
//
// Error bound of the q8_0 network (u_f = 2^-24). The weights are exactly the reference's. What the
// kernel adds is the activations' quantisation: each block of 32 inputs x_b is replaced by
// q d_x with d_x = max|x_b| / 127 and |x_k - q_k d_x| <= d_x / 2 = max|x_b| / 254 (float scales,
// round to nearest); the int8 products and their int32 sums are exact, then each block's sum is
// scaled by d_x d_w and summed in float (gamma_{K/32+1} relative, far below 1/254). So, like a
// bfloat16 activation rounding (relative 2^-8 = 1/256 of each value), each linear layer adds to
// first order at most 1/254 relative to its block's largest input, and over the G linear layers
// on the longest chain of products (patch embedding excluded: a convolution kept as float32; 4
// per block on the token path, final; 2 embedder and 2 adaLN on the conditioning path), as in
// test_stored_weights.cpp's bfloat16 bound, the output is within G (1/254 + float criterion)
// of the largest output. And the error is larger than the float network's with the same
// (dequantised) weights, or the q8_0 path did not run.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "random_t2i_checkpoint.hpp"
#include "tim/core/cast.hpp"
#include "tim/io/convert.hpp"
#include "tim/tim.hpp"

namespace {

using tim::DType;
using tim::nn::WeightLoading;
using tim::nn::WeightStorage;

constexpr double float_criterion = 1e-4;  // the float golden tests' relative error

struct Q8Files {
  tim::io::SafetensorsFile q8;           // q8_0 matrices, the rest float32
  tim::io::SafetensorsFile dequantised;  // the same values, all float32
};

//! The q8_0 checkpoint of `source` and its dequantisation (file comment).
template <class Source>
Q8Files q8_files(const Source& source) {
  tim::io::SafetensorsWriter q8, dq;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& info : source.tensors()) {
    const auto values = source.template load<double>(info.name, info.shape);
    std::vector<float> f(static_cast<std::size_t>(values.numel()));
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(values.data()[i]);
    if (!tim::io::q8_0_eligible(info)) {
      q8.add(info.name, DType::F32, info.shape, f.data());
      dq.add(info.name, DType::F32, info.shape, f.data());
      continue;
    }
    const std::int64_t N = info.shape[0], K = info.shape[1], nb = tim::q8_0_blocks(K);
    std::vector<std::int8_t> q(f.size());
    std::vector<tim::float16> d(static_cast<std::size_t>(N * nb));
    for (std::int64_t n = 0; n < N; ++n) tim::quantize_row_q8_0(q.data() + n * K, d.data() + n * nb, f.data() + n * K, K);
    std::vector<float> w(f.size());
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < K; ++k)
        w[static_cast<std::size_t>(n * K + k)] = static_cast<float>(
            static_cast<double>(q[static_cast<std::size_t>(n * K + k)]) *
            static_cast<double>(static_cast<float>(d[static_cast<std::size_t>(n * nb + k / 32)])));
    q8.add(info.name, DType::I8, info.shape, q.data());
    q8.add(tim::io::q8_0_scale_name(info.name), DType::F16, {N, nb}, d.data());
    dq.add(info.name, DType::F32, info.shape, w.data());
    names.push_back(info.name);
  }
  q8.set_metadata(tim::io::quantization_key, "q8_0");
  q8.set_metadata(tim::io::q8_0_block_size_key, "32");
  q8.set_metadata(tim::io::q8_0_tensors_key, names.dump());
  return {tim::io::SafetensorsFile::from_bytes(q8.to_bytes(), "q8_0 checkpoint"),
          tim::io::SafetensorsFile::from_bytes(dq.to_bytes(), "dequantised checkpoint")};
}

//! `linear` (from tensor `name` of `file`) holds q8_0 views of the file's bytes and nothing in
//! float when the file's layout lists `name` (matrices with K < 32 are not quantised: float32).
//! Returns whether it was a q8_0 layer.
template <class Linear>
bool check_q8_view(const Linear& linear, const tim::io::SafetensorsFile& file, const std::string& name) {
  CAPTURE(name);
  CHECK(linear.weight_count() == linear.in_features * linear.out_features);
  if (!tim::io::read_q8_0_layout(file).contains(name)) {
    CHECK(linear.storage == WeightStorage::value);
    return false;
  }
  CHECK(linear.storage == WeightStorage::q8_0);
  CHECK(linear.weight.empty_tensor());
  CHECK(static_cast<const void*>(linear.weight_q8.q.data()) == static_cast<const void*>(file.bytes(name).data()));
  CHECK(static_cast<const void*>(linear.weight_q8.scales.data()) ==
        static_cast<const void*>(file.bytes(tim::io::q8_0_scale_name(name)).data()));
  return true;
}

//! Checks the views of the blocks, the final layer and the timestep embedder; returns how many of
//! them are q8_0 (at least one, or the file tests nothing).
template <class Model>
int check_block_views(const Model& model, const tim::io::SafetensorsFile& file) {
  int q8 = 0;
  for (std::size_t i = 0; i < model.blocks.size(); ++i) {
    const std::string b = "blocks." + std::to_string(i);
    const auto& block = model.blocks[i];
    q8 += check_q8_view(block.attn.qkv, file, b + ".attn.qkv.weight");
    q8 += check_q8_view(block.attn.proj, file, b + ".attn.proj.weight");
    q8 += check_q8_view(block.mlp.fc1_g, file, b + ".mlp.fc1_g.weight");
    q8 += check_q8_view(block.mlp.fc2, file, b + ".mlp.fc2.weight");
    q8 += check_q8_view(block.adaln.fc1_x, file, b + ".adaLN_modulation.fc1_x.weight");
  }
  q8 += check_q8_view(model.final_layer.linear, file, "final_layer.linear.weight");
  q8 += check_q8_view(model.t_embedder.linear_1, file, "t_embedder.mlp.0.weight");  // K = 256 features
  CHECK(model.x_embedder.proj.storage == WeightStorage::value);  // a convolution weight: not quantised
  CHECK(q8 > 0);
  return q8;
}

//! G, the linear layers on the longest chain of products (file comment).
std::int64_t chained_linears(std::int64_t depth) { return 1 + 4 * depth + 1 + 2 + 2; }

double q8_bound(std::int64_t G) { return static_cast<double>(G) * (1.0 / 254.0 + float_criterion); }

}  // namespace

TEST_CASE("q8_0 network: C2I golden networks from q8_0 checkpoints, views, against float64") {
  for (const std::string name : {"square", "nonsquare", "cond_t_r_tr", "patch4"}) {
    CAPTURE(name);
    const auto golden = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
    const auto files = q8_files(tim_test::ParametersOnly(golden));
    const auto reference = tim::nn::load_c2i<double>(files.dequantised);
    const auto reference_q8 = tim::nn::load_c2i<double>(files.q8);  // dequantised on load (T = double)
    const auto stored = tim::nn::load_c2i<float>(files.q8);
    const auto widened = tim::nn::load_c2i<float>(files.q8, {}, {.weights = WeightLoading::widened});
    check_block_views(stored, files.q8);
    CHECK(stored.config.ignored.empty());  // the scale tensors were consumed, not reported
    CHECK(reference_q8.blocks[0].attn.qkv.storage == WeightStorage::value);
    CHECK(widened.blocks[0].attn.qkv.storage == WeightStorage::value);
    CHECK(stored.parameter_count() == reference.parameter_count());

    const auto x = golden.load<double>("input.x"), t = golden.load<double>("input.t"), r = golden.load<double>("input.r");
    const auto y = golden.load<std::int64_t>("input.y");
    tim::Tensor<double> expected, expected_q8;
    reference.forward(expected, x, t, r, y);
    reference_q8.forward(expected_q8, x, t, r, y);
    const auto n = static_cast<std::size_t>(expected.numel());
    // The double network from the q8_0 file holds the dequantised values exactly: the same output.
    CHECK(tim_test::relative_error(expected_q8.data(), expected.data(), n) == 0.0);

    const auto xf = tim::cast<float>(x), tf = tim::cast<float>(t), rf = tim::cast<float>(r);
    tim::Tensor<float> out_q8, out_widened;
    stored.forward(out_q8, xf, tf, rf, y);
    widened.forward(out_widened, xf, tf, rf, y);
    const double e_q8 = tim_test::relative_error(out_q8.data(), expected.data(), n);
    const double e_widened = tim_test::relative_error(out_widened.data(), expected.data(), n);
    const double bound = q8_bound(chained_linears(stored.config.depth));
    MESSAGE("C2I ", name, " q8_0 (", tim::cpu_gemm::q8_variant_name(tim::cpu_gemm::q8_kernel().variant), "): ", e_q8,
            " (bound ", bound, "), dequantised float: ", e_widened, " (relative to the largest output)");
    CHECK(e_widened <= float_criterion);
    CHECK(e_q8 <= bound);
    CHECK(e_q8 > e_widened);
  }
}

TEST_CASE("q8_0 network: T2I from a q8_0 checkpoint, views, against float64") {
  const auto config = tim_test::t2i_config(64, 2, 4, 2, 4, 24, 32);
  const auto files = q8_files(tim_test::random_t2i_checkpoint(config, 5));
  const auto reference = tim::nn::load_t2i<double>(files.dequantised);
  const auto stored = tim::nn::load_t2i<float>(files.q8);
  const auto widened = tim::nn::load_t2i<float>(files.q8, {}, {.weights = WeightLoading::widened});
  check_block_views(stored, files.q8);
  for (std::size_t i = 0; i < stored.blocks.size(); ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".cross_attn";
    check_q8_view(stored.blocks[i].cross_attn.q, files.q8, b + ".q.weight");
    check_q8_view(stored.blocks[i].cross_attn.kv, files.q8, b + ".kv.weight");
  }
  CHECK(stored.config.ignored.empty());

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
  tim::Tensor<float> out_q8, out_widened;
  stored.forward(out_q8, xf, tf, rf, cf);
  widened.forward(out_widened, xf, tf, rf, cf);
  const auto n = static_cast<std::size_t>(expected.numel());
  const double e_q8 = tim_test::relative_error(out_q8.data(), expected.data(), n);
  const double e_widened = tim_test::relative_error(out_widened.data(), expected.data(), n);
  // The caption path adds the caption embedder's 3 and the cross-attention's q/kv and proj per block.
  const double bound = q8_bound(chained_linears(config.depth) + 3 + 3 * config.depth);
  MESSAGE("T2I q8_0: ", e_q8, " (bound ", bound, "), dequantised float: ", e_widened);
  CHECK(e_widened <= float_criterion);
  CHECK(e_q8 <= bound);
  CHECK(e_q8 > e_widened);
}

TEST_CASE("q8_0 network: training refuses q8_0 weights; widened ones train") {
  const auto golden = tim::io::SafetensorsFile::open(tim_test::golden_path("square"));
  const auto files = q8_files(tim_test::ParametersOnly(golden));
  const auto stored = tim::nn::load_c2i<float>(files.q8);
  CHECK_THROWS_WITH_AS(tim::nn::clone_parameters(stored), doctest::Contains("q8_0"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::nn::zero_gradients_like(stored), doctest::Contains("WeightLoading::widened"), tim::Error);
  const auto widened = tim::nn::load_c2i<float>(files.q8, {}, {.weights = WeightLoading::widened});
  CHECK_NOTHROW(tim::nn::clone_parameters(widened));
}
