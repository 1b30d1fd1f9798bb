// The SD VAE decoder at the released size (sd-vae-ft-ema: widths 128/256/512/512, 3 resnets per
// up block, 49.5 M parameters, random weights from bench/random_vae_checkpoint.hpp) in float,
// batch 1: one decode of a 32x32 latent (256x256 image), untiled against tiled on a 64x64 latent
// (512x512), and the peak memory of both on a 128x128 latent (1024x1024), where tiling bounds it.
//
// Every iteration runs in a child process that builds the decoder, decodes once and reports its
// decode time (the benchmark's manual time: weight generation excluded) and its peak resident set
// right after the decode (getrusage(RUSAGE_SELF).ru_maxrss), so each setting's memory is its own
// and OpenMP is never used across a fork (the parent never runs tim code). Tiled settings with
// "compare" then decode the same latents untiled and report how far apart the two images are.
//
// Run: bench/bench_vae [--benchmark_filter=...]   (about 2.5 minutes on 2 idle cores)
// Counters: peak_rss_MB (weights, latents, output and the decode's activations), loaded_MB
// (resident after building the decoder and latents), decode_MB = peak - loaded, image_MB,
// tiles, and for "compare": max_rel_diff = max |tiled - untiled| / max |untiled|, rms_rel_diff.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

#include "random_vae_checkpoint.hpp"
#include "tim/tim.hpp"

namespace {

struct Setting {
  std::int64_t latent = 32;  // h = w
  std::int64_t tile = 0;     // 0: untiled decode()
  std::int64_t overlap = 0;
  bool compare = false;      // also decode untiled and report the difference
};

//! What a child sends back through its pipe (plain doubles).
struct Report {
  double decode_seconds = 0, loaded_bytes = 0, peak_bytes = 0, tiles = 1;
  double max_rel_diff = -1, rms_rel_diff = -1;
};

//! Resident set of this process now, from /proc/self/statm.
double resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  double pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE));
}

Report decode_once(const Setting& s) {
  const tim_bench::RandomSdVaeCheckpoint source({128, 256, 512, 512});
  const auto vae = tim::vae::load_sd_vae_decoder<float>(source);
  auto latents = tim::Tensor<float>::empty({1, 4, s.latent, s.latent});
  std::mt19937 engine(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < latents.numel(); ++i) latents.data()[i] = normal(engine);

  Report report;
  report.loaded_bytes = resident_bytes();
  const tim::vae::TileOptions options{.tile = s.tile, .overlap = s.overlap};
  const auto start = std::chrono::steady_clock::now();
  const auto images = s.tile ? tim::vae::decode_tiled(vae, latents, options) : vae.decode(latents);
  report.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  report.peak_bytes = static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux: kilobytes
  if (s.tile)
    report.tiles = static_cast<double>(tim::vae::tile_starts(s.latent, s.tile, s.overlap).size() *
                                       tim::vae::tile_starts(s.latent, s.tile, s.overlap).size());
  if (s.compare) {
    const auto untiled = vae.decode(latents);
    double diff = 0, scale = 0, diff2 = 0, scale2 = 0;
    for (std::int64_t i = 0; i < untiled.numel(); ++i) {
      const double a = images.data()[i], b = untiled.data()[i];
      diff = std::max(diff, std::abs(a - b));
      scale = std::max(scale, std::abs(b));
      diff2 += (a - b) * (a - b);
      scale2 += b * b;
    }
    report.max_rel_diff = diff / scale;
    report.rms_rel_diff = std::sqrt(diff2 / scale2);
  }
  benchmark::DoNotOptimize(images.data());
  return report;
}

//! Runs decode_once(s) in a child process; false when the child failed.
bool in_child(const Setting& s, Report& report) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fds[0]);
    try {
      const Report r = decode_once(s);
      const bool written = write(fds[1], &r, sizeof r) == static_cast<ssize_t>(sizeof r);
      std::_Exit(written ? 0 : 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_vae: %s\n", e.what());
      std::_Exit(1);
    }
  }
  close(fds[1]);
  const bool read_all = read(fds[0], &report, sizeof report) == static_cast<ssize_t>(sizeof report);
  close(fds[0]);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return false;
  return read_all && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void BM_SdVaeDecode(benchmark::State& state, Setting s) {
  Report report;
  for (auto _ : state) {
    if (!in_child(s, report)) {
      state.SkipWithError("the decoding child failed");
      return;
    }
    state.SetIterationTime(report.decode_seconds);
  }
  const double image_bytes = 3.0 * 64.0 * static_cast<double>(s.latent * s.latent) * sizeof(float);
  state.counters["peak_rss_MB"] = report.peak_bytes * 1e-6;
  state.counters["loaded_MB"] = report.loaded_bytes * 1e-6;
  state.counters["decode_MB"] = (report.peak_bytes - report.loaded_bytes) * 1e-6;
  state.counters["image_MB"] = image_bytes * 1e-6;
  state.counters["tiles"] = report.tiles;
  if (s.compare) {
    state.counters["max_rel_diff"] = report.max_rel_diff;
    state.counters["rms_rel_diff"] = report.rms_rel_diff;
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  struct Case {
    const char* name;
    Setting setting;
    int iterations;
  };
  for (const Case& c : {Case{"BM_SdVaeDecode/latent:32", {32, 0, 0, false}, 3},
                        Case{"BM_SdVaeDecodeTiled/latent:32/tile:16/overlap:4/compare", {32, 16, 4, true}, 1},
                        Case{"BM_SdVaeDecode/latent:64", {64, 0, 0, false}, 1},
                        Case{"BM_SdVaeDecodeTiled/latent:64/tile:32/overlap:8/compare", {64, 32, 8, true}, 1},
                        Case{"BM_SdVaeDecode/latent:128", {128, 0, 0, false}, 1},
                        Case{"BM_SdVaeDecodeTiled/latent:128/tile:32/overlap:8", {128, 32, 8, false}, 1}}) {
    const Setting setting = c.setting;
    benchmark::RegisterBenchmark(c.name, [setting](benchmark::State& s) { BM_SdVaeDecode(s, setting); })
        ->Iterations(c.iterations)
        ->UseManualTime()
        ->Unit(benchmark::kSecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
