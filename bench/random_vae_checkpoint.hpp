// A parameter source with random weights for the SD VAE decoder (tim/vae/sd_vae.hpp), for
// benchmarks at the released size without the released file. It answers the reads
// tim::vae::load_sd_vae_decoder makes of a Source (contains, info, tensors, load<T>) under the
// released diffusers names (decoder.*, post_quant_conv.*), and generates each tensor only when
// load() asks for it.
//
// Values follow tools/reference/sd_vae_reference.randomize_ (so activations stay O(1), as with
// trained weights): conv and linear weights N(0, 1/fan_in), biases N(0, 0.1^2), GroupNorm weights
// 1 + N(0, 0.2^2) and biases N(0, 0.2^2). Deterministic per (seed, tensor name), generated as
// bench/random_source.hpp does (the result does not depend on the thread count).
//
// Example:
//   tim_bench::RandomSdVaeCheckpoint source({128, 256, 512, 512});  // sd-vae-ft-ema's decoder shapes
//   auto vae = tim::vae::load_sd_vae_decoder<float>(source);
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

class RandomSdVaeCheckpoint : public RandomSource {
 public:
  //! `block_out_channels` in the encoder order (the released (128, 256, 512, 512)); the decoder's
  //! up blocks hold `resnets_per_block` resnets each (3 released).
  explicit RandomSdVaeCheckpoint(const std::vector<std::int64_t>& block_out_channels,
                                 std::int64_t resnets_per_block = 3, std::int64_t latent_channels = 4,
                                 std::uint64_t seed = 0)
      : RandomSource("random VAE checkpoint", seed) {
    tim::check(!block_out_channels.empty() && resnets_per_block >= 1 && latent_channels >= 1,
               "RandomSdVaeCheckpoint: need widths, resnets_per_block >= 1 and latent_channels >= 1");
    const std::vector<std::int64_t> widths(block_out_channels.rbegin(), block_out_channels.rend());
    const auto conv = [&](const std::string& name, std::int64_t out, std::int64_t in, std::int64_t k) {
      add(name + ".weight", {out, in, k, k});
      add(name + ".bias", {out});
    };
    const auto norm = [&](const std::string& name, std::int64_t c) {
      add(name + ".weight", {c});
      add(name + ".bias", {c});
    };
    const auto resnet = [&](const std::string& name, std::int64_t in, std::int64_t out) {
      norm(name + ".norm1", in);
      conv(name + ".conv1", out, in, 3);
      norm(name + ".norm2", out);
      conv(name + ".conv2", out, out, 3);
      if (in != out) conv(name + ".conv_shortcut", out, in, 1);
    };
    const std::int64_t top = widths.front();
    conv("post_quant_conv", latent_channels, latent_channels, 1);
    conv("decoder.conv_in", top, latent_channels, 3);
    resnet("decoder.mid_block.resnets.0", top, top);
    norm("decoder.mid_block.attentions.0.group_norm", top);
    for (const char* projection : {"to_q", "to_k", "to_v", "to_out.0"}) {
      add(std::string("decoder.mid_block.attentions.0.") + projection + ".weight", {top, top});
      add(std::string("decoder.mid_block.attentions.0.") + projection + ".bias", {top});
    }
    resnet("decoder.mid_block.resnets.1", top, top);
    for (std::size_t i = 0; i < widths.size(); ++i) {
      const std::string block = "decoder.up_blocks." + std::to_string(i);
      for (std::int64_t j = 0; j < resnets_per_block; ++j)
        resnet(block + ".resnets." + std::to_string(j), j == 0 ? widths[i == 0 ? 0 : i - 1] : widths[i], widths[i]);
      if (i + 1 < widths.size()) conv(block + ".upsamplers.0.conv", widths[i], widths[i], 3);
    }
    norm("decoder.conv_norm_out", widths.back());
    conv("decoder.conv_out", 3, widths.back(), 3);
  }

  //! A freshly generated owning tensor of `name`; throws when `expected` is not its shape.
  template <class T>
  tim::Tensor<T, tim::cpu> load(std::string_view name, const tim::Shape& expected) const {
    const bool is_norm = name.find(".norm") != std::string_view::npos ||
                         name.find("group_norm") != std::string_view::npos ||
                         name.find("conv_norm_out") != std::string_view::npos;
    const bool is_bias = ends_with(name, ".bias");
    double mean = 0, stddev = 0.1;
    if (is_norm) {
      mean = is_bias ? 0.0 : 1.0;
      stddev = 0.2;
    } else if (!is_bias) {
      stddev = fan_in_stddev(info(name).shape);
    }
    return generate<T>(name, expected, std::normal_distribution<double>(mean, stddev));
  }
};

}  // namespace tim_bench
