// tim decode: latents from anywhere (`latents` [B, C, h, w], as `tim sample --out` writes them)
// through a latent decoder (--vae) into PNGs or an `images` tensor (docs/cli.md).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "sample.hpp"

namespace tim_cli {

namespace fs = std::filesystem;

namespace {

struct DecodeOptions {
  std::string vae_path, latents_path, png_dir, out_path;
  std::int64_t vae_tile = 0, vae_overlap = 8;
  CLI::Option* vae_overlap_option = nullptr;
  bool overwrite = false;
  ComputeOptions compute;
};

//! --vae DIR (a diffusers folder: DIR/diffusion_pytorch_model.safetensors) or the weights file.
std::string vae_weights(const std::string& path) {
  std::error_code error;
  if (fs::is_directory(path, error)) return (fs::path(path) / "diffusion_pytorch_model.safetensors").string();
  return path;
}

//! The sample indices of the latents file: its metadata `sample_indices` when it lists B, else 0..B-1.
std::vector<std::uint64_t> sample_indices_of(const std::map<std::string, std::string>& metadata, std::int64_t B) {
  std::vector<std::uint64_t> indices;
  if (const auto found = metadata.find("sample_indices"); found != metadata.end()) {
    std::stringstream list(found->second);
    std::string item;
    while (std::getline(list, item, ',')) {
      std::uint64_t value = 0;
      if (!parse_count(item, value)) return {};
      indices.push_back(value);
    }
    if (static_cast<std::int64_t>(indices.size()) == B) return indices;
  }
  indices.clear();
  for (std::int64_t b = 0; b < B; ++b) indices.push_back(static_cast<std::uint64_t>(b));
  return indices;
}

void run_decode(const DecodeOptions& o) {
  apply_threads(o.compute);
  check_compute_options(o.compute);
  tim::check(!o.png_dir.empty() || !o.out_path.empty(), "no output: give --png-dir DIR or --out OUT.safetensors");
  tim::check(o.vae_tile >= 0, "--vae-tile must be >= 0 latent pixels (0: untiled), got ", o.vae_tile);
  tim::check(!given(o.vae_overlap_option) || o.vae_tile > 0, "--vae-overlap needs --vae-tile");
  tim::check(o.vae_tile == 0 || (o.vae_overlap >= 0 && o.vae_overlap < o.vae_tile), "--vae-overlap must be in [0, ",
             "--vae-tile) = [0, ", o.vae_tile, "), got ", o.vae_overlap);
  tim::check(!o.overwrite || !o.png_dir.empty(), "--overwrite needs --png-dir");
  tim::check(o.out_path.empty() || !same_file(o.out_path, o.latents_path), "--out '", o.out_path,
             "' would overwrite the --latents file");

  const auto file = tim::io::SafetensorsFile::open(o.latents_path);
  tim::check(file.contains("latents"), "--latents '", o.latents_path, "': expected a tensor 'latents' [B, C, h, w] "
             "(as tim sample --out writes it); found: ", tensor_names(file));
  const auto& info = file.info("latents");
  tim::check(info.dtype == tim::DType::F32 || info.dtype == tim::DType::F64 || info.dtype == tim::DType::F16 ||
                 info.dtype == tim::DType::BF16,
             "--latents '", o.latents_path, "': tensor 'latents' has dtype ", tim::dtype_name(info.dtype),
             "; expected a floating type");
  tim::check(info.shape.rank() == 4 && info.shape[0] >= 1, "--latents '", o.latents_path,
             "': tensor 'latents' has shape ", info.shape, "; expected [B, C, h, w] with B >= 1");
  const auto latents = file.load<float>("latents").clone();
  for (std::int64_t i = 0; i < latents.numel(); ++i)
    tim::check(std::isfinite(latents.data()[i]), "--latents '", o.latents_path,
               "': tensor 'latents' contains a non-finite value at index ", i);
  const std::int64_t B = latents.dim(0);
  const auto& metadata = file.metadata();
  const auto indices = sample_indices_of(metadata, B);
  std::vector<std::int64_t> labels;
  if (file.contains("labels") && file.info("labels").shape == tim::Shape{B}) {
    const auto loaded = file.load<std::int64_t>("labels");
    labels.assign(loaded.data(), loaded.data() + B);
  }

  const std::string weights = vae_weights(o.vae_path);
  HostVae vae = load_vae(weights, latents.dim(1), {.tile = o.vae_tile, .overlap = o.vae_overlap});
  // The PNGs that would be overwritten, before anything is decoded.
  const auto png_path = [&](std::int64_t b) {
    return (fs::path(o.png_dir) / sample_file_name({.index = indices[static_cast<std::size_t>(b)]}, false)).string();
  };
  if (!o.png_dir.empty() && !o.overwrite) {
    std::error_code error;
    for (std::int64_t b = 0; b < B; ++b)
      tim::check(!fs::exists(png_path(b), error), "--png-dir '", o.png_dir, "': '",
                 fs::path(png_path(b)).filename().string(), "' already exists; pass --overwrite to replace it");
  }
  tim::Tensor<float> images;
  if (o.compute.cuda()) {
    const auto gpu = std::visit([](const auto& d) { return CudaVaeDecoder::upload(d); }, vae.decoder->decoder);
    vae.drop_weights();
    images = decode_each(latents, [&](const tim::Tensor<float>& one) { return gpu.decode(one, vae.tiles); });
  } else {
    images = decode_each(latents, [&](const tim::Tensor<float>& one) { return vae.decode_one(one); });
  }

  if (!o.out_path.empty()) {
    tim::io::SafetensorsWriter writer;
    writer.add("images", images);
    for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
    writer.set_metadata("vae", weights);
    writer.set_metadata("vae_config", vae.description);
    writer.set_metadata("latents", o.latents_path);
    writer.write(o.out_path);
  }
  std::vector<std::uint64_t> non_finite;
  if (!o.png_dir.empty()) {
    std::error_code error;
    fs::create_directories(o.png_dir, error);
    tim::check(fs::is_directory(o.png_dir, error), "--png-dir '", o.png_dir, "': cannot create the folder");
    // The latents file's parameters, as tim sample records them, and the decoder.
    RunRecord record;
    for (const auto& [key, value] : metadata) record.settings[key] = value;
    for (const char* key : {"steps", "cfg_scale", "seed", "guidance_low", "guidance_high", "stochasticity", "transport",
                            "tim_version"})
      if (!record.settings.contains(key)) record.settings[key] = "unknown";
    record.settings["tim_version"] = tim::version_string;
    record.settings["vae"] = weights;
    record.settings["vae_config"] = vae.description;
    record.settings["latents"] = o.latents_path;
    record.model_name = metadata.count("model") ? fs::path(metadata.at("model")).stem().string() : "unknown";
    record.sampler_name = metadata.count("mode") && metadata.at("mode") == "diffusion" ? "TiM diffusion" : "TiM transition";
    const bool text = metadata.count("captions") > 0;  // a text-to-image model's latents: the T2I pixel mapping
    const std::int64_t per_image = images.numel() / B;
    for (std::int64_t b = 0; b < B; ++b) {
      const float* values = images.data() + b * per_image;
      if (!std::all_of(values, values + per_image, [](float v) { return std::isfinite(v); })) {
        non_finite.push_back(indices[static_cast<std::size_t>(b)]);
        continue;
      }
      SampleRecord sample;
      sample.index = indices[static_cast<std::size_t>(b)];
      if (!labels.empty()) {
        sample.label = labels[static_cast<std::size_t>(b)];
        sample.prompt = "class " + std::to_string(*sample.label);
      }
      tim::io::write_png(png_path(b), sample_image(images, b, text),
                         sample_png_text(record, sample, images.dim(3), images.dim(2)));
    }
  }
  if (!non_finite.empty())
    tim::fail(non_finite.size(), " of ", B, " decoded images hold NaN or Inf (the first at sample index ",
              non_finite.front(), "); their PNGs were not written");
  if (o.compute.verbose)
    std::cerr << "tim decode: " << B << " latents " << latents.dim(1) << " x " << latents.dim(2) << " x "
              << latents.dim(3) << " to " << images.dim(2) << " x " << images.dim(3) << " images\n";
}

}  // namespace

Subcommand add_decode(CLI::App& app) {
  auto options_owner = std::make_shared<DecodeOptions>();
  DecodeOptions& o = *options_owner;
  auto* command = app.add_subcommand("decode", "Decode latents into images with a VAE decoder (PNGs or a tensor)");
  command->add_option("--vae", o.vae_path, "The decoder: a diffusers VAE folder, or its "
                      "diffusion_pytorch_model.safetensors (SD VAE or DC-AE, as tim sample --vae)")
      ->required();
  command->add_option("--latents", o.latents_path, "Latents: a safetensors file with latents [B, C, h, w] (as tim "
                      "sample --out writes it; its sample_indices and labels name and label the PNGs)")
      ->required();
  command->add_option("--png-dir", o.png_dir, "Write one PNG per latent, named by sample index (000123.png)");
  command->add_option("-o,--out", o.out_path, "Write images [B, 3, H, W] float32: the decoder's output before "
                      "clamping and quantisation");
  command->add_option("--vae-tile", o.vae_tile, "Decode in tiles of this many latent pixels (as tim sample)");
  o.vae_overlap_option = command->add_option("--vae-overlap", o.vae_overlap, "With --vae-tile: the overlap (default 8)");
  command->add_flag("--overwrite", o.overwrite, "Replace PNGs already in --png-dir");
  add_compute_options(*command, o.compute);
  return {command, [options_owner] { run_decode(*options_owner); }};
}

}  // namespace tim_cli
