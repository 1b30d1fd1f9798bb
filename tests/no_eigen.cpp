// The Eigen-free part of tim (the CMake target tim::headers) builds and works without Eigen or
// OpenMP anywhere: this file is compiled against tim::headers only (tests/CMakeLists.txt), so
// Eigen is not on its include path, and the checks below fail the build if a header still pulls
// Eigen or omp.h in from somewhere else. tim/io/png.hpp is left out (it needs libpng). The whole
// library without its backends (tim/library.hpp: networks, sampler, decoders) is included too:
// only running a model needs a backend.
#include <cstdio>

#include "tim/core/backend.hpp"
#include "tim/core/tensor.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/library.hpp"  // everything but the backends: the networks, the sampler, the decoders
#include "tim/sampler/sampler.hpp"
#include "tim/sampler/schedule.hpp"
#include "tim/sampler/settings.hpp"
#include "tim/transport/transports.hpp"

#if defined(EIGEN_WORLD_VERSION)
#error "a tim::headers header included Eigen"
#endif
#if defined(_OMP_H) || defined(__OMP_H)
#error "a tim::headers header included omp.h"
#endif

int main() {
  // Tensor<float> on host memory (HostMemory, through backend_memory<cpu>): allocate and clone.
  auto x = tim::Tensor<float>::zeros({2, 3});
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(i);
  const auto copy = x.clone();
  x.data()[0] = 42.0f;  // the clone owns its own data
  bool ok = copy.shape() == tim::Shape({2, 3}) && copy.data() != x.data() && copy.data()[0] == 0.0f &&
            copy.data()[5] == 5.0f && copy.slice(1, 1).data()[0] == 3.0f;

  // A safetensors round trip through memory.
  tim::io::SafetensorsWriter writer;
  writer.add("x", copy);
  const auto bytes = writer.to_bytes();
  const auto file = tim::io::SafetensorsFile::from_bytes(bytes, "memory");
  const auto loaded = file.load<float>("x", {2, 3});
  ok = ok && loaded.data()[4] == 4.0f;

  // A transport and a schedule.
  const auto times = tim::linspace_schedule(4).times(tim::OtFm{}.t_max, tim::OtFm{}.t_min);
  ok = ok && times.size() == 5 && times.front() == 1.0 && times.back() == 0.0;

  // The sampler's interface: its option and result types, and the settings resolution.
  const tim::SamplerOptions<> options{.cfg_scale = 2.5, .guidance_high = 0.6};
  const tim::SampleResult<> result;
  const auto settings = tim::resolve_sample_settings({.steps = 4}, {{"sample_cfg_scale", "2.5"}});
  ok = ok && options.cfg_scale == 2.5 && result.steps_done == 0 && settings.steps.value == 4 &&
       settings.cfg_scale.value == 2.5 && settings.cfg_scale.source == tim::SettingSource::metadata;

  std::printf("%s: Tensor, safetensors, transport, schedule, sampler options, settings without Eigen\n",
              ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}
