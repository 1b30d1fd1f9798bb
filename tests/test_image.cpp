// Images from latents (tim/io/image.hpp): the two pixel mappings of the released scripts (SPEC 8)
// against values worked out by hand, and the planar-to-interleaved layout of latent_image.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tim/io/image.hpp"
#include "tim/tim.hpp"

using tim::io::PixelMapping;
using tim::io::pixel_from_latent;

TEST_CASE("pixel_from_latent: clamp(255 (x + 1) / 2) for C2I, clamp(127.5 x + 128) for T2I, truncated") {
  // C2I: 255 (x + 1) / 2.
  CHECK(pixel_from_latent(-1.0f) == 0);
  CHECK(pixel_from_latent(0.0f) == 127);   // 127.5 truncated
  CHECK(pixel_from_latent(0.5f) == 191);   // 191.25
  CHECK(pixel_from_latent(1.0f) == 255);
  CHECK(pixel_from_latent(3.0f) == 255);   // clamped
  CHECK(pixel_from_latent(-3.0f) == 0);
  CHECK(pixel_from_latent(-0.99f, PixelMapping::c2i) == 1);  // 1.275
  // T2I: 127.5 x + 128.
  CHECK(pixel_from_latent(0.0f, PixelMapping::t2i) == 128);
  CHECK(pixel_from_latent(-1.0f, PixelMapping::t2i) == 0);   // 0.5
  CHECK(pixel_from_latent(1.0f, PixelMapping::t2i) == 255);  // 255.5 clamped
  CHECK(pixel_from_latent(0.5f, PixelMapping::t2i) == 191);  // 191.75
  CHECK(pixel_from_latent(-0.99f, PixelMapping::t2i) == 1);  // 1.775
  // Non-finite values.
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  CHECK(pixel_from_latent(nan) == 0);
  CHECK(pixel_from_latent(nan, PixelMapping::t2i) == 0);
  CHECK(pixel_from_latent(inf) == 255);
  CHECK(pixel_from_latent(-inf) == 0);
}

TEST_CASE("latent_image: planar (C, H, W) floats become interleaved gray or RGB bytes") {
  // 3 channels, 2 x 3: channel c, row y, column x holds -1 + (c * 6 + y * 3 + x) / 10.
  std::vector<float> sample(18);
  for (int i = 0; i < 18; ++i) sample[static_cast<std::size_t>(i)] = -1.0f + static_cast<float>(i) / 10.0f;
  const auto rgb = tim::io::latent_image(sample.data(), 3, 2, 3);
  CHECK(rgb.width == 3);
  CHECK(rgb.height == 2);
  CHECK(rgb.channels == 3);
  REQUIRE(rgb.pixels.size() == 18);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) {
        const float value = sample[static_cast<std::size_t>((c * 2 + y) * 3 + x)];
        const auto expected = static_cast<std::uint8_t>(std::fmin(255.0f * (value + 1.0f) / 2.0f, 255.0f));
        CHECK(rgb.pixels[static_cast<std::size_t>((y * 3 + x) * 3 + c)] == expected);
      }
  // Pixel (y 1, x 2) of channel 1 (green): value index 6 + 3 + 2 = 11 -> x = 0.1 -> 140.25 -> 140.
  CHECK(rgb.pixels[(1 * 3 + 2) * 3 + 1] == 140);
  // Gray, T2I mapping, values exact in float: 127.5 x + 128 = 0.5, 32.375, 64.25, 96.125, 128, 159.875.
  const std::vector<float> eighths{-1.0f, -0.75f, -0.5f, -0.25f, 0.0f, 0.25f};
  CHECK(tim::io::latent_image(eighths.data(), 1, 2, 3, PixelMapping::t2i).pixels ==
        std::vector<std::uint8_t>{0, 32, 64, 96, 128, 159});
  CHECK_THROWS_WITH_AS(tim::io::latent_image(sample.data(), 2, 2, 3), doctest::Contains("1 or 3 channels, got 2"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(tim::io::latent_image(sample.data(), 1, 0, 3), doctest::Contains("positive size"), tim::Error);

  // From a tensor (B, C, H, W): sample 1 is the second block.
  auto latents = tim::Tensor<float>::empty({2, 1, 1, 2});
  const float values[4] = {-1.0f, 1.0f, 0.0f, 0.5f};
  std::copy_n(values, 4, latents.data());
  CHECK(tim::io::latent_image(latents, 1).pixels == std::vector<std::uint8_t>{127, 191});
  CHECK(tim::io::latent_image(latents, 0, PixelMapping::t2i).pixels == std::vector<std::uint8_t>{0, 255});
  CHECK_THROWS_WITH_AS(tim::io::latent_image(latents, 2), doctest::Contains("sample 2 of a tensor of shape"),
                       tim::Error);
  CHECK_THROWS_AS(tim::io::latent_image(tim::Tensor<float>::empty({2, 2}), 0), tim::Error);
}
