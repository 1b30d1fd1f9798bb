// Tiled decoding (tim/vae/tiling.hpp): the SD VAE decoder tiled against float64 golden files of
// our PyTorch reference (tools/reference/make_vae_tiling_golden.py), and the tiling itself with
// fake decoders: blend weights by hand, weights summing to one, tiles landing where they belong,
// bounded tile sizes, exactness of a single tile, and the option errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"
#include "tim/vae/tiling.hpp"
#include "vae_golden.hpp"

namespace {

const std::string weights_folder = "vae_golden", tiling_folder = "vae_tiling_golden";

template <class T>
tim::vae::SdVaeDecoder<T> golden_decoder(const std::string& weights_case) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(weights_case, weights_folder));
  tim_test::ParametersOnly parameters(file);
  return tim::vae::load_sd_vae_decoder<T>(parameters, tim_test::sd_vae_options_of(file));
}

//! Relative error of decode_tiled on golden case `name` (tiles_per_call k) against the stored output.
template <class T>
double golden_error(const std::string& name, std::int64_t tiles_per_call) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, tiling_folder));
  const auto& meta = file.metadata();
  const auto vae = golden_decoder<T>(meta.at("weights_case"));
  const tim::vae::TileOptions options{std::stoll(meta.at("tile")), std::stoll(meta.at("overlap")), tiles_per_call};
  const auto latents = file.load<T>("input.latents");
  const auto expected = file.load<double>("output.images");
  const auto images = tim::vae::decode_tiled(vae, latents, options);
  REQUIRE(images.shape() == expected.shape());
  const double error =
      tim_test::relative_error(images.data(), expected.data(), static_cast<std::size_t>(images.numel()));
  double largest = 0;
  for (std::int64_t i = 0; i < expected.numel(); ++i) largest = std::max(largest, std::abs(expected.data()[i]));
  CHECK(largest > 1e-1);  // not a vacuous pass
  MESSAGE(name, " (weights ", meta.at("weights_case"), ", tile ", options.tile, ", overlap ", options.overlap,
          ", tiles_per_call ", tiles_per_call, ") ", std::string(sizeof(T) == 8 ? "double" : "float"),
          ": relative error ", error);
  return error;
}

const std::vector<std::string> golden_cases{"batch2_7x10", "layout_9x13", "no_overlap_5x8"};

//! A decoder's configuration as decode_tiled reads it.
struct FakeConfig {
  std::int64_t latent_channels = 3;
  std::int64_t scale = 4;
  std::int64_t upscale() const { return scale; }
};

//! Paints global image coordinates: the latents carry their own global position (channel 0 the
//! row y, channel 1 the column x, channel 2 a per-sample tag), and image pixel (Y, X) of a tile
//! gets channel 0 = U y + Y % U, channel 1 = U x + X % U (the global image row and column, whatever
//! tile it was decoded in), channel 2 = the tag. The tiled image must then be the coordinate map:
//! a tile cut from the wrong place, blended at the wrong place, or mixed up between samples shows.
//! Records the shape of every call.
struct PositionDecoder {
  FakeConfig config;
  mutable std::vector<tim::Shape> calls;

  tim::Tensor<double> decode(const tim::Tensor<double>& z) const {
    calls.push_back(z.shape());
    const std::int64_t n = z.dim(0), h = z.dim(2), w = z.dim(3), U = config.upscale();
    auto out = tim::Tensor<double>::empty({n, 3, U * h, U * w});
    for (std::int64_t b = 0; b < n; ++b)
      for (std::int64_t Y = 0; Y < U * h; ++Y)
        for (std::int64_t X = 0; X < U * w; ++X) {
          const auto latent = [&](std::int64_t c) { return z.data()[((b * 3 + c) * h + Y / U) * w + X / U]; };
          double* pixel = out.data() + (b * 3 * U * h + Y) * U * w + X;
          pixel[0] = U * latent(0) + static_cast<double>(Y % U);
          pixel[U * h * U * w] = U * latent(1) + static_cast<double>(X % U);
          pixel[2 * U * h * U * w] = latent(2);
        }
    return out;
  }
};

//! Latents (B, 3, h, w) holding their global position and a per-sample tag 100 (b + 1).
tim::Tensor<double> position_latents(std::int64_t batch, std::int64_t h, std::int64_t w) {
  auto z = tim::Tensor<double>::empty({batch, 3, h, w});
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t y = 0; y < h; ++y)
      for (std::int64_t x = 0; x < w; ++x) {
        z.data()[((b * 3 + 0) * h + y) * w + x] = static_cast<double>(y);
        z.data()[((b * 3 + 1) * h + y) * w + x] = static_cast<double>(x);
        z.data()[((b * 3 + 2) * h + y) * w + x] = 100.0 * static_cast<double>(b + 1);
      }
  return z;
}

//! Returns one constant value per tile: its latent origin's column x0 (read from the latents
//! of position_latents), to see the blend across seams.
struct TileColumnDecoder {
  FakeConfig config;
  tim::Tensor<double> decode(const tim::Tensor<double>& z) const {
    const std::int64_t n = z.dim(0), h = z.dim(2), w = z.dim(3), U = config.upscale();
    auto out = tim::Tensor<double>::empty({n, 1, U * h, U * w});
    for (std::int64_t b = 0; b < n; ++b) {
      const double column = z.data()[(b * 3 + 1) * h * w];
      std::fill(out.data() + b * U * h * U * w, out.data() + (b + 1) * U * h * U * w, column);
    }
    return out;
  }
};

//! Returns a fixed-size image whatever the tile: a decoder that breaks decode_tiled's contract.
struct WrongShapeDecoder {
  FakeConfig config;
  tim::Tensor<double> decode(const tim::Tensor<double>& z) const {
    return tim::Tensor<double>::zeros({z.dim(0), 3, 5, 5});
  }
};

}  // namespace

TEST_CASE("vae tiling golden: every case in double within 1e-9") {
  for (const auto& name : golden_cases) {
    CAPTURE(name);
    CHECK(golden_error<double>(name, 1) <= 1e-9);
    CHECK(golden_error<double>(name, 4) <= 1e-9);  // 4 tiles stacked per decode call
  }
}

TEST_CASE("vae tiling golden: every case in float within 1e-4") {
  for (const auto& name : golden_cases) {
    CAPTURE(name);
    CHECK(golden_error<float>(name, 1) <= 1e-4);
    CHECK(golden_error<float>(name, 3) <= 1e-4);
  }
}

TEST_CASE_TEMPLATE("vae tiling: one tile covering the latents is decode() exactly", T, float, double) {
  const auto vae = golden_decoder<T>("old_names");
  auto latents = tim::Tensor<T>::empty({2, 4, 5, 7});
  const auto values = tim_test::random_vector<T>(static_cast<std::size_t>(latents.numel()), 7);
  std::copy(values.begin(), values.end(), latents.data());
  const auto expected = vae.decode(latents);
  for (std::int64_t tile : {7, 8, 100}) {
    CAPTURE(tile);
    const auto images = tim::vae::decode_tiled(vae, latents, {.tile = tile, .overlap = 3});
    REQUIRE(images.shape() == expected.shape());
    CHECK(std::equal(images.data(), images.data() + images.numel(), expected.data()));
  }
}

TEST_CASE("vae tiling: tile starts, the last tile aligned to the border") {
  using V = std::vector<std::int64_t>;
  CHECK(tim::vae::tile_starts(9, 4, 2) == V{0, 2, 4, 5});
  CHECK(tim::vae::tile_starts(13, 4, 2) == V{0, 2, 4, 6, 8, 9});
  CHECK(tim::vae::tile_starts(8, 4, 2) == V{0, 2, 4});
  CHECK(tim::vae::tile_starts(8, 4, 0) == V{0, 4});
  CHECK(tim::vae::tile_starts(9, 4, 0) == V{0, 4, 5});
  CHECK(tim::vae::tile_starts(4, 4, 3) == V{0});
  CHECK(tim::vae::tile_starts(3, 4, 1) == V{0});
  CHECK(tim::vae::tile_starts(5, 1, 0) == V{0, 1, 2, 3, 4});
  CHECK(tim::vae::tile_starts(64, 32, 8) == V{0, 24, 32});
  CHECK(tim::vae::tile_starts(128, 32, 8) == V{0, 24, 48, 72, 96});
}

TEST_CASE("vae tiling: blend weights by hand, three tiles meeting included") {
  // n 9, t 4, o 2, U 1: tiles [0,4), [2,6), [4,8), [5,9). Raw weights min(1, up, down):
  // tile 0: 1, 1, 3/4, 1/4; tile 1: 1/4, 3/4, 3/4, 1/4; tile 2 (up over 2, down over 3): 1/4, 3/4,
  // 1/2, 1/6; tile 3 (up over 3): 1/6, 1/2, 5/6, 1. Pixel 5 is in three tiles: raw sum 7/6.
  const auto w = tim::vae::tile_blend_weights({0, 2, 4, 5}, 4, 9, 1);
  REQUIRE(w.size() == 4);
  const std::vector<std::vector<double>> expected{{1, 1, 0.75, 0.25},
                                                  {0.25, 0.75, 0.75, 0.25 / (7.0 / 6)},
                                                  {0.25, 0.75 / (7.0 / 6), 0.5, 1.0 / 6},
                                                  {(1.0 / 6) / (7.0 / 6), 0.5, 5.0 / 6, 1}};
  for (std::size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    TIM_CHECK_CLOSE(w[i].data(), expected[i].data(), 4, 1e-15, 1e-15);
  }
  // U 2 stretches the ramps over image pixels: tile 0 of [0,4), [2,6), [4,8) (n 8) ramps down
  // over its last 4 of 8 pixels at pixel centres 0.5, 1.5, 2.5, 3.5 of 4.
  const auto stretched = tim::vae::tile_blend_weights({0, 2, 4}, 4, 8, 2);
  const std::vector<double> first{1, 1, 1, 1, 0.875, 0.625, 0.375, 0.125};
  TIM_CHECK_CLOSE(stretched[0].data(), first.data(), 8, 1e-15, 1e-15);
  // A lone tile (n <= t) weighs exactly 1.
  const auto lone = tim::vae::tile_blend_weights({0}, 3, 3, 8);
  CHECK(std::all_of(lone[0].begin(), lone[0].end(), [](double v) { return v == 1.0; }));
}

TEST_CASE("vae tiling: weights sum to one, each positive and at most 1, on every axis") {
  for (std::int64_t n : {1, 2, 5, 9, 13, 17, 31, 64})
    for (std::int64_t tile : {1, 2, 3, 4, 7, 32})
      for (std::int64_t overlap = 0; overlap < tile; ++overlap)
        for (std::int64_t upscale : {1, 2, 8}) {
          const auto starts = tim::vae::tile_starts(n, tile, overlap);
          const std::int64_t length = std::min(tile, n);
          const auto w = tim::vae::tile_blend_weights(starts, length, n, upscale);
          std::vector<double> sum(static_cast<std::size_t>(upscale * n), 0.0);
          bool in_range = true;
          for (std::size_t i = 0; i < starts.size(); ++i)
            for (std::int64_t j = 0; j < upscale * length; ++j) {
              const double v = w[i][static_cast<std::size_t>(j)];
              in_range = in_range && v > 0 && v <= 1;
              sum[static_cast<std::size_t>(upscale * starts[i] + j)] += v;
            }
          double worst = 0;
          for (double s : sum) worst = std::max(worst, std::abs(s - 1));
          CAPTURE(n);
          CAPTURE(tile);
          CAPTURE(overlap);
          CAPTURE(upscale);
          CHECK(in_range);
          CHECK(worst <= 1e-15);
        }
}

TEST_CASE("vae tiling: every tile lands where it belongs (non-square, non-divisible, batch 2)") {
  struct Case {
    std::int64_t h, w, tile, overlap, tiles_per_call;
  };
  for (const Case& c : {Case{9, 13, 4, 2, 1}, Case{13, 9, 4, 2, 5}, Case{7, 10, 3, 1, 2}, Case{5, 8, 4, 0, 1},
                        Case{6, 11, 5, 4, 3}, Case{3, 17, 4, 1, 1}, Case{1, 1, 1, 0, 1}, Case{12, 12, 6, 2, 100}}) {
    CAPTURE(c.h);
    CAPTURE(c.w);
    CAPTURE(c.tile);
    CAPTURE(c.overlap);
    CAPTURE(c.tiles_per_call);
    const std::int64_t batch = 2, U = 4, H = U * c.h, W = U * c.w;
    PositionDecoder decoder;
    const tim::vae::TileOptions options{.tile = c.tile, .overlap = c.overlap, .tiles_per_call = c.tiles_per_call};
    const auto images = tim::vae::decode_tiled(decoder, position_latents(batch, c.h, c.w), options);
    REQUIRE(images.shape() == tim::Shape{batch, 3, H, W});
    std::vector<double> expected(static_cast<std::size_t>(images.numel()));
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t Y = 0; Y < H; ++Y)
        for (std::int64_t X = 0; X < W; ++X) {
          expected[static_cast<std::size_t>(((b * 3 + 0) * H + Y) * W + X)] = static_cast<double>(Y);
          expected[static_cast<std::size_t>(((b * 3 + 1) * H + Y) * W + X)] = static_cast<double>(X);
          expected[static_cast<std::size_t>(((b * 3 + 2) * H + Y) * W + X)] = 100.0 * static_cast<double>(b + 1);
        }
    TIM_CHECK_CLOSE(images.data(), expected.data(), expected.size(), 1e-14, 1e-12);
    // The decoder only ever saw tiles: at most tiles_per_call B samples of min(t, h) x min(t, w).
    const std::int64_t tiles = static_cast<std::int64_t>(tim::vae::tile_starts(c.h, c.tile, c.overlap).size() *
                                                         tim::vae::tile_starts(c.w, c.tile, c.overlap).size());
    CHECK(static_cast<std::int64_t>(decoder.calls.size()) == (tiles + c.tiles_per_call - 1) / c.tiles_per_call);
    std::int64_t decoded = 0;
    for (const auto& shape : decoder.calls) {
      CHECK(shape[0] <= c.tiles_per_call * batch);
      CHECK(shape[1] == 3);
      CHECK(shape[2] == std::min(c.tile, c.h));
      CHECK(shape[3] == std::min(c.tile, c.w));
      decoded += shape[0];
    }
    CHECK(decoded == tiles * batch);
  }
}

TEST_CASE("vae tiling: the blend is a linear ramp across each overlap") {
  // h 1, w 8, t 4, o 2, U 2: tiles at columns 0, 2, 4 valued 0, 2, 4. Image pixels 0-3 see tile 0
  // alone, 4-7 ramp from tile 0 to tile 1 (tile 1's weight (X - 4 + 1/2) / 4), 8-11 from tile 1
  // to tile 2, 12-15 see tile 2 alone.
  TileColumnDecoder decoder;
  decoder.config.scale = 2;
  const auto images = tim::vae::decode_tiled(decoder, position_latents(1, 1, 8), {.tile = 4, .overlap = 2});
  REQUIRE(images.shape() == tim::Shape{1, 1, 2, 16});
  const std::vector<double> row{0, 0, 0, 0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4, 4, 4, 4};
  TIM_CHECK_CLOSE(images.data(), row.data(), 16, 1e-15, 1e-15);
  TIM_CHECK_CLOSE(images.data() + 16, row.data(), 16, 1e-15, 1e-15);
}

TEST_CASE("vae tiling: bad options, latents and decoders are errors that say why") {
  PositionDecoder decoder;
  const auto latents = position_latents(1, 6, 6);
  const auto error = [&](tim::vae::TileOptions options) {
    return tim_test::error_of([&] { tim::vae::decode_tiled(decoder, latents, options); });
  };
  CHECK(error({.tile = 0, .overlap = 0}).find("tile must be >= 1 latent pixel, got 0") != std::string::npos);
  CHECK(error({.tile = -3, .overlap = 0}).find("tile must be >= 1 latent pixel, got -3") != std::string::npos);
  CHECK(error({.tile = 4, .overlap = 4}).find("overlap must be in [0, tile), got 4 with tile 4") != std::string::npos);
  CHECK(error({.tile = 4, .overlap = -1}).find("overlap must be in [0, tile), got -1 with tile 4") !=
        std::string::npos);
  CHECK(error({.tile = 4, .overlap = 1, .tiles_per_call = 0}).find("tiles_per_call must be >= 1, got 0") !=
        std::string::npos);
  CHECK(error({.tile = 4, .overlap = 1}) == "<no error>");

  const auto wrong_latents = tim::Tensor<double>::zeros({1, 4, 6, 6});
  const std::string message = tim_test::error_of([&] { tim::vae::decode_tiled(decoder, wrong_latents); });
  CHECK(message.find("latents must have shape [B, 3, h, w]") != std::string::npos);
  CHECK(message.find("[1, 4, 6, 6]") != std::string::npos);
  CHECK(tim_test::error_of([&] { tim::vae::decode_tiled(decoder, tim::Tensor<double>::zeros({3, 6, 6})); }) !=
        "<no error>");

  const std::string wrong = tim_test::error_of(
      [&] { tim::vae::decode_tiled(WrongShapeDecoder{}, latents, {.tile = 4, .overlap = 1}); });
  CHECK(wrong.find("the decoder returned shape [1, 3, 5, 5] for tile latents [1, 3, 4, 4], expected [1, 3, 16, 16]") !=
        std::string::npos);

  CHECK(tim_test::error_of([] { tim::vae::tile_starts(0, 4, 1); }).find("tile_starts") != std::string::npos);
  CHECK(tim_test::error_of([] { tim::vae::tile_blend_weights({0, 4}, 4, 6, 1); }).find("do not fit") !=
        std::string::npos);
}
