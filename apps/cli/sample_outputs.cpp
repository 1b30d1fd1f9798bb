// What `tim sample` writes besides the safetensors file: PNGs (one per sample and a labelled
// grid) and the host side of the --vae latent decoder (sample.hpp, docs/cli.md "Images").
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "image_grid.hpp"
#include "sample.hpp"
#include "tim/io/image.hpp"
#include "tim/io/png.hpp"
#include "tim/vae/diffusers_config.hpp"

namespace tim_cli {

namespace fs = std::filesystem;

namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return text;
}

std::string class_label_text(std::int64_t label, const std::vector<std::string>& names, std::int64_t num_classes) {
  if (label == num_classes) return "unconditional";
  if (label >= 0 && label < static_cast<std::int64_t>(names.size())) return names[static_cast<std::size_t>(label)];
  return "class " + std::to_string(label);
}

//! "key: value" lines of the generation parameters, for a PNG's "parameters" text chunk.
std::string parameters_text(const std::vector<std::pair<std::string, std::string>>& parameters) {
  std::string text;
  for (const auto& [key, value] : parameters) text += key + ": " + value + "\n";
  return text;
}

constexpr std::int64_t caption_grid_columns = 8;

}  // namespace

std::vector<std::string> class_names_of(const std::map<std::string, std::string>& metadata, std::int64_t num_classes) {
  if (const auto found = metadata.find("class_names"); found != metadata.end()) {
    const auto json = nlohmann::json::parse(found->second, nullptr, /*allow_exceptions=*/false);
    if (json.is_array() && static_cast<std::int64_t>(json.size()) == num_classes &&
        std::all_of(json.begin(), json.end(), [](const auto& name) { return name.is_string(); }))
      return json.template get<std::vector<std::string>>();
  }
  if (const auto found = metadata.find("dataset"); found != metadata.end()) {
    const std::string dataset = lowercase(found->second);
    const bool fashion = dataset.find("fashion-mnist") != std::string::npos ||
                         dataset.find("fashion_mnist") != std::string::npos ||
                         dataset.find("fashionmnist") != std::string::npos;
    if (fashion && num_classes == static_cast<std::int64_t>(tim::cli::fashion_mnist_classes.size()))
      return {tim::cli::fashion_mnist_classes.begin(), tim::cli::fashion_mnist_classes.end()};
  }
  return {};
}

void write_images(const SampleOptions& options, const tim::Tensor<float>& images, const SampleBatch& batch,
                  const std::vector<std::string>& class_names, std::int64_t num_classes,
                  const std::vector<std::string>& caption_texts,
                  const std::vector<std::pair<std::string, std::string>>& parameters) {
  const auto B = images.dim(0);
  const auto H = static_cast<int>(images.dim(2)), W = static_cast<int>(images.dim(3));
  const bool by_class = !batch.labels.empty();
  // Pixels as the released scripts write them: the C2I mapping, or the T2I one for a T2I model.
  const auto mapping = by_class ? tim::io::PixelMapping::c2i : tim::io::PixelMapping::t2i;
  auto image_of = [&](std::int64_t b) { return tim::io::latent_image(images, b, mapping); };
  auto label_of = [&](std::int64_t b) { return batch.labels[static_cast<std::size_t>(b)]; };

  std::vector<tim::cli::GridRow> rows;
  if (by_class) {
    // One row per class, in label order; each row's samples in batch order.
    std::map<std::int64_t, std::vector<std::int64_t>> members_of_class;
    for (std::int64_t b = 0; b < B; ++b) members_of_class[label_of(b)].push_back(b);
    for (const auto& [label, members] : members_of_class) {
      rows.push_back({class_label_text(label, class_names, num_classes), {}});
      for (const auto b : members) rows.back().images.push_back(image_of(b));
    }
  } else {
    for (std::int64_t b = 0; b < B; ++b) {
      if (b % caption_grid_columns == 0) rows.push_back({"", {}});
      rows.back().images.push_back(image_of(b));
    }
  }
  const auto grid = tim::cli::labelled_grid(rows, tim::cli::grid_scale(H, W));
  const std::vector<tim::io::PngText> grid_text{{"parameters", parameters_text(parameters)}, {"Software", "tim"}};
  if (!options.grid_path.empty()) tim::io::write_png(options.grid_path, grid, grid_text);
  if (options.png_dir.empty()) return;

  for (std::int64_t b = 0; b < B; ++b) {
    char name[64];
    auto sample_parameters = parameters;
    if (by_class) {
      std::snprintf(name, sizeof name, "sample_%04lld_class_%lld.png", static_cast<long long>(b),
                    static_cast<long long>(label_of(b)));
      sample_parameters.emplace_back("label", std::to_string(label_of(b)) + " (" +
                                                  class_label_text(label_of(b), class_names, num_classes) + ")");
    } else {
      std::snprintf(name, sizeof name, "sample_%04lld.png", static_cast<long long>(b));
      sample_parameters.emplace_back("caption_index", std::to_string(b));
      if (!caption_texts.empty())
        sample_parameters.emplace_back("caption", truncated(caption_texts[static_cast<std::size_t>(b)], 1000));
    }
    sample_parameters.emplace_back("sample_index", std::to_string(batch.sample_indices[static_cast<std::size_t>(b)]));
    tim::io::write_png((fs::path(options.png_dir) / name).string(), image_of(b),
                       {{"parameters", parameters_text(sample_parameters)}, {"Software", "tim"}});
  }
  tim::io::write_png((fs::path(options.png_dir) / "grid.png").string(), grid, grid_text);
}

tim::Tensor<float> HostVae::decode_one(const tim::Tensor<float>& latent) const {
  if (tiles.tile == 0) return sd ? sd->decode(latent) : dc->decode(latent);
  return sd ? tim::vae::decode_tiled(*sd, latent, tiles) : tim::vae::decode_tiled(*dc, latent, tiles);
}

HostVae load_vae(const std::string& path, const tim::nn::BackboneConfig& c, const tim::vae::TileOptions& tiles) {
  try {
    const auto file = tim::io::SafetensorsFile::open(path);
    const bool sd_vae = file.contains("post_quant_conv.weight");
    tim::check(sd_vae || file.contains("decoder.conv_in.weight"), "not a VAE decoder: it has neither "
               "'post_quant_conv.weight' (an SD VAE, AutoencoderKL) nor 'decoder.conv_in.weight' (a DC-AE, AutoencoderDC)");
    const char* kind = sd_vae ? "AutoencoderKL" : "AutoencoderDC";
    const auto config = tim::vae::read_diffusers_vae_config_beside(path);
    if (config) {
      tim::check(config->class_name.empty() || config->class_name == kind, "the config.json beside it describes a ",
                 config->class_name, " but the weights are an ", kind, sd_vae ? " (SD VAE)" : " (DC-AE)");
      tim::check(!config->shift_factor || *config->shift_factor == 0, "the config.json beside it has shift_factor ",
                 tim::shortest_decimal(*config->shift_factor), "; tim decodes latents with zero shift only (SPEC 8)");
    }
    HostVae decoder;
    decoder.tiles = tiles;
    if (sd_vae) {
      tim::vae::SdVaeOptions vae_options;  // sd-vae-ft-ema's values unless config.json says otherwise
      if (config && config->norm_num_groups) vae_options.groups = *config->norm_num_groups;
      if (config && config->scaling_factor) vae_options.scaling_factor = *config->scaling_factor;
      decoder.sd.emplace(tim::vae::load_sd_vae_decoder<float>(file, vae_options));
      decoder.description = decoder.sd->config.describe();
      decoder.channels = decoder.sd->config.latent_channels;
      decoder.scale = decoder.sd->config.upscale();
    } else {
      tim::vae::DcAeOptions vae_options;  // dc-ae-f32c32-sana-1.1's values unless config.json says otherwise
      if (config && config->attention_head_dim) vae_options.attention_head_dim = *config->attention_head_dim;
      if (config && config->decoder_in_shortcut) vae_options.in_shortcut = *config->decoder_in_shortcut;
      if (config && config->scaling_factor) vae_options.scaling_factor = *config->scaling_factor;
      decoder.dc.emplace(tim::vae::load_dc_ae_decoder<float>(file, vae_options));
      decoder.description = decoder.dc->config.describe();
      decoder.channels = decoder.dc->config.latent_channels;
      decoder.scale = decoder.dc->config.upscale();
    }
    tim::check(decoder.channels == c.in_channels, "the decoder takes latents with ", decoder.channels,
               " channels, but the model samples ", c.in_channels);
    return decoder;
  } catch (const tim::Error& e) {
    tim::fail("--vae '", path, "': ", e.what());
  }
}

tim::Tensor<float> decode_each(const tim::Tensor<float>& latents,
                               const std::function<tim::Tensor<float>(const tim::Tensor<float>&)>& decode_one) {
  const std::int64_t B = latents.dim(0), per_latent = latents.numel() / B;
  tim::Tensor<float> images;
  for (std::int64_t b = 0; b < B; ++b) {
    auto one = tim::Tensor<float>::empty({1, latents.dim(1), latents.dim(2), latents.dim(3)});
    std::copy_n(latents.data() + b * per_latent, per_latent, one.data());
    const auto image = decode_one(one);
    if (b == 0) images = tim::Tensor<float>::empty({B, image.dim(1), image.dim(2), image.dim(3)});
    std::copy_n(image.data(), image.numel(), images.data() + b * image.numel());
  }
  return images;
}

}  // namespace tim_cli
