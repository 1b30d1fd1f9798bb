// The sampler's mode (SPEC 6): what the network's second time input is. Free of any backend, so
// the settings resolution (tim/sampler/settings.hpp) and the sampler share one definition.
#pragma once

#include <string_view>

#include "tim/core/error.hpp"

namespace tim {

//! What the network's second time input is. `transition` (default): c_noise(r), F is the
//! transition over [r, t]. `diffusion`: c_noise(t) twice, F is the instantaneous velocity; the
//! update still moves to the next grid time.
enum class SampleMode { transition, diffusion };

inline constexpr std::string_view sample_mode_name(SampleMode mode) {
  return mode == SampleMode::transition ? "transition" : "diffusion";
}

//! Parses "transition", "diffusion" or the released spelling "ddiffusion".
inline SampleMode parse_sample_mode(std::string_view text) {
  if (text == "transition") return SampleMode::transition;
  if (text == "diffusion" || text == "ddiffusion") return SampleMode::diffusion;
  fail("unknown sample mode '", text, "' (expected transition, diffusion or ddiffusion)");
}

}  // namespace tim
