// Decodes the latents of `tim sample --out` with the SD VAE decoder and writes one PNG per sample:
// how to turn the released C2I-256 model's latents into images (docs/vae.md).
// Usage: decode_sd_vae VAE.safetensors LATENTS.safetensors OUT_PREFIX [THREADS]
//   -> OUT_PREFIX0.png, OUT_PREFIX1.png, ...
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "tim/io/png.hpp"
#include "tim/tim.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s VAE.safetensors LATENTS.safetensors OUT_PREFIX [THREADS]\n", argv[0]);
    return 2;
  }
  try {
    if (argc > 4) tim::set_num_threads(std::stoi(argv[4]));
    auto vae = tim::vae::open_sd_vae_decoder<float>(argv[1]);  // sd-vae-ft-ema defaults: G 32, 0.18215
    std::fprintf(stderr, "%s; %zu encoder tensors ignored\n", vae.config.describe().c_str(), vae.config.ignored.size());
    auto latents = tim::io::SafetensorsFile::open(argv[2]).load<float>("latents");  // (B, 4, h, w)
    const auto start = std::chrono::steady_clock::now();
    auto images = vae.decode(latents);  // (B, 3, 8h, 8w), about [-1, 1]
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "decoded %lld latents of %lld x %lld in %.2f s\n", static_cast<long long>(latents.dim(0)),
                 static_cast<long long>(latents.dim(2)), static_cast<long long>(latents.dim(3)), seconds);
    for (std::int64_t b = 0; b < images.dim(0); ++b) {
      tim::io::PngImage png;
      png.width = static_cast<int>(images.dim(3));
      png.height = static_cast<int>(images.dim(2));
      png.channels = static_cast<int>(images.dim(1));
      png.pixels = tim::vae::image_bytes(images, b);
      const std::string path = std::string(argv[3]) + std::to_string(b) + ".png";
      tim::io::write_png(path, png);
      std::fprintf(stderr, "wrote %s\n", path.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "decode_sd_vae: %s\n", e.what());
    return 1;
  }
  return 0;
}
