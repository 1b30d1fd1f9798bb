// The instruction sets of the CPU tim runs on, read once by CPUID (with the operating system's
// consent through XGETBV for the AVX-512 and AMX register states), for kernels chosen at run time
// (gemm_bf16.hpp, gemm_q8.hpp). Not x86-64: every flag false.
#pragma once

#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace tim {

//! What the CPU and the operating system support, as far as tim's run-time choices care.
struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false;
  bool avx512_vnni = false;  // VPDPBUSD on ZMM/YMM (Cascade Lake, Ice Lake, Zen 4 and later)
  bool avx_vnni = false;     // VEX-encoded VPDPBUSD (Alder Lake, Zen 5): not used by tim's kernels yet
  bool avx512_bf16 = false;  // VDPBF16PS, VCVTNE2PS2BF16 (Cooper Lake, Zen 4 and later)
  bool amx_bf16 = false;     // AMX tiles with TDPBF16PS (Sapphire Rapids and later)

  //! Whether bfloat16 x bfloat16 products run in hardware (AVX512-BF16 or AMX-BF16).
  bool bf16_dot() const { return (avx512f && avx512bw && avx512vl && avx512_bf16) || amx_bf16; }

  //! The flags that are set, e.g. "avx2 fma avx512f avx512bw avx512vl avx512_bf16".
  std::string describe() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
      if (!on) return;
      if (!s.empty()) s += ' ';
      s += name;
    };
    add(avx2, "avx2");
    add(fma, "fma");
    add(f16c, "f16c");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512_vnni, "avx512_vnni");
    add(avx_vnni, "avx_vnni");
    add(avx512_bf16, "avx512_bf16");
    add(amx_bf16, "amx_bf16");
    return s.empty() ? std::string("none of avx2/avx-512/amx") : s;
  }
};

namespace detail {
inline CpuFeatures read_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u, avx = (c >> 28) & 1u;
  f.fma = (c >> 12) & 1u;
  const bool f16c = (c >> 29) & 1u;
  if (!osxsave || !avx) return f;
  unsigned xcr_low = 0, xcr_high = 0;
  __asm__("xgetbv" : "=a"(xcr_low), "=d"(xcr_high) : "c"(0));
  const bool ymm_state = (xcr_low & 0x6u) == 0x6u;                 // SSE and AVX state
  const bool zmm_state = ymm_state && (xcr_low & 0xe0u) == 0xe0u;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool tile_state = (xcr_low & 0x60000u) == 0x60000u;        // XTILECFG, XTILEDATA
  if (!ymm_state) return f;
  f.f16c = f16c;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = (b >> 5) & 1u;
  f.avx512f = zmm_state && ((b >> 16) & 1u);
  f.avx512bw = zmm_state && ((b >> 30) & 1u);
  f.avx512vl = zmm_state && ((b >> 31) & 1u);
  f.avx512_vnni = zmm_state && ((c >> 11) & 1u);
  f.amx_bf16 = tile_state && ((d >> 22) & 1u) && ((d >> 24) & 1u);  // AMX-BF16 and AMX-TILE
  const unsigned subleaves = a;
  if (subleaves >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = zmm_state && ((a >> 5) & 1u);
    f.avx_vnni = (a >> 4) & 1u;
  }
#endif
  return f;
}
}  // namespace detail

//! The features of the CPU this process runs on (read once).
inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detail::read_cpu_features();
  return features;
}

}  // namespace tim
