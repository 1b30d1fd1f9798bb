// tim._tim's latent decoders (tim.load_decoder, tim.Decoder) and tim.to_uint8.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "common.hpp"
#include "threads.hpp"
#include "tim/io/image.hpp"
#include "tim/tim.hpp"
#include "tim/vae/load.hpp"

namespace tim_python {

namespace {

using namespace nb::literals;

//! A latent decoder on the CPU in float, loaded as `tim sample --vae` loads it
//! (tim::vae::load_decoder): SD VAE or DC-AE by its tensors, options from a config.json beside
//! the weights.
class Decoder {
 public:
  Decoder(const std::string& path, std::int64_t tile, std::int64_t overlap)
      : tiles_(checked_tiles(tile, overlap)), decoder_(load(path)) {}

  std::string describe() const { return decoder_.describe(); }
  std::int64_t latent_channels() const { return decoder_.latent_channels(); }
  std::int64_t upscale() const { return decoder_.upscale(); }

  //! images (B, 3, H, W) in about [-1, 1] from latents (B, L, h, w), one sample at a time as
  //! `tim sample --vae` decodes (tiled when tile > 0).
  nb::ndarray<nb::numpy, float> decode(const InArray<float>& latents) {
    const auto lv = view_of(latents);
    tim::Tensor<float> images;
    {
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      apply_package_threads();
      images = decoder_.decode(lv, tiles_);
    }
    return to_numpy(images);
  }

 private:
  static tim::vae::TileOptions checked_tiles(std::int64_t tile, std::int64_t overlap) {
    tim::check(tile >= 0, "tile must be >= 0 latent pixels (0: untiled), got ", tile);
    tim::check(tile == 0 || (overlap >= 0 && overlap < tile), "overlap must be in [0, tile) = [0, ", tile, "), got ",
               overlap);
    return {.tile = tile, .overlap = overlap};
  }
  static tim::vae::AnyDecoder<float> load(const std::string& path) {
    try {
      return tim::vae::load_decoder<float>(path);
    } catch (const tim::Error& e) {
      tim::fail("decoder '", path, "': ", e.what());
    }
  }

  tim::vae::TileOptions tiles_;  // before decoder_: bad options fail before anything is loaded
  tim::vae::AnyDecoder<float> decoder_;
  std::mutex mutex_;
};

//! uint8 images (B, H, W, C) from float images (B, C, H, W), C = 1 or 3, by the SPEC 8 mapping.
nb::ndarray<nb::numpy, std::uint8_t> to_uint8(const InArray<float>& images, const std::string& mapping) {
  tim::check(mapping == "c2i" || mapping == "t2i", "mapping must be 'c2i' (clamp(255 (x + 1) / 2)) or 't2i' "
             "(clamp(127.5 x + 128)), got '", mapping, "'");
  const auto v = view_of(images);
  tim::check(v.rank() == 4 && (v.dim(1) == 1 || v.dim(1) == 3),
             "to_uint8: images must have shape (B, C, H, W) with C = 1 or 3, got ", v.shape());
  const auto m = mapping == "c2i" ? tim::io::PixelMapping::c2i : tim::io::PixelMapping::t2i;
  const std::int64_t B = v.dim(0), C = v.dim(1), H = v.dim(2), W = v.dim(3);
  auto out = tim::Tensor<std::uint8_t>::empty({B, H, W, C});
  for (std::int64_t b = 0; b < B; ++b) {
    const auto image = tim::io::latent_image(v.data() + b * C * H * W, static_cast<int>(C), static_cast<int>(H),
                                             static_cast<int>(W), m);
    std::copy(image.pixels.begin(), image.pixels.end(), out.data() + b * H * W * C);
  }
  return to_numpy(out);
}

}  // namespace

void bind_decoder(nb::module_& m) {
  nb::class_<Decoder>(m, "NativeDecoder", "A latent decoder on the CPU in float32; use tim.load_decoder and tim.Decoder")
      .def(nb::init<const std::string&, std::int64_t, std::int64_t>(), "path"_a, "tile"_a = 0, "overlap"_a = 8)
      .def("describe", &Decoder::describe)
      .def_prop_ro("latent_channels", &Decoder::latent_channels)
      .def_prop_ro("upscale", &Decoder::upscale)
      .def("decode", &Decoder::decode, "latents"_a);

  m.def("to_uint8", &to_uint8, "images"_a, "mapping"_a = "c2i",
        "uint8 images (B, H, W, C) from float images (B, C, H, W) in [-1, 1], C = 1 or 3: mapping 'c2i' is "
        "clamp(255 (x + 1) / 2, 0, 255), 't2i' clamp(127.5 x + 128, 0, 255), truncated (SPEC 8).");
}

}  // namespace tim_python
