// libFuzzer target for the image-folder reader of training (tim/train/image_folder.hpp): the
// input becomes the one image of a one-class folder, read at a size and channel count taken from
// its first bytes; it must give a sample of values in [-1, 1] or throw tim::Error. Seeds:
// fuzz/corpus/train_image/ (PNG files).
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tim/train/image_folder.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  static const fs::path root = fs::temp_directory_path() / ("tim_fuzz_train_image_" + std::to_string(::getpid()));
  fs::create_directories(root / "class");
  {
    std::ofstream out(root / "class" / "image.png", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const std::int64_t channels = size > 0 && (data[0] & 1) ? 3 : 1;
  const std::int64_t height = 1 + (size > 1 ? data[1] % 17 : 0), width = 1 + (size > 2 ? data[2] % 17 : 0);
  try {
    const tim::train::ImageFolder folder(root.string(), channels, height, width);
    if (folder.size() != 1 || folder.num_classes() != 1) std::abort();
    std::vector<float> sample(static_cast<std::size_t>(channels * height * width));
    if (folder.read(0, sample.data()) != 0) std::abort();
    for (float v : sample)
      if (!(v >= -1.0f - 1e-5f && v <= 1.0f + 1e-5f)) std::abort();
  } catch (const tim::Error&) {
  }
  return 0;
}
