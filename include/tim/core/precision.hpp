// tim::Precision: the precision of the products of a linear layer whose weights are stored as
// bfloat16 (tim/cpu/gemm_bf16.hpp runs both on the CPU). Free of Eigen and OpenMP.
#pragma once

#include <cstdint>
#include <string_view>

#include "tim/core/error.hpp"

namespace tim {

//! float32: the weights widened exactly, products and sums in float. bfloat16: the activations
//! rounded to bfloat16 too (to nearest even), products exact, sums in float; about twice the
//! float rate where the CPU has bfloat16 dot products (AVX512-BF16, AMX-BF16).
enum class Precision : std::uint8_t { float32, bfloat16 };

//! "float" (or "float32") or "bfloat16"; throws tim::Error naming `what` otherwise.
inline Precision parse_precision(std::string_view name, std::string_view what = "precision") {
  if (name == "float" || name == "float32") return Precision::float32;
  if (name == "bfloat16") return Precision::bfloat16;
  fail(what, ": expected \"float\" or \"bfloat16\", got \"", name, "\"");
}

//! "float" or "bfloat16", as parse_precision reads them.
inline const char* precision_name(Precision p) { return p == Precision::bfloat16 ? "bfloat16" : "float"; }

}  // namespace tim
