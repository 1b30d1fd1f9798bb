// The `tim` program's GPU text encoder (tim_cli::CudaTextEncoder, apps/cuda_backend.hpp; suite
// "cuda": needs a GPU) against the CPU encoder on the golden Gemma-3 folders, and
// tim::text::PromptEncoder with its encoder stage on the GPU against PromptEncoder::open.
// A g++ file: it sees the GPU only through the plain C++ interface, as the program does.
//
// Bound: both sides hold the same weights (bfloat16 widened exactly to float, or float) and
// compute in float; each is within 1e-4 of the float64 reference relative to the largest
// reference value (the float bound of test_text_encoder.cpp and test_cuda_text.cu), so by the
// triangle inequality they are within 2e-4 of each other on the same scale. A wrong hidden state,
// length or padding mask, or dtype gives errors of order 1, far above it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "compare.hpp"
#include "cuda_backend.hpp"
#include "tim/text/prompts.hpp"
#include "tim/tim.hpp"

namespace {

const std::string golden = std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/";
constexpr double reference_bound = 1e-4, cpu_bound = 2 * reference_bound;

//! max |a - b| / max |b|.
double relative(const tim::Tensor<float>& a, const tim::Tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  return tim_test::relative_error(a.data(), b.data(), static_cast<std::size_t>(a.numel()));
}

template <class W>
void check_folder(const std::string& name, const std::string& dtype) {
  const std::string dir = golden + name;
  const auto gpu = tim_cli::CudaTextEncoder::load(dir);
  CHECK(gpu.weight_dtype() == dtype);
  const auto cpu = tim::text::load_gemma_folder<float, tim::cpu, W>(dir);
  const auto expected = tim::io::SafetensorsFile::open(dir + "/expected.safetensors");
  const auto ids = expected.load<std::int64_t>("input_ids");
  const auto lengths = tim::text::lengths_from_mask(expected.load<std::int64_t>("attention_mask"));
  for (const auto which : {tim::text::HiddenState::last, tim::text::HiddenState::penultimate}) {
    const auto reference = expected.load<double>(which == tim::text::HiddenState::last ? "last" : "penultimate");
    tim::Tensor<float> on_gpu, on_cpu;
    gpu.encode(on_gpu, ids, lengths, which);
    cpu.forward(on_cpu, ids, lengths, which);
    REQUIRE(on_gpu.shape() == reference.shape());
    const double to_reference =
        tim_test::relative_error(on_gpu.data(), reference.data(), static_cast<std::size_t>(on_gpu.numel()));
    const double to_cpu = relative(on_gpu, on_cpu);
    MESSAGE("CudaTextEncoder ", name, ": relative error ", to_reference, " against the reference, ", to_cpu,
            " against the CPU");
    CHECK(to_reference <= reference_bound);
    CHECK(to_cpu <= cpu_bound);
  }
}

}  // namespace

TEST_SUITE("cuda") {
TEST_CASE("CudaTextEncoder: the golden folders against the CPU encoder (bfloat16 weights stay bfloat16)") {
  check_folder<tim::bfloat16>("released_pattern", "bfloat16");
  check_folder<float>("gqa_layer_types", "float32");
}

TEST_CASE("PromptEncoder::with_encoder over the GPU: the CPU path's ids, mask and lengths, its features") {
  const std::string dir = golden + "released_pattern";
  const auto gpu = tim_cli::CudaTextEncoder::load(dir);
  const auto on_gpu = tim::text::PromptEncoder::with_encoder(
      dir,
      [gpu](tim::Tensor<float>& out, const tim::Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths,
            tim::text::HiddenState which) { gpu.encode(out, ids, lengths, which); },
      gpu.weight_dtype(), "GPU");
  const auto on_cpu = tim::text::PromptEncoder::open(dir);
  const std::vector<std::string> prompts{"a red fox in the snow at sunset", "café 🤖", "the lazy dog"};
  for (const auto which : {tim::text::HiddenState::last, tim::text::HiddenState::penultimate}) {
    const auto a = on_gpu.encode(prompts, 8, which), b = on_cpu.encode(prompts, 8, which);
    CHECK(a.lengths == b.lengths);
    CHECK(a.truncated == b.truncated);
    REQUIRE(a.input_ids.shape() == b.input_ids.shape());
    CHECK(std::equal(a.input_ids.data(), a.input_ids.data() + a.input_ids.numel(), b.input_ids.data()));
    CHECK(std::equal(a.cap_mask.data(), a.cap_mask.data() + a.cap_mask.numel(), b.cap_mask.data()));
    CHECK(relative(a.cap_feats, b.cap_feats) <= cpu_bound);
    CHECK(relative(a.null_cap_feats, b.null_cap_feats) <= cpu_bound);
  }
}
}
