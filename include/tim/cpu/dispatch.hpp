// CPU kernels chosen at run time by CPUID, and the report of what this process runs.
//
// tim is header-only: every file that includes it is compiled with its user's flags (tim's own
// programs with TIM_CPU_BASELINE, x86-64-v3 by default: CMakeLists.txt), and that "baseline" is
// what Eigen's packet code and the compiler's own vectorisation use. Above it, the hand-written
// loops listed here have variants compiled for wider instruction sets with
// __attribute__((target(...))) and chosen once per process by CPUID (cpu_features.hpp), each up to
// the widest instruction set measured to help it (LayerNorm: AVX2, for baselines below it; its
// AVX-512F build was no faster). The variants run the same arithmetic in the same order
// (independent lanes, no multiply-add to contract), so they give the same bits;
// tests/test_cpu_dispatch.cpp checks that and each one against float64.
//
// Not dispatched: Eigen's kernels follow the baseline (its packets are chosen by preprocessor
// macros, so a wider variant would mean compiling Eigen's inline templates twice in one program,
// which the linker may merge into the wrong copy); the GEMMs through OpenBLAS and oneDNN pick their
// own kernels by CPUID (DYNAMIC_ARCH builds; reported by kernel_report()).
#pragma once

#include <Eigen/Core>
#if defined(TIM_USE_CBLAS)
#include <cblas.h>
#endif
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "tim/core/config.hpp"
#include "tim/cpu/cpu_features.hpp"
#include "tim/cpu/gemm_bf16.hpp"
#include "tim/cpu/gemm_q8.hpp"
#include "tim/math/normalization.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define TIM_CPU_DISPATCH_X86 1
#else
#define TIM_CPU_DISPATCH_X86 0
#endif

namespace tim {

//! The x86 instruction sets the calling translation unit was compiled for (its predefined macros),
//! e.g. "sse2 ... avx avx2 fma f16c" for -march=x86-64-v3: what Eigen and all code outside the
//! dispatched kernels may use.
inline std::string compiled_instruction_sets() {
  std::string s;
  auto add = [&](const char* name) {
    if (!s.empty()) s += ' ';
    s += name;
  };
#if defined(__SSE2__)
  add("sse2");
#endif
#if defined(__SSE4_2__)
  add("sse4.2");
#endif
#if defined(__AVX__)
  add("avx");
#endif
#if defined(__AVX2__)
  add("avx2");
#endif
#if defined(__FMA__)
  add("fma");
#endif
#if defined(__F16C__)
  add("f16c");
#endif
#if defined(__AVX512F__)
  add("avx512f");
#endif
#if defined(__AVX512BW__)
  add("avx512bw");
#endif
#if defined(__AVX512VL__)
  add("avx512vl");
#endif
#if defined(__AVX512BF16__)
  add("avx512bf16");
#endif
  return s.empty() ? std::string("the compiler's default (no x86 vector extensions named)") : s;
}

namespace cpu_dispatch {

//! The variants a dispatched kernel can have, in increasing order (avx512: AVX-512F, for kernels
//! measured to gain from it; none of the current ones does).
enum class Variant { baseline, avx2, avx512 };

inline const char* variant_name(Variant v) {
  switch (v) {
    case Variant::avx2:
      return "avx2";
    case Variant::avx512:
      return "avx512f";
    default:
      return "baseline";
  }
}

//! The widest variant up to `widest` (the widest one measured to help the kernel) that this CPU
//! runs and that is wider than the baseline the including file was compiled for; `baseline` when
//! there is none (a file compiled with -march=native on an AVX-512 machine already is AVX-512).
//! TIM_CPU_VARIANT=baseline|avx2|avx512f in the environment lowers the choice (never above what the
//! CPU has), for comparisons and tests.
inline Variant choose_variant(Variant widest) {
#if TIM_CPU_DISPATCH_X86
  const auto& f = cpu_features();
  Variant best = Variant::baseline;
#if !defined(__AVX512F__)
  if (f.avx512f && widest >= Variant::avx512) best = Variant::avx512;
#endif
#if !defined(__AVX2__)
  if (best == Variant::baseline && f.avx2 && widest >= Variant::avx2) best = Variant::avx2;
#endif
  if (const char* forced = std::getenv("TIM_CPU_VARIANT")) {
    const std::string v = forced;
    const Variant wanted = v == "baseline" ? Variant::baseline
                           : v == "avx2"    ? Variant::avx2
                           : v == "avx512f" ? Variant::avx512
                                            : best;
    if (wanted < best) best = wanted;
#if defined(__AVX2__)
    if (best == Variant::avx2) best = Variant::baseline;  // the baseline already is AVX2
#endif
    if (best == Variant::avx2 && !f.avx2) best = Variant::baseline;
  }
  return best;
#else
  (void)widest;
  return Variant::baseline;
#endif
}

//! The LayerNorm variant of this process, chosen once: at most AVX2. On the AMD EPYC (Zen 5) it was
//! measured on, an AVX-512F build of the same loop was no faster than AVX2 (the rows stream from
//! memory; docs/performance.md), and the AVX2 build 1.2-1.4x faster than an SSE2 one.
inline Variant layernorm_variant() {
  static const Variant chosen = choose_variant(Variant::avx2);
  return chosen;
}

//! LayerNorm of `rows` rows of `cols` floats (math::layernorm_row per row), one variant each.
template <class W>
inline void layernorm_rows_body(float* out, const float* in, std::int64_t rows, std::int64_t cols, const W* weight,
                                const W* bias, double eps) {
  for (std::int64_t r = 0; r < rows; ++r) math::layernorm_row(out + r * cols, in + r * cols, cols, weight, bias, eps);
}

#if TIM_CPU_DISPATCH_X86
// flatten: math::layernorm_row and its lane sums are inlined into the variant, so they are compiled
// for its instruction set.
// AVX2 without FMA: nothing to contract, so the bits equal the baseline's under any -ffp-contract.
__attribute__((target("avx2"), flatten)) inline void layernorm_rows_avx2(float* out, const float* in,
                                                                         std::int64_t rows, std::int64_t cols,
                                                                         const float* weight, const float* bias,
                                                                         double eps) {
  layernorm_rows_body(out, in, rows, cols, weight, bias, eps);
}
#endif
__attribute__((flatten)) inline void layernorm_rows_baseline(float* out, const float* in, std::int64_t rows,
                                                             std::int64_t cols, const float* weight,
                                                             const float* bias, double eps) {
  layernorm_rows_body(out, in, rows, cols, weight, bias, eps);
}

using LayerNormRows = void (*)(float*, const float*, std::int64_t, std::int64_t, const float*, const float*, double);

//! The LayerNorm kernel of `v` (the baseline where this build has no such variant).
inline LayerNormRows layernorm_rows_kernel(Variant v) {
#if TIM_CPU_DISPATCH_X86
  if (v == Variant::avx2) return layernorm_rows_avx2;
#endif
  (void)v;
  return layernorm_rows_baseline;
}

//! What the CPU backend runs in this process, one (part, choice) pair a line: the baseline the
//! calling file was compiled for, the CPU's features, the variant of the dispatched kernels, the
//! float GEMMs (OpenBLAS's core and build, or Eigen's packets), the bfloat16 and q8_0 products.
inline std::vector<std::pair<std::string, std::string>> kernel_report() {
  std::vector<std::pair<std::string, std::string>> lines;
  lines.emplace_back("compiled for", compiled_instruction_sets());
  lines.emplace_back("CPU", cpu_features().describe());
  lines.emplace_back("LayerNorm", layernorm_variant() == Variant::baseline
                                      ? std::string("baseline (") + compiled_instruction_sets() + ")"
                                      : std::string(variant_name(layernorm_variant())));
  std::string eigen = std::string("Eigen ") + std::to_string(EIGEN_WORLD_VERSION) + "." +
                      std::to_string(EIGEN_MAJOR_VERSION) + "." + std::to_string(EIGEN_MINOR_VERSION) + " (" +
                      Eigen::SimdInstructionSetsInUse() + ")";
#if defined(TIM_USE_CBLAS)
  lines.emplace_back("float GEMMs", std::string("OpenBLAS, core ") + openblas_get_corename() + " (" +
                                        openblas_get_config() + ")");
  lines.emplace_back("attention, element-wise", eigen);
#else
  lines.emplace_back("float GEMMs, attention, element-wise", eigen);
#endif
  const auto& bf16 = cpu_gemm::bf16_kernel();
  lines.emplace_back("bfloat16 products", bf16.available ? bf16.name : "float path (" + bf16.reason + ")");
  try {  // TIM_Q8_KERNEL may name a variant this CPU lacks: then the error is the report
    lines.emplace_back("q8_0 products", cpu_gemm::q8_kernel().name);
  } catch (const Error& e) {
    lines.emplace_back("q8_0 products", std::string("error: ") + e.what());
  }
  return lines;
}

//! kernel_report() as text, "part: choice" a line.
inline std::string kernel_report_text() {
  std::string s;
  for (const auto& [part, choice] : kernel_report()) s += part + ": " + choice + "\n";
  return s;
}

}  // namespace cpu_dispatch
}  // namespace tim
