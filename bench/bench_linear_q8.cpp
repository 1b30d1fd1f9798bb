// Linear layers with q8_0 weights (tim/cpu/gemm_q8.hpp) against float weights (the float GEMM:
// OpenBLAS sgemm/sgemv with tim::blas) and bfloat16 weights (tim/cpu/gemm_bf16.hpp: widened panels,
// and oneDNN's bfloat16 matmul where available) at TiM-XL/2 shapes: K x N = 1152x1152 (attn.proj),
// 1152x3456 (attn.qkv), 1152x4608 and 4608x1152 (the brief's MLP-like pair), with M = 1 and 8 rows
// (one token, eight) and 256 (the 256 tokens of a 256x256 image at batch 1). Per call:
//   BM_LinearFloat       float weights, tim::cpu::linear_forward
//   BM_LinearBf16Widened bfloat16 weights, Precision::float32
//   BM_LinearBf16        bfloat16 weights, Precision::bfloat16 (skipped where bf16_kernel() is not available)
//   BM_LinearQ8/<variant> q8_0 weights, tim::cpu_gemm::linear_forward_q8 with that variant (skipped
//                        where the CPU lacks it), activations quantised inside the call
// Counters: FLOP/s (2 M K N per call) and the weights' bytes streamed per second.
// Threads: the library default; TIM_BENCH_THREADS=n.
//
// Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TIM_BENCH_THREADS=2 build/bench/bench_linear_q8
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "tim/core/q8_0.hpp"
#include "tim/cpu/gemm_q8.hpp"
#include "tim/tim.hpp"

namespace {

struct Inputs {
  std::int64_t M, K, N;
  std::vector<float> x, w, y;
  std::vector<tim::bfloat16> w16;
  std::vector<std::int8_t> q;
  std::vector<tim::float16> scales;
};

Inputs make(const benchmark::State& state) {
  if (const char* threads = std::getenv("TIM_BENCH_THREADS")) tim::set_num_threads(std::atoi(threads));
  Inputs in{state.range(2), state.range(0), state.range(1), {}, {}, {}, {}, {}, {}};
  std::mt19937 engine(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  in.x.resize(static_cast<std::size_t>(in.M * in.K));
  for (auto& v : in.x) v = normal(engine);
  in.w.resize(static_cast<std::size_t>(in.N * in.K));
  in.w16.resize(in.w.size());
  for (std::size_t i = 0; i < in.w.size(); ++i) {
    in.w[i] = normal(engine) * 0.03f;
    in.w16[i] = tim::bfloat16(in.w[i]);
  }
  const std::int64_t nb = tim::q8_0_blocks(in.K);
  in.q.resize(in.w.size());
  in.scales.resize(static_cast<std::size_t>(in.N * nb));
  for (std::int64_t n = 0; n < in.N; ++n)
    tim::quantize_row_q8_0(in.q.data() + n * in.K, in.scales.data() + n * nb, in.w.data() + n * in.K, in.K);
  in.y.resize(static_cast<std::size_t>(in.M * in.N));
  return in;
}

void set_counters(benchmark::State& state, const Inputs& in, double weight_bytes) {
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(in.M * in.K * in.N) * iterations,
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["weight_B/s"] =
      benchmark::Counter(weight_bytes * iterations, benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  state.counters["threads"] = tim::num_threads();
}

void BM_LinearFloat(benchmark::State& state) {
  auto in = make(state);
  for (auto _ : state) {
    tim::cpu::linear_forward(in.y.data(), in.x.data(), in.w.data(), static_cast<const float*>(nullptr), in.M, in.K, in.N);
    benchmark::DoNotOptimize(in.y.data());
  }
  set_counters(state, in, 4.0 * static_cast<double>(in.N * in.K));
}

void run16(benchmark::State& state, tim::Precision precision) {
  auto in = make(state);
  for (auto _ : state) {
    tim::cpu::linear_forward(in.y.data(), in.x.data(), in.w16.data(), static_cast<const float*>(nullptr), in.M, in.K,
                             in.N, false, precision);
    benchmark::DoNotOptimize(in.y.data());
  }
  set_counters(state, in, 2.0 * static_cast<double>(in.N * in.K));
}

void BM_LinearBf16Widened(benchmark::State& state) { run16(state, tim::Precision::float32); }

void BM_LinearBf16(benchmark::State& state) {
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (!kernel.available) {
    state.SkipWithError(("bfloat16 kernel not available: " + kernel.reason).c_str());
    return;
  }
  state.SetLabel(kernel.name);
  run16(state, tim::Precision::bfloat16);
}

void BM_LinearQ8(benchmark::State& state, tim::cpu_gemm::Q8Variant variant) {
  std::string why;
  if (!tim::cpu_gemm::q8_variant_supported(variant, &why)) {
    state.SkipWithError(("q8_0 variant not available: " + why).c_str());
    return;
  }
  auto in = make(state);
  const tim::Q8Weight w{in.q.data(), in.scales.data(), in.N, in.K};
  for (auto _ : state) {
    tim::cpu_gemm::linear_forward_q8(in.y.data(), in.x.data(), w, nullptr, in.M, false, variant);
    benchmark::DoNotOptimize(in.y.data());
  }
  set_counters(state, in, static_cast<double>(in.N * in.K) + 2.0 * static_cast<double>(in.scales.size()));
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"K", "N", "M"});
  for (const auto& [k, n] : {std::pair{1152, 1152}, {1152, 3456}, {1152, 4608}, {4608, 1152}})
    for (const int m : {1, 8, 256}) b->Args({k, n, m});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_LinearFloat)->Apply(shapes);
BENCHMARK(BM_LinearBf16Widened)->Apply(shapes);
BENCHMARK(BM_LinearBf16)->Apply(shapes);
BENCHMARK_CAPTURE(BM_LinearQ8, scalar, tim::cpu_gemm::Q8Variant::scalar)->Apply(shapes);
BENCHMARK_CAPTURE(BM_LinearQ8, avx2, tim::cpu_gemm::Q8Variant::avx2)->Apply(shapes);
BENCHMARK_CAPTURE(BM_LinearQ8, avx512_vnni, tim::cpu_gemm::Q8Variant::avx512_vnni)->Apply(shapes);
BENCHMARK_MAIN();
