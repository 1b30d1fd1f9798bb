// Linear layers with bfloat16 weights (tim/cpu/gemm_bf16.hpp) against the float GEMM at the Gemma-3
// 1B text encoder's shapes: M = 256 rows (one prompt of the released max_seq_length), K x N =
// 1152x1024 (q_proj), 1152x256 (k_proj, v_proj), 1024x1152 (o_proj), 1152x6912 (gate_proj,
// up_proj), 6912x1152 (down_proj). Three variants per shape:
//   BM_LinearFloat     float weights, tim::cpu::linear_forward (OpenBLAS sgemm with tim::blas)
//   BM_LinearWidened   bfloat16 weights, Precision::float32 (panels widened to float, then sgemm)
//   BM_LinearBf16      bfloat16 weights, Precision::bfloat16 (activations rounded, oneDNN's matmul;
//                      skipped where cpu_gemm::bf16_kernel() is not available, with its reason)
// Each reports FLOP/s (2 M K N per call). Threads: the library default; TIM_BENCH_THREADS=n.
//
// Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TIM_BENCH_THREADS=2 build/bench/bench_linear_bf16
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "tim/tim.hpp"

namespace {

constexpr std::int64_t M = 256;

struct Inputs {
  std::vector<float> x, w, y;
  std::vector<tim::bfloat16> w16;
};

Inputs make(std::int64_t K, std::int64_t N) {
  if (const char* threads = std::getenv("TIM_BENCH_THREADS")) tim::set_num_threads(std::atoi(threads));
  std::mt19937 engine(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Inputs in;
  in.x.resize(static_cast<std::size_t>(M * K));
  for (auto& v : in.x) v = normal(engine);
  in.w.resize(static_cast<std::size_t>(N * K));
  in.w16.resize(in.w.size());
  for (std::size_t i = 0; i < in.w.size(); ++i) {
    in.w16[i] = tim::bfloat16(normal(engine) * 0.03f);
    in.w[i] = static_cast<float>(in.w16[i]);
  }
  in.y.resize(static_cast<std::size_t>(M * N));
  return in;
}

void set_flops(benchmark::State& state, std::int64_t K, std::int64_t N) {
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * K * N * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["threads"] = tim::num_threads();
}

void BM_LinearFloat(benchmark::State& state) {
  const auto K = state.range(0), N = state.range(1);
  auto in = make(K, N);
  for (auto _ : state) {
    tim::cpu::linear_forward(in.y.data(), in.x.data(), in.w.data(), static_cast<const float*>(nullptr), M, K, N);
    benchmark::DoNotOptimize(in.y.data());
  }
  set_flops(state, K, N);
}

void run16(benchmark::State& state, tim::Precision precision) {
  const auto K = state.range(0), N = state.range(1);
  auto in = make(K, N);
  for (auto _ : state) {
    tim::cpu::linear_forward(in.y.data(), in.x.data(), in.w16.data(), static_cast<const float*>(nullptr), M, K, N,
                             false, precision);
    benchmark::DoNotOptimize(in.y.data());
  }
  set_flops(state, K, N);
}

void BM_LinearWidened(benchmark::State& state) { run16(state, tim::Precision::float32); }

void BM_LinearBf16(benchmark::State& state) {
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (!kernel.available) {
    state.SkipWithError(("bfloat16 kernel not available: " + kernel.reason).c_str());
    return;
  }
  state.SetLabel(kernel.name);
  run16(state, tim::Precision::bfloat16);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"K", "N"});
  for (const auto& [k, n] : {std::pair{1152, 1024}, {1152, 256}, {1024, 1152}, {1152, 6912}, {6912, 1152}})
    b->Args({k, n});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_LinearFloat)->Apply(shapes);
BENCHMARK(BM_LinearWidened)->Apply(shapes);
BENCHMARK(BM_LinearBf16)->Apply(shapes);
BENCHMARK_MAIN();
