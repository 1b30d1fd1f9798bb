// What the latent-decoder tests share about their golden files (tests/data/vae_golden,
// dc_ae_golden; written by tools/reference/make_vae_golden.py and make_dc_ae_golden.py): the
// case names of a folder and the decoder options a file was written with (its __metadata__).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "tim/vae/dc_ae.hpp"
#include "tim/vae/sd_vae.hpp"

namespace tim_test {

//! The stems of the .safetensors files in TIM_TEST_DATA_DIR/folder, sorted.
inline std::vector<std::string> golden_cases(const std::string& folder) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(TIM_TEST_DATA_DIR) + "/" + folder))
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

//! The SD VAE options of a vae_golden file: norm_num_groups, eps, scaling_factor.
template <class Source>
tim::vae::SdVaeOptions sd_vae_options_of(const Source& file) {
  tim::vae::SdVaeOptions options;
  options.groups = std::stoll(file.metadata().at("norm_num_groups"));
  options.eps = std::stod(file.metadata().at("eps"));
  options.scaling_factor = std::stod(file.metadata().at("scaling_factor"));
  return options;
}

//! The DC-AE options of a dc_ae_golden file: attention_head_dim, in_shortcut, scaling_factor.
template <class Source>
tim::vae::DcAeOptions dc_ae_options_of(const Source& file) {
  tim::vae::DcAeOptions options;
  options.attention_head_dim = std::stoll(file.metadata().at("attention_head_dim"));
  options.in_shortcut = file.metadata().at("in_shortcut") == "true";
  options.scaling_factor = std::stod(file.metadata().at("scaling_factor"));
  return options;
}

}  // namespace tim_test
