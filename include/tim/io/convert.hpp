// Converting a safetensors checkpoint's floating tensors to another storage type (`tim convert`,
// docs/cli.md): float32, bfloat16 or float16 (every floating tensor, rounded to nearest even), or
// q8_0 (the linear layers' weight matrices quantised, core/q8_0.hpp and io/q8_0.hpp; every other
// tensor kept as stored). __metadata__ is copied and the conversion recorded. The output is written
// to a temporary file beside OUT and renamed over it, so OUT is never half-written.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/q8_0.hpp"
#include "tim/io/atomic_file.hpp"
#include "tim/io/q8_0.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/version.hpp"

namespace tim::io {

//! What `tim convert --to` produces.
enum class ConvertTarget { float32, bfloat16, float16, q8_0 };

constexpr std::string_view convert_target_name(ConvertTarget t) {
  switch (t) {
    case ConvertTarget::float32: return "float32";
    case ConvertTarget::bfloat16: return "bfloat16";
    case ConvertTarget::float16: return "float16";
    case ConvertTarget::q8_0: return "q8_0";
  }
  return "?";
}

//! Parses "float32", "bfloat16", "float16" or "q8_0"; throws tim::Error naming `what` otherwise.
inline ConvertTarget parse_convert_target(std::string_view name, std::string_view what = "--to") {
  for (const ConvertTarget t : {ConvertTarget::float32, ConvertTarget::bfloat16, ConvertTarget::float16, ConvertTarget::q8_0})
    if (convert_target_name(t) == name) return t;
  fail(what, ": expected bfloat16, float16, q8_0 or float32, got \"", name.substr(0, 40), "\"");
}

//! Whether a q8_0 conversion quantises tensor `t`: a floating matrix (rank 2) named *.weight with
//! at least 32 input features (K = shape[1]), which is not an embedding table (its module's last
//! name part is not embedding_table, embed_tokens, embedding or embeddings: tables are gathered by
//! row, not multiplied). Everything else (biases, norms, convolutions, tables, K < 32) stays as stored.
inline bool q8_0_eligible(const TensorInfo& t) {
  const bool floating = t.dtype == DType::F64 || t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16;
  constexpr std::string_view suffix = ".weight";
  if (!floating || t.shape.rank() != 2 || t.shape[1] < q8_0_block) return false;
  if (t.name.size() <= suffix.size() || std::string_view(t.name).substr(t.name.size() - suffix.size()) != suffix) return false;
  const std::string_view module = std::string_view(t.name).substr(0, t.name.size() - suffix.size());
  const std::string_view last = module.substr(module.rfind('.') == std::string_view::npos ? 0 : module.rfind('.') + 1);
  return last != "embedding_table" && last != "embed_tokens" && last != "embedding" && last != "embeddings";
}

namespace detail {

//! `v` rounded to float with round-to-odd (toward zero, the last bit set when inexact): rounding that
//! float once more, to bfloat16 or float16 (at most 11 significant bits, float has 24), to nearest
//! even gives the correctly rounded result of `v`, which double -> float -> 16 bits by nearest twice
//! would not always.
inline float round_to_odd_float(double v) {
  if (!std::isfinite(v)) return static_cast<float>(v);
  float f = static_cast<float>(v);
  if (std::abs(static_cast<double>(f)) > std::abs(v)) f = std::nextafter(f, 0.0f);  // toward zero
  if (static_cast<double>(f) != v) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits |= 1u;
    std::memcpy(&f, &bits, 4);
  }
  return f;
}

//! Element `i` of floating tensor bytes of dtype `d`, as a double (exact for every floating dtype).
inline double floating_element(const std::byte* p, DType d, std::size_t i) {
  switch (d) {
    case DType::F64: { double v; std::memcpy(&v, p + 8 * i, 8); return v; }
    case DType::F32: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::F16: { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); return float16::to_float(b); }
    case DType::BF16: { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); return bfloat16::to_float(b); }
    default: fail("internal: floating_element on ", dtype_name(d));
  }
}

inline bool is_floating_dtype(DType d) {
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

}  // namespace detail

//! What a conversion did.
struct ConversionSummary {
  std::int64_t quantised = 0;    // matrices stored as q8_0
  std::int64_t converted = 0;    // floating tensors stored in the target float type
  std::int64_t dequantised = 0;  // q8_0 matrices of the input stored in the target float type
  std::int64_t kept = 0;         // tensors copied unchanged (a q8_0 matrix and its scales count 2)
};

//! The converted file, ready to write: every tensor of `in` (q8_0 scale companions handled with their
//! matrix) as `to` says (file comment; q8_0_eligible for q8_0), laid out by descending element size and
//! then by name so every tensor is aligned for zero-copy loading; `in`'s __metadata__ plus
//! "tim.converted_to" (the target), "tim.converted_by" ("tim convert <version>") and, for q8_0, the
//! io/q8_0.hpp keys. A q8_0 input converts to a float type by dequantising; to q8_0 its matrices are
//! copied. Throws tim::Error naming the tensor when a value cannot be stored (beyond float16's or
//! bfloat16's range, or NaN/infinity in a matrix to quantise).
inline SafetensorsWriter convert_safetensors(const SafetensorsFile& in, ConvertTarget to, ConversionSummary* summary = nullptr) {
  const Q8_0Layout layout = read_q8_0_layout(in);
  ConversionSummary done;
  struct Output {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<std::uint8_t> bytes;
  };
  std::vector<Output> outputs;
  std::vector<std::string> quantised_names;
  const DType float_target = to == ConvertTarget::float32   ? DType::F32
                             : to == ConvertTarget::float16 ? DType::F16
                                                            : DType::BF16;

  // Values (as doubles) stored as the target float type, or an error naming the tensor.
  auto store_float = [&](const std::string& name, const Shape& shape, auto value) {
    const auto count = static_cast<std::size_t>(shape.numel());
    Output o{name, float_target, shape, std::vector<std::uint8_t>(count * dtype_size(float_target))};
    for (std::size_t i = 0; i < count; ++i) {
      const double v = value(i);
      if (float_target == DType::F32) {
        const float f = static_cast<float>(v);
        check(std::isfinite(f) || !std::isfinite(v), "tensor '", name, "': value ", v, " at index ", i,
              " is beyond float32's range");
        std::memcpy(o.bytes.data() + 4 * i, &f, 4);
      } else {
        const float f = detail::round_to_odd_float(v);
        const std::uint16_t bits = float_target == DType::F16 ? float16::from_float(f) : bfloat16::from_float(f);
        const float back = float_target == DType::F16 ? float16::to_float(bits) : bfloat16::to_float(bits);
        check(std::isfinite(back) || !std::isfinite(v), "tensor '", name, "': value ", v, " at index ", i, " is beyond ",
              convert_target_name(to), "'s range");
        std::memcpy(o.bytes.data() + 2 * i, &bits, 2);
      }
    }
    outputs.push_back(std::move(o));
  };
  auto keep = [&](const TensorInfo& t) {
    const auto bytes = in.bytes(t.name);
    Output o{t.name, t.dtype, t.shape, std::vector<std::uint8_t>(bytes.size())};
    if (!bytes.empty()) std::memcpy(o.bytes.data(), bytes.data(), bytes.size());
    outputs.push_back(std::move(o));
    ++done.kept;
  };

  for (const TensorInfo& t : in.tensors()) {
    if (is_q8_0_scale_name(t.name)) continue;  // with its matrix (read_q8_0_layout checked the pairing)
    if (layout.contains(t.name)) {
      if (to == ConvertTarget::q8_0) {
        keep(t);
        keep(in.info(q8_0_scale_name(t.name)));
        quantised_names.push_back(t.name);
        continue;
      }
      const Q8_0Tensor q = load_q8_0(in, layout, t.name, t.shape);
      const std::int64_t K = t.shape[1], nb = q8_0_blocks(K);
      store_float(t.name, t.shape, [&](std::size_t i) {
        const auto row = static_cast<std::int64_t>(i) / K, k = static_cast<std::int64_t>(i) % K;
        return static_cast<double>(q.q.data()[i]) * static_cast<float>(q.scales.data()[row * nb + k / q8_0_block]);
      });
      ++done.dequantised;
      continue;
    }
    if (!detail::is_floating_dtype(t.dtype)) {
      keep(t);
      continue;
    }
    const std::byte* source = in.bytes(t.name).data();
    if (to != ConvertTarget::q8_0) {
      store_float(t.name, t.shape, [&](std::size_t i) { return detail::floating_element(source, t.dtype, i); });
      ++done.converted;
      continue;
    }
    if (!q8_0_eligible(t)) {
      keep(t);
      continue;
    }
    const std::int64_t N = t.shape[0], K = t.shape[1], nb = q8_0_blocks(K);
    Output q{t.name, DType::I8, t.shape, std::vector<std::uint8_t>(static_cast<std::size_t>(N * K))};
    Output s{q8_0_scale_name(t.name), DType::F16, Shape{N, nb}, std::vector<std::uint8_t>(static_cast<std::size_t>(N * nb * 2))};
    check(!in.contains(s.name), "tensor '", s.name, "' already exists in ", in.path(), ": cannot store the q8_0 scales of '",
          t.name, "' under that name");
    std::vector<float> row(static_cast<std::size_t>(K));
    std::vector<float16> scales(static_cast<std::size_t>(nb));
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t k = 0; k < K; ++k)
        row[static_cast<std::size_t>(k)] = static_cast<float>(detail::floating_element(source, t.dtype, static_cast<std::size_t>(n * K + k)));
      try {
        quantize_row_q8_0(reinterpret_cast<std::int8_t*>(q.bytes.data()) + n * K, scales.data(), row.data(), K);
      } catch (const Error& e) {
        fail("tensor '", t.name, "' row ", n, ": ", e.what());
      }
      std::memcpy(s.bytes.data() + n * nb * 2, scales.data(), static_cast<std::size_t>(nb) * 2);
    }
    outputs.push_back(std::move(q));
    outputs.push_back(std::move(s));
    quantised_names.push_back(t.name);
    ++done.quantised;
  }

  std::stable_sort(outputs.begin(), outputs.end(), [](const Output& a, const Output& b) {
    const auto sa = dtype_size(a.dtype), sb = dtype_size(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });
  SafetensorsWriter writer;
  for (const Output& o : outputs) writer.add(o.name, o.dtype, o.shape, o.bytes.data());
  for (const auto& [key, value] : in.metadata())
    if (to == ConvertTarget::q8_0 || (key != quantization_key && key != q8_0_block_size_key && key != q8_0_tensors_key))
      writer.set_metadata(key, value);
  writer.set_metadata("tim.converted_to", std::string(convert_target_name(to)));
  writer.set_metadata("tim.converted_by", std::string("tim convert ") + version_string);
  if (to == ConvertTarget::q8_0) {
    std::sort(quantised_names.begin(), quantised_names.end());
    writer.set_metadata(quantization_key, "q8_0");
    writer.set_metadata(q8_0_block_size_key, "32");
    writer.set_metadata(q8_0_tensors_key, nlohmann::json(quantised_names).dump());
  }
  if (summary) *summary = done;
  return writer;
}

}  // namespace tim::io
