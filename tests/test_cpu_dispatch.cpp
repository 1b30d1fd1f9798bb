// The kernels chosen at run time (tim/cpu/dispatch.hpp): every variant this CPU runs against a
// float64 loop written here on row lengths that hit every edge of the 16 partial sums (shorter
// than one lane set, exact multiples, tails), the same bits from every variant, and the backend's
// LayerNorm equal to the variant it chose. Variants the CPU cannot run are reported as skipped.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "compare.hpp"
#include "tim/tim.hpp"

namespace {

using tim::cpu_dispatch::Variant;

//! Whether this CPU runs `v`'s instructions.
bool cpu_runs(Variant v) {
  const auto& f = tim::cpu_features();
  if (v == Variant::avx2) return f.avx2;
  if (v == Variant::avx512) return f.avx512f;
  return true;
}

//! The LayerNorm variants to check: those the CPU runs; the others are reported as skipped.
std::vector<Variant> layernorm_variants() {
  std::vector<Variant> run;
  for (Variant v : {Variant::baseline, Variant::avx2}) {
    if (cpu_runs(v))
      run.push_back(v);
    else
      MESSAGE("skipped: LayerNorm variant ", tim::cpu_dispatch::variant_name(v), " (this CPU lacks it: ",
              tim::cpu_features().describe(), ")");
  }
  return run;
}

}  // namespace

TEST_CASE("dispatch: every LayerNorm variant against float64, on rows with every tail of the 16 lanes") {
  const double u = std::ldexp(1.0, -24);  // float's unit roundoff
  for (const std::int64_t cols : {1, 5, 15, 16, 17, 31, 48, 72, 1152, 1155}) {
    const std::int64_t rows = 5;
    // An offset mean (3) under spread 2, so the mean's rounding matters.
    auto x = tim_test::random_vector<float>(rows * cols, 40 + static_cast<std::uint32_t>(cols), 2.0);
    for (auto& v : x) v += 3.0f;
    const auto w = tim_test::random_vector<float>(cols, 41), b = tim_test::random_vector<float>(cols, 42);
    for (int affine = 0; affine < 2; ++affine) {
      // float64 reference, and a bound per value from the error analysis of the float computation:
      // each of the two sums adds at most ceil(cols / 16) values per lane and 4 tree levels, so
      // with k = ceil(cols / 16) + 4 the mean is within k u mean|x|, the variance within (k + 3) u
      // var relatively (its error from the mean's is second order); rstd = 1 / sqrt(var + eps) adds
      // 2 u; (x - mean) rstd its own 2 u; the affine 2 u of |w y| + |b|. Slack: 2 u per term.
      const double k = std::ceil(static_cast<double>(cols) / 16.0) + 4.0;
      std::vector<double> expected(rows * cols), bound(rows * cols);
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* row = x.data() + r * cols;
        double mean = 0, mean_abs = 0, var = 0;
        for (std::int64_t j = 0; j < cols; ++j) {
          mean += row[j];
          mean_abs += std::abs(double(row[j]));
        }
        mean /= double(cols);
        mean_abs /= double(cols);
        for (std::int64_t j = 0; j < cols; ++j) var += (row[j] - mean) * (row[j] - mean);
        var /= double(cols);
        const double rstd = 1.0 / std::sqrt(var + 1e-6);
        for (std::int64_t j = 0; j < cols; ++j) {
          const double y = (row[j] - mean) * rstd;
          const double scale = affine ? std::abs(double(w[j])) : 1.0;
          expected[r * cols + j] = affine ? y * double(w[j]) + double(b[j]) : y;
          bound[r * cols + j] = scale * ((k + 2) * u * mean_abs * rstd + ((k + 3) / 2 + 6) * u * std::abs(y)) +
                                (affine ? 4 * u * (std::abs(y * double(w[j])) + std::abs(double(b[j]))) : 0.0);
        }
      }
      std::vector<float> first;
      for (Variant v : layernorm_variants()) {
        CAPTURE(cols);
        CAPTURE(affine);
        const std::string name = tim::cpu_dispatch::variant_name(v);
        CAPTURE(name);
        std::vector<float> y(rows * cols);
        tim::cpu_dispatch::layernorm_rows_kernel(v)(y.data(), x.data(), rows, cols, affine ? w.data() : nullptr,
                                                     affine ? b.data() : nullptr, 1e-6);
        double worst = 0;
        std::size_t bad = 0;
        for (std::size_t i = 0; i < y.size(); ++i) {
          const double e = std::abs(double(y[i]) - expected[i]);
          worst = std::max(worst, e / bound[i]);
          bad += !(e <= bound[i]);
        }
        CHECK_MESSAGE(bad == 0, "largest error / bound ", worst);
        // The same bits from every variant: the same sums in the same order.
        if (first.empty())
          first = y;
        else
          CHECK(std::memcmp(first.data(), y.data(), y.size() * sizeof(float)) == 0);
      }
      // The backend's LayerNorm runs the chosen variant (and so the same bits).
      std::vector<float> backend(rows * cols);
      tim::cpu::layernorm_forward(backend.data(), x.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr,
                                  rows, cols, 1e-6);
      CHECK(std::memcmp(first.data(), backend.data(), backend.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("dispatch: the choice never exceeds the CPU, and TIM_CPU_VARIANT lowers it") {
  const Variant chosen = tim::cpu_dispatch::layernorm_variant();
  CHECK(cpu_runs(chosen));
  CHECK(tim::cpu_dispatch::choose_variant(Variant::baseline) == Variant::baseline);
#if defined(__AVX2__)
  // A baseline with AVX2 has nothing wider to choose for LayerNorm (measured: AVX-512F no faster).
  CHECK(chosen == Variant::baseline);
#else
  CHECK(chosen == (tim::cpu_features().avx2 ? Variant::avx2 : Variant::baseline));
#endif
  // The environment lowers the choice, never raises it.
  const Variant widest = tim::cpu_dispatch::choose_variant(Variant::avx512);
  CHECK(cpu_runs(widest));
  ::setenv("TIM_CPU_VARIANT", "baseline", 1);
  CHECK(tim::cpu_dispatch::choose_variant(Variant::avx512) == Variant::baseline);
  ::setenv("TIM_CPU_VARIANT", "avx512f", 1);
  CHECK(tim::cpu_dispatch::choose_variant(Variant::avx2) <= Variant::avx2);
  CHECK(tim::cpu_dispatch::choose_variant(Variant::avx512) == widest);
  ::unsetenv("TIM_CPU_VARIANT");
  // The report names the choice and the float GEMMs' library.
  const std::string report = tim::cpu_dispatch::kernel_report_text();
  CHECK(report.find("LayerNorm: ") != std::string::npos);
  CHECK(report.find("CPU: " + tim::cpu_features().describe()) != std::string::npos);
  CHECK(report.find("compiled for: " + tim::compiled_instruction_sets()) != std::string::npos);
#if defined(TIM_USE_CBLAS)
  CHECK(report.find("float GEMMs: OpenBLAS, core ") != std::string::npos);
#else
  CHECK(report.find("float GEMMs, attention, element-wise: Eigen ") != std::string::npos);
#endif
}
