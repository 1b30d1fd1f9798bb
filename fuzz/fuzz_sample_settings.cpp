// libFuzzer target for the settings resolution (tim/sampler/settings.hpp) over a checkpoint's
// __metadata__ built from the input: one "key=value" entry per line (the first '=' splits; a
// later line with the same key wins). The metadata is resolved twice, once with an empty request
// and once with a request that gives some options, and must either resolve to settings that keep
// the documented invariants or throw tim::Error; a crash, a sanitizer report, another exception
// type or a broken invariant is a bug. Seeds: fuzz/corpus/sample_settings/.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <variant>

#include "tim/sampler/settings.hpp"

namespace {

void check_invariants(const tim::SampleSettings& s) {
  if (s.steps.value < 1 || s.times.size() != static_cast<std::size_t>(s.steps.value) + 1) std::abort();
  if (!std::isfinite(s.t_max.value) || !std::isfinite(s.t_min.value) || !(s.t_max.value > s.t_min.value)) std::abort();
  const double transport_t_max = std::visit([](const auto& tr) { return tr.t_max; }, s.transport.value);
  const double transport_t_min = std::visit([](const auto& tr) { return tr.t_min; }, s.transport.value);
  if (transport_t_max != s.t_max.value || transport_t_min != s.t_min.value) std::abort();
  for (std::size_t i = 0; i < s.times.size(); ++i) {
    if (!(s.times[i] >= s.t_min.value && s.times[i] <= s.t_max.value)) std::abort();
    if (i > 0 && !(s.times[i] < s.times[i - 1])) std::abort();
  }
  if (!std::isfinite(s.cfg_scale.value) || !std::isfinite(s.guidance_low.value) ||
      !std::isfinite(s.guidance_high.value) || s.guidance_low.value > s.guidance_high.value)
    std::abort();
  if (!(s.stochasticity.value >= 0)) std::abort();
  if (s.latent_size && (s.latent_size->height.value < 1 || s.latent_size->width.value < 1)) std::abort();
  if (s.describe().size() != (s.latent_size ? 12u : 10u)) std::abort();
}

void resolve(const tim::SampleRequest& request, const std::map<std::string, std::string>& metadata) {
  try {
    check_invariants(tim::resolve_sample_settings(request, metadata));
  } catch (const tim::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> metadata;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line = text.substr(start, end - start);
    const std::size_t equals = line.find('=');
    if (equals != std::string_view::npos)
      metadata[std::string(line.substr(0, equals))] = std::string(line.substr(equals + 1));
    start = end + 1;
  }
  resolve({}, metadata);
  tim::SampleRequest request;
  request.steps = 2;
  request.height = 4;
  request.cfg_scale = 1.5;
  request.t_min = 0.5;
  resolve(request, metadata);
  return 0;
}
