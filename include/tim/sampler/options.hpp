// The sampler's options from resolved sampling settings (tim/sampler/settings.hpp): guidance,
// its window, stochasticity and mode from the settings; the noise key (seed), each row's sample
// index and whether to keep the trajectory from the caller. `tim sample`, `tim serve` and the
// Python package build their tim::SamplerOptions here, so the three cannot drift apart.
//
// Example:
//   const auto settings = tim::resolve_sample_settings(request, metadata);
//   auto options = tim::sampler_options(settings, /*seed=*/0, {0, 1, 2});
//   options.on_step = ...;
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "tim/sampler/sampler.hpp"
#include "tim/sampler/settings.hpp"

namespace tim {

template <class Backend = cpu>
SamplerOptions<Backend> sampler_options(const SampleSettings& settings, std::uint64_t seed,
                                        std::vector<std::uint64_t> sample_indices, bool keep_trajectory = false) {
  return {.cfg_scale = settings.cfg_scale.value,
          .guidance_low = settings.guidance_low.value,
          .guidance_high = settings.guidance_high.value,
          .stochasticity = settings.stochasticity.value,
          .mode = settings.mode.value,
          .seed = seed,
          .sample_indices = std::move(sample_indices),
          .keep_trajectory = keep_trajectory};
}

}  // namespace tim
