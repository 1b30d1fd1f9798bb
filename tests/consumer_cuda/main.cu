// Samples with a C2I and a T2I model on the GPU through the one tim::TransitionSampler, under a
// schedule written here. Built by tests/CMakeLists.txt (package_cuda_consumer) against the
// installed package; without a GPU it says so and exits 0 (the build is what the test checks).
// Usage: consumer_cuda C2I.safetensors T2I.safetensors
#include <tim/cuda/tim.cuh>

#include <cstdio>
#include <vector>

#ifdef EIGEN_WORLD_VERSION
#error "tim/cuda/tim.cuh must not include Eigen"
#endif

//! A schedule of our own: linear in t, N steps.
struct MySchedule {
  int steps;
  std::vector<double> times(double t_max, double t_min) const {
    std::vector<double> grid;
    for (int i = 0; i <= steps; ++i) grid.push_back(t_max + (t_min - t_max) * i / steps);
    return grid;
  }
};

int main(int argc, char** argv) try {
  if (argc != 3) return std::fprintf(stderr, "usage: %s C2I.safetensors T2I.safetensors\n", argv[0]), 2;
  if (!tim::cuda::available()) {
    std::printf("consumer_cuda: built; not run (%s)\n", tim::cuda::device_description().c_str());
    return 0;
  }
  auto c2i = tim::load_c2i<tim::bfloat16, tim::cuda>(argv[1]);
  tim::TransitionSampler sampler{c2i, tim::OtFm{}, MySchedule{4}};
  auto labels = tim::Tensor<std::int64_t>::empty({2});
  labels.data()[0] = 0;
  labels.data()[1] = 1;
  const auto side = 4 * c2i.config.patch;
  const auto x = sampler.sample(tim::initial_noise<tim::cuda>({2, c2i.config.in_channels, side, side}, 0), labels,
                                {.cfg_scale = 2.0});

  auto t2i = tim::load_t2i<float, tim::cuda>(argv[2]);
  const auto& c = t2i.config;
  auto null_caption = tim::Tensor<float, tim::cuda>::zeros({1, 3, c.caption_dim});
  t2i.set_null_caption(null_caption);
  const auto captions = tim::Tensor<float, tim::cuda>::zeros({2, 3, c.caption_dim});
  tim::TransitionSampler text_sampler{t2i, tim::OtFm{}, MySchedule{4}};
  const auto y = text_sampler.sample(tim::initial_noise<tim::cuda>({2, c.in_channels, 4 * c.patch, 4 * c.patch}, 0),
                                     captions, {.cfg_scale = 2.0});
  std::printf("consumer_cuda: C2I %s, T2I %s on %s\n", tim::to_host(x.x).shape().str().c_str(),
              tim::to_host(y.x).shape().str().c_str(), tim::cuda::device_description().c_str());
  return 0;
} catch (const tim::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
