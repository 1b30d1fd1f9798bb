// libFuzzer target for the request-body parser of `tim serve` (apps/cli/serve_request.cpp): the
// input is the body of POST /v1/images/generations, checked against a Fashion-MNIST-like model
// (10 classes, 32x32 latents, patch 4, the shipped model's sampling metadata) and against a
// text-to-image model (16x16 latents, patch 2, a decoder of scale 8), with small limits. Each
// parse must either give a request that keeps the documented invariants or throw tim::Error; a
// crash, a sanitizer report, another exception type or a broken invariant is a bug.
// Seeds: fuzz/corpus/serve_request/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cli/serve_request.hpp"
#include "tim/text/utf8.hpp"

namespace {

const tim_cli::serve::ModelFacts& model() {
  static const tim_cli::serve::ModelFacts facts = [] {
    tim_cli::serve::ModelFacts f;
    f.id = "tim-fmnist";
    f.num_classes = 10;
    f.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    f.channels = 1;
    f.patch = 4;
    f.metadata = {{"image_size", "32x32x1"},         {"sample_steps", "4"},
                  {"sample_cfg_scale", "2.0"},       {"sample_guidance_low", "0.0"},
                  {"sample_guidance_high", "1.01"}, {"sample_type", "transition"}};
    return f;
  }();
  return facts;
}

const tim_cli::serve::ModelFacts& text_model() {
  static const tim_cli::serve::ModelFacts facts = [] {
    tim_cli::serve::ModelFacts f;
    f.id = "t2i";
    f.text_to_image = true;
    f.channels = 32;
    f.patch = 2;
    f.scale = 8;
    f.metadata = {{"image_size", "16x16x32"}, {"sample_cfg_scale", "2.5"}};
    return f;
  }();
  return facts;
}

bool valid_utf8_without_nul(const std::string& text) {
  return tim::text::first_invalid_utf8(text) == std::string::npos && text.find('\0') == std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  tim_cli::serve::Limits limits;
  limits.max_n = 8;
  limits.max_steps = 64;
  limits.max_pixels = 128 * 128;
  try {
    const auto r = tim_cli::serve::parse_generation_request(body, model(), limits);
    if (r.n < 1 || r.n > limits.max_n || static_cast<std::int64_t>(r.labels.size()) != r.n) std::abort();
    for (const auto label : r.labels)
      if (label < 0 || label > model().num_classes) std::abort();
    if (r.settings.steps.value < 1 || r.settings.steps.value > limits.max_steps) std::abort();
    if (r.settings.times.size() != static_cast<std::size_t>(r.settings.steps.value) + 1) std::abort();
    if (r.height < 1 || r.width < 1 || r.height % 4 != 0 || r.width % 4 != 0) std::abort();
    if (r.height * r.width > limits.max_pixels) std::abort();
    if (!r.seed && r.first_index != 0) std::abort();
  } catch (const tim::Error&) {
  }
  try {
    const auto r = tim_cli::serve::parse_generation_request(body, text_model(), limits);
    if (r.n < 1 || r.n > limits.max_n || !r.labels.empty()) std::abort();
    if (r.prompt.empty() || !valid_utf8_without_nul(r.prompt)) std::abort();
    if (r.settings.steps.value < 1 || r.settings.steps.value > limits.max_steps) std::abort();
    if (r.height < 1 || r.width < 1 || r.height % 2 != 0 || r.width % 2 != 0) std::abort();
    if (r.height * 8 * r.width * 8 > limits.max_pixels) std::abort();
    if (!r.seed && r.first_index != 0) std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
