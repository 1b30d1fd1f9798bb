// Loading a latent decoder from its diffusers folder as `tim sample --vae`, `tim decode`,
// `tim serve` and the Python package's tim.load_decoder do: the SD VAE (AutoencoderKL, it has
// post_quant_conv.weight) or the DC-AE (AutoencoderDC, decoder.conv_in.weight without it), chosen
// by the tensors of diffusion_pytorch_model.safetensors, with what the config.json beside the
// weights says when there is one (docs/vae.md). Host memory (CPU backend).
//
// Example:
//   auto vae = tim::vae::load_decoder<float>("dc-ae/diffusion_pytorch_model.safetensors");
//   tim::Tensor<float> images = vae.decode(latents);   // (B, 3, 32 h, 32 w), one sample at a time
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>

#include "tim/core/decimal.hpp"
#include "tim/core/error.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/vae/dc_ae.hpp"
#include "tim/vae/diffusers_config.hpp"
#include "tim/vae/sd_vae.hpp"
#include "tim/vae/tiling.hpp"

namespace tim::vae {

//! images (B, ...) from latents (B, L, h, w), one sample (1, L, h, w) at a time through
//! `decode_one` (memory stays that of one image, and a sample's image does not depend on its batch).
template <class T, class DecodeOne>
Tensor<T> decode_each(const Tensor<T>& latents, DecodeOne&& decode_one) {
  check(latents.rank() == 4 && latents.dim(0) >= 1, "decode: latents must have shape (B, L, h, w) with B >= 1, got ",
        latents.shape());
  const std::int64_t B = latents.dim(0), per_latent = latents.numel() / B;
  Tensor<T> images;
  for (std::int64_t b = 0; b < B; ++b) {
    auto one = Tensor<T>::empty({1, latents.dim(1), latents.dim(2), latents.dim(3)});
    std::copy_n(latents.data() + b * per_latent, per_latent, one.data());
    const Tensor<T> image = decode_one(one);
    if (b == 0) images = Tensor<T>::empty({B, image.dim(1), image.dim(2), image.dim(3)});
    std::copy_n(image.data(), image.numel(), images.data() + b * image.numel());
  }
  return images;
}

//! A loaded decoder of either kind, on the host.
template <class T = float>
struct AnyDecoder {
  std::variant<SdVaeDecoder<T>, DcAeDecoder<T>> decoder;

  bool sd_vae() const { return decoder.index() == 0; }
  std::string describe() const {
    return std::visit([](const auto& d) { return d.config.describe(); }, decoder);
  }
  std::int64_t latent_channels() const {
    return std::visit([](const auto& d) { return d.config.latent_channels; }, decoder);
  }
  //! Image pixels per latent pixel (8 for the SD VAE, 32 for the released DC-AE).
  std::int64_t upscale() const {
    return std::visit([](const auto& d) { return d.config.upscale(); }, decoder);
  }
  //! One sample's image (1, 3, H, W) from its latent (1, L, h, w); in tiles when tiles.tile > 0.
  Tensor<T> decode_one(const Tensor<T>& latent, const TileOptions& tiles = {.tile = 0}) const {
    return std::visit([&](const auto& d) { return tiles.tile == 0 ? d.decode(latent) : decode_tiled(d, latent, tiles); },
                      decoder);
  }
  //! images (B, 3, H, W) from latents (B, L, h, w), one sample at a time (decode_each).
  Tensor<T> decode(const Tensor<T>& latents, const TileOptions& tiles = {.tile = 0}) const {
    return decode_each(latents, [&](const Tensor<T>& one) { return decode_one(one, tiles); });
  }
};

//! Loads the decoder whose weights are at `path` (diffusion_pytorch_model.safetensors), configured
//! by the config.json beside it when present (SD VAE: norm_num_groups, scaling_factor; DC-AE:
//! attention_head_dim, decoder_in_shortcut, scaling_factor; otherwise sd-vae-ft-ema's and
//! dc-ae-f32c32-sana-1.1's values). Throws tim::Error (without the path: callers name it) for a
//! file that is neither, a config.json describing the other class, or a non-zero shift_factor.
template <class T = float>
AnyDecoder<T> load_decoder(const std::string& path) {
  const auto file = io::SafetensorsFile::open(path);
  const bool sd = file.contains("post_quant_conv.weight");
  check(sd || file.contains("decoder.conv_in.weight"), "not a VAE decoder: it has neither "
        "'post_quant_conv.weight' (an SD VAE, AutoencoderKL) nor 'decoder.conv_in.weight' (a DC-AE, AutoencoderDC)");
  const char* kind = sd ? "AutoencoderKL" : "AutoencoderDC";
  const auto config = read_diffusers_vae_config_beside(path);
  if (config) {
    check(config->class_name.empty() || config->class_name == kind, "the config.json beside it describes a ",
          config->class_name, " but the weights are an ", kind, sd ? " (SD VAE)" : " (DC-AE)");
    check(!config->shift_factor || *config->shift_factor == 0, "the config.json beside it has shift_factor ",
          shortest_decimal(*config->shift_factor), "; tim decodes latents with zero shift only (SPEC 8)");
  }
  if (sd) {
    SdVaeOptions options;
    if (config && config->norm_num_groups) options.groups = *config->norm_num_groups;
    if (config && config->scaling_factor) options.scaling_factor = *config->scaling_factor;
    return {load_sd_vae_decoder<T>(file, options)};
  }
  DcAeOptions options;
  if (config && config->attention_head_dim) options.attention_head_dim = *config->attention_head_dim;
  if (config && config->decoder_in_shortcut) options.in_shortcut = *config->decoder_in_shortcut;
  if (config && config->scaling_factor) options.scaling_factor = *config->scaling_factor;
  return {load_dc_ae_decoder<T>(file, options)};
}

}  // namespace tim::vae
