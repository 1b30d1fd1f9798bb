// tim._tim's text encoder (tim.TextEncoder, tim.load_text_encoder): a Gemma-3 folder loaded on the
// CPU by tim::text::PromptEncoder, as `tim encode` and `tim sample --text-encoder` load it, and
// prompts encoded to caption features with the released framing (tim/text/prompts.hpp).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.hpp"
#include "threads.hpp"
#include "tim/text/prompts.hpp"
#include "tim/tim.hpp"

namespace tim_python {

namespace {

using namespace nb::literals;

class TextEncoder {
 public:
  explicit TextEncoder(const std::string& path) : path_(path) {
    nb::gil_scoped_release release;  // loading maps and checks the weights
    encoder_ = std::make_unique<tim::text::PromptEncoder>(tim::text::PromptEncoder::open(path));
  }

  const std::string& path() const { return path_; }
  std::string describe() const { return encoder_->config().describe(); }
  std::int64_t hidden_size() const { return encoder_->config().hidden; }
  std::string weight_dtype() const { return encoder_->weight_dtype(); }

  //! The prompts (UTF-8 bytes, B >= 1) encoded as `tim encode` encodes them: cap_feats (B, M, D),
  //! cap_mask (B, M), input_ids (B, M), null_cap_feats (1, M, D), lengths, truncated.
  nb::dict encode(const std::vector<nb::bytes>& prompts, std::int64_t max_length, const std::string& hidden_state) {
    tim::check(max_length >= 1, "max_length must be at least 1 (room for BOS), got ", max_length);
    const auto which = tim::text::parse_hidden_state(hidden_state, "hidden_state");
    std::vector<std::string> texts;
    for (const auto& p : prompts) texts.emplace_back(p.c_str(), p.size());
    tim::text::EncodedPrompts encoded;
    {
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      apply_package_threads();
      encoded = encoder_->encode(texts, max_length, which);
    }
    nb::dict d;
    d["cap_feats"] = to_numpy(encoded.cap_feats);
    d["cap_mask"] = to_numpy(encoded.cap_mask);
    d["input_ids"] = to_numpy(encoded.input_ids);
    d["null_cap_feats"] = to_numpy(encoded.null_cap_feats);
    d["lengths"] = encoded.lengths;
    std::vector<bool> truncated(encoded.truncated.begin(), encoded.truncated.end());
    d["truncated"] = truncated;
    return d;
  }

 private:
  std::string path_;
  std::unique_ptr<tim::text::PromptEncoder> encoder_;
  std::mutex mutex_;  // one encoding at a time (the encoder's workspace)
};

}  // namespace

void bind_text(nb::module_& m) {
  nb::class_<TextEncoder>(m, "NativeTextEncoder",
                          "A Gemma-3 text encoder on the CPU; use tim.load_text_encoder and tim.TextEncoder")
      .def(nb::init<const std::string&>(), "path"_a)
      .def_prop_ro("path", &TextEncoder::path)
      .def_prop_ro("hidden_size", &TextEncoder::hidden_size)
      .def_prop_ro("weight_dtype", &TextEncoder::weight_dtype)
      .def("describe", &TextEncoder::describe)
      .def("encode", &TextEncoder::encode, "prompts"_a, "max_length"_a, "hidden_state"_a);
}

}  // namespace tim_python
