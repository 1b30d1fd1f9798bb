// The values of a diffusers autoencoder `config.json` that tensor shapes cannot tell: the class
// name, GroupNorm groups (AutoencoderKL), the attention head width and input shortcut
// (AutoencoderDC), and the latent scaling and shift. A released VAE folder holds
// `diffusion_pytorch_model.safetensors` beside its `config.json`; tim reads the weights from the
// first and, when present, these few values from the second (tim sample --vae, docs/vae.md).
// Parsed with nlohmann-json; every other key is ignored.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "tim/core/error.hpp"

namespace tim::vae {

//! The keys tim uses; each is empty when the file does not have it (or has null).
struct DiffusersVaeConfig {
  std::string class_name;                       // _class_name, e.g. "AutoencoderKL", "AutoencoderDC"
  std::optional<std::int64_t> norm_num_groups;  // AutoencoderKL's GroupNorm groups
  std::optional<std::int64_t> attention_head_dim;  // AutoencoderDC's linear-attention head width
  std::optional<bool> decoder_in_shortcut;         // AutoencoderDC: conv_in(z) + z (channels repeated)
  std::optional<double> scaling_factor;         // decode divides the latents by it
  std::optional<double> shift_factor;           // ... and adds it (0 or absent for the VAEs TiM uses)
};

//! Parses the text of a config.json; `where` names the file in messages. Throws tim::Error for
//! text that is not a JSON object, and for a known key of the wrong type or out of range
//! (norm_num_groups and attention_head_dim >= 1, decoder_in_shortcut a boolean, scaling_factor in
//! [1e-6, 1e6], shift_factor finite).
inline DiffusersVaeConfig parse_diffusers_vae_config(std::string_view text, const std::string& where) {
  const nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  check(!json.is_discarded(), where, ": not valid JSON (expected a diffusers config.json object)");
  check(json.is_object(), where, ": expected a JSON object (a diffusers config.json), got a ", json.type_name());
  DiffusersVaeConfig config;
  const auto present = [&json](const char* key) { return json.contains(key) && !json.at(key).is_null(); };
  if (present("_class_name")) {
    check(json.at("_class_name").is_string(), where, ": '_class_name' must be a string, got ",
          json.at("_class_name").dump());
    config.class_name = json.at("_class_name").get<std::string>();
  }
  const auto positive_integer = [&](const char* key) -> std::optional<std::int64_t> {
    if (!present(key)) return std::nullopt;
    const auto& value = json.at(key);
    check(value.is_number_integer() && value.get<std::int64_t>() >= 1, where, ": '", key,
          "' must be an integer >= 1, got ", value.dump());
    return value.get<std::int64_t>();
  };
  config.norm_num_groups = positive_integer("norm_num_groups");
  config.attention_head_dim = positive_integer("attention_head_dim");
  if (present("decoder_in_shortcut")) {
    const auto& value = json.at("decoder_in_shortcut");
    check(value.is_boolean(), where, ": 'decoder_in_shortcut' must be true or false, got ", value.dump());
    config.decoder_in_shortcut = value.get<bool>();
  }
  const auto real = [&](const char* key, bool positive) -> std::optional<double> {
    if (!present(key)) return std::nullopt;
    const auto& value = json.at(key);
    check(value.is_number(), where, ": '", key, "' must be a number, got ", value.dump());
    const double number = value.get<double>();
    check(std::isfinite(number) && (!positive || number > 0), where, ": '", key, "' must be a ",
          positive ? "positive " : "", "finite number, got ", value.dump());
    return number;
  };
  config.scaling_factor = real("scaling_factor", true);
  // Decoders divide by it in float: keep 1 / scaling_factor a normal float (released: 0.18215, 0.41407).
  if (config.scaling_factor)
    check(*config.scaling_factor >= 1e-6 && *config.scaling_factor <= 1e6, where,
          ": 'scaling_factor' must be in [1e-6, 1e6], got ", json.at("scaling_factor").dump());
  config.shift_factor = real("shift_factor", false);
  return config;
}

//! The config.json in the folder of `weights_path` (the diffusers layout), parsed; nullopt when
//! there is none. Throws tim::Error when it exists and cannot be read or parsed.
inline std::optional<DiffusersVaeConfig> read_diffusers_vae_config_beside(const std::string& weights_path) {
  const std::filesystem::path path = std::filesystem::path(weights_path).parent_path() / "config.json";
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), path.string(), ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_diffusers_vae_config(text.str(), path.string());
}

}  // namespace tim::vae
