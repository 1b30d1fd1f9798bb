// q8_0 weights in safetensors (tim/io/q8_0.hpp): the layout tim convert writes reads back, and each
// seed of fuzz/corpus/q8_0_layout/ (written by fuzz/make_q8_0_seeds.py, one per way a file can be
// wrong) is refused with a message naming what is wrong; the double -> 16-bit rounding of conversions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tim/io/convert.hpp"
#include "tim/io/q8_0.hpp"

namespace {

const std::string corpus = std::string(TIM_TEST_DATA_DIR) + "/../../fuzz/corpus/q8_0_layout/";

tim::io::SafetensorsFile seed(const std::string& name) { return tim::io::SafetensorsFile::open(corpus + name + ".safetensors"); }

// read_q8_0_layout, then load_q8_0 of every listed tensor.
void read_all(const std::string& name) {
  const auto file = seed(name);
  const auto layout = tim::io::read_q8_0_layout(file);
  for (const auto& t : layout.tensors) (void)tim::io::load_q8_0(file, layout, t, file.info(t).shape);
}

}  // namespace

TEST_CASE("q8_0 file: the valid seed reads, with views of the right extents") {
  const auto file = seed("valid");
  const auto layout = tim::io::read_q8_0_layout(file);
  CHECK(layout.tensors.size() == 2);
  CHECK(layout.contains("a.weight"));
  CHECK(!layout.contains("a.bias"));
  const auto a = tim::io::load_q8_0(file, layout, "a.weight", {3, 40});
  const auto w = a.view();
  CHECK(w.out == 3);
  CHECK(w.in == 40);
  CHECK(a.scales.shape() == tim::Shape{3, 2});
  CHECK_THROWS_WITH_AS(tim::io::load_q8_0(file, layout, "a.weight", {3, 41}), doctest::Contains("expected shape"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::io::load_q8_0(file, layout, "a.bias", {3}), doctest::Contains("is not a q8_0 tensor"), tim::Error);
  CHECK(tim::io::read_q8_0_layout(seed("unquantised")).empty());
}

TEST_CASE("q8_0 file: every malformed seed is refused, naming what is wrong") {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"unknown_quantization", "tim reads only \"q8_0\""},
      {"block_size_16", "q8_0 blocks hold 32 values"},
      {"list_not_json", "is not valid JSON"},
      {"list_not_array", "must be a JSON array of tensor names"},
      {"list_duplicate", "q8_0 tensor 'a.weight' is listed twice"},
      {"list_missing_tensor", "q8_0 tensor 'c.weight' is listed but not in the file"},
      {"orphan_scales", "tensor 'b.weight.q8_0_scale' looks like q8_0 scales of a tensor not listed"},
      {"scales_without_metadata", "looks like q8_0 scales but __metadata__ has no \"tim.quantization\""},
      {"scales_wrong_shape", "q8_0 scales 'a.weight.q8_0_scale' must be F16 [3, 2], are F16 [3, 1]"},
      {"scales_wrong_dtype", "must be F16 [3, 2], are F32 [3, 2]"},
      {"values_wrong_dtype", "q8_0 tensor 'a.weight' must be I8 of rank 2 (N, K), is I16"},
      {"value_minus_128", "value -128 at index 45"},
      {"negative_scale", "at index 1 (scales are finite and not negative)"},
      {"infinite_scale", "at index 4 (scales are finite and not negative)"},
  };
  for (const auto& [name, message] : cases) {
    INFO("seed ", name);
    CHECK_THROWS_WITH_AS(read_all(name), doctest::Contains(message.c_str()), tim::Error);
  }
}

TEST_CASE("convert: double rounds once to bfloat16 and float16 (round to odd through float)") {
  // 1 + 2^-8 + 2^-40: just above bfloat16's halfway point between 1 and 1 + 2^-7. Through float
  // by nearest it becomes 1 + 2^-8 exactly (a tie, to the even 1.0); correctly rounded it is 1 + 2^-7.
  const double v = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  CHECK(tim::bfloat16::from_float(static_cast<float>(v)) == 0x3f80);
  CHECK(tim::bfloat16::from_float(tim::io::detail::round_to_odd_float(v)) == 0x3f81);
  const double h = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);  // float16: halfway is 2^-11
  CHECK(tim::float16::from_float(static_cast<float>(h)) == 0x3c00);
  CHECK(tim::float16::from_float(tim::io::detail::round_to_odd_float(h)) == 0x3c01);
  CHECK(tim::io::detail::round_to_odd_float(0.5) == 0.5f);  // exact values stay exact
  CHECK(tim::io::detail::round_to_odd_float(-3.25) == -3.25f);
}

TEST_CASE("convert: which tensors q8_0 quantises") {
  auto info = [](std::string name, tim::DType d, tim::Shape s) { return tim::io::TensorInfo{std::move(name), d, std::move(s), 0, 0}; };
  CHECK(tim::io::q8_0_eligible(info("blocks.0.attn.qkv.weight", tim::DType::F32, {48, 32})));
  CHECK(tim::io::q8_0_eligible(info("mlp.fc2.weight", tim::DType::BF16, {16, 682})));
  CHECK(!tim::io::q8_0_eligible(info("mlp.fc2.weight", tim::DType::F32, {16, 31})));     // K < 32
  CHECK(!tim::io::q8_0_eligible(info("mlp.fc2.bias", tim::DType::F32, {16, 64})));       // not a weight
  CHECK(!tim::io::q8_0_eligible(info("x_embedder.proj.weight", tim::DType::F32, {16, 4, 2, 2})));
  CHECK(!tim::io::q8_0_eligible(info("y_embedder.embedding_table.weight", tim::DType::F32, {1001, 1152})));
  CHECK(!tim::io::q8_0_eligible(info("model.embed_tokens.weight", tim::DType::BF16, {262144, 1152})));
  CHECK(!tim::io::q8_0_eligible(info("counts.weight", tim::DType::I64, {4, 64})));
  CHECK(tim::io::parse_convert_target("q8_0") == tim::io::ConvertTarget::q8_0);
  CHECK_THROWS_WITH_AS(tim::io::parse_convert_target("bf16"), doctest::Contains("--to: expected bfloat16, float16, q8_0 or float32, got \"bf16\""),
                       tim::Error);
}
