// Configuration inference and loading errors: each malformed checkpoint or bad input gives a
// tim::Error that names the problem. Checkpoints are golden files rewritten with one change.
#include <doctest/doctest.h>

#include <functional>
#include <type_traits>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

using tim::io::SafetensorsFile;
using tim_test::error_of;
using tim_test::rewritten;

// The sampler names a model's element type and backend through these.
static_assert(std::is_same_v<tim::nn::C2IModel<float>::value_type, float>);
static_assert(std::is_same_v<tim::nn::C2IModel<double, tim::cpu>::value_type, double>);
static_assert(std::is_same_v<tim::nn::C2IModel<float>::backend, tim::cpu>);

TEST_CASE("configuration is read from shapes") {
  auto file = rewritten("square", {});
  const auto config = tim::nn::infer_c2i_config(file);
  CHECK(config.hidden == 32);
  CHECK(config.depth == 2);
  CHECK(config.num_heads == 2);
  CHECK(config.head_dim() == 16);
  CHECK(config.patch == 2);
  CHECK(config.in_channels == 4);
  CHECK(config.num_classes == 5);
  CHECK(config.mlp_hidden == (32 * 4 * 2) / 3);
  CHECK(config.qk_norm);
  CHECK(config.interval_qkv);
  CHECK(config.separate_delta_embedder);
  CHECK(config.provenance.at("num_heads") == "shapes");
}

TEST_CASE("heads without q_norm come from metadata or overrides, never guessed") {
  auto without = rewritten("plain", {.metadata = {{"num_heads", ""}}});
  CHECK(error_of([&] { tim::nn::infer_c2i_config(without); }).find("number of attention heads") != std::string::npos);
  tim::nn::ConfigOverrides overrides;
  overrides.num_heads = 4;
  const auto config = tim::nn::infer_c2i_config(without, overrides);
  CHECK(config.num_heads == 4);
  CHECK(config.provenance.at("num_heads") == "config");
  auto with = rewritten("plain", {});
  CHECK(tim::nn::infer_c2i_config(with).provenance.at("num_heads") == "metadata");
  overrides.num_heads = 3;  // 32 % 3 != 0
  CHECK(error_of([&] { tim::nn::infer_c2i_config(without, overrides); }).find("does not divide") != std::string::npos);
}

TEST_CASE("a num_heads contradicting q_norm's width is an error") {
  auto file = rewritten("square", {});
  tim::nn::ConfigOverrides overrides;
  overrides.num_heads = 4;
  CHECK(error_of([&] { tim::nn::infer_c2i_config(file, overrides); }).find("contradicts") != std::string::npos);
}

TEST_CASE("new_condition: metadata, override, default and bad spellings") {
  auto file = rewritten("square", {.metadata = {{"new_condition", ""}}});
  auto config = tim::nn::infer_c2i_config(file);
  CHECK(config.new_condition == tim::nn::NewCondition::t_minus_r);
  CHECK(config.provenance.at("new_condition").find("default") == 0);
  tim::nn::ConfigOverrides overrides;
  overrides.new_condition = "t, r";
  CHECK(tim::nn::infer_c2i_config(file, overrides).new_condition == tim::nn::NewCondition::t_r);
  auto bad = rewritten("square", {.metadata = {{"new_condition", "t+r"}}});
  CHECK(error_of([&] { tim::nn::infer_c2i_config(bad); }).find("unknown value 't+r'") != std::string::npos);
}

TEST_CASE("missing and unexpected tensors are named") {
  auto missing = rewritten("square", {.drop = [](const std::string& n) { return n == "blocks.1.attn.qkv_d.weight"; }});
  CHECK(error_of([&] { tim::nn::load_c2i<float>(missing); }).find("'blocks.1.attn.qkv_d.weight'") != std::string::npos);
  auto unknown = rewritten("square", {.extra = {{"pos_embed", tim::Shape{1, 16, 32}}}});
  CHECK(error_of([&] { tim::nn::load_c2i<float>(unknown); }).find("unexpected tensor 'pos_embed'") != std::string::npos);
  auto no_blocks = rewritten("square", {.drop = [](const std::string& n) { return n.rfind("blocks.", 0) == 0; }});
  CHECK(error_of([&] { tim::nn::load_c2i<float>(no_blocks); }).find("not a TiM checkpoint") != std::string::npos);
  auto wrong_shape = rewritten("square", {.drop = [](const std::string& n) { return n == "blocks.0.mlp.fc2.weight"; },
                                          .extra = {{"blocks.0.mlp.fc2.weight", tim::Shape{32, 84}}}});
  CHECK(error_of([&] { tim::nn::load_c2i<float>(wrong_shape); }).find("blocks.0.mlp.fc2.weight") != std::string::npos);
}

TEST_CASE("forward rejects bad inputs with the argument's name") {
  auto file = rewritten("square", {});
  auto model = tim::nn::load_c2i<float>(file);
  auto x = tim::Tensor<float>::zeros({2, 4, 8, 8});
  auto t = tim::Tensor<float>::zeros({2});
  auto r = tim::Tensor<float>::zeros({2});
  auto y = tim::Tensor<std::int64_t>::zeros({2});
  tim::Tensor<float> out;
  model.forward(out, x, t, r, y);
  CHECK(out.shape() == tim::Shape{2, 4, 8, 8});
  y.data()[1] = 6;  // 5 classes, 5 is the null class
  CHECK(error_of([&] { model.forward(out, x, t, r, y); }).find("label 6 at index 1") != std::string::npos);
  y.data()[1] = 5;
  model.forward(out, x, t, r, y);  // the null class is a valid label
  y.data()[0] = -1;
  CHECK(error_of([&] { model.forward(out, x, t, r, y); }).find("outside [0, 5]") != std::string::npos);
  y.data()[0] = 0;
  auto odd = tim::Tensor<float>::zeros({2, 4, 8, 7});
  CHECK(error_of([&] { model.forward(out, odd, t, r, y); }).find("multiples of the patch size 2") != std::string::npos);
  auto channels = tim::Tensor<float>::zeros({2, 3, 8, 8});
  CHECK(error_of([&] { model.forward(out, channels, t, r, y); }).find("expected 4 channels") != std::string::npos);
  auto short_t = tim::Tensor<float>::zeros({1});
  CHECK(error_of([&] { model.forward(out, x, short_t, r, y); }).find("input 't'") != std::string::npos);
}

TEST_CASE("weights are zero-copy views of the mapping when the dtype matches") {
  auto file = SafetensorsFile::open(tim_test::golden_path("square"));
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::load_c2i<double>(parameters);  // golden files are F64
  const auto bytes = file.bytes("blocks.0.attn.qkv.weight");
  CHECK(static_cast<const void*>(model.blocks[0].attn.qkv.weight.data()) == static_cast<const void*>(bytes.data()));
}
