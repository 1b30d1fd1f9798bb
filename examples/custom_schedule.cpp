// Embeds the TiM sampler with a schedule written here: any type with times(t_max, t_min).
// Usage: custom_schedule MODEL.safetensors [STEPS]; with the test model, from the build folder:
//   examples/custom_schedule ../tests/data/sampler_golden/model.safetensors 4
#include <tim/tim.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

// Geometric spacing: each step keeps the same fraction of the time left, ending at t_max / 16
// before the final jump to t_min, so the steps shrink towards the data end.
struct GeometricSchedule {
  int steps;
  std::vector<double> times(double t_max, double t_min) const {
    std::vector<double> t{t_max};
    for (int i = 1; i < steps; ++i) t.push_back(t.back() * std::pow(16.0, -1.0 / (steps - 1)));
    t.push_back(t_min);
    return t;
  }
};

int main(int argc, char** argv) try {
  const int steps = argc > 2 ? std::atoi(argv[2]) : 4;
  if (argc < 2 || steps < 1) return std::fprintf(stderr, "usage: %s MODEL.safetensors [STEPS >= 1]\n", argv[0]), 2;
  const auto model = tim::load_c2i<float>(argv[1]);
  const auto& c = model.config;
  const std::int64_t batch = 4, side = 8 * c.patch;
  auto labels = tim::Tensor<std::int64_t>::empty({batch});
  for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = b % c.num_classes;
  const auto noise = tim::initial_noise({batch, c.in_channels, side, side}, /*seed=*/42);

  tim::TransitionSampler sampler{model, tim::OtFm{}, GeometricSchedule{steps}};
  auto progress = [](const tim::StepInfo<>& s) {
    std::printf("step %d/%d  t %.4f -> %.4f%s\n", s.step + 1, s.steps, s.t, s.r, s.guided ? "  (guided)" : "");
    return true;  // false would cancel
  };
  const auto result = sampler.sample(noise, labels, {.cfg_scale = 2.5, .guidance_high = 0.6, .on_step = progress});

  double sum = 0, squares = 0;
  for (std::int64_t i = 0; i < result.x.numel(); ++i) sum += result.x.data()[i], squares += std::pow(result.x.data()[i], 2);
  const double mean = sum / result.x.numel();
  std::printf("%s\nlatents %s: mean %.4f, std %.4f\n", c.describe().c_str(), result.x.shape().str().c_str(), mean,
              std::sqrt(squares / result.x.numel() - mean * mean));
} catch (const tim::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
