// The initial noise of a sampling run as `tim sample`, `tim serve` and the Python package draw it:
// row b is stream indices[b] of `seed` (tim::initial_noise), at the settings' latent size, and for
// VE it is scaled by t_0 (VE's noise has standard deviation t; docs/sampling.md, "Noise scale").
// A row depends on its sample index only, so a sample's noise is the same whatever batch, chunk,
// shard or request it is drawn in. Host memory (the CPU backend's generator).
//
// Example:
//   const auto settings = tim::resolve_sample_settings(request, metadata);
//   auto noise = tim::initial_noise_of({7, 8, 9}, /*seed=*/0, config.in_channels, config.patch, settings);
#pragma once

#include <algorithm>
#include <cstdint>
#include <variant>
#include <vector>

#include "tim/cpu/backend.hpp"
#include "tim/sampler/sampler.hpp"
#include "tim/sampler/settings.hpp"

namespace tim {

//! The initial noise (B, channels, H, W), B = indices.size() >= 1, (H, W) the settings' latent
//! size (a multiple of `patch`, else tim::Error naming the settings), row b drawing stream
//! indices[b]; times t_0 when the settings' transport is VE.
inline Tensor<double> initial_noise_of(const std::vector<std::uint64_t>& indices, std::uint64_t seed,
                                       std::int64_t channels, std::int64_t patch, const SampleSettings& settings) {
  const LatentSize size = require_latent_size(settings.latent_size, settings.names);
  const std::int64_t B = static_cast<std::int64_t>(indices.size()), H = size.height.value, W = size.width.value;
  check(B >= 1, "initial_noise_of: no samples");
  check(H % patch == 0 && W % patch == 0, "height ", H, " and width ", W, " must be multiples of the model's patch size ",
        patch);
  auto noise = Tensor<double>::empty({B, channels, H, W});
  const std::int64_t per_sample = channels * H * W;
  // Runs of consecutive indices are drawn together (a row's stream depends on its index only).
  for (std::int64_t b = 0; b < B;) {
    const auto first = indices[static_cast<std::size_t>(b)];
    std::int64_t run = 1;
    while (b + run < B && indices[static_cast<std::size_t>(b + run)] == first + static_cast<std::uint64_t>(run)) ++run;
    const auto drawn = initial_noise({run, channels, H, W}, seed, first);
    std::copy_n(drawn.data(), run * per_sample, noise.data() + b * per_sample);
    b += run;
  }
  if (std::holds_alternative<VeSde>(settings.transport.value)) {
    const double t_0 = settings.times.front();
    for (std::int64_t i = 0; i < noise.numel(); ++i) noise.data()[i] *= t_0;
  }
  return noise;
}

}  // namespace tim
