// The CPU backend's operations one by one at TiM-XL/2's shapes, batch 8 (R = 2048 token rows,
// D 1152, Hm 3072, 16 heads of 72, 256 tokens per sample), float32: what one block of a forward
// spends outside its GEMMs (bench_network has the GEMMs and the whole forward). Each reports
// bytes/s, counting each input read once and each output written once, against which the
// machine's memory and cache bandwidth can be read; attention also reports FLOP/s (QK^T and PV,
// 4 N^2 hd per sample and head).
//
// Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/bench_ops
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tim/tim.hpp"

namespace {

constexpr std::int64_t batch = 8, tokens = 256, rows = batch * tokens, hidden = 1152, mlp_hidden = 3072, heads = 16,
                       head_dim = 72;

std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(n);
  for (auto& v : values) v = uniform(engine);
  return values;
}

void set_bytes(benchmark::State& state, double bytes_per_call) {
  state.counters["bytes/s"] = benchmark::Counter(bytes_per_call * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
}

void BM_LayerNorm(benchmark::State& state) {
  auto x = random_values(rows * hidden, 1);
  std::vector<float> out(x.size());
  for (auto _ : state) {
    tim::cpu::layernorm_forward(out.data(), x.data(), static_cast<const float*>(nullptr),
                                static_cast<const float*>(nullptr), rows, hidden, 1e-6);
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(state, 2.0 * sizeof(float) * rows * hidden);
}

void BM_Modulate(benchmark::State& state) {
  auto x = random_values(rows * hidden, 2);
  const auto modulation = random_values(batch * 6 * hidden, 3);
  for (auto _ : state) {
    tim::cpu::modulate_forward(x.data(), modulation.data(), modulation.data() + hidden, batch, tokens, hidden,
                               6 * hidden);
    benchmark::DoNotOptimize(x.data());
  }
  set_bytes(state, 2.0 * sizeof(float) * rows * hidden);
}

void BM_GatedResidual(benchmark::State& state) {
  auto residual = random_values(rows * hidden, 4);
  const auto update = random_values(rows * hidden, 5);
  const auto modulation = random_values(batch * 6 * hidden, 6);
  for (auto _ : state) {
    tim::cpu::gated_residual_forward(residual.data(), modulation.data() + 2 * hidden, update.data(), batch, tokens,
                                     hidden, 6 * hidden);
    benchmark::DoNotOptimize(residual.data());
  }
  set_bytes(state, 3.0 * sizeof(float) * rows * hidden);
}

void BM_Swiglu(benchmark::State& state) {
  const auto gate = random_values(rows * mlp_hidden, 7), value = random_values(rows * mlp_hidden, 8);
  std::vector<float> out(gate.size());
  for (auto _ : state) {
    tim::cpu::swiglu_forward(out.data(), gate.data(), value.data(), rows, mlp_hidden, mlp_hidden, mlp_hidden);
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(state, 3.0 * sizeof(float) * rows * mlp_hidden);
}

void BM_QkvSplit(benchmark::State& state) {
  const auto qkv = random_values(rows * 3 * hidden, 9), bias = random_values(batch * 3 * hidden, 10);
  const auto norm = random_values(4 * head_dim, 11);
  std::vector<float> q(rows * hidden), k(rows * hidden), v(rows * hidden), cos_table(tokens * head_dim / 2),
      sin_table(tokens * head_dim / 2);
  for (std::size_t i = 0; i < cos_table.size(); ++i) {
    cos_table[i] = std::cos(0.01f * static_cast<float>(i));
    sin_table[i] = std::sin(0.01f * static_cast<float>(i));
  }
  for (auto _ : state) {
    tim::cpu::qkv_split_forward(q.data(), k.data(), v.data(), qkv.data(), bias.data(), norm.data(),
                                norm.data() + head_dim, norm.data() + 2 * head_dim, norm.data() + 3 * head_dim, 1e-5,
                                cos_table.data(), sin_table.data(), batch, tokens, heads, head_dim,
                                1.0f / std::sqrt(static_cast<float>(head_dim)));
    benchmark::DoNotOptimize(q.data());
  }
  set_bytes(state, 2.0 * sizeof(float) * rows * 3 * hidden);
}

void BM_Attention(benchmark::State& state) {
  const std::int64_t n = rows * hidden;
  const auto q = random_values(n, 12), k = random_values(n, 13), v = random_values(n, 14);
  std::vector<float> out(n);
  for (auto _ : state) {
    tim::cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), batch, heads, tokens, head_dim,
                                1.0 / std::sqrt(static_cast<double>(head_dim)));
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(state, 4.0 * sizeof(float) * n);
  state.counters["FLOP/s"] = benchmark::Counter(
      4.0 * batch * heads * tokens * tokens * head_dim * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_LayerNorm)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Modulate)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_GatedResidual)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Swiglu)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_QkvSplit)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Attention)->Unit(benchmark::kMicrosecond)->UseRealTime();

BENCHMARK_MAIN();
