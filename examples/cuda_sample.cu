// Embeds the TiM sampler with the network on a GPU: load a class-conditional checkpoint into
// the tim::cuda backend (float32 or bfloat16) and hand it to tim::TransitionSampler, the same
// line as on the CPU. The state (double), guidance, transitions and noise stay on the GPU for the
// whole run; only the result is copied back.
// Usage: cuda_sample MODEL.safetensors [STEPS] [float32|bfloat16]; from the build folder:
//   examples/cuda_sample ../models/tim-fmnist.safetensors 4 bfloat16
#include <tim/cuda/tim.cuh>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

template <class T>
int run(const char* path, int steps) {
  const auto model = tim::load_c2i<T, tim::cuda>(path);  // weights copied to the GPU once
  const auto& c = model.config;
  const std::int64_t batch = 8, side = 8 * c.patch;
  auto labels = tim::Tensor<std::int64_t>::empty({batch});
  for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = b % c.num_classes;
  const tim::Shape shape{batch, c.in_channels, side, side};
  const auto noise = tim::initial_noise<tim::cuda>(shape, /*seed=*/42);  // generated on the GPU

  // The sampler sizes every device buffer (and the network's workspace) for the largest, guided
  // step before the first one, so the loop allocates nothing.
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(steps)};
  const auto start = std::chrono::steady_clock::now();
  const auto device_result = sampler.sample(noise, labels,
                                            {.cfg_scale = 2.0, .guidance_high = 0.6,
                                             .on_step = [](const tim::StepInfo<tim::cuda>& s) {
                                               std::printf("step %d/%d  t %.4f -> %.4f%s\n", s.step + 1, s.steps, s.t,
                                                           s.r, s.guided ? "  (guided)" : "");
                                               return true;
                                             }});
  const auto x = tim::to_host(device_result.x);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  double sum = 0, squares = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) sum += x.data()[i], squares += std::pow(x.data()[i], 2);
  const double mean = sum / static_cast<double>(x.numel());
  std::printf("%s on %s\nlatents %s: mean %.4f, std %.4f; %d steps in %.3f s\n", c.describe().c_str(),
              tim::cuda::device_description().c_str(), x.shape().str().c_str(), mean,
              std::sqrt(squares / static_cast<double>(x.numel()) - mean * mean), steps, seconds);
  return 0;
}

int main(int argc, char** argv) try {
  const int steps = argc > 2 ? std::atoi(argv[2]) : 4;
  const std::string precision = argc > 3 ? argv[3] : "float32";
  if (argc < 2 || steps < 1 || (precision != "float32" && precision != "bfloat16"))
    return std::fprintf(stderr, "usage: %s MODEL.safetensors [STEPS >= 1] [float32|bfloat16]\n", argv[0]), 2;
  if (!tim::cuda::available())
    return std::fprintf(stderr, "cuda_sample: %s\n", tim::cuda::device_description().c_str()), 1;
  return precision == "float32" ? run<float>(argv[1], steps) : run<tim::bfloat16>(argv[1], steps);
} catch (const tim::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
