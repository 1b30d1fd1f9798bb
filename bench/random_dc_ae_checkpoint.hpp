// A parameter source with random weights for the DC-AE decoder (tim/vae/dc_ae.hpp), for
// benchmarks at the released size without the released file. It answers the reads
// tim::vae::load_dc_ae_decoder makes of a Source (contains, info, tensors, load<T>) under the
// released diffusers names (decoder.*; no encoder), and generates each tensor only when load()
// asks for it. Interpolate upsampling, one multi-scale branch per EfficientViT stage, as released.
//
// Values follow tools/reference/dc_ae_reference.randomize_ (so activations stay O(1), as with
// trained weights): conv and linear weights N(0, 1/fan_in), biases N(0, 0.1^2), RMSNorm weights
// 1 + N(0, 0.2^2) and biases N(0, 0.2^2). Deterministic per (seed, tensor name), chunked like
// bench/random_vae_checkpoint.hpp (the result does not depend on the thread count).
//
// Example:
//   tim_bench::RandomDcAeCheckpoint source({128, 256, 512, 512, 1024, 1024});  // dc-ae-f32c32-sana-1.1
//   auto vae = tim::vae::load_dc_ae_decoder<float>(source);                    // default DcAeOptions
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "random_source.hpp"
#include "tim/core/error.hpp"

namespace tim_bench {

class RandomDcAeCheckpoint : public RandomSource {
 public:
  //! `block_out_channels` per stage, full resolution first (the released (128, 256, 512, 512,
  //! 1024, 1024)); stages from `first_vit_stage` on are EfficientViT stages (3 released), the
  //! others ResBlock stages; every stage holds `layers_per_block` blocks (3 released); the
  //! attention's head dim `head_dim` (32) and multi-scale kernel `multiscale_kernel` (5).
  explicit RandomDcAeCheckpoint(const std::vector<std::int64_t>& block_out_channels, std::size_t first_vit_stage = 3,
                                std::int64_t layers_per_block = 3, std::int64_t latent_channels = 32,
                                std::int64_t head_dim = 32, std::int64_t multiscale_kernel = 5, std::uint64_t seed = 0)
      : RandomSource("random DC-AE checkpoint", seed) {
    tim::check(!block_out_channels.empty() && layers_per_block >= 1 && latent_channels >= 1 && head_dim >= 1,
               "RandomDcAeCheckpoint: need widths, layers_per_block >= 1, latent_channels >= 1 and head_dim >= 1");
    const auto& widths = block_out_channels;
    const auto conv = [&](const std::string& name, std::int64_t out, std::int64_t in, std::int64_t k, bool bias) {
      add(name + ".weight", {out, in, k, k});
      if (bias) add(name + ".bias", {out});
    };
    const auto norm = [&](const std::string& name, std::int64_t c) {
      add(name + ".weight", {c});
      add(name + ".bias", {c});
    };
    const std::size_t stages = widths.size();
    conv("decoder.conv_in", widths.back(), latent_channels, 3, true);
    for (std::size_t i = 0; i < stages; ++i) {
      const std::string stage = "decoder.up_blocks." + std::to_string(i);
      const std::int64_t C = widths[i];
      std::int64_t j = 0;
      if (i + 1 < stages) conv(stage + "." + std::to_string(j++) + ".conv", C, widths[i + 1], 3, true);
      for (std::int64_t layer = 0; layer < layers_per_block; ++layer, ++j) {
        const std::string block = stage + "." + std::to_string(j);
        if (i < first_vit_stage) {
          conv(block + ".conv1", C, C, 3, true);
          conv(block + ".conv2", C, C, 3, false);
          norm(block + ".norm", C);
          continue;
        }
        const std::int64_t inner = C / head_dim * head_dim;
        for (const char* projection : {".attn.to_q", ".attn.to_k", ".attn.to_v"})
          add(block + projection + ".weight", {inner, C});
        conv(block + ".attn.to_qkv_multiscale.0.proj_in", 3 * inner, 1, multiscale_kernel, false);
        add(block + ".attn.to_qkv_multiscale.0.proj_out.weight", {3 * inner, head_dim, 1, 1});
        add(block + ".attn.to_out.weight", {C, 2 * inner});
        norm(block + ".attn.norm_out", C);
        conv(block + ".conv_out.conv_inverted", 8 * C, C, 1, true);
        conv(block + ".conv_out.conv_depth", 8 * C, 1, 3, true);
        conv(block + ".conv_out.conv_point", C, 4 * C, 1, false);
        norm(block + ".conv_out.norm", C);
      }
    }
    norm("decoder.norm_out", widths.front());
    conv("decoder.conv_out", 3, widths.front(), 3, true);
  }

  //! A freshly generated owning tensor of `name`; throws when `expected` is not its shape.
  template <class T>
  tim::Tensor<T, tim::cpu> load(std::string_view name, const tim::Shape& expected) const {
    double mean = 0, stddev = 0.1;  // biases
    if (ends_with(name, "norm.weight") || ends_with(name, "norm_out.weight")) {
      mean = 1.0;
      stddev = 0.2;
    } else if (ends_with(name, "norm.bias") || ends_with(name, "norm_out.bias")) {
      stddev = 0.2;
    } else if (!ends_with(name, "bias")) {
      stddev = fan_in_stddev(info(name).shape);
    }
    return generate<T>(name, expected, std::normal_distribution<double>(mean, stddev));
  }
};

}  // namespace tim_bench
