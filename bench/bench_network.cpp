// One network evaluation (C2IModel::forward) at the TiM-B/4 and TiM-XL/2 shapes, float32, on
// a 32x32x4 latent with random weights (bench/random_checkpoint.hpp), batch 1 and 8; a guided
// 4-step sampling run of TiM-B/4 (BM_Sample, the sampler's cost around its forwards); plus the
// float32 GEMM rate of the same backend (tim::cpu::linear_forward, Eigen) so the network's
// GFLOP/s can be read against the machine's matmul rate. BM_Forward runs with the linear weights
// stored as float32 (weights:float32) and as bfloat16 (weights:bfloat16, read directly by the
// 16-bit GEMMs of tim/cpu/gemm_bf16.hpp) in float32 precision, and in bfloat16 precision
// (precision:bfloat16: activations rounded to bfloat16, oneDNN where the CPU has AVX512-BF16/AMX;
// the context line bf16_kernel names what ran). Filter with e.g. --benchmark_filter='TiM-B4'.
//
// Run (Release build): env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./bench_network
// Threads: the library default (physical cores); TIM_BENCH_THREADS=n overrides it.
//
// Counters:
//   FLOP/s   analytic FLOPs of one forward (tim::nn::forward_flops, include/tim/nn/flops.hpp) x iterations / wall time.
//   GFLOP    FLOPs of one forward / 1e9.
//   tokens   tokens per forward, B * (H/p) * (W/p).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "random_checkpoint.hpp"
#include "tim/cpu/per_sample_network.hpp"
#include "tim/tim.hpp"

namespace {

constexpr std::int64_t latent_size = 32;  // H = W = 32, C = 4 (SD-VAE latents of 256 px images)

double gemm(double m, double n, double k) { return 2.0 * m * n * k; }

enum class Model { b4, xl2 };
//! The linear weights' storage and the products' precision.
enum class Weights { float32, bfloat16, bfloat16_products };
const char* weights_suffix(Weights w) {
  switch (w) {
    case Weights::float32: return "/weights:float32";
    case Weights::bfloat16: return "/weights:bfloat16";
    case Weights::bfloat16_products: return "/weights:bfloat16/precision:bfloat16";
  }
  return "";
}

tim::nn::C2IModel<float> make_model(Model which, Weights weights) {
  const auto config = which == Model::b4 ? tim_bench::tim_b4_config() : tim_bench::tim_xl2_config();
  const auto dtype = weights == Weights::float32 ? tim::DType::F32 : tim::DType::BF16;
  const auto precision = weights == Weights::bfloat16_products ? tim::Precision::bfloat16 : tim::Precision::float32;
  return tim::nn::load_c2i<float>(tim_bench::RandomCheckpoint(config, 0, 0.02f, dtype), {}, {.precision = precision});
}

//! One model per configuration and weight storage, generated on first use and shared by every run of it.
const tim::nn::C2IModel<float>& shared_model(Model which, Weights weights = Weights::float32) {
  static std::map<std::pair<Model, Weights>, tim::nn::C2IModel<float>> models;
  auto found = models.find({which, weights});
  if (found == models.end()) found = models.emplace(std::pair{which, weights}, make_model(which, weights)).first;
  return found->second;
}

tim::Tensor<float> random_tensor(const tim::Shape& shape, std::mt19937& engine, float lo, float hi, bool normal) {
  auto t = tim::Tensor<float>::empty(shape);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal ? n01(engine) : uniform(engine);
  return t;
}

void BM_Forward(benchmark::State& state, Model which, std::int64_t batch, Weights weights) {
  const auto& model = shared_model(which, weights);
  const auto& c = model.config;
  std::mt19937 engine(1234);
  const auto x = random_tensor({batch, c.in_channels, latent_size, latent_size}, engine, 0, 0, true);
  // Network time inputs c_noise(t), c_noise(r) with r <= t: values in the range the sampler uses.
  auto t_in = random_tensor({batch}, engine, 0.5f, 1.5f, false);
  auto r_in = random_tensor({batch}, engine, 0.0f, 0.5f, false);
  auto labels = tim::Tensor<std::int64_t>::empty({batch});
  std::uniform_int_distribution<std::int64_t> label(0, c.num_classes - 1);
  for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = label(engine);
  tim::Tensor<float> out;
  model.forward(out, x, t_in, r_in, labels);  // warm-up: sizes the workspace, touches the weights

  for (auto _ : state) {
    model.forward(out, x, t_in, r_in, labels);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double flops = tim::nn::forward_flops(c, batch, latent_size, latent_size);
  const double tokens = static_cast<double>(batch * (latent_size / c.patch) * (latent_size / c.patch));
  state.counters["FLOP/s"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.counters["GFLOP"] = flops * 1e-9;
  state.counters["tokens"] = tokens;
}

//! A whole sampling run (tim::TransitionSampler, OT-FM, 4 linspace steps, guidance 2 on every
//! step but the first: 1 evaluation of B rows and 3 of 2B) with the network in float on the CPU.
//! The state, guidance and transitions are the sampler's own work around the forwards.
template <class Network>
void run_sample(benchmark::State& state, const Network& model, std::int64_t batch) {
  const auto& c = model.config;
  auto labels = tim::Tensor<std::int64_t>::empty({batch});
  for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = b % c.num_classes;
  const auto noise = tim::initial_noise({batch, c.in_channels, latent_size, latent_size}, /*seed=*/3);
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(4)};
  benchmark::DoNotOptimize(sampler.sample(noise, labels, {.cfg_scale = 2.0}).x.data());  // warm-up
  for (auto _ : state) {
    benchmark::DoNotOptimize(sampler.sample(noise, labels, {.cfg_scale = 2.0}).x.data());
    benchmark::ClobberMemory();
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch * state.iterations()), benchmark::Counter::kIsRate);
}

//! per_sample: through tim::PerSampleNetwork (every row on its own, one thread each), as
//! `tim sample`, `tim serve` and the Python package sample on the CPU; else the batched network.
void BM_Sample(benchmark::State& state, Model which, std::int64_t batch, bool per_sample) {
  if (per_sample) {
    const tim::PerSampleNetwork exact{shared_model(which)};
    run_sample(state, exact, batch);
  } else {
    run_sample(state, shared_model(which), batch);
  }
}

//! y (M, N) = x (M, K) W^T, W (N, K): the backend's Linear GEMM, no bias.
void BM_Gemm(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::mt19937 engine(7);
  const auto x = random_tensor({m, k}, engine, -1, 1, false);
  const auto w = random_tensor({n, k}, engine, -1, 1, false);
  auto y = tim::Tensor<float>::empty({m, n});
  tim::cpu::linear_forward(y.data(), x.data(), w.data(), static_cast<const float*>(nullptr), m, k, n);
  for (auto _ : state) {
    tim::cpu::linear_forward(y.data(), x.data(), w.data(), static_cast<const float*>(nullptr), m, k, n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(gemm(m, n, k) * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

void register_benchmarks() {
  struct Case {
    const char* name;
    Model model;
    std::int64_t batch;
    int iterations;
  };
  // Fixed iteration counts keep the whole run to a few minutes (XL/2 batch 8 is seconds per call).
  for (const Case& k : {Case{"BM_Forward/TiM-B4/batch:1", Model::b4, 1, 20},
                        Case{"BM_Forward/TiM-B4/batch:8", Model::b4, 8, 5},
                        Case{"BM_Forward/TiM-XL2/batch:1", Model::xl2, 1, 5},
                        Case{"BM_Forward/TiM-XL2/batch:8", Model::xl2, 8, 3}}) {
    const Model model = k.model;
    const std::int64_t batch = k.batch;
    for (const Weights weights : {Weights::float32, Weights::bfloat16, Weights::bfloat16_products})
      benchmark::RegisterBenchmark((std::string(k.name) + weights_suffix(weights)).c_str(),
                                   [model, batch, weights](benchmark::State& s) { BM_Forward(s, model, batch, weights); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->Iterations(k.iterations);
  }
  for (const bool per_sample : {false, true})
    for (const Case& k : {Case{"BM_Sample/TiM-B4/batch:1/steps:4", Model::b4, 1, 5},
                          Case{"BM_Sample/TiM-B4/batch:4/steps:4", Model::b4, 4, 3}}) {
      const Model model = k.model;
      const std::int64_t batch = k.batch;
      benchmark::RegisterBenchmark((std::string(k.name) + (per_sample ? "/per_sample" : "")).c_str(),
                                   [model, batch, per_sample](benchmark::State& s) {
                                     BM_Sample(s, model, batch, per_sample);
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->Iterations(k.iterations);
    }
  // The matmul rate: a large square GEMM, then the network's largest GEMM shapes
  // (XL/2 MLP fc1 at batch 1 and 8: R x Hm x D; B/4 qkv at batch 1: R x 3D x D).
  benchmark::RegisterBenchmark("BM_Gemm", BM_Gemm)
      ->ArgNames({"M", "N", "K"})
      ->Args({2048, 2048, 2048})
      ->Args({256, 3072, 1152})
      ->Args({2048, 3072, 1152})
      ->Args({64, 2304, 768})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(1.0);
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
  benchmark::AddCustomContext("cpu_features", tim::cpu_features().describe());
  const auto& bf16 = tim::cpu_gemm::bf16_kernel();
  benchmark::AddCustomContext("bf16_kernel", bf16.available ? bf16.name : "none (float32 instead): " + bf16.reason);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
