// The check that the CPU has the instruction sets tim's programs were compiled for
// (TIM_CPU_BASELINE, x86-64-v3 by default: CMakeLists.txt), made before any other code of the
// program runs: on a CPU without them the program would otherwise die on SIGILL at its first
// AVX2 instruction, which may be in a static initialiser. It prints what is missing and exits 1.
//
// How early: a constructor of priority 101, the first the C++ runtime allows, so the linker puts
// it before every unprioritised static initialiser of the same binary (the executable, or the
// Python extension's shared object); it runs after the shared libraries' own initialisers
// (libstdc++, libgomp, OpenBLAS, oneDNN, built by their distributors for any x86-64) and after
// the dynamic loader's relocations. This file is compiled for plain x86-64 (CMake gives it
// -march=x86-64 last, tests/check_portable.cmake checks that) and includes nothing of tim or the
// C++ library whose inline code could be shared with the baseline-compiled files (one copy of
// an inline function per program: the linker could keep the AVX2 one); it calls only libc.
//
// TIM_BASELINE_NAME ("x86-64-v3") and TIM_BASELINE_FEATURES ("avx avx2 bmi ...", the compiler's
// predefined macros for that -march) come from CMake.
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(TIM_BASELINE_FEATURES)
#include <cpuid.h>

namespace {

struct Registers {
  unsigned leaf1_c = 0, leaf1_d = 0, leaf7_b = 0, leaf7_c = 0, leaf7_d = 0, leaf7_1_a = 0, ext1_c = 0;
  unsigned long long xcr0 = 0;
};

Registers read_registers() {
  Registers r;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return r;
  r.leaf1_c = c;
  r.leaf1_d = d;
  if ((c >> 27) & 1u) {  // OSXSAVE: XGETBV may be used
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    r.xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    r.leaf7_b = b;
    r.leaf7_c = c;
    r.leaf7_d = d;
    if (a >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      r.leaf7_1_a = a;
    }
  }
  if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000001u) {
    __cpuid(0x80000001u, a, b, c, d);
    r.ext1_c = c;
  }
  return r;
}

bool bit(unsigned word, int n) { return (word >> n) & 1u; }

//! Whether the CPU (and the operating system, for the register state) supports `name`, one of the
//! names CMakeLists.txt writes into TIM_BASELINE_FEATURES; unknown names count as missing.
bool supports(const Registers& r, const char* name, std::size_t length) {
  const bool ymm = (r.xcr0 & 0x6u) == 0x6u, zmm = ymm && (r.xcr0 & 0xe0u) == 0xe0u,
             tiles = (r.xcr0 & 0x60000u) == 0x60000u;
  struct Feature {
    const char* name;
    bool present;
  };
  const Feature table[] = {
      {"sse3", bit(r.leaf1_c, 0)},          {"ssse3", bit(r.leaf1_c, 9)},
      {"sse4_1", bit(r.leaf1_c, 19)},       {"sse4_2", bit(r.leaf1_c, 20)},
      {"popcnt", bit(r.leaf1_c, 23)},       {"movbe", bit(r.leaf1_c, 22)},
      {"avx", ymm && bit(r.leaf1_c, 28)},   {"fma", ymm && bit(r.leaf1_c, 12)},
      {"f16c", ymm && bit(r.leaf1_c, 29)},  {"avx2", ymm && bit(r.leaf7_b, 5)},
      {"bmi", bit(r.leaf7_b, 3)},           {"bmi2", bit(r.leaf7_b, 8)},
      {"lzcnt", bit(r.ext1_c, 5)},          {"avx512f", zmm && bit(r.leaf7_b, 16)},
      {"avx512dq", zmm && bit(r.leaf7_b, 17)}, {"avx512cd", zmm && bit(r.leaf7_b, 28)},
      {"avx512bw", zmm && bit(r.leaf7_b, 30)}, {"avx512vl", zmm && bit(r.leaf7_b, 31)},
      {"avx512vnni", zmm && bit(r.leaf7_c, 11)}, {"avx512bf16", zmm && bit(r.leaf7_1_a, 5)},
      {"amx_tile", tiles && bit(r.leaf7_d, 24)}, {"amx_bf16", tiles && bit(r.leaf7_d, 22)},
  };
  for (const Feature& f : table)
    if (std::strlen(f.name) == length && std::strncmp(f.name, name, length) == 0) return f.present;
  return false;
}

void put(const char* s) {
  const std::size_t n = std::strlen(s);
  if (write(2, s, n) < 0) return;
}

//! Runs before the binary's other static initialisers (see the top of this file).
__attribute__((constructor(101))) void tim_check_cpu_baseline() {
  const char* features = TIM_BASELINE_FEATURES;
  // TIM_PRETEND_MISSING_CPU_FEATURE=name: treat `name` as absent, so that tests can see the
  // message and the exit status on a CPU that has everything.
  const char* pretend = std::getenv("TIM_PRETEND_MISSING_CPU_FEATURE");
  const Registers registers = read_registers();
  char missing[256] = {0};
  std::size_t used = 0;
  for (const char* p = features; *p;) {
    while (*p == ' ' || *p == ';') ++p;
    const char* end = p;
    while (*end && *end != ' ' && *end != ';') ++end;
    const std::size_t length = static_cast<std::size_t>(end - p);
    if (length > 0) {
      const bool pretended = pretend && std::strlen(pretend) == length && std::strncmp(pretend, p, length) == 0;
      if (pretended || !supports(registers, p, length)) {
        if (used + length + 2 < sizeof(missing)) {
          if (used) missing[used++] = ' ';
          std::memcpy(missing + used, p, length);
          used += length;
        }
      }
    }
    p = end;
  }
  if (used == 0) return;
  put("tim: error: this CPU lacks ");
  put(missing);
  put(", which this build of tim requires: it was compiled for " TIM_BASELINE_NAME " (" TIM_BASELINE_FEATURES
      "). Rebuild tim for this CPU with -DTIM_CPU_BASELINE=none (the compiler's default, SSE2) or a lower level "
      "(docs/architecture.md, \"CPU kernels and dispatch\").\n");
  _exit(1);
}

}  // namespace
#endif
