// libFuzzer target for the q8_0 layout of a safetensors file (tim/io/q8_0.hpp: the __metadata__
// keys, the companion scale tensors, their dtypes and shapes, the values' range) and for converting
// such a file (tim/io/convert.hpp): any input must parse and convert, or throw tim::Error; a crash,
// a sanitizer report, another exception type or a broken invariant is a bug. Seeds:
// fuzz/corpus/q8_0_layout/ (replayed by CTest with any compiler).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "tim/io/convert.hpp"
#include "tim/io/q8_0.hpp"

namespace {

void invariant(bool condition) {
  if (!condition) std::abort();
}

void exercise(const tim::io::SafetensorsFile& file) {
  const auto layout = tim::io::read_q8_0_layout(file);
  for (const auto& name : layout.tensors) {
    const auto& info = file.info(name);
    const auto t = tim::io::load_q8_0(file, layout, name, info.shape);
    const tim::Q8Weight w = t.view();
    invariant(w.out == info.shape[0] && w.in == info.shape[1]);
    invariant(t.scales.numel() == w.out * tim::q8_0_blocks(w.in));
    std::vector<float> row(static_cast<std::size_t>(w.in));
    for (std::int64_t n = 0; n < w.out; ++n) {
      tim::dequantize_row_q8_0(row.data(), w.q + n * w.in, w.scales + n * tim::q8_0_blocks(w.in), w.in);
      for (const float v : row) invariant(std::abs(v) <= 127.0f * 65504.0f);
    }
  }
  // Converting what was accepted to float32 must give a file whose layout is empty, and back to
  // q8_0 one that reads again.
  const auto to_float = tim::io::convert_safetensors(file, tim::io::ConvertTarget::float32);
  const auto reread = tim::io::SafetensorsFile::from_bytes(to_float.to_bytes(), "<float32>");
  invariant(tim::io::read_q8_0_layout(reread).empty());
  const auto to_q8 = tim::io::convert_safetensors(reread, tim::io::ConvertTarget::q8_0);
  const auto again = tim::io::SafetensorsFile::from_bytes(to_q8.to_bytes(), "<q8_0>");
  (void)tim::io::read_q8_0_layout(again);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes(data, data + size);
  try {
    exercise(tim::io::SafetensorsFile::from_bytes(std::move(bytes), "<fuzz input>"));
  } catch (const tim::Error&) {
    // rejected with a message: the expected outcome for malformed input
  }
  return 0;
}
