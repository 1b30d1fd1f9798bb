// What `tim sample` writes besides the safetensors file: PNGs (one per sample and a labelled
// grid) and the host side of the --vae latent decoder (sample.hpp, docs/cli.md "Images").
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "image_grid.hpp"
#include "imagenet_classes_text.hpp"  // generated from data/imagenet_classes.txt (apps/CMakeLists.txt)
#include "sample.hpp"
#include "tim/io/image.hpp"
#include "tim/io/png.hpp"
#include "tim/vae/load.hpp"

namespace tim_cli {

namespace fs = std::filesystem;

namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return text;
}

//! A value for the A1111 "Key: value, " list: commas and colons would split it, so such a value
//! is quoted as JSON (as AUTOMATIC1111 does).
std::string a1111_value(const std::string& value) {
  if (value.find_first_of(",:\"\n") == std::string::npos) return value;
  return nlohmann::json(value).dump();
}

std::string a1111_settings(const RunRecord& run, std::int64_t width, std::int64_t height) {
  const auto& j = run.settings;
  const auto text = [&](const char* key) {
    const auto& value = j.at(key);
    if (value.is_string()) return value.get<std::string>();
    return value.is_number_float() ? tim::shortest_decimal(value.get<double>()) : value.dump();
  };
  std::string line = "Steps: " + text("steps") + ", Sampler: " + run.sampler_name + ", Schedule: " +
                     a1111_value(text("schedule")) + ", CFG scale: " + text("cfg_scale") + ", Seed: " + text("seed") +
                     ", Size: " + std::to_string(width) + "x" + std::to_string(height) + ", Model: " +
                     a1111_value(run.model_name) + ", Guidance interval: [" + text("guidance_low") + ", " +
                     text("guidance_high") + "], Stochasticity: " + text("stochasticity") + ", Transport: " +
                     text("transport");
  if (j.contains("vae")) line += ", VAE: " + a1111_value(text("vae"));
  return line + ", Version: tim " + text("tim_version");
}

constexpr std::int64_t caption_grid_columns = 8;

//! The ImageNet-1k class names in class-index order, one per line of the embedded
//! data/imagenet_classes.txt (its source: apps/cli/data/README.md).
std::vector<std::string> imagenet_class_names() {
  std::vector<std::string> names;
  std::string_view text = tim::cli::imagenet_classes_text;
  while (!text.empty()) {
    const auto end = text.find('\n');
    names.emplace_back(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
  }
  return names;
}
constexpr std::int64_t imagenet_num_classes = 1000;

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
    if (fashion) return {};
  }
  if (num_classes == imagenet_num_classes) {
    auto names = imagenet_class_names();
    tim::check(static_cast<std::int64_t>(names.size()) == imagenet_num_classes,
               "the embedded ImageNet class list has " + std::to_string(names.size()) + " names, expected 1000");
    return names;
  }
  return {};
}

std::string class_label_text(std::int64_t label, const std::vector<std::string>& names, std::int64_t num_classes) {
  if (label == num_classes) return "unconditional";
  if (label >= 0 && label < static_cast<std::int64_t>(names.size())) return names[static_cast<std::size_t>(label)];
  return "class " + std::to_string(label);
}

std::vector<tim::io::PngText> sample_png_text(const RunRecord& run, const SampleRecord& sample, std::int64_t width,
                                              std::int64_t height) {
  nlohmann::json record = run.settings;
  record["sample_index"] = sample.index;
  if (sample.label) {
    record["label"] = *sample.label;
    record["class_name"] = sample.prompt;
  }
  if (sample.caption_row) {
    record["caption_index"] = *sample.caption_row;
    if (!sample.prompt.empty()) record["caption"] = sample.prompt;
  }
  record["width"] = width;
  record["height"] = height;
  std::string prompt = sample.prompt;
  std::replace(prompt.begin(), prompt.end(), '\n', ' ');
  const std::string parameters =
      prompt + "\n" + a1111_settings(run, width, height) + ", Sample index: " + std::to_string(sample.index);
  return {{"parameters", parameters}, {"tim", record.dump()}, {"Software", "tim"}};
}

std::vector<tim::io::PngText> grid_png_text(const RunRecord& run, std::int64_t width, std::int64_t height) {
  nlohmann::json record = run.settings;
  record["width"] = width;
  record["height"] = height;
  return {{"parameters", a1111_settings(run, width, height)}, {"tim", record.dump()}, {"Software", "tim"}};
}

tim::io::PngImage sample_image(const tim::Tensor<float>& images, std::int64_t b, bool text_to_image) {
  // Pixels as the released scripts write them: the C2I mapping, or the T2I one for a T2I model.
  return tim::io::latent_image(images, b, text_to_image ? tim::io::PixelMapping::t2i : tim::io::PixelMapping::c2i);
}

std::string sample_file_name(const SampleSpec& spec, bool shared_indices) {
  char name[80];
  if (shared_indices)
    std::snprintf(name, sizeof name, "%06llu_class_%lld.png", static_cast<unsigned long long>(spec.index),
                  static_cast<long long>(spec.label));
  else
    std::snprintf(name, sizeof name, "%06llu.png", static_cast<unsigned long long>(spec.index));
  return name;
}

tim::io::PngImage grid_image(const std::vector<tim::io::PngImage>& images, const std::vector<std::int64_t>& labels,
                             const std::vector<std::string>& class_names, std::int64_t num_classes) {
  tim::check(!images.empty(), "grid: no images");
  std::vector<tim::cli::GridRow> rows;
  if (!labels.empty()) {
    // One row per class, in label order; each row's samples in run order.
    std::map<std::int64_t, std::vector<std::size_t>> members_of_class;
    for (std::size_t b = 0; b < images.size(); ++b) members_of_class[labels[b]].push_back(b);
    for (const auto& [label, members] : members_of_class) {
      rows.push_back({class_label_text(label, class_names, num_classes), {}});
      for (const auto b : members) rows.back().images.push_back(images[b]);
    }
  } else {
    for (std::size_t b = 0; b < images.size(); ++b) {
      if (b % caption_grid_columns == 0) rows.push_back({"", {}});
      rows.back().images.push_back(images[b]);
    }
  }
  return tim::cli::labelled_grid(rows, tim::cli::grid_scale(images.front().height, images.front().width));
}

HostVae load_vae(const std::string& path, std::int64_t latent_channels, const tim::vae::TileOptions& tiles) {
  try {
    HostVae decoder;
    decoder.decoder.emplace(tim::vae::load_decoder<float>(path));  // tim/vae/load.hpp, as tim.load_decoder loads it
    decoder.tiles = tiles;
    decoder.description = decoder.decoder->describe();
    decoder.channels = decoder.decoder->latent_channels();
    decoder.scale = decoder.decoder->upscale();
    tim::check(decoder.channels == latent_channels, "the decoder takes latents with ", decoder.channels,
               " channels, but the latents have ", latent_channels);
    return decoder;
  } catch (const tim::Error& e) {
    tim::fail("--vae '", path, "': ", e.what());
  }
}

tim::Tensor<float> decode_each(const tim::Tensor<float>& latents,
                               const std::function<tim::Tensor<float>(const tim::Tensor<float>&)>& decode_one) {
  return tim::vae::decode_each(latents, decode_one);
}

}  // namespace tim_cli
