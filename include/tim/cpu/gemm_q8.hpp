// Linear layers with q8_0 weights (core/q8_0.hpp: int8 values, one float16 scale per 32 along K),
// float activations in and out: y (M, N) (+)= x (M, K) W^T (+ b). Each row of x is quantised to
// int8 per 32-block with its own float scale (dx = max|x| / 127, q = round-half-even(x * 127 / max|x|)),
// each block's products are summed exactly in int32 and the sums are scaled (dx dw) and added in
// float. Three variants, all in every build (each compiled for its instruction set with
// __attribute__((target)), none needs -march=native) and chosen by CPUID at run time (q8_kernel()):
//   avx512_vnni  VPDPBUSD on ZMM (AVX512-VNNI), activations offset to uint8 (q + 128) and the
//                offset's 128 * sum(w) taken off again in int32, exactly;
//                (q_w = -128 would also be right here; the file reader refuses it for the avx2 variant's sake);
//   avx2         VPMADDUBSW on |q_x| and q_w with the sign of q_x (no int16 overflow: 2*127*127
//                < 32767), then VPMADDWD into int32 (AVX2, FMA, F16C);
//   scalar       portable C++.
// Every variant gives the same int32 block sums; only the order of the float sums differs.
// Threads: blocks of output features over the OpenMP team. Scratch: the quantised activations in the
// calling thread's scratch (scratch.hpp), kept between calls; nothing allocated after the first call
// of a size. Shape legend: M rows of activations, K input features, N output features, nb = ceil(K/32).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "tim/core/config.hpp"
#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/q8_0.hpp"
#include "tim/cpu/cpu_features.hpp"
#include "tim/cpu/scratch.hpp"
#include "tim/cpu/threads.hpp"

// The SIMD variants need x86-64 and g++ or clang; a translation unit nvcc compiles gets only the
// scalar one, in an inline namespace of its own (q8_scalar_only), so its inline functions never
// stand in for the dispatching ones of the program's g++ translation units (q8_dispatch) at link time.
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
#define TIM_Q8_X86 1
#define TIM_Q8_ABI q8_dispatch
#include <immintrin.h>
#else
#define TIM_Q8_ABI q8_scalar_only
#endif

// tim::cpu_gemm is gemm_bf16.hpp's namespace too, inside the CPU configuration's inline namespace
// (core/config.hpp).
namespace tim {
inline namespace TIM_CPU_ABI {
namespace cpu_gemm {
inline namespace TIM_Q8_ABI {

//! The kernel variants of the q8_0 linear layer, slowest first.
enum class Q8Variant { scalar, avx2, avx512_vnni };

inline constexpr Q8Variant q8_variants[] = {Q8Variant::scalar, Q8Variant::avx2, Q8Variant::avx512_vnni};

//! "scalar", "avx2", "avx512_vnni".
constexpr std::string_view q8_variant_name(Q8Variant v) {
  switch (v) {
    case Q8Variant::scalar: return "scalar";
    case Q8Variant::avx2: return "avx2";
    case Q8Variant::avx512_vnni: return "avx512_vnni";
  }
  return "?";
}

//! Parses "scalar", "avx2" or "avx512_vnni"; throws tim::Error naming `what` otherwise.
inline Q8Variant parse_q8_variant(std::string_view name, std::string_view what = "q8_0 kernel") {
  for (const Q8Variant v : q8_variants)
    if (q8_variant_name(v) == name) return v;
  fail(what, ": unknown q8_0 kernel variant \"", name, "\" (expected scalar, avx2 or avx512_vnni)");
}

namespace q8_detail {
//! The environment variable TIM_Q8_MAX_VARIANT (read once): variants above the one it names count
//! as missing, as on a CPU without them (tests/CMakeLists.txt runs the tests so, like
//! ONEDNN_MAX_CPU_ISA for oneDNN). Unset or empty: no limit.
inline const Q8Variant* max_variant() {
  static const std::optional<Q8Variant> limit = []() -> std::optional<Q8Variant> {
    const char* value = std::getenv("TIM_Q8_MAX_VARIANT");
    if (!value || !*value) return std::nullopt;
    return parse_q8_variant(value, "TIM_Q8_MAX_VARIANT");
  }();
  return limit ? &*limit : nullptr;
}
}  // namespace q8_detail

//! Whether this build and this CPU (cpu_features()) can run variant `v`; when not, `why` (if
//! given) says what is missing.
inline bool q8_variant_supported(Q8Variant v, std::string* why = nullptr) {
  const auto& f = cpu_features();
  auto no = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  if (const Q8Variant* limit = q8_detail::max_variant(); limit && v > *limit)
    return no("above TIM_Q8_MAX_VARIANT");
  switch (v) {
    case Q8Variant::scalar: return true;
    case Q8Variant::avx2:
#if defined(TIM_Q8_X86)
      return f.avx2 && f.fma && f.f16c ? true : no("the CPU lacks AVX2, FMA or F16C");
#else
      (void)f;
      return no("not an x86-64 host build");
#endif
    case Q8Variant::avx512_vnni:
#if defined(TIM_Q8_X86)
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512_vnni && f.f16c
                 ? true
                 : no("the CPU lacks AVX512F/BW/VL with AVX512-VNNI");
#else
      return no("not an x86-64 host build");
#endif
  }
  return no("unknown variant");
}

//! The variant q8_0 linear layers run here, decided once: the fastest this CPU supports, or the
//! one the environment variable TIM_Q8_KERNEL names (scalar, avx2, avx512_vnni; an unknown or
//! unsupported name throws tim::Error). `name` is what `tim --version` prints.
struct Q8Kernel {
  Q8Variant variant = Q8Variant::scalar;
  std::string name;
};

inline const Q8Kernel& q8_kernel() {
  static const Q8Kernel kernel = [] {
    Q8Kernel k;
    if (const char* forced = std::getenv("TIM_Q8_KERNEL"); forced && *forced) {
      k.variant = parse_q8_variant(forced, "TIM_Q8_KERNEL");
      std::string why;
      check(q8_variant_supported(k.variant, &why), "TIM_Q8_KERNEL=", forced, ": not supported here: ", why);
      k.name = std::string(q8_variant_name(k.variant)) + " (forced by TIM_Q8_KERNEL)";
      return k;
    }
    for (const Q8Variant v : q8_variants)
      if (q8_variant_supported(v)) k.variant = v;
    k.name = std::string(q8_variant_name(k.variant));
    return k;
  }();
  return kernel;
}

namespace q8_detail {

//! Quantises row x (K) of activations: per block b, dx[b] = amax / 127 and
//! q[k] = nearbyint(x[k] * (127 / amax)) (0 where amax is 0; a block holding a NaN or infinity gets
//! dx = NaN and q = 0, so the outputs it feeds are NaN). q is zero-padded to `padded` >= K values.
//! |x - q dx| <= dx (1/2 + 3u amax / dx) = dx (1/2 + 381 u), u = 2^-24.
inline void quantize_activations(std::int8_t* q, float* dx, const float* x, std::int64_t K, std::int64_t padded) {
  for (std::int64_t b = 0; b * q8_0_block < K; ++b) {
    const std::int64_t k0 = b * q8_0_block, k1 = std::min(K, k0 + q8_0_block);
    float amax = 0;
    bool finite = true;
    for (std::int64_t k = k0; k < k1; ++k) {
      const float a = std::abs(x[k]);
      finite = finite && a <= std::numeric_limits<float>::max();  // false for NaN and infinity
      amax = std::max(amax, a);
    }
    if (!finite) {
      dx[b] = std::numeric_limits<float>::quiet_NaN();
      for (std::int64_t k = k0; k < k1; ++k) q[k] = 0;
      continue;
    }
    dx[b] = amax / 127.0f;
    const float inverse = amax > 0 ? 127.0f / amax : 0.0f;
    for (std::int64_t k = k0; k < k1; ++k) q[k] = static_cast<std::int8_t>(std::nearbyint(x[k] * inverse));
  }
  for (std::int64_t k = K; k < padded; ++k) q[k] = 0;
}

//! out = (accumulate ? out : 0) + sum (+ bias).
inline void store(float* out, float sum, const float* bias, std::int64_t n, bool accumulate) {
  float v = accumulate ? *out + sum : sum;
  if (bias) v += bias[n];
  *out = v;
}

// Per-variant kernel over output features [n0, n1): every row m of the quantised activations
// (qx (M, Kp) int8 zero-padded, dx (M, nb)) against weight rows n.
struct Activations {
  const std::int8_t* q;  // (M, padded), zero beyond K
  const float* dx;       // (M, padded / 32), zero beyond nb
  std::int64_t M, K, nb, padded;
  std::int64_t dx_stride() const { return padded / q8_0_block; }
};

inline void rows_scalar(float* y, const Activations& a, const Q8Weight& w, const float* bias, std::int64_t n0,
                        std::int64_t n1, bool accumulate) {
  const std::int64_t N = w.out;
  for (std::int64_t n = n0; n < n1; ++n) {
    const std::int8_t* qw = w.q + n * a.K;
    const float16* dw = w.scales + n * a.nb;
    for (std::int64_t m = 0; m < a.M; ++m) {
      const std::int8_t* qx = a.q + m * a.padded;
      const float* dx = a.dx + m * a.dx_stride();
      float sum = 0;
      for (std::int64_t b = 0; b < a.nb; ++b) {
        const std::int64_t k0 = b * q8_0_block, k1 = std::min(a.K, k0 + q8_0_block);
        std::int32_t s = 0;
        for (std::int64_t k = k0; k < k1; ++k) s += static_cast<std::int32_t>(qx[k]) * qw[k];
        sum += dx[b] * static_cast<float>(dw[b]) * static_cast<float>(s);
      }
      store(y + m * N + n, sum, bias, n, accumulate);
    }
  }
}

#if defined(TIM_Q8_X86)
// GCC 12 warns that the intrinsics' own _mm512_undefined_* placeholders "may be used uninitialized".
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

__attribute__((target("avx2,fma,f16c"))) inline float horizontal_sum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

//! Weight rows [n, n + TN) of a tile (the last tile repeats its last row, whose results are not
//! stored), each with its row's last values (the part of a `chunk`-value chunk past the row's whole
//! chunks) in a zero-padded copy, so no load reads past a row.
template <int TN, int Chunk>
struct WeightTile {
  const std::int8_t* q[TN];
  const float16* d[TN];
  alignas(64) std::int8_t tail[TN][Chunk];
  int cols;
  WeightTile(const Q8Weight& w, std::int64_t n, std::int64_t n1, std::int64_t nb, std::int64_t full) {
    cols = static_cast<int>(std::min<std::int64_t>(TN, n1 - n));
    for (int j = 0; j < TN; ++j) {
      const std::int64_t row = n + std::min(j, cols - 1);
      q[j] = w.q + row * w.in;
      d[j] = w.scales + row * nb;
      std::memset(tail[j], 0, Chunk);
      if (full * Chunk < w.in) std::memcpy(tail[j], q[j] + full * Chunk, static_cast<std::size_t>(w.in - full * Chunk));
    }
  }
  const std::int8_t* chunk(int j, std::int64_t c, std::int64_t full) const { return c < full ? q[j] + c * Chunk : tail[j]; }
  //! Block b's scale bits (0 past the row's blocks).
  std::uint16_t scale(int j, std::int64_t b, std::int64_t nb) const { return b < nb ? d[j][b].bits : 0; }
};

//! TM rows of activations by 2 weight rows per step, one block (32 values) at a time:
//! |q_x| x (q_w with the sign of q_x) by VPMADDUBSW, pairs summed into int32 by VPMADDWD.
template <int TM>
__attribute__((target("avx2,fma,f16c"))) inline void tile_avx2(float* y, const Activations& a, const Q8Weight& w,
                                                                const float* bias, std::int64_t m0,
                                                                const WeightTile<2, 32>& t, std::int64_t n,
                                                                std::int64_t full, bool accumulate) {
  constexpr int TN = 2;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc[i][j] = _mm256_setzero_ps();
  for (std::int64_t b = 0; b < a.nb; ++b) {
    __m256i wv[TN];
    __m256 dwv[TN];
    for (int j = 0; j < TN; ++j) {
      wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.chunk(j, b, full)));
      dwv[j] = _mm256_set1_ps(_cvtsh_ss(t.scale(j, b, a.nb)));
    }
    for (int i = 0; i < TM; ++i) {
      const std::int64_t m = m0 + i;
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + m * a.padded + b * q8_0_block));
      const __m256i ax = _mm256_sign_epi8(xv, xv);
      const __m256 dxv = _mm256_broadcast_ss(a.dx + m * a.dx_stride() + b);
      for (int j = 0; j < TN; ++j) {
        const __m256i products = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[j], xv));
        const __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
        acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(dxv, dwv[j]), sums, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < t.cols; ++j) store(y + (m0 + i) * w.out + n + j, horizontal_sum(acc[i][j]), bias, n + j, accumulate);
}

__attribute__((target("avx2,fma,f16c"))) inline void rows_avx2(float* y, const Activations& a, const Q8Weight& w,
                                                                const float* bias, std::int64_t n0, std::int64_t n1,
                                                                bool accumulate) {
  const std::int64_t full = a.K / q8_0_block;  // blocks wholly inside a weight row
  for (std::int64_t n = n0; n < n1; n += 2) {
    const WeightTile<2, 32> t(w, n, n1, a.nb, full);
    std::int64_t m0 = 0;
    for (; m0 + 4 <= a.M; m0 += 4) tile_avx2<4>(y, a, w, bias, m0, t, n, full, accumulate);
    switch (a.M - m0) {
      case 3: tile_avx2<3>(y, a, w, bias, m0, t, n, full, accumulate); break;
      case 2: tile_avx2<2>(y, a, w, bias, m0, t, n, full, accumulate); break;
      case 1: tile_avx2<1>(y, a, w, bias, m0, t, n, full, accumulate); break;
      default: break;
    }
  }
}

//! TM rows of activations (as q + 128, uint8) by 4 weight rows, two blocks (64 values) per VPDPBUSD;
//! the offset's 128 * (sum of four weights) per int32 lane is taken off in int32.
template <int TM>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma"))) inline void tile_vnni(
    float* y, const Activations& a, const std::uint8_t* u, const Q8Weight& w, const float* bias, std::int64_t m0,
    const WeightTile<4, 64>& t, std::int64_t n, std::int64_t full, bool accumulate) {
  constexpr int TN = 4;
  const std::int64_t chunks = a.padded / 64;
  const __m512i ones = _mm512_set1_epi8(1);
  __m512 acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc[i][j] = _mm512_setzero_ps();
  for (std::int64_t c = 0; c < chunks; ++c) {
    __m512i wv[TN], offset[TN];
    __m512 dwv[TN];
    for (int j = 0; j < TN; ++j) {
      wv[j] = _mm512_loadu_si512(t.chunk(j, c, full));
      offset[j] = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, wv[j]), 7);
      dwv[j] = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(_cvtsh_ss(t.scale(j, 2 * c, a.nb))),
                                    _mm512_set1_ps(_cvtsh_ss(t.scale(j, 2 * c + 1, a.nb))));
    }
    for (int i = 0; i < TM; ++i) {
      const std::int64_t m = m0 + i;
      const __m512i xv = _mm512_loadu_si512(u + m * a.padded + c * 64);
      const float* dx = a.dx + m * a.dx_stride() + 2 * c;
      const __m512 dxv = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(dx[0]), _mm512_set1_ps(dx[1]));
      for (int j = 0; j < TN; ++j) {
        const __m512i dots = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xv, wv[j]), offset[j]);
        acc[i][j] = _mm512_fmadd_ps(_mm512_mul_ps(dxv, dwv[j]), _mm512_cvtepi32_ps(dots), acc[i][j]);
      }
    }
  }
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < t.cols; ++j) store(y + (m0 + i) * w.out + n + j, _mm512_reduce_add_ps(acc[i][j]), bias, n + j, accumulate);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma"))) inline void rows_vnni(
    float* y, const Activations& a, const std::uint8_t* u, const Q8Weight& w, const float* bias, std::int64_t n0,
    std::int64_t n1, bool accumulate) {
  const std::int64_t full = a.K / 64;  // 64-value chunks wholly inside a weight row
  for (std::int64_t n = n0; n < n1; n += 4) {
    const WeightTile<4, 64> t(w, n, n1, a.nb, full);
    std::int64_t m0 = 0;
    for (; m0 + 4 <= a.M; m0 += 4) tile_vnni<4>(y, a, u, w, bias, m0, t, n, full, accumulate);
    switch (a.M - m0) {
      case 3: tile_vnni<3>(y, a, u, w, bias, m0, t, n, full, accumulate); break;
      case 2: tile_vnni<2>(y, a, u, w, bias, m0, t, n, full, accumulate); break;
      case 1: tile_vnni<1>(y, a, u, w, bias, m0, t, n, full, accumulate); break;
      default: break;
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // TIM_Q8_X86

}  // namespace q8_detail

//! y (rows, out) (+)= x (rows, in) W^T (+ bias), W a q8_0 matrix (out, in), with variant `variant`
//! (throws tim::Error when this CPU cannot run it: q8_variant_supported). `bias` may be null; with
//! `accumulate` the product is added to y. Activations are quantised per 32-block as the file
//! comment says; the quantised rows live in the calling thread's scratch.
inline void linear_forward_q8(float* y, const float* x, const Q8Weight& w, const float* bias, std::int64_t rows,
                              bool accumulate, Q8Variant variant) {
  std::string why;
  check(q8_variant_supported(variant, &why), "q8_0 linear: variant ", q8_variant_name(variant),
        " cannot run here: ", why);
  check(rows >= 0 && w.in >= 0 && w.out >= 0, "q8_0 linear: negative extent (rows ", rows, ", in ", w.in, ", out ",
        w.out, ")");
  const std::int64_t M = rows, K = w.in, N = w.out;
  if (M == 0 || N == 0) return;
  detail::ensure_default_threads();
  const std::int64_t nb = q8_0_blocks(K);
  const std::int64_t padded = (K + 63) / 64 * 64;  // whole 64-value chunks for the VNNI variant
  q8_detail::Activations a{detail::thread_scratch<std::int8_t>(M * padded),
                           detail::thread_scratch<float>(M * (padded / q8_0_block)), M, K, nb, padded};
  float* dx = const_cast<float*>(a.dx);
  auto* q = const_cast<std::int8_t*>(a.q);
  const std::int64_t dx_stride = a.dx_stride();
#if defined(TIM_Q8_X86)
  // The VNNI variant reads q + 128 as uint8.
  const bool vnni = variant == Q8Variant::avx512_vnni;
  std::uint8_t* u = vnni ? detail::thread_scratch<std::uint8_t>(M * padded) : nullptr;
#endif
#pragma omp parallel for schedule(static) if (M * K > (1 << 15))
  for (std::int64_t m = 0; m < M; ++m) {
    q8_detail::quantize_activations(q + m * padded, dx + m * dx_stride, x + m * K, K, padded);
    for (std::int64_t b = nb; b < dx_stride; ++b) dx[m * dx_stride + b] = 0.0f;
#if defined(TIM_Q8_X86)
    if (vnni)
      for (std::int64_t k = 0; k < padded; ++k)
        u[m * padded + k] = static_cast<std::uint8_t>(static_cast<int>(q[m * padded + k]) + 128);
#endif
  }

  // Blocks of output features over the threads, several per thread for balance.
  const std::int64_t threads = std::max(1, omp_get_max_threads());
  const std::int64_t work = M * N * std::max<std::int64_t>(K, 1);
  // A multiple of 4 output features: the kernels' register tiles are 2 or 4 weight rows wide.
  const std::int64_t block = std::max<std::int64_t>(4, ((N + 4 * threads - 1) / (4 * threads) + 3) / 4 * 4);
  const std::int64_t blocks = (N + block - 1) / block;
#pragma omp parallel for schedule(dynamic) if (blocks > 1 && work > (1 << 16))
  for (std::int64_t i = 0; i < blocks; ++i) {
    const std::int64_t n0 = i * block, n1 = std::min(N, n0 + block);
    switch (variant) {
      case Q8Variant::scalar: q8_detail::rows_scalar(y, a, w, bias, n0, n1, accumulate); break;
#if defined(TIM_Q8_X86)
      case Q8Variant::avx2: q8_detail::rows_avx2(y, a, w, bias, n0, n1, accumulate); break;
      case Q8Variant::avx512_vnni: q8_detail::rows_vnni(y, a, u, w, bias, n0, n1, accumulate); break;
#else
      default: break;
#endif
    }
  }
}

//! As above with the variant q8_kernel() chose.
inline void linear_forward_q8(float* y, const float* x, const Q8Weight& w, const float* bias, std::int64_t rows,
                              bool accumulate = false) {
  linear_forward_q8(y, x, w, bias, rows, accumulate, q8_kernel().variant);
}

//! The plain-pointer form: q (out, in) int8, scales (out, ceil(in / 32)) float16.
inline void linear_forward_q8(float* y, const float* x, const std::int8_t* q, const float16* scales, const float* bias,
                              std::int64_t rows, std::int64_t in, std::int64_t out, bool accumulate = false) {
  linear_forward_q8(y, x, Q8Weight{q, scales, out, in}, bias, rows, accumulate);
}

}  // inline namespace TIM_Q8_ABI
}  // namespace cpu_gemm
}  // inline namespace TIM_CPU_ABI
}  // namespace tim
