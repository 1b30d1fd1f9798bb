// The optimizer part of a training step (tim/train/optimizer.hpp): gradient clipping by global
// norm, one AdamW step and one EMA update over every parameter, at the shipped Fashion-MNIST
// model's size (D 256, depth 4, 4 heads, p 4, L 96, 1 channel, 10 classes: 5.1 M parameters) and
// at TiM-B/4 (130 M), float32, random weights and gradients. Reports parameters per second and the
// bytes streamed (read p, g, m, v, ema; write p, m, v, ema; plus the norm's read of g).
// Threads: the library default; TIM_BENCH_THREADS=n.
// Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TIM_BENCH_THREADS=2 build/bench/bench_optimizer
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "random_checkpoint.hpp"
#include "tim/tim.hpp"
#include "tim/train/optimizer.hpp"

namespace {

void run(benchmark::State& state, const tim::nn::C2IConfig& config) {
  if (const char* threads = std::getenv("TIM_BENCH_THREADS")) tim::set_num_threads(std::atoi(threads));
  tim_bench::RandomCheckpoint source(config, 1);
  auto model = tim::nn::clone_parameters(tim::nn::load_c2i<float>(source));
  tim_bench::RandomCheckpoint gradient_source(config, 2);
  auto grads = tim::nn::clone_parameters(tim::nn::load_c2i<float>(gradient_source));
  tim::train::AdamW<float> adamw(model, {});
  tim::train::GradientClipper<float> clipper(grads);
  tim::train::Ema<float> ema(model, 0.999);
  std::int64_t parameters = 0;
  tim::nn::for_each_parameter([&](const std::string&, const tim::Tensor<float>& p) { parameters += p.numel(); }, model);
  for (auto _ : state) {
    benchmark::DoNotOptimize(clipper.clip(grads, 1e9));  // the limit is not reached: gradients unchanged
    adamw.step(model, grads, 1e-4);
    ema.update(model);
    benchmark::ClobberMemory();
  }
  state.counters["parameters"] = static_cast<double>(parameters);
  state.SetItemsProcessed(state.iterations() * parameters);
  state.SetBytesProcessed(state.iterations() * parameters * static_cast<std::int64_t>(sizeof(float)) * 11);
}

void BM_OptimizerStep_Shipped(benchmark::State& state) {
  run(state, tim_bench::released_style_config(256, 4, 4, 4, 96, 1, 10));
}
void BM_OptimizerStep_TiM_B4(benchmark::State& state) { run(state, tim_bench::tim_b4_config()); }

BENCHMARK(BM_OptimizerStep_Shipped)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OptimizerStep_TiM_B4)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
