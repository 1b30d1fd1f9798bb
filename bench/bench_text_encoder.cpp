// The Gemma-3 text encoder on the CPU at the released gemma-3-1b-it shapes (random weights from
// bench/make_random_gemma.py; folder in $TIM_BENCH_GEMMA_DIR, default /tmp/gemma-random): one
// prompt of 256 tokens (the released max_seq_length) through the 26 layers over the bfloat16
// weights memory-mapped from model.safetensors, with float products (/precision:0, the default)
// and bfloat16 products (/precision:1, GemmaEncoder::precision; float sums, oneDNN's matmul where
// the CPU has AVX512-BF16 or AMX, the float path otherwise: the `kernel` label says). Reports the peak resident memory of
// the process (ru_maxrss, the mapped file's touched pages included) against the file's size.
// Threads: the library default (physical cores); TIM_BENCH_THREADS=n overrides it.
// Compare with bench/compare_text_encoder.py (transformers) in the same session.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "tim/text/gemma.hpp"
#include "tim/tim.hpp"

namespace {

std::string folder() {
  const char* dir = std::getenv("TIM_BENCH_GEMMA_DIR");
  return dir ? dir : "/tmp/gemma-random";
}

void BM_GemmaEncode256(benchmark::State& state) {
  if (const char* threads = std::getenv("TIM_BENCH_THREADS")) tim::set_num_threads(std::atoi(threads));
  if (!std::filesystem::exists(folder() + "/model.safetensors")) {
    state.SkipWithError(("no " + folder() + "/model.safetensors: run bench/make_random_gemma.py " + folder()).c_str());
    return;
  }
  auto encoder = tim::text::load_gemma_folder<float, tim::cpu, tim::bfloat16>(folder());
  encoder.precision = state.range(0) ? tim::Precision::bfloat16 : tim::Precision::float32;
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  state.SetLabel(tim::cpu_gemm::effective_precision(encoder.precision) == tim::Precision::bfloat16
                     ? kernel.name
                     : (state.range(0) ? "float path: " + kernel.reason : std::string("float path")));
  constexpr std::int64_t N = 256;
  auto ids = tim::Tensor<std::int64_t>::empty({1, N});
  std::mt19937 generator(0);
  std::uniform_int_distribution<std::int64_t> token(4, encoder.config.vocab_size - 1);
  for (std::int64_t i = 0; i < N; ++i) ids.data()[i] = i == 0 ? 2 : token(generator);
  const std::vector<std::int64_t> lengths{N};
  tim::Tensor<float> out;
  encoder.forward(out, ids, lengths);  // warm-up: pages of the mapping touched, workspace sized
  for (auto _ : state) {
    encoder.forward(out, ids, lengths);
    benchmark::DoNotOptimize(out.data());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double peak = static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux: kilobytes
  const double file = static_cast<double>(std::filesystem::file_size(folder() + "/model.safetensors"));
  state.counters["peak_rss_MiB"] = peak / (1024.0 * 1024.0);
  state.counters["weights_MiB"] = file / (1024.0 * 1024.0);
  state.counters["rss_over_weights"] = peak / file;
  state.counters["threads"] = tim::num_threads();
}

}  // namespace

BENCHMARK(BM_GemmaEncode256)->ArgName("precision")->Arg(0)->Arg(1)->Iterations(3)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_MAIN();
