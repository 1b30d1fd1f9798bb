// 8-bit images from latents or decoded images in [-1, 1]: the pixel mappings of the released
// scripts (SPEC 8) and the image of one sample, ready for tim::io::write_png (tim/io/png.hpp).
// Plain data and arithmetic: no libpng, no Eigen, no backend.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"

namespace tim::io {

//! One text chunk of a PNG: `key` (1 to 79 printable ASCII characters, no leading or trailing
//! space) and its text (no NUL bytes). Written as tEXt when the text is ASCII, as iTXt (UTF-8)
//! otherwise.
struct PngText {
  std::string key;
  std::string text;
};

//! An 8-bit image: `pixels` holds height rows of width pixels of `channels` interleaved bytes
//! (1: gray, 3: RGB), top row first; `text` the PNG text chunks (write_png takes its own list,
//! read_png fills this one).
struct PngImage {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;  // (height, width, channels)
  std::vector<PngText> text;         // the text chunks, in file order (read_png)

  //! The text of chunk `key`, or nullptr when the image has none.
  const std::string* find_text(const std::string& key) const {
    for (const auto& entry : text)
      if (entry.key == key) return &entry.text;
    return nullptr;
  }
};

//! How values in [-1, 1] become bytes (SPEC 8): the released C2I script's clamp(255 (x + 1) / 2,
//! 0, 255), or the T2I scripts' clamp(127.5 x + 128, 0, 255); both in float, truncated to uint8.
enum class PixelMapping { c2i, t2i };

//! One value to a byte by `mapping`. NaN maps to 0.
//! Example: pixel_from_latent(0.0f) == 127 (C2I), pixel_from_latent(0.0f, PixelMapping::t2i) == 128.
inline std::uint8_t pixel_from_latent(float x, PixelMapping mapping = PixelMapping::c2i) {
  const float value = mapping == PixelMapping::c2i ? 255.0f * (x + 1.0f) / 2.0f : 127.5f * x + 128.0f;
  if (!(value > 0.0f)) return 0;  // also NaN
  return static_cast<std::uint8_t>(std::min(value, 255.0f));
}

//! The image of one sample (C, H, W) of float values at `sample` (planar, row-major): gray for
//! C = 1, RGB for C = 3, pixels interleaved as PngImage holds them.
inline PngImage latent_image(const float* sample, int channels, int height, int width,
                             PixelMapping mapping = PixelMapping::c2i) {
  check(channels == 1 || channels == 3, "an image needs 1 or 3 channels, got ", channels);
  check(height >= 1 && width >= 1, "an image needs a positive size, got ", height, " x ", width);
  PngImage image{width, height, channels, {}, {}};
  image.pixels.resize(static_cast<std::size_t>(width) * height * channels);
  for (int c = 0; c < channels; ++c)
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        image.pixels[(static_cast<std::size_t>(y) * width + x) * channels + c] =
            pixel_from_latent(sample[(static_cast<std::size_t>(c) * height + y) * width + x], mapping);
  return image;
}

//! The image of sample `index` of `images` (B, C, H, W), C = 1 or 3, host memory.
//! Example: `tim::io::write_png("0.png", tim::io::latent_image(latents, 0));`
inline PngImage latent_image(const Tensor<float>& images, std::int64_t index,
                             PixelMapping mapping = PixelMapping::c2i) {
  check(images.rank() == 4 && index >= 0 && index < images.dim(0), "latent_image: sample ", index,
        " of a tensor of shape ", images.shape(), " (expected [B, C, H, W] with B > ", index, ")");
  const std::int64_t per_sample = images.dim(1) * images.dim(2) * images.dim(3);
  return latent_image(images.data() + index * per_sample, static_cast<int>(images.dim(1)),
                      static_cast<int>(images.dim(2)), static_cast<int>(images.dim(3)), mapping);
}

}  // namespace tim::io
