// Element types: the DType tag, and bfloat16/float16 storage types converting to and from float.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "tim/core/config.hpp"
#include "tim/core/error.hpp"

namespace tim {

//! bfloat16 storage: the upper 16 bits of an IEEE float32. Conversion from float rounds to
//! nearest even (as PyTorch does); NaN stays NaN.
struct bfloat16 {
  std::uint16_t bits = 0;

  bfloat16() = default;
  TIM_HD explicit bfloat16(float value) : bits(from_float(value)) {}
  TIM_HD operator float() const { return to_float(bits); }

  TIM_HD static std::uint16_t from_float(float value) {
    std::uint32_t u;
    std::memcpy(&u, &value, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    const std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>((u + rounding) >> 16);
  }
  TIM_HD static float to_float(std::uint16_t bits) {
    const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &u, 4);
    return value;
  }
};

//! IEEE 754 binary16 storage. Conversion from float rounds to nearest even, overflows to
//! infinity and keeps subnormals.
struct float16 {
  std::uint16_t bits = 0;

  float16() = default;
  TIM_HD explicit float16(float value) : bits(from_float(value)) {}
  TIM_HD operator float() const { return to_float(bits); }

  TIM_HD static std::uint16_t from_float(float value) {
    std::uint32_t u;
    std::memcpy(&u, &value, 4);
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
    if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (abs < 0x38800000u) {  // subnormal half (or zero): value = abs_float * 2^24 in units
      if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
      const std::uint32_t exponent = abs >> 23;
      const std::uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
      const std::uint32_t shift = 126u - exponent;  // 14 + (127 - 1 - exponent) ... in [14, 24]
      std::uint32_t half = mantissa >> shift;
      const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
      const std::uint32_t midpoint = 1u << (shift - 1u);
      if (rest > midpoint || (rest == midpoint && (half & 1u))) ++half;
      return static_cast<std::uint16_t>(sign | half);
    }
    std::uint32_t half = ((abs - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
    const std::uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  TIM_HD static float to_float(std::uint16_t bits) {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t exponent = (bits >> 10) & 0x1fu;
    std::uint32_t mantissa = bits & 0x3ffu;
    std::uint32_t u;
    if (exponent == 0x1fu) {
      u = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
      u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
      u = sign;
    } else {  // subnormal: normalise
      std::uint32_t e = 113u;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        --e;
      }
      u = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float value;
    std::memcpy(&value, &u, 4);
    return value;
  }
};

//! The element types a file or tensor can hold.
enum class DType : std::uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

//! Bytes per element.
constexpr std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

//! The safetensors spelling of a dtype ("F32", "BF16", ...).
constexpr std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

//! Parses a safetensors dtype name; throws tim::Error naming the unknown spelling.
inline DType parse_dtype(std::string_view name) {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (dtype_name(d) == name) return d;
  }
  fail("unknown dtype '", name, "' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

//! The DType tag of a C++ element type.
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<float16>() { return DType::F16; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::BF16; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<std::int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<std::int16_t>() { return DType::I16; }
template <> constexpr DType dtype_of<std::int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<std::uint8_t>() { return DType::U8; }

//! Converts `count` elements stored as `source` (raw, possibly unaligned bytes) into `out`.
//! Floating types convert to each other; integer types convert to each other and to floats.
template <class T>
void convert_elements(const void* source, DType source_type, T* out, std::size_t count) {
  const auto* bytes = static_cast<const unsigned char*>(source);
  auto each = [&](auto tag) {
    using S = decltype(tag);
    for (std::size_t i = 0; i < count; ++i) {
      S value;
      std::memcpy(&value, bytes + i * sizeof(S), sizeof(S));
      if constexpr (std::is_same_v<S, bfloat16> || std::is_same_v<S, float16>)
        out[i] = static_cast<T>(static_cast<float>(value));
      else
        out[i] = static_cast<T>(value);
    }
  };
  switch (source_type) {
    case DType::F64: return each(double{});
    case DType::F32: return each(float{});
    case DType::F16: return each(float16{});
    case DType::BF16: return each(bfloat16{});
    case DType::I64: return each(std::int64_t{});
    case DType::I32: return each(std::int32_t{});
    case DType::I16: return each(std::int16_t{});
    case DType::I8: return each(std::int8_t{});
    case DType::U8: case DType::BOOL: return each(std::uint8_t{});
  }
}

}  // namespace tim
