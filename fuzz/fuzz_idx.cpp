// libFuzzer target for the idx reader of Fashion-MNIST (tim/train/datasets.hpp, parse_idx): any
// input parses into extents whose product is the number of data bytes, or throws tim::Error.
// Seeds: fuzz/corpus/idx/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "tim/train/datasets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto idx = tim::train::parse_idx(data, size, "<fuzz input>");
    std::uint64_t count = 1;
    for (const auto d : idx.dims) count *= static_cast<std::uint64_t>(d);
    if (count != idx.data.size() || idx.dims.empty() || idx.dims.size() > 4) std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
