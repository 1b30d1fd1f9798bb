// The Linear GEMM of the tim::cuda backend through cuBLAS: y (R, out) = x (R, in) W^T (+ y),
// float32 in float32 (no TF32), bfloat16 in and out with float32 accumulation. cuBLAS is
// column-major; the row-major product is mapped onto it by gemm_arguments (a pure function,
// unit-tested on the host against a column-major emulation).
// Internal: include <tim/cuda/tim.cuh>.
#pragma once

#include <cublas_v2.h>
#include <library_types.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "tim/core/dtype.hpp"
#include "tim/cuda/runtime.cuh"

namespace tim::cuda_detail {

//! The arguments of one column-major cublasGemmEx call C (m x n, ldc) = op(A) (m x k) op(B) (k x n).
struct GemmArguments {
  bool transpose_a = false, transpose_b = false;
  int m = 0, n = 0, k = 0;
  int lda = 0, ldb = 0, ldc = 0;
};

//! The column-major call computing the row-major y (rows, out) = x (rows, in) W^T with
//! W (out, in) row-major. Row-major y is column-major y^T (out x rows, ld out), so
//! y^T = W x^T: A = W, which read column-major is W^T (in x out, ld in) and is transposed back;
//! B = x^T, which is x read column-major (in x rows, ld in), not transposed.
//! Throws tim::Error when an extent exceeds cuBLAS's int range.
inline GemmArguments gemm_arguments(std::int64_t rows, std::int64_t in_features, std::int64_t out_features) {
  constexpr std::int64_t limit = std::numeric_limits<int>::max();
  check(rows > 0 && in_features > 0 && out_features > 0 && rows <= limit && in_features <= limit &&
            out_features <= limit,
        "tim::cuda linear: extents (rows ", rows, ", in ", in_features, ", out ", out_features,
        ") must be positive and fit cuBLAS's int");
  GemmArguments g;
  g.transpose_a = true;
  g.transpose_b = false;
  g.m = static_cast<int>(out_features);
  g.n = static_cast<int>(rows);
  g.k = static_cast<int>(in_features);
  g.lda = static_cast<int>(in_features);
  g.ldb = static_cast<int>(in_features);
  g.ldc = static_cast<int>(out_features);
  return g;
}

//! cuBLAS's data and compute types for a storage type.
template <class T>
struct GemmTypes;
template <>
struct GemmTypes<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  using Scalar = float;
};
template <>
struct GemmTypes<bfloat16> {
  static constexpr cudaDataType_t data = CUDA_R_16BF;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // float32 accumulation
  using Scalar = float;
};

//! y (rows, out) = x (rows, in) W^T, or y += x W^T with `accumulate`; no bias.
template <class T>
void gemm(T* y, const T* x, const T* weight, std::int64_t rows, std::int64_t in_features, std::int64_t out_features,
          bool accumulate) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "tim::cuda GEMMs take float or bfloat16 (float32 accumulation)");
  if (rows == 0) return;
  const GemmArguments g = gemm_arguments(rows, in_features, out_features);
  using Types = GemmTypes<T>;
  const typename Types::Scalar alpha = 1, beta = accumulate ? 1 : 0;
  check_cublas(cublasGemmEx(cublas_handle(), g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha, weight, Types::data,
                            g.lda, x, Types::data, g.ldb, &beta, y, Types::data, g.ldc, Types::compute,
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (linear)");
}

}  // namespace tim::cuda_detail
