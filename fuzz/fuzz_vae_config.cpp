// libFuzzer target for the diffusers VAE config.json reader (tim/vae/diffusers_config.hpp): any
// input must either parse or throw tim::Error; a crash, a sanitizer report, another exception
// type or a value outside the documented ranges is a bug. Seeds: fuzz/corpus/vae_config/.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tim/vae/diffusers_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto config = tim::vae::parse_diffusers_vae_config(
        std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    if (config.norm_num_groups && *config.norm_num_groups < 1) std::abort();
    if (config.attention_head_dim && *config.attention_head_dim < 1) std::abort();
    if (config.scaling_factor && !(*config.scaling_factor >= 1e-6 && *config.scaling_factor <= 1e6)) std::abort();
    if (config.shift_factor && !std::isfinite(*config.shift_factor)) std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
