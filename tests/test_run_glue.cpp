// What `tim sample`, `tim serve` and the Python package share from the library: a run's initial
// noise (tim/sampler/noise.hpp) against tim::initial_noise drawn row by row, and a decoder loaded
// from its diffusers folder (tim/vae/load.hpp) against the decoder built directly with the same
// options.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "tim/sampler/noise.hpp"
#include "tim/sampler/settings.hpp"
#include "tim/tim.hpp"
#include "tim/vae/load.hpp"

namespace {

namespace fs = std::filesystem;

tim::SampleSettings settings_of(const std::string& transport, std::int64_t height, std::int64_t width) {
  tim::SampleRequest request;
  request.transport = transport;
  request.height = height;
  request.width = width;
  request.steps = 3;
  return tim::resolve_sample_settings(request, {});
}

}  // namespace

TEST_CASE("initial_noise_of: row b is stream indices[b], at the settings' size, VE times t_0") {
  const std::vector<std::uint64_t> indices{5, 6, 9, 2, 3};  // runs 5-6, 9, 2-3
  const auto s = settings_of("ot-fm", 4, 6);
  const auto noise = tim::initial_noise_of(indices, /*seed=*/7, 3, 2, s);
  REQUIRE(noise.shape() == tim::Shape{5, 3, 4, 6});
  for (std::size_t b = 0; b < indices.size(); ++b) {
    CAPTURE(b);
    const auto one = tim::initial_noise({1, 3, 4, 6}, 7, indices[b]);
    CHECK(std::equal(one.data(), one.data() + 72, noise.data() + b * 72));
  }
  const auto ve = settings_of("ve", 4, 6);
  REQUIRE(ve.times.front() > 1.0);  // VE's t_max: the scale is visible
  const auto scaled = tim::initial_noise_of(indices, 7, 3, 2, ve);
  for (std::int64_t i = 0; i < noise.numel(); ++i) REQUIRE(scaled.data()[i] == noise.data()[i] * ve.times.front());

  CHECK_THROWS_WITH_AS(tim::initial_noise_of(indices, 7, 3, 4, s),
                       doctest::Contains("height 4 and width 6 must be multiples of the model's patch size 4"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::initial_noise_of({}, 7, 3, 2, s), doctest::Contains("no samples"), tim::Error);
  CHECK_THROWS_AS(tim::initial_noise_of(indices, 7, 3, 2, tim::resolve_sample_settings({}, {})), tim::Error);
}

TEST_CASE("load_decoder: the kind by its tensors, options from config.json, errors without the path") {
  const auto golden = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/dc_ae_golden/variants.safetensors");
  const fs::path dir = fs::temp_directory_path() / ("tim_run_glue_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string weights = (dir / "diffusion_pytorch_model.safetensors").string();
  {
    tim::io::SafetensorsWriter writer;
    for (const auto& info : golden.tensors())
      if (info.name.rfind("input.", 0) != 0 && info.name.rfind("output.", 0) != 0)
        writer.add(info.name, golden.load<float>(info.name));
    writer.write(weights);
  }
  const auto write_config = [&](const std::string& text) { std::ofstream(dir / "config.json") << text; };
  write_config(R"({"_class_name": "AutoencoderDC", "attention_head_dim": 3, "decoder_in_shortcut": false})");
  const auto loaded = tim::vae::load_decoder<float>(weights);
  CHECK_FALSE(loaded.sd_vae());
  tim::vae::DcAeOptions options;
  options.attention_head_dim = 3;
  options.in_shortcut = false;
  const auto direct = tim::vae::open_dc_ae_decoder<float>(weights, options);
  CHECK(loaded.describe() == direct.config.describe());
  CHECK(loaded.latent_channels() == 4);
  CHECK(loaded.upscale() == direct.config.upscale());
  const auto latents = golden.load<float>("input.latents");
  const auto images = loaded.decode(latents);  // one sample at a time
  const std::int64_t B = latents.dim(0), per_latent = latents.numel() / B;
  REQUIRE(images.dim(0) == B);
  for (std::int64_t b = 0; b < B; ++b) {
    CAPTURE(b);
    auto one = tim::Tensor<float>::empty({1, latents.dim(1), latents.dim(2), latents.dim(3)});
    std::copy_n(latents.data() + b * per_latent, per_latent, one.data());
    const auto expected = direct.decode(one);
    REQUIRE(expected.numel() * B == images.numel());
    CHECK(std::equal(expected.data(), expected.data() + expected.numel(), images.data() + b * expected.numel()));
  }

  write_config(R"({"_class_name": "AutoencoderKL"})");
  CHECK_THROWS_WITH_AS(tim::vae::load_decoder<float>(weights),
                       doctest::Contains("describes a AutoencoderKL but the weights are an AutoencoderDC"), tim::Error);
  write_config(R"({"shift_factor": 0.5})");
  CHECK_THROWS_WITH_AS(tim::vae::load_decoder<float>(weights), doctest::Contains("shift_factor 0.5"), tim::Error);
  {
    tim::io::SafetensorsWriter writer;
    writer.add("weight", tim::Tensor<float>::zeros({3}));
    writer.write((dir / "other.safetensors").string());
  }
  CHECK_THROWS_WITH_AS(tim::vae::load_decoder<float>((dir / "other.safetensors").string()),
                       doctest::Contains("not a VAE decoder"), tim::Error);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}
