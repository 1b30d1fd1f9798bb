// q8_0 weights in safetensors (core/q8_0.hpp; docs/safetensors.md, "q8_0 weights"): a quantised
// matrix NAME (N, K) is stored as NAME, I8 (N, K), and NAME.q8_0_scale, F16 (N, ceil(K / 32)), both
// plain tensors any safetensors reader can open; __metadata__ says which tensors they are:
//   "tim.quantization": "q8_0", "tim.q8_0.block_size": "32", "tim.q8_0.tensors": a JSON array of names.
// Reading the layout checks all of it against the tensors (outside input: fuzz/fuzz_q8_0_layout.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/q8_0.hpp"
#include "tim/core/tensor.hpp"
#include "tim/io/safetensors.hpp"

namespace tim::io {

//! The companion tensor of a q8_0 weight holds its scales: NAME + this suffix.
inline constexpr std::string_view q8_0_scale_suffix = ".q8_0_scale";
//! __metadata__ keys of a file with q8_0 tensors.
inline constexpr const char* quantization_key = "tim.quantization";  // "q8_0"
inline constexpr const char* q8_0_block_size_key = "tim.q8_0.block_size";  // "32"
inline constexpr const char* q8_0_tensors_key = "tim.q8_0.tensors";  // JSON array of the quantised names

//! NAME + ".q8_0_scale".
inline std::string q8_0_scale_name(std::string_view weight) { return std::string(weight) + std::string(q8_0_scale_suffix); }

//! Whether `name` ends with ".q8_0_scale".
inline bool is_q8_0_scale_name(std::string_view name) {
  return name.size() >= q8_0_scale_suffix.size() && name.substr(name.size() - q8_0_scale_suffix.size()) == q8_0_scale_suffix;
}

//! The q8_0 tensors of a file (none for an unquantised one).
struct Q8_0Layout {
  std::set<std::string, std::less<>> tensors;  // the quantised weights' names (not their scale tensors)
  bool contains(std::string_view name) const { return tensors.find(name) != tensors.end(); }
  bool empty() const { return tensors.empty(); }
};

//! Reads and checks the q8_0 layout of `file`: without "tim.quantization" in __metadata__ the file
//! has no q8_0 tensors (and may hold no tensor named *.q8_0_scale); with it, the value must be
//! "q8_0", "tim.q8_0.block_size" (when present) "32", and "tim.q8_0.tensors" a JSON array of
//! distinct names, each an I8 tensor of rank 2 (N, K) whose NAME.q8_0_scale is F16 (N, ceil(K/32));
//! every *.q8_0_scale tensor must belong to a listed name. Throws tim::Error naming the file, the
//! key or tensor and what was expected.
inline Q8_0Layout read_q8_0_layout(const SafetensorsFile& file) {
  const auto& meta = file.metadata();
  const std::string& path = file.path();
  Q8_0Layout layout;
  const auto quantization = meta.find(quantization_key);
  if (quantization == meta.end()) {
    for (const auto& t : file.tensors())
      check(!is_q8_0_scale_name(t.name), "'", path, "': tensor '", t.name, "' looks like q8_0 scales but __metadata__ has no \"",
            quantization_key, "\"");
    return layout;
  }
  check(quantization->second == "q8_0", "'", path, "': __metadata__ \"", quantization_key, "\" is \"",
        quantization->second.substr(0, 40), "\"; tim reads only \"q8_0\"");
  if (const auto block = meta.find(q8_0_block_size_key); block != meta.end())
    check(block->second == "32", "'", path, "': __metadata__ \"", q8_0_block_size_key, "\" is \"",
          block->second.substr(0, 40), "\"; q8_0 blocks hold 32 values");
  const auto listed = meta.find(q8_0_tensors_key);
  check(listed != meta.end(), "'", path, "': __metadata__ says q8_0 but has no \"", q8_0_tensors_key, "\" (the quantised tensors)");
  nlohmann::json names;
  try {
    names = nlohmann::json::parse(listed->second);
  } catch (const nlohmann::json::exception& e) {
    fail("'", path, "': __metadata__ \"", q8_0_tensors_key, "\" is not valid JSON: ", e.what());
  }
  check(names.is_array(), "'", path, "': __metadata__ \"", q8_0_tensors_key, "\" must be a JSON array of tensor names, got ",
        names.type_name());
  for (const auto& entry : names) {
    check(entry.is_string(), "'", path, "': __metadata__ \"", q8_0_tensors_key, "\" holds a ", entry.type_name(),
          " where a tensor name belongs");
    const auto& name = entry.get_ref<const std::string&>();
    check(layout.tensors.insert(name).second, "'", path, "': q8_0 tensor '", name, "' is listed twice");
    check(file.contains(name), "'", path, "': q8_0 tensor '", name, "' is listed but not in the file");
    const TensorInfo& q = file.info(name);
    check(q.dtype == DType::I8 && q.shape.rank() == 2, "'", path, "': q8_0 tensor '", name, "' must be I8 of rank 2 (N, K), is ",
          dtype_name(q.dtype), " ", q.shape);
    const std::string scale_name = q8_0_scale_name(name);
    check(file.contains(scale_name), "'", path, "': q8_0 tensor '", name, "' has no scales '", scale_name, "'");
    const TensorInfo& s = file.info(scale_name);
    const Shape expected{q.shape[0], q8_0_blocks(q.shape[1])};
    check(s.dtype == DType::F16 && s.shape == expected, "'", path, "': q8_0 scales '", scale_name, "' must be F16 ", expected,
          ", are ", dtype_name(s.dtype), " ", s.shape);
  }
  for (const auto& t : file.tensors())
    if (is_q8_0_scale_name(t.name))
      check(layout.contains(std::string_view(t.name).substr(0, t.name.size() - q8_0_scale_suffix.size())), "'", path,
            "': tensor '", t.name, "' looks like q8_0 scales of a tensor not listed in \"", q8_0_tensors_key, "\"");
  return layout;
}

//! A q8_0 weight loaded from a file: the int8 values and the scales (zero-copy views of the mapping
//! where alignment allows), which keep the file's bytes alive, and the view the kernels take.
struct Q8_0Tensor {
  Tensor<std::int8_t, cpu> q;    // (N, K)
  Tensor<float16, cpu> scales;  // (N, ceil(K / 32))
  Q8Weight view() const { return {q.data(), scales.data(), q.shape()[0], q.shape()[1]}; }
};

//! Loads q8_0 weight `name` of `file` (listed in `layout`, from read_q8_0_layout), checking that its
//! shape is `expected` (N, K) and its contents are what the kernels assume: every value in
//! [-127, 127] (-128 never comes out of quantize_row_q8_0) and every scale finite and not negative.
//! Throws tim::Error naming the tensor otherwise.
inline Q8_0Tensor load_q8_0(const SafetensorsFile& file, const Q8_0Layout& layout, std::string_view name,
                            const Shape& expected) {
  check(layout.contains(name), "tensor '", name, "' in ", file.path(), " is not a q8_0 tensor");
  Q8_0Tensor t{file.load<std::int8_t>(name, expected), file.load<float16>(q8_0_scale_name(name))};
  const std::int64_t count = t.q.numel();
  for (std::int64_t i = 0; i < count; ++i)
    check(t.q.data()[i] != -128, "q8_0 tensor '", name, "' in ", file.path(), ": value -128 at index ", i,
          " (q8_0 values lie in [-127, 127])");
  const std::int64_t scales = t.scales.numel();
  for (std::int64_t i = 0; i < scales; ++i) {
    const std::uint16_t bits = t.scales.data()[i].bits;
    check((bits & 0x8000u) == 0 && (bits & 0x7c00u) != 0x7c00u, "q8_0 scales '", q8_0_scale_name(name), "' in ", file.path(),
          ": scale ", static_cast<float>(t.scales.data()[i]), " at index ", i, " (scales are finite and not negative)");
  }
  return t;
}

}  // namespace tim::io
