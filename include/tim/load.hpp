// Convenience loading straight from a path: open (memory-map) the checkpoint and build the model.
#pragma once

#include <string>

#include "tim/io/safetensors.hpp"
#include "tim/nn/c2i.hpp"
#include "tim/nn/t2i.hpp"

namespace tim {

//! Loads a class-conditional TiM checkpoint (.safetensors). Weights stay memory-mapped when
//! the file's dtype is T; the mapping lives as long as the model. On the CPU backend with
//! T = float, bfloat16 and float16 linear weights stay memory-mapped in their own dtype too
//! (half the memory; products in `options.precision`); `{.weights =
//! tim::nn::WeightLoading::widened}` converts every weight to T instead. tim::cuda always widens.
//! Example: `auto model = tim::load_c2i<float>("c2i_model_256.safetensors");`
template <class T, class Backend = cpu>
nn::C2IModel<T, Backend> load_c2i(const std::string& path, const nn::ConfigOverrides& overrides = {},
                                  const nn::LoadOptions& options = {}) {
  const auto file = io::SafetensorsFile::open(path);
  try {
    return nn::load_c2i<T, Backend>(file, overrides, options);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

//! Loads a text-to-image TiM checkpoint (.safetensors; convert the released PyTorch
//! `t2i_model.bin` with tools/convert_t2i_checkpoint.py first, see docs/t2i.md). Weights stay
//! memory-mapped when the file's dtype is T, and bfloat16/float16 linear weights in their own
//! dtype on the CPU as load_c2i says (`options`); the mapping lives as long as the model.
//! Example: `auto model = tim::load_t2i<float>("t2i_model.safetensors");`
template <class T, class Backend = cpu>
nn::T2IModel<T, Backend> load_t2i(const std::string& path, const nn::ConfigOverrides& overrides = {},
                                  const nn::LoadOptions& options = {}) {
  const auto file = io::SafetensorsFile::open(path);
  try {
    return nn::load_t2i<T, Backend>(file, overrides, options);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

//! Which network the checkpoint at `path` holds (C2I, T2I or unknown), from its tensor names.
inline nn::ModelKind detect_model_kind(const std::string& path) {
  return nn::detect_model_kind(io::SafetensorsFile::open(path));
}

}  // namespace tim
