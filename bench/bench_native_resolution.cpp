// Native resolution: the cost of one T2I network evaluation against the token count, float32,
// from 16 x 16 to 128 x 128 tokens (p = 1 latents of that size), next to the cost of the
// self-attention operation alone at the same shapes, so the two parts can be told apart:
// attention should grow near N^2, everything else (projections, MLP, norms, cross-attention
// to a fixed caption) near N. Results and how to read them: docs/t2i.md ("Native resolution").
//
// Model: a small released-style T2I network with random weights (tests/random_t2i_checkpoint.hpp):
// D 256, 4 heads (hd 64), depth 2, L 192, C 32, cap_dim 64, M 32 caption tokens, batch 1.
// Run (Release build): ./bench_native_resolution [--benchmark_filter=...]
// Threads: the library default (physical cores); TIM_BENCH_THREADS=n overrides it.
//
// Counters:
//   tokens          N = (H/p)(W/p)
//   per_token       wall time per call / N      (flat if the cost is linear in N)
//   per_token^2     wall time per call / N^2    (flat if the cost is quadratic in N)
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../tests/random_t2i_checkpoint.hpp"
#include "tim/tim.hpp"

namespace {

constexpr std::int64_t hidden = 256, depth = 2, heads = 4, channels = 32, caption_dim = 64, caption_tokens = 32;

const tim::nn::T2IModel<float>& shared_model() {
  static const auto checkpoint = tim_test::random_t2i_checkpoint(
      tim_test::t2i_config(hidden, depth, heads, /*patch=*/1, channels, caption_dim, /*adaln_hidden=*/192));
  static const auto model = tim::nn::load_t2i<float>(checkpoint);
  return model;
}

tim::Tensor<float> random_tensor(const tim::Shape& shape, std::uint32_t seed) {
  auto t = tim::Tensor<float>::empty(shape);
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(engine);
  return t;
}

void set_counters(benchmark::State& state, double tokens) {
  state.counters["tokens"] = tokens;
  // An inverted rate of iterations x N (x N) is seconds per call per token (per token^2).
  const double iterations = static_cast<double>(state.iterations());
  state.counters["per_token"] =
      benchmark::Counter(iterations * tokens, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["per_token^2"] =
      benchmark::Counter(iterations * tokens * tokens, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

//! One T2I forward on a (1, C, H, W) latent with M caption tokens.
void BM_T2IForward(benchmark::State& state, std::int64_t height, std::int64_t width) {
  const auto& model = shared_model();
  const auto x = random_tensor({1, channels, height, width}, 1);
  const auto captions = random_tensor({1, caption_tokens, caption_dim}, 2);
  auto t = tim::Tensor<float>::empty({1}), r = tim::Tensor<float>::empty({1});
  t.data()[0] = 0.9f;
  r.data()[0] = 0.4f;
  tim::Tensor<float> out;
  model.forward(out, x, t, r, captions);  // warm-up: sizes the workspace and the rotary tables
  for (auto _ : state) {
    model.forward(out, x, t, r, captions);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(height * width));
}

//! The self-attention operation alone, `depth` times (once per block), at the forward's shapes:
//! q, k, v (1, nh, N, hd) -> (1, N, nh, hd).
void BM_SelfAttention(benchmark::State& state, std::int64_t height, std::int64_t width) {
  const std::int64_t tokens = height * width, head_dim = hidden / heads;
  const auto q = random_tensor({1, heads, tokens, head_dim}, 3);
  const auto k = random_tensor({1, heads, tokens, head_dim}, 4);
  const auto v = random_tensor({1, heads, tokens, head_dim}, 5);
  auto out = tim::Tensor<float>::empty({1, tokens, heads, head_dim});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  for (auto _ : state) {
    for (std::int64_t block = 0; block < depth; ++block)
      tim::cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), 1, heads, tokens, head_dim, scale);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(tokens));
}

void register_benchmarks() {
  struct Grid {
    std::int64_t height, width;
    int iterations;
  };
  // Square grids from 256 to 16384 tokens and one non-square grid; fixed iteration counts keep
  // the run to a few minutes on a small machine (the largest grid is seconds per call).
  for (const Grid& g : {Grid{16, 16, 20}, Grid{32, 32, 10}, Grid{64, 64, 5}, Grid{64, 128, 3}, Grid{96, 96, 2},
                        Grid{128, 128, 2}}) {
    const std::string size = std::to_string(g.height) + "x" + std::to_string(g.width);
    const auto h = g.height, w = g.width;
    benchmark::RegisterBenchmark(("BM_T2IForward/" + size).c_str(),
                                 [h, w](benchmark::State& s) { BM_T2IForward(s, h, w); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(g.iterations);
    benchmark::RegisterBenchmark(("BM_SelfAttention/" + size).c_str(),
                                 [h, w](benchmark::State& s) { BM_SelfAttention(s, h, w); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(g.iterations);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* threads = std::getenv("TIM_BENCH_THREADS")) tim::set_num_threads(std::atoi(threads));
  else tim::detail::ensure_default_threads();
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("tim_threads", std::to_string(tim::num_threads()));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("model", "T2I D 256, 4 heads, depth 2, C 32, p 1, M 32, batch 1, random weights");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
