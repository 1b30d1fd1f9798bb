// libFuzzer target for the latent-shard reader of training (tim/train/datasets.hpp, LatentShard):
// any input must be accepted as a shard whose every sample reads back, or throw tim::Error; a
// crash, a sanitizer report or another exception type is a bug. Seeds: fuzz/corpus/latent_shard/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "tim/train/datasets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes(data, data + size);
  try {
    // The class bound from the input's last byte (0: none), so both label checks are reached.
    const std::int64_t classes = size ? data[size - 1] % 8 : 0;
    const tim::train::LatentShard shard(tim::io::SafetensorsFile::from_bytes(std::move(bytes), "<fuzz input>"), classes);
    if (shard.size() < 1 || shard.sample_shape().rank() != 3) std::abort();
    std::vector<float> sample(static_cast<std::size_t>(shard.sample_shape().numel()));
    for (std::int64_t i = 0; i < shard.size(); ++i) {
      shard.read(i, sample.data());
      if (shard.label(i) < 0 || (classes > 0 && shard.label(i) >= classes)) std::abort();
    }
  } catch (const tim::Error&) {
    // rejected with a message: the expected outcome for malformed input
  }
  return 0;
}
