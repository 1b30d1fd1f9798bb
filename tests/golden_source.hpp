// A view of a golden file that shows only the network parameters (the golden files keep the
// inputs "input.*" and expected outputs "output.*" beside the weights), and golden
// checkpoints rewritten with one change, for the loading-error tests.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tim/io/safetensors.hpp"
#include "tim/sampler/sampler.hpp"

namespace tim_test {

//! The sampler options a sampler golden case's __metadata__ records (tools/reference/
//! make_sampler_golden.py and make_t2i_sampler_golden.py), for a sampler on `Backend`.
template <class Backend = tim::cpu>
tim::SamplerOptions<Backend> sampler_options_of(const std::map<std::string, std::string>& meta) {
  return {.cfg_scale = std::stod(meta.at("cfg_scale")),
          .guidance_low = std::stod(meta.at("guidance_low")),
          .guidance_high = std::stod(meta.at("guidance_high")),
          .stochasticity = std::stod(meta.at("stochasticity")),
          .mode = tim::parse_sample_mode(meta.at("mode")),
          .seed = std::stoull(meta.at("noise_seed")),
          .first_sample_index = std::stoull(meta.at("first_sample_index"))};
}

struct ParametersOnly {
  const tim::io::SafetensorsFile& file;
  std::vector<tim::io::TensorInfo> parameters;

  explicit ParametersOnly(const tim::io::SafetensorsFile& f) : file(f) {
    for (const auto& info : f.tensors())
      if (!is_io(info.name)) parameters.push_back(info);
  }
  static bool is_io(std::string_view name) {
    return name.rfind("input.", 0) == 0 || name.rfind("output.", 0) == 0;
  }
  bool contains(std::string_view name) const { return !is_io(name) && file.contains(name); }
  const tim::io::TensorInfo& info(std::string_view name) const { return file.info(name); }
  const std::vector<tim::io::TensorInfo>& tensors() const { return parameters; }
  const std::map<std::string, std::string>& metadata() const { return file.metadata(); }
  template <class T>
  tim::Tensor<T, tim::cpu> load(std::string_view name, const tim::Shape& shape) const {
    return file.load<T>(name, shape);
  }
};

//! Path of golden case `name` in tests/data/<folder>/ ("golden": C2I, "golden_t2i": T2I).
inline std::string golden_path(const std::string& name, const std::string& folder = "golden") {
  return std::string(TIM_TEST_DATA_DIR) + "/" + folder + "/" + name + ".safetensors";
}

//! One change to a golden checkpoint, for tests of loading errors.
struct Edit {
  std::function<bool(const std::string&)> drop = [](const std::string&) { return false; };
  std::map<std::string, std::string> metadata{};  // replaces; an empty value removes the key
  std::vector<std::pair<std::string, tim::Shape>> extra{};  // extra F32 tensors (zeros)
};

//! The parameters of golden case `name` (in tests/data/<folder>/) with `edit` applied, as an
//! in-memory checkpoint.
inline tim::io::SafetensorsFile rewritten(const std::string& name, const Edit& edit,
                                          const std::string& folder = "golden") {
  auto file = tim::io::SafetensorsFile::open(golden_path(name, folder));
  tim::io::SafetensorsWriter writer;
  for (const auto& [key, value] : file.metadata()) {
    auto it = edit.metadata.find(key);
    if (it == edit.metadata.end()) writer.set_metadata(key, value);
  }
  for (const auto& [key, value] : edit.metadata)
    if (!value.empty()) writer.set_metadata(key, value);
  for (const auto& info : file.tensors()) {
    if (ParametersOnly::is_io(info.name) || edit.drop(info.name)) continue;
    auto bytes = file.bytes(info.name);
    writer.add(info.name, info.dtype, info.shape, bytes.data());
  }
  for (const auto& [extra_name, shape] : edit.extra) {
    std::vector<float> zeros(static_cast<std::size_t>(shape.numel()));
    writer.add(extra_name, tim::DType::F32, shape, zeros.data());
  }
  return tim::io::SafetensorsFile::from_bytes(writer.to_bytes(), name + " (edited)");
}

//! The message of the tim::Error `action` throws, or "<no error>".
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const tim::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace tim_test
