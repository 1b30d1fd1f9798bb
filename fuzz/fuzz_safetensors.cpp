// libFuzzer target for the safetensors reader: any input must either parse or throw tim::Error;
// a crash, a sanitizer report, another exception type or a broken invariant is a bug.
// Build and run: docs/safetensors.md. The committed seeds live in fuzz/corpus/safetensors/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tim/io/safetensors.hpp"

namespace {

// Stops the run loudly: libFuzzer records the input that got here.
void invariant(bool condition) {
  if (!condition) std::abort();
}

bool is_floating(tim::DType d) {
  return d == tim::DType::F64 || d == tim::DType::F32 || d == tim::DType::F16 || d == tim::DType::BF16;
}

template <class T>
void touch_every_element(const tim::Tensor<T>& t) {
  volatile T sink{};
  for (std::int64_t i = 0; i < t.numel(); ++i) sink = t.data()[i];
  (void)sink;
}

void exercise(const tim::io::SafetensorsFile& file) {
  tim::io::SafetensorsWriter rewritten;
  for (const auto& [key, value] : file.metadata()) rewritten.set_metadata(key, value);
  for (const tim::io::TensorInfo& info : file.tensors()) {
    const auto raw = file.bytes(info.name);
    invariant(raw.size() == info.end - info.begin);
    invariant(raw.size() == static_cast<std::size_t>(info.shape.numel()) * tim::dtype_size(info.dtype));
    if (is_floating(info.dtype)) {
      touch_every_element(file.load<float>(info.name, info.shape));
      touch_every_element(file.load<double>(info.name));
    } else {
      touch_every_element(file.load<std::int64_t>(info.name, info.shape));
      touch_every_element(file.load<std::uint8_t>(info.name));
    }
    rewritten.add(info.name, info.dtype, info.shape, raw.data());
  }
  // What was accepted must survive a write and a second read unchanged.
  const auto again = tim::io::SafetensorsFile::from_bytes(rewritten.to_bytes(), "<rewritten>");
  invariant(again.metadata() == file.metadata());
  invariant(again.tensors().size() == file.tensors().size());
  for (const tim::io::TensorInfo& info : file.tensors()) {
    const tim::io::TensorInfo& other = again.info(info.name);
    invariant(other.dtype == info.dtype && other.shape == info.shape);
    const auto a = file.bytes(info.name), b = again.bytes(info.name);
    invariant(a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0));
  }
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
