// What the latent-decoder tests share about their golden files (tests/data/vae_golden,
// dc_ae_golden; written by tools/reference/make_vae_golden.py and make_dc_ae_golden.py): the
// case names of a folder and the decoder options a file was written with (its __metadata__).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "compare.hpp"
#include "tim/io/safetensors.hpp"
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

//! A loaded decoder `vae` (decode, config.describe()) run on golden file `file`'s input.latents:
//! max |images - output.images| / max |output.images|, reported as a MESSAGE; the reference must
//! not be vacuous (its largest value above 0.1).
template <class T, class Decoder>
double decoded_golden_error(const Decoder& vae, const tim::io::SafetensorsFile& file, const std::string& name) {
  const auto latents = file.load<T>("input.latents");
  const auto expected = file.load<double>("output.images");
  const auto images = vae.decode(latents);
  REQUIRE(images.shape() == expected.shape());
  const auto n = static_cast<std::size_t>(images.numel());
  const double error = relative_error(images.data(), expected.data(), n);
  double largest = 0;
  for (std::size_t i = 0; i < n; ++i) largest = std::max(largest, std::abs(expected.data()[i]));
  CHECK(largest > 1e-1);  // not a vacuous pass
  MESSAGE(name, " (", vae.config.describe(), ") ", std::string(sizeof(T) == 8 ? "double" : "float"),
          ": relative error ", error);
  return error;
}

//! A decoder on another backend (a GPU) on golden file `file`'s input.latents, copied there,
//! checked within 1e-4 of the float64 output.images and of the CPU float decoder `host` of the
//! same weights; both errors reported.
template <class Host, template <class, class> class Decoder, class Backend>
void check_gpu_decoder_golden(const Host& host, const Decoder<float, Backend>& gpu,
                              const tim::io::SafetensorsFile& file, const std::string& name) {
  const auto latents = file.load<float>("input.latents");
  const auto expected = file.load<double>("output.images");
  const auto images = tim::to_host(gpu.decode(tim::to_backend<Backend>(latents)));
  REQUIRE(images.shape() == expected.shape());
  const auto n = static_cast<std::size_t>(images.numel());
  const double error = relative_error(images.data(), expected.data(), n);
  const auto cpu_images = host.decode(latents);
  const double against_cpu = relative_error(images.data(), cpu_images.data(), n);
  MESSAGE(name, ": GPU float vs float64 reference ", error, ", vs the CPU float decoder ", against_cpu);
  CHECK(error <= 1e-4);
  CHECK(against_cpu <= 1e-4);
}

}  // namespace tim_test
