// The Gemma-3 text encoder on the GPU (suite "cuda": needs a GPU): GemmaEncoder<float, tim::cuda, W>
// (the same template and functors as on the CPU, through the CUDA executor) on the golden text
// encoder folders against the float64 reference and against the CPU encoder.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "device_helpers.cuh"
#include "tim/text/gemma.hpp"

namespace {

template <class W>
void check_case(const std::string& name) {
  const std::string dir = std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/" + name;
  auto gpu = tim::text::load_gemma_folder<float, tim::cuda, W>(dir);
  auto cpu = tim::text::load_gemma_folder<float, tim::cpu, W>(dir);
  const auto expected = tim::io::SafetensorsFile::open(dir + "/expected.safetensors");
  const auto ids = expected.load<std::int64_t>("input_ids");
  const auto mask = expected.load<std::int64_t>("attention_mask");
  for (const auto which : {tim::text::HiddenState::last, tim::text::HiddenState::penultimate}) {
    const auto reference = expected.load<double>(which == tim::text::HiddenState::last ? "last" : "penultimate");
    tim::Tensor<float, tim::cuda> out;
    gpu.forward(out, ids, mask, which);
    tim::Tensor<float> host_out;
    cpu.forward(host_out, ids, mask, which);
    const auto values = tim_test::to_host(out.data(), static_cast<std::size_t>(out.numel()));
    REQUIRE(values.size() == static_cast<std::size_t>(reference.numel()));
    double diff = 0, scale = 0, cpu_diff = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      diff = std::max(diff, std::abs(static_cast<double>(values[i]) - reference.data()[i]));
      cpu_diff = std::max(cpu_diff, std::abs(static_cast<double>(values[i]) - host_out.data()[i]));
      scale = std::max(scale, std::abs(reference.data()[i]));
    }
    MESSAGE("cuda Gemma ", name, ": relative error ", diff / scale, " against the reference, ", cpu_diff / scale,
            " against the CPU");
    CHECK(diff / scale <= 1e-4);
    CHECK(cpu_diff / scale <= 1e-5);
  }
}

}  // namespace

TEST_SUITE("cuda") {
TEST_CASE("cuda text encoder: the golden folders, bfloat16 and float weights") {
  check_case<tim::bfloat16>("released_pattern");
  check_case<float>("released_pattern");
  check_case<float>("gqa_layer_types");
}
}
