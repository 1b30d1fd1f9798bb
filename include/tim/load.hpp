// Convenience loading straight from a path: open (memory-map) the checkpoint and build the model.
#pragma once

#include <string>

#include "tim/io/safetensors.hpp"
#include "tim/nn/c2i.hpp"

namespace tim {

//! Loads a class-conditional TiM checkpoint (.safetensors). Weights stay memory-mapped when
//! the file's dtype is T; the mapping lives as long as the model.
//! Example: `auto model = tim::load_c2i<float>("c2i_model_256.safetensors");`
template <class T, class Backend = cpu>
nn::C2IModel<T, Backend> load_c2i(const std::string& path, const nn::ConfigOverrides& overrides = {}) {
  const auto file = io::SafetensorsFile::open(path);
  try {
    return nn::load_c2i<T, Backend>(file, overrides);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace tim
