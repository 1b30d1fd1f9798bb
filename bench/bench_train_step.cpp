// One training step of `tim train` (apps/cli/train.cpp): the time pairs and label dropout, the
// objective's forward, its two DDE forwards, the backward (compute_loss_and_gradients with the
// EMA network as the enhanced target's, here off), gradient clipping, AdamW and the EMA, float32.
// Two shapes: the shipped Fashion-MNIST model (D 256, depth 4, 4 heads, p 4, L 96, 1 channel, 10
// classes, batch 64 of 32 x 32: 5.1 M parameters) and TiM-B/4 (D 768, depth 12, p 4, L 256, 4
// latent channels of 32 x 32 as for 256 px images, 1000 classes, batch 8). The objective is the
// shipped recipe's (OT-FM, P_mean -0.4, diffusion 0.5, consistency 0.1, sqrt + tangent, adaptive,
// no directional loss). Random weights (tim_bench::RandomCheckpoint) and a fixed random batch.
// bench/bench_train_step.py times tools/reference/train.py's step at the same settings.
// Threads: the library default; TIM_BENCH_THREADS=n.
// Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TIM_BENCH_THREADS=2 build/bench/bench_train_step
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "random_checkpoint.hpp"
#include "tim/core/random.hpp"
#include "tim/tim.hpp"
#include "tim/train/objective.hpp"
#include "tim/train/optimizer.hpp"

namespace {

void run(benchmark::State& state, const tim::nn::C2IConfig& config, std::int64_t B, std::int64_t H, std::int64_t W) {
  if (const char* threads = std::getenv("TIM_BENCH_THREADS")) tim::set_num_threads(std::atoi(threads));
  tim_bench::RandomCheckpoint source(config, 1);
  auto model = tim::nn::clone_parameters(tim::nn::load_c2i<float>(source));
  auto grads = tim::nn::zero_gradients_like(model);
  tim::train::AdamW<float> adamw(model, {});
  tim::train::GradientClipper<float> clipper(grads);
  tim::train::Ema<float> ema(model, 0.999);
  auto objective = tim::train::ObjectiveConfig::released_c2i();
  objective.directional_loss = false;
  const auto C = config.in_channels;
  tim::train::ObjectiveBatch<float> batch;
  batch.x = tim::Tensor<float>::empty({B, C, H, W});
  batch.z = tim::Tensor<float>::empty({B, C, H, W});
  for (std::int64_t i = 0; i < batch.x.numel(); ++i) {
    batch.x.data()[i] = static_cast<float>(std::tanh(tim::random::normal(3, 0, 1, static_cast<std::uint64_t>(i))));
    batch.z.data()[i] = static_cast<float>(tim::random::normal(3, 0, 2, static_cast<std::uint64_t>(i)));
  }
  auto labels = tim::Tensor<std::int64_t>::empty({B});
  for (std::int64_t b = 0; b < B; ++b) labels.data()[b] = b % config.num_classes;
  tim::train::ObjectiveWorkspace<float> ws;
  std::int64_t step = 0;
  double loss = 0;
  const auto train_step = [&] {
    batch.n_diffusion = tim::train::sample_time_pairs(objective, batch.t, batch.r, B, 7, step);
    batch.cond_labels = labels;
    batch.labels = tim::train::drop_labels(labels, objective.label_dropout, model.null_label(), 7, step);
    tim::nn::zero_gradients(grads);
    loss = tim::train::compute_loss_and_gradients(model, ema.network(), batch, objective, ws, grads).loss;
    benchmark::DoNotOptimize(clipper.clip(grads, 1.0));
    adamw.step(model, grads, 1e-4);
    ema.update(model);
    ++step;
  };
  train_step();  // sizes the workspaces outside the timing
  for (auto _ : state) {
    train_step();
    benchmark::ClobberMemory();
  }
  state.counters["loss"] = loss;
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(B), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStep_Shipped(benchmark::State& state) {
  run(state, tim_bench::released_style_config(256, 4, 4, 4, 96, 1, 10), 64, 32, 32);
}
void BM_TrainStep_TiM_B4(benchmark::State& state) { run(state, tim_bench::tim_b4_config(), 8, 32, 32); }

BENCHMARK(BM_TrainStep_Shipped)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_TrainStep_TiM_B4)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
