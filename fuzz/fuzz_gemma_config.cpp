// libFuzzer target for the Gemma-3 text encoder's config.json reader (tim/text/gemma_config.hpp):
// any input must either parse or throw tim::Error; a crash, a sanitizer report, another exception
// type or a configuration outside its documented ranges is a bug. Seeds: fuzz/corpus/gemma_config/.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tim/text/gemma_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto c = tim::text::parse_gemma_config(std::string_view(reinterpret_cast<const char*>(data), size));
    if (c.vocab_size < 1 || c.hidden < 1 || c.intermediate < 1 || c.layers < 1 || c.heads < 1 || c.kv_heads < 1 ||
        c.head_dim < 2 || c.head_dim % 2 != 0 || c.heads % c.kv_heads != 0 || c.sliding_window < 1)
      std::abort();
    if (static_cast<std::int64_t>(c.layer_types.size()) != c.layers) std::abort();
    for (double v : {c.query_pre_attn_scalar, c.rms_norm_eps, c.rope_theta, c.rope_local_base})
      if (!(std::isfinite(v) && v > 0)) std::abort();
    for (std::int64_t i = 0; i < c.layers; ++i)
      if (!(c.rope_base(i) > 0)) std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
