// T2I configuration inference, model-kind detection and loading errors; forward's input
// validation; the hint a PyTorch checkpoint (the released t2i_model.bin) gets.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <type_traits>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

using tim_test::error_of;

static_assert(std::is_same_v<tim::nn::T2IModel<float>::value_type, float>);
static_assert(std::is_same_v<tim::nn::T2IModel<double, tim::cpu>::value_type, double>);
static_assert(std::is_same_v<tim::nn::T2IModel<float>::backend, tim::cpu>);

namespace {

tim::io::SafetensorsFile t2i(const std::string& name, const tim_test::Edit& edit = {}) {
  return tim_test::rewritten(name, edit, "golden_t2i");
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("T2I configuration is read from shapes") {
  const auto config = tim::nn::infer_t2i_config(t2i("square"));
  CHECK(config.hidden == 16);
  CHECK(config.depth == 2);
  CHECK(config.num_heads == 2);
  CHECK(config.head_dim() == 8);
  CHECK(config.patch == 2);
  CHECK(config.in_channels == 4);
  CHECK(config.out_channels == 4);
  CHECK(config.caption_dim == 24);
  CHECK(config.caption_hidden == 64);
  CHECK(config.adaln_hidden == 8);
  CHECK(config.mlp_hidden == (16 * 4 * 2) / 3);
  CHECK(config.qk_norm);
  CHECK(config.cross_qk_norm);
  CHECK(config.interval_qkv);
  CHECK(config.separate_delta_embedder);
  CHECK(config.provenance.at("num_heads") == "shapes");
  CHECK(contains(config.describe(), "T2I TiM: C=4 out=4 D=16 depth=2 heads=2 hd=8 p=2 cap_dim=24"));

  const auto plain = tim::nn::infer_t2i_config(t2i("plain"));
  CHECK(plain.num_heads == 4);
  CHECK(plain.provenance.at("num_heads") == "metadata");
  CHECK(!plain.qk_norm);
  CHECK(!plain.cross_qk_norm);
  CHECK(!plain.interval_qkv);
  CHECK(!plain.separate_delta_embedder);
  CHECK(plain.caption_dim == 12);
}

TEST_CASE("heads come from the cross-attention's q_norm when self-attention has none") {
  auto file = t2i("square", {.drop = [](const std::string& n) { return contains(n, ".attn.q_norm.") || contains(n, ".attn.k_norm."); },
                             .metadata = {{"num_heads", ""}}});
  // blocks.*.attn.q_norm dropped, cross_attn.q_norm kept ("cross_attn.q_norm" does not contain ".attn.q_norm.").
  const auto config = tim::nn::infer_t2i_config(file);
  CHECK(!config.qk_norm);
  CHECK(config.cross_qk_norm);
  CHECK(config.num_heads == 2);
  CHECK(config.provenance.at("num_heads") == "shapes");
  tim::nn::load_t2i<float>(file);  // loads: self-attention without norms, cross-attention with
}

TEST_CASE("the model kind is told by tensor names, and each loader refuses the other kind") {
  auto t2i_file = t2i("square");
  auto c2i_file = tim_test::rewritten("square", {});
  CHECK(tim::nn::detect_model_kind(t2i_file) == tim::nn::ModelKind::t2i);
  CHECK(tim::nn::detect_model_kind(c2i_file) == tim::nn::ModelKind::c2i);
  CHECK(tim::detect_model_kind(tim_test::golden_path("square", "golden_t2i")) == tim::nn::ModelKind::t2i);
  CHECK(contains(error_of([&] { tim::nn::load_c2i<float>(t2i_file); }), "load it with load_t2i"));
  CHECK(contains(error_of([&] { tim::nn::load_t2i<float>(c2i_file); }), "load it with load_c2i"));
  CHECK(contains(error_of([&] { tim::load_t2i<float>(tim_test::golden_path("square")); }), "load it with load_c2i"));
}

TEST_CASE("T2I: missing, unexpected and misshapen tensors are named") {
  auto missing = t2i("square", {.drop = [](const std::string& n) { return n == "blocks.1.cross_attn.kv.weight"; }});
  CHECK(contains(error_of([&] { tim::nn::load_t2i<float>(missing); }), "'blocks.1.cross_attn.kv.weight'"));
  auto no_norm = t2i("square", {.drop = [](const std::string& n) { return n == "blocks.0.cross_attn.k_norm.bias"; }});
  CHECK(contains(error_of([&] { tim::nn::load_t2i<float>(no_norm); }), "'blocks.0.cross_attn.k_norm.bias'"));
  auto no_caption = t2i("square", {.drop = [](const std::string& n) { return n.rfind("y_embedder.mlp.", 0) == 0; }});
  CHECK(contains(error_of([&] { tim::nn::load_t2i<float>(no_caption); }), "'y_embedder.mlp.fc1_g.weight'"));
  auto unknown = t2i("square", {.extra = {{"pos_embed", tim::Shape{1, 16, 16}}}});
  const auto unexpected = error_of([&] { tim::nn::load_t2i<float>(unknown); });
  CHECK(contains(unexpected, "unexpected tensor 'pos_embed'"));
  CHECK(contains(unexpected, "text-to-image TiM"));
  // A C2I-style block (6 modulation chunks) in a T2I checkpoint.
  auto six_chunks = t2i("square", {.drop = [](const std::string& n) { return n == "blocks.0.adaLN_modulation.fc2.weight"; },
                                   .extra = {{"blocks.0.adaLN_modulation.fc2.weight", tim::Shape{6 * 16, 8}}}});
  const auto chunks = error_of([&] { tim::nn::load_t2i<float>(six_chunks); });
  CHECK(contains(chunks, "blocks.0.adaLN_modulation.fc2.weight"));
  CHECK(contains(chunks, "[144, 8]"));
}

TEST_CASE("T2I forward rejects bad inputs with the argument's name") {
  auto file = t2i("square");
  auto model = tim::nn::load_t2i<float>(file);
  auto x = tim::Tensor<float>::zeros({2, 4, 8, 8});
  auto t = tim::Tensor<float>::zeros({2});
  auto r = tim::Tensor<float>::zeros({2});
  auto captions = tim::Tensor<float>::zeros({2, 5, 24});
  tim::Tensor<float> out;
  model.forward(out, x, t, r, captions);
  CHECK(out.shape() == tim::Shape{2, 4, 8, 8});
  auto wrong_width = tim::Tensor<float>::zeros({2, 5, 23});
  const auto width = error_of([&] { model.forward(out, x, t, r, wrong_width); });
  CHECK(contains(width, "input 'cap_feats'"));
  CHECK(contains(width, "cap_dim = 24, got 23"));
  auto wrong_batch = tim::Tensor<float>::zeros({3, 5, 24});
  CHECK(contains(error_of([&] { model.forward(out, x, t, r, wrong_batch); }), "expected 2 captions"));
  auto flat = tim::Tensor<float>::zeros({2, 24});
  CHECK(contains(error_of([&] { model.forward(out, x, t, r, flat); }), "expected shape [B, M, cap_dim] = [2, M, 24]"));
  auto empty = tim::Tensor<float>::zeros({2, 0, 24});
  CHECK(contains(error_of([&] { model.forward(out, x, t, r, empty); }), "M >= 1"));
  auto odd = tim::Tensor<float>::zeros({2, 4, 8, 7});
  CHECK(contains(error_of([&] { model.forward(out, odd, t, r, captions); }), "multiples of the patch size 2"));
  auto channels = tim::Tensor<float>::zeros({2, 3, 8, 8});
  CHECK(contains(error_of([&] { model.forward(out, channels, t, r, captions); }), "expected 4 channels"));
  auto short_r = tim::Tensor<float>::zeros({1});
  CHECK(contains(error_of([&] { model.forward(out, x, t, short_r, captions); }), "input 'r'"));
}

TEST_CASE("T2I weights are zero-copy views of the mapping when the dtype matches") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("square", "golden_t2i"));
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::load_t2i<double>(parameters);
  const auto bytes = file.bytes("blocks.1.cross_attn.kv.weight");
  CHECK(static_cast<const void*>(model.blocks[1].cross_attn.kv.weight.data()) == static_cast<const void*>(bytes.data()));
  CHECK(model.parameter_count() > 0);
}

TEST_CASE("opening a PyTorch checkpoint says how to convert it") {
  const auto directory = std::filesystem::temp_directory_path();
  const std::pair<std::string, std::string> files[] = {
      {"tim_test_zip.bin", std::string("PK\x03\x04\x14\x00\x00\x00\x08\x00", 10) + std::string(200, 'x')},
      {"tim_test_pickle.bin", std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8", 12) + std::string(200, 'x')},
  };
  for (const auto& [name, bytes] : files) {
    const auto path = (directory / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    const auto message = error_of([&] { tim::io::SafetensorsFile::open(path); });
    std::remove(path.c_str());
    CAPTURE(message);
    CHECK(contains(message, "is a PyTorch checkpoint"));
    CHECK(contains(message, "tools/convert_t2i_checkpoint.py"));
  }
}
