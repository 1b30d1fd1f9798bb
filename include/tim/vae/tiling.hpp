// Tiled decoding: decodes large latents through any latent decoder on any backend one tile (or a
// few tiles) at a time and blends the overlapping image tiles with linear ramps, so the decoder's
// activation memory is bounded by the tile size instead of the image size (docs/vae.md, "Tiled
// decoding"). The tiles are cut and blended in the decoder's backend memory by two element-wise
// functors (TileExtractOp, TileBlendOp) run by the backend's executor (for_each).
//
// Shape legend: B batch, L latent channels, h, w latent size, C image channels, U upscale (image
// pixels per latent pixel), H = U h, W = U w image size, t tile side, o overlap (latent pixels),
// k tiles per decoder call.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "tim/core/config.hpp"
#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"

namespace tim::vae {

//! Element i of one tile's latents out (B, L, th, tw) = latents (B, L, h, w) at (y0 + y, x0 + x).
template <class T>
struct TileExtractOp {
  T* out;
  const T* latents;
  std::int64_t height, width, tile_h, tile_w, y0, x0;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t x = i % tile_w, y = (i / tile_w) % tile_h, plane = i / (tile_w * tile_h);  // plane b L + c
    out[i] = latents[(plane * height + y0 + y) * width + x0 + x];
  }
};

//! Element i of one decoded tile (B, C, th', tw') added to images (B, C, H, W) at (Y0 + y, X0 + x)
//! with the weight wy[y] wx[x] (double products, rounded once to T): images += T(wy wx) tile.
template <class T>
struct TileBlendOp {
  T* images;
  const T* tile;
  const double* wy;  // (th') this tile row's weights
  const double* wx;  // (tw') this tile column's weights
  std::int64_t image_h, image_w, tile_h, tile_w, y0, x0;
  TIM_HD void operator()(std::int64_t i) const {
    const std::int64_t x = i % tile_w, y = (i / tile_w) % tile_h, plane = i / (tile_w * tile_h);  // plane b C + c
    images[(plane * image_h + y0 + y) * image_w + x0 + x] += static_cast<T>(wy[y] * wx[x]) * tile[i];
  }
};

//! How decode_tiled cuts the latents. Sizes are in latent pixels.
struct TileOptions {
  std::int64_t tile = 32;           // t: tile side (a side shorter than t is one tile of its length)
  std::int64_t overlap = 8;         // o: latent pixels neighbouring tiles share at least, 0 <= o < t
  std::int64_t tiles_per_call = 1;  // k: tiles stacked along the batch in one decode call (memory grows with k)
};

//! Where the tiles start along an axis of `n` latent pixels: 0, t - o, 2 (t - o), ... while a
//! tile ends before the border, the last one aligned to the border (start n - t, so it may
//! overlap its neighbour by more than o). Every tile has length min(t, n); one tile when n <= t.
//! Example: n 9, t 4, o 2 -> 0, 2, 4, 5.
inline std::vector<std::int64_t> tile_starts(std::int64_t n, std::int64_t tile, std::int64_t overlap) {
  check(n >= 1 && tile >= 1 && overlap >= 0 && overlap < tile, "tile_starts: need n >= 1, tile >= 1 and 0 <= "
        "overlap < tile, got n ", n, ", tile ", tile, ", overlap ", overlap);
  std::vector<std::int64_t> starts{0};
  while (starts.back() + tile < n) starts.push_back(std::min(starts.back() + tile - overlap, n - tile));
  return starts;
}

//! The blend weights along one axis, in image pixels, for tiles of `length` latent pixels at
//! `starts` (tile_starts) on an axis of `n` latent pixels and `upscale` image pixels per latent
//! pixel: weights[i][j] is tile i's weight at its local image pixel j (0 <= j < upscale * length).
//!
//! Tile i covers image pixels [A_i, B_i) = [U s_i, U (s_i + length)). Its raw weight at pixel
//! X (centre X + 1/2) is min(1, up, down), with up = (X + 1/2 - A_i) / (B_{i-1} - A_i), a ramp across
//! its overlap with the previous tile (1 without a previous tile or overlap), and down =
//! (B_i - X - 1/2) / (B_i - A_{i+1}), a ramp across its overlap with the next tile. The weights are
//! the raw weights divided by their sum over the tiles covering X, so they sum to 1 at every
//! pixel (two tiles overlapping by the same width have raw weights that already sum to 1; the
//! normalisation matters where the border-aligned last tile makes three tiles meet). A tile
//! alone on its axis has weight exactly 1.
inline std::vector<std::vector<double>> tile_blend_weights(const std::vector<std::int64_t>& starts,
                                                           std::int64_t length, std::int64_t n,
                                                           std::int64_t upscale) {
  check(!starts.empty() && length >= 1 && upscale >= 1 && starts.back() + length <= n,
        "tile_blend_weights: tiles of length ", length, " starting up to ", starts.empty() ? -1 : starts.back(),
        " do not fit an axis of ", n, " (upscale ", upscale, ")");
  const std::size_t tiles = starts.size();
  const std::int64_t pixels = upscale * length;
  const double infinity = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> weights(tiles, std::vector<double>(static_cast<std::size_t>(pixels)));
  std::vector<double> total(static_cast<std::size_t>(upscale * n), 0.0);  // sum over tiles per image pixel
  for (std::size_t i = 0; i < tiles; ++i) {
    const std::int64_t begin = upscale * starts[i], end = begin + pixels;
    const std::int64_t up_width = i > 0 ? upscale * (starts[i - 1] + length) - begin : 0;  // B_{i-1} - A_i
    const std::int64_t down_width = i + 1 < tiles ? end - upscale * starts[i + 1] : 0;       // B_i - A_{i+1}
    for (std::int64_t j = 0; j < pixels; ++j) {
      const double up = up_width > 0 ? (static_cast<double>(j) + 0.5) / static_cast<double>(up_width) : infinity;
      const double down =
          down_width > 0 ? (static_cast<double>(pixels - j) - 0.5) / static_cast<double>(down_width) : infinity;
      const double raw = std::min({1.0, up, down});
      weights[i][static_cast<std::size_t>(j)] = raw;
      total[static_cast<std::size_t>(begin + j)] += raw;
    }
  }
  for (std::size_t i = 0; i < tiles; ++i)
    for (std::int64_t j = 0; j < pixels; ++j)
      weights[i][static_cast<std::size_t>(j)] /= total[static_cast<std::size_t>(upscale * starts[i] + j)];
  return weights;
}

//! images (B, C, U h, U w) from latents (B, L, h, w), decoded tile by tile: the latents are cut
//! into tiles of min(t, h) x min(t, w) latent pixels (tile_starts on each axis), `tiles_per_call`
//! tiles at a time are stacked along the batch and decoded with `decoder.decode`, and each image
//! tile is added to the output with the weight wy_i(Y) wx_j(X) (tile_blend_weights on each axis;
//! the weights of the tiles covering a pixel sum to 1). A single tile covering the latents
//! reproduces decoder.decode(latents) exactly.
//!
//! `Decoder` needs `decode(const Tensor<T, Backend>&) -> Tensor<T, Backend>` mapping (N, L, th, tw)
//! to (N, C, U th, U tw), `config.upscale()` (U) and `config.latent_channels` (L): SdVaeDecoder and
//! DcAeDecoder on any backend have them. `latents` and the result are in the backend's memory; the
//! tiles are cut and blended there (Backend::for_each over TileExtractOp, TileBlendOp), the blend
//! weights computed on the host and copied there once.
//! Memory: the output and the latents, plus one decode of k B tiles (its activations are those
//! of a min(t, h) x min(t, w) latent) and O(U (h + w)) weights; nothing grows with the image
//! beyond the output. The decoder's GroupNorms and attention see one tile at a time, so the
//! result differs from decode(latents) (by how much: docs/vae.md). Throws tim::Error on bad
//! options, a wrong latent shape, or a decoder returning an unexpected shape.
//! Example:
//!   auto vae = tim::vae::open_sd_vae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   // latents (1, 4, 128, 128) -> images (1, 3, 1024, 1024), 25 tiles
//!   auto images = tim::vae::decode_tiled(vae, latents, {.tile = 32, .overlap = 8});
template <class Decoder, class T, class Backend>
Tensor<T, Backend> decode_tiled(const Decoder& decoder, const Tensor<T, Backend>& latents,
                                const TileOptions& options = {}) {
  check(options.tile >= 1, "decode_tiled: tile must be >= 1 latent pixel, got ", options.tile);
  check(options.overlap >= 0 && options.overlap < options.tile, "decode_tiled: overlap must be in [0, tile), got ",
        options.overlap, " with tile ", options.tile);
  check(options.tiles_per_call >= 1, "decode_tiled: tiles_per_call must be >= 1, got ", options.tiles_per_call);
  const std::int64_t latent_channels = decoder.config.latent_channels, upscale = decoder.config.upscale();
  check(upscale >= 1, "decode_tiled: the decoder's upscale must be >= 1, got ", upscale);
  check(latents.rank() == 4 && latents.dim(1) == latent_channels && latents.dim(0) >= 1 && latents.dim(2) >= 1 &&
            latents.dim(3) >= 1,
        "decode_tiled: latents must have shape [B, ", latent_channels, ", h, w] with B, h, w >= 1, got ",
        latents.shape());
  const std::int64_t batch = latents.dim(0), height = latents.dim(2), width = latents.dim(3);
  const std::int64_t tile_h = std::min(options.tile, height), tile_w = std::min(options.tile, width);
  const auto rows = tile_starts(height, options.tile, options.overlap);
  const auto columns = tile_starts(width, options.tile, options.overlap);
  const std::int64_t tiles = static_cast<std::int64_t>(rows.size() * columns.size());
  const std::int64_t image_h = upscale * height, image_w = upscale * width;
  const std::int64_t tile_image_h = upscale * tile_h, tile_image_w = upscale * tile_w;
  // The blend weights of every tile row, then of every tile column, in the backend's memory.
  const auto row_weights = tile_blend_weights(rows, tile_h, height, upscale);
  const auto column_weights = tile_blend_weights(columns, tile_w, width, upscale);
  const auto row_count = static_cast<std::int64_t>(rows.size()), column_count = static_cast<std::int64_t>(columns.size());
  auto host_weights = Tensor<double, cpu>::empty({row_count * tile_image_h + column_count * tile_image_w});
  double* w = host_weights.data();
  for (const auto& axis : {&row_weights, &column_weights})
    for (const auto& weights : *axis) w = std::copy(weights.begin(), weights.end(), w);
  const Tensor<double, Backend> weights = to_backend<Backend>(host_weights);
  const double* column_weight_base = weights.data() + row_count * tile_image_h;

  Tensor<T, Backend> images;  // (B, C, H, W), allocated once the first tile says what C is
  std::int64_t channels = 0;
  for (std::int64_t first = 0; first < tiles; first += options.tiles_per_call) {
    const std::int64_t count = std::min(options.tiles_per_call, tiles - first);
    // The tiles' latents stacked along the batch, tile-major: (count B, L, th, tw).
    auto tile_latents = Tensor<T, Backend>::empty({count * batch, latent_channels, tile_h, tile_w});
    const std::int64_t per_tile = batch * latent_channels * tile_h * tile_w;
    for (std::int64_t t = 0; t < count; ++t) {
      const auto tile = static_cast<std::size_t>(first + t);
      Backend::for_each(per_tile, TileExtractOp<T>{tile_latents.data() + t * per_tile, latents.data(), height, width,
                                                   tile_h, tile_w, rows[tile / columns.size()],
                                                   columns[tile % columns.size()]});
    }
    const Tensor<T, Backend> decoded = decoder.decode(tile_latents);  // (count B, C, U th, U tw)
    if (channels == 0) {
      check(decoded.rank() == 4 && decoded.dim(1) >= 1, "decode_tiled: the decoder returned shape ", decoded.shape(),
            " for tile latents ", tile_latents.shape(), ", expected [N, C, U th, U tw]");
      channels = decoded.dim(1);
      images = Tensor<T, Backend>::zeros({batch, channels, image_h, image_w});
    }
    check(decoded.shape() == Shape{count * batch, channels, tile_image_h, tile_image_w},
          "decode_tiled: the decoder returned shape ", decoded.shape(), " for tile latents ", tile_latents.shape(),
          ", expected [", count * batch, ", ", channels, ", ", tile_image_h, ", ", tile_image_w, "] (upscale ",
          upscale, ")");
    // Blend: images[b, c, Y0 + y, X0 + x] += wy[y] wx[x] decoded[tile B + b, c, y, x], tile by tile.
    const std::int64_t per_image_tile = batch * channels * tile_image_h * tile_image_w;
    for (std::int64_t t = 0; t < count; ++t) {
      const auto tile = static_cast<std::size_t>(first + t);
      const auto row = static_cast<std::int64_t>(tile / columns.size());
      const auto column = static_cast<std::int64_t>(tile % columns.size());
      Backend::for_each(per_image_tile,
                        TileBlendOp<T>{images.data(), decoded.data() + t * per_image_tile,
                                       weights.data() + row * tile_image_h, column_weight_base + column * tile_image_w,
                                       image_h, image_w, tile_image_h, tile_image_w, upscale * rows[tile / columns.size()],
                                       upscale * columns[tile % columns.size()]});
    }
  }
  return images;
}

}  // namespace tim::vae
