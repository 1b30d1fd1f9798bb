// Linear layers whose weights are stored as bfloat16 or float16 (memory-mapped checkpoint views),
// with float activations in and out, in one of two precisions the caller chooses (tim::Precision):
//
//  - float32: the weights are widened to float a panel at a time (at most panel_rows x panel_depth
//    values, into per-thread scratch kept between calls) and multiplied by the backend's float
//    GEMM (OpenBLAS sgemm/sgemv with TIM_USE_CBLAS, Eigen otherwise), one panel per thread. No
//    whole-matrix temporary, no allocation after the first call of a size. Any x86-64.
//  - bfloat16: the activations are rounded to bfloat16 (to nearest even) and multiplied by the
//    bfloat16 weights with products accumulated in float, by oneDNN's matmul (TIM_USE_DNNL, the
//    CMake target tim::dnnl), which picks its kernel by CPUID at run time (AVX512-BF16 VDPBF16PS,
//    AMX-BF16 tiles). Only where the hardware has bfloat16 dot products (cpu_features.hpp) and
//    oneDNN may use them; elsewhere the float32 path runs and bf16_kernel() says why.
//
// Shape legend: M rows of activations, K input features, N output features; W is (N, K) row-major.
#pragma once

#include <omp.h>

#include <Eigen/Core>
#if defined(TIM_USE_CBLAS)
#include <cblas.h>
#endif
#if defined(TIM_USE_DNNL)
// oneDNN's C API: its C++ header (dnnl.hpp) stops nvcc 13's front end with an internal error
// under -std=c++20, and CUDA translation units include this header through tim/tim.hpp; the C
// API gives every translation unit, g++ or nvcc, the same inline bodies.
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_version.h>

#include <memory>
#include <vector>
#endif
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "tim/core/config.hpp"
#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/precision.hpp"
#include "tim/cpu/cpu_features.hpp"
#include "tim/cpu/scratch.hpp"
#include "tim/cpu/threads.hpp"

namespace tim {

inline namespace TIM_CPU_ABI {
namespace cpu_gemm {

//! The float32 path's panel: at most this many output features (rows of W) ...
inline constexpr std::int64_t panel_rows = 256;
//! ... by this many input features, widened at a time (512 KiB of float scratch per thread).
inline constexpr std::int64_t panel_depth = 512;
//! Up to this many rows of activations, the float GEMM runs one matrix-vector product per row.
inline constexpr std::int64_t small_rows = 4;

//! out[i] = float(in[i]) for bfloat16 or float16 storage.
template <class W>
inline void widen(float* out, const W* in, std::int64_t n) {
  static_assert(std::is_same_v<W, bfloat16> || std::is_same_v<W, float16>);
  if constexpr (std::is_same_v<W, bfloat16>) {
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint32_t u = static_cast<std::uint32_t>(in[i].bits) << 16;
      std::memcpy(out + i, &u, 4);
    }
  } else {
    for (std::int64_t i = 0; i < n; ++i) out[i] = float16::to_float(in[i].bits);
  }
}

//! out[i] = bfloat16(in[i]), rounded to nearest even, NaN kept NaN (as bfloat16::from_float), in a
//! form the compiler vectorises.
inline void round_to_bfloat16(bfloat16* out, const float* in, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, in + i, 4);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t nan = (u >> 16) | 0x40u;
    out[i].bits = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
  }
}

//! y (M, N; row stride ldy) (+)= x (M, K; ldx) w^T, w (N, K; ldw), all float: sgemm, or sgemv per
//! row up to small_rows rows, with TIM_USE_CBLAS; Eigen otherwise. Inside an OpenMP parallel
//! region both run on the calling thread only.
inline void float_gemm(float* y, const float* x, const float* w, std::int64_t M, std::int64_t K, std::int64_t N,
                       std::int64_t ldx, std::int64_t ldw, std::int64_t ldy, bool accumulate) {
#if defined(TIM_USE_CBLAS)
  constexpr std::int64_t limit = 0x7fffffff;
  if (M <= limit && K <= limit && N <= limit && ldx <= limit && ldw <= limit && ldy <= limit) {
    const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
    const float beta = accumulate ? 1.0f : 0.0f;
    if (M <= small_rows) {
      for (int r = 0; r < m; ++r)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, static_cast<int>(ldw), x + r * ldx, 1, beta,
                    y + r * ldy, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, static_cast<int>(ldx), w,
                  static_cast<int>(ldw), beta, y, static_cast<int>(ldy));
    }
    return;
  }
#endif
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<Matrix, 0, Stride> ym(y, M, N, Stride(ldy));
  Eigen::Map<const Matrix, 0, Stride> xm(x, M, K, Stride(ldx));
  Eigen::Map<const Matrix, 0, Stride> wm(w, N, K, Stride(ldw));
  if (accumulate)
    ym.noalias() += xm * wm.transpose();
  else
    ym.noalias() = xm * wm.transpose();
}

//! The float32 path: out (M, N) (+)= in (M, K) float(W)^T, W (N, K) bfloat16 or float16, widened
//! one panel (<= panel_rows x panel_depth) at a time into the running thread's scratch. Blocks of
//! output features are spread over the threads (at least two per thread where N allows), each
//! block's panels summed in K order.
template <class W>
void linear_widened(float* out, const float* in, const W* weight, std::int64_t M, std::int64_t K, std::int64_t N,
                    bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) std::fill(out, out + M * N, 0.0f);
    return;
  }
  detail::ensure_default_threads();
  const std::int64_t threads = std::max(1, omp_get_max_threads());
  const std::int64_t per_thread = (N + 2 * threads - 1) / (2 * threads);
  const std::int64_t block = std::min({panel_rows, N, std::max<std::int64_t>(16, (per_thread + 15) / 16 * 16)});
  const std::int64_t depth = std::min(K, panel_depth);
  const std::int64_t blocks = (N + block - 1) / block;
#pragma omp parallel for schedule(dynamic) if (blocks > 1)
  for (std::int64_t b = 0; b < blocks; ++b) {
    float* panel = detail::thread_scratch<float>(block * depth);
    const std::int64_t n0 = b * block, n = std::min(block, N - n0);
    for (std::int64_t k0 = 0; k0 < K; k0 += depth) {
      const std::int64_t k = std::min(depth, K - k0);
      for (std::int64_t j = 0; j < n; ++j) widen(panel + j * k, weight + (n0 + j) * K + k0, k);
      float_gemm(out + n0, in + k0, panel, M, k, n, K, k, N, accumulate || k0 > 0);
    }
  }
}

//! What Precision::bfloat16 runs on this machine, decided once: `available` when tim was built
//! with oneDNN (TIM_USE_DNNL), the CPU has bfloat16 dot products (AVX512-BF16 or AMX-BF16, by
//! CPUID) and oneDNN may use them (its ISA limit, ONEDNN_MAX_CPU_ISA); `name` names the kernel,
//! `reason` says why the float32 path runs instead when it is not available.
struct Bf16Kernel {
  bool available = false;
  std::string name;
  std::string reason;
};

#if defined(TIM_USE_DNNL)
namespace dnnl_detail {
//! Throws tim::Error naming `what` unless `status` is dnnl_success.
inline void ok(dnnl_status_t status, const char* what) {
  check(status == dnnl_success, "oneDNN: ", what, " failed with status ", static_cast<int>(status));
}
inline dnnl_engine_t engine() {
  static const dnnl_engine_t e = [] {
    dnnl_engine_t created = nullptr;
    ok(dnnl_engine_create(&created, dnnl_cpu, 0), "dnnl_engine_create");
    return created;  // kept for the process's lifetime
  }();
  return e;
}
//! A 2-D memory descriptor of `rows` x `cols` with the given strides.
inline dnnl_memory_desc_t desc(std::int64_t rows, std::int64_t cols, dnnl_data_type_t type, std::int64_t row_stride,
                               std::int64_t col_stride) {
  dnnl_memory_desc_t d{};
  const dnnl_dims_t dims = {rows, cols}, strides = {row_stride, col_stride};
  ok(dnnl_memory_desc_init_by_strides(&d, 2, dims, type, strides), "dnnl_memory_desc_init_by_strides");
  return d;
}
//! The matmul y (M, N) f32 (+)= x (M, K) bf16 w (K, N) bf16 with w stored as W (N, K) row-major
//! (strides {1, K}), created once per shape and thread and kept for the thread's lifetime. Per
//! thread because oneDNN's default (library) scratchpad is shared by all primitives unless oneDNN
//! was built with DNNL_ENABLE_CONCURRENT_EXEC (Debian's is not): a primitive may then only run on
//! the thread that created it. One primitive shared by the threads of tim::PerSampleNetwork (one
//! sample per thread) computed NaNs at random.
inline const_dnnl_primitive_t matmul(std::int64_t M, std::int64_t K, std::int64_t N, bool accumulate,
                                     std::string* implementation = nullptr) {
  struct Entry {
    std::int64_t M, K, N;
    bool accumulate;
    dnnl_primitive_t primitive;
  };
  struct Cache {
    std::vector<Entry> entries;
    ~Cache() {
      for (const Entry& e : entries) dnnl_primitive_destroy(e.primitive);
    }
  };
  thread_local Cache thread_cache;
  std::vector<Entry>& cache = thread_cache.entries;
  for (const Entry& e : cache)
    if (e.M == M && e.K == K && e.N == N && e.accumulate == accumulate) return e.primitive;
  const dnnl_memory_desc_t src = desc(M, K, dnnl_bf16, K, 1), wei = desc(K, N, dnnl_bf16, 1, K),
                           dst = desc(M, N, dnnl_f32, N, 1);
  dnnl_matmul_desc_t op{};
  ok(dnnl_matmul_desc_init(&op, &src, &wei, nullptr, &dst), "dnnl_matmul_desc_init");
  dnnl_primitive_attr_t attr = nullptr;
  ok(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create");
  const std::unique_ptr<dnnl_primitive_attr, dnnl_status_t (*)(dnnl_primitive_attr_t)> attr_owner(
      attr, dnnl_primitive_attr_destroy);
  if (accumulate) {
    dnnl_post_ops_t ops = nullptr;
    ok(dnnl_post_ops_create(&ops), "dnnl_post_ops_create");
    const std::unique_ptr<dnnl_post_ops, dnnl_status_t (*)(dnnl_post_ops_t)> ops_owner(ops, dnnl_post_ops_destroy);
    ok(dnnl_post_ops_append_sum(ops, 1.0f), "dnnl_post_ops_append_sum");
    ok(dnnl_primitive_attr_set_post_ops(attr, ops), "dnnl_primitive_attr_set_post_ops");
  }
  dnnl_primitive_desc_t pd = nullptr;
  ok(dnnl_primitive_desc_create(&pd, &op, attr, engine(), nullptr), "dnnl_primitive_desc_create (bfloat16 matmul)");
  const std::unique_ptr<dnnl_primitive_desc, dnnl_status_t (*)(dnnl_primitive_desc_t)> pd_owner(
      pd, dnnl_primitive_desc_destroy);
  if (implementation) {
    const char* info = nullptr;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success && info)
      *implementation = info;
  }
  dnnl_primitive_t primitive = nullptr;
  ok(dnnl_primitive_create(&primitive, pd), "dnnl_primitive_create");
  cache.push_back(Entry{M, K, N, accumulate, primitive});
  return primitive;
}
//! A memory object over `data` (not owned), destroyed with the handle.
using Memory = std::unique_ptr<dnnl_memory, dnnl_status_t (*)(dnnl_memory_t)>;
inline Memory memory(const dnnl_memory_desc_t& d, void* data) {
  dnnl_memory_t m = nullptr;
  ok(dnnl_memory_create(&m, &d, engine(), data), "dnnl_memory_create");
  return Memory(m, dnnl_memory_destroy);
}

inline bool isa_has_bf16(dnnl_cpu_isa_t isa) {
  return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}
}  // namespace dnnl_detail
#endif

inline const Bf16Kernel& bf16_kernel() {
  static const Bf16Kernel kernel = [] {
    Bf16Kernel k;
    const auto& f = cpu_features();
#if !defined(TIM_USE_DNNL)
    k.reason = "tim was built without oneDNN (the CMake target tim::dnnl, TIM_USE_DNNL)";
    (void)f;
#else
    if (!f.bf16_dot()) {
      k.reason = "this CPU has no bfloat16 dot products (AVX512-BF16 or AMX-BF16); it has: " + f.describe();
      return k;
    }
    try {
      const auto isa = dnnl_get_effective_cpu_isa();
      if (!dnnl_detail::isa_has_bf16(isa)) {
        k.reason = "oneDNN is limited to an instruction set without bfloat16 dot products (ONEDNN_MAX_CPU_ISA?)";
        return k;
      }
      std::string implementation;
      dnnl_detail::matmul(16, 64, 64, false, &implementation);
      k.available = true;
      k.name = "oneDNN " + std::to_string(DNNL_VERSION_MAJOR) + "." + std::to_string(DNNL_VERSION_MINOR) +
               " matmul (" + implementation + ")";
    } catch (const Error& e) {
      k.reason = std::string("oneDNN could not create a bfloat16 matmul: ") + e.what();
    }
#endif
    return k;
  }();
  return kernel;
}

//! The precision a request for `requested` gets on this machine (bfloat16 only where
//! bf16_kernel() is available).
inline Precision effective_precision(Precision requested) {
  return requested == Precision::bfloat16 && bf16_kernel().available ? Precision::bfloat16 : Precision::float32;
}

//! The bfloat16 path: out (M, N) (+)= bfloat16(in) (M, K) W^T with float sums. Needs
//! bf16_kernel().available (throws tim::Error otherwise). The rounded activations go to the calling
//! thread's scratch.
inline void linear_bf16([[maybe_unused]] float* out, [[maybe_unused]] const float* in,
                        [[maybe_unused]] const bfloat16* weight, [[maybe_unused]] std::int64_t M,
                        [[maybe_unused]] std::int64_t K, [[maybe_unused]] std::int64_t N,
                        [[maybe_unused]] bool accumulate) {
  check(bf16_kernel().available, "bfloat16 linear: not available here: ", bf16_kernel().reason);
#if defined(TIM_USE_DNNL)
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) std::fill(out, out + M * N, 0.0f);
    return;
  }
  detail::ensure_default_threads();
  bfloat16* x = detail::thread_scratch<bfloat16>(M * K);
  round_to_bfloat16(x, in, M * K);
  const auto& primitive = dnnl_detail::matmul(M, K, N, accumulate);
  const auto src = dnnl_detail::memory(dnnl_detail::desc(M, K, dnnl_bf16, K, 1), x);
  const auto wei = dnnl_detail::memory(dnnl_detail::desc(K, N, dnnl_bf16, 1, K), const_cast<bfloat16*>(weight));
  const auto dst = dnnl_detail::memory(dnnl_detail::desc(M, N, dnnl_f32, N, 1), out);
  // One stream per thread, kept for the thread's lifetime.
  thread_local const std::unique_ptr<dnnl_stream, dnnl_status_t (*)(dnnl_stream_t)> stream = [] {
    dnnl_stream_t created = nullptr;
    dnnl_detail::ok(dnnl_stream_create(&created, dnnl_detail::engine(), dnnl_stream_default_flags),
                    "dnnl_stream_create");
    return std::unique_ptr<dnnl_stream, dnnl_status_t (*)(dnnl_stream_t)>(created, dnnl_stream_destroy);
  }();
  const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src.get()}, {DNNL_ARG_WEIGHTS, wei.get()}, {DNNL_ARG_DST, dst.get()}};
  const auto status = dnnl_primitive_execute(primitive, stream.get(), 3, args);
  check(status == dnnl_success, "bfloat16 linear (", M, " x ", K, " by ", N, "): oneDNN failed with status ",
        static_cast<int>(status));
  dnnl_detail::ok(dnnl_stream_wait(stream.get()), "dnnl_stream_wait");
#endif
}

}  // namespace cpu_gemm
}  // inline namespace TIM_CPU_ABI

}  // namespace tim
