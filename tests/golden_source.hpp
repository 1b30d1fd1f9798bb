// A view of a golden file that shows only the network parameters: the golden files keep the
// inputs ("input.*") and expected outputs ("output.*") beside the weights.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tim/io/safetensors.hpp"

namespace tim_test {

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

inline std::string golden_path(const std::string& name) {
  return std::string(TIM_TEST_DATA_DIR) + "/golden/" + name + ".safetensors";
}

}  // namespace tim_test
