// The parts of `tim sample` (docs/cli.md) shared by its files: sample.cpp (the options, the plan,
// sampling), sample_inputs.cpp (what is sampled: labels, captions, noise) and sample_outputs.cpp
// (PNGs, the latent decoder). The settings themselves are the library's (tim/sampler/settings.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "prompts.hpp"
#include "tim/sampler/settings.hpp"

namespace tim_cli {

inline constexpr std::int64_t default_per_class = 8;

struct SampleOptions {
  ModelOptions model;  // model_path empty: the shipped model
  ComputeOptions compute;
  int steps = tim::default_sample_steps;
  double cfg_scale = 1.0;
  double guidance_low = 0.0;
  double guidance_high = 1.0;
  double stochasticity = 0.0;
  std::uint64_t seed = 0;
  std::uint64_t first_index = 0;
  std::string labels;  // "1,2,3"
  std::int64_t class_label = 0;
  std::string captions_path;  // text-to-image models: cap_feats (and null_cap_feats)
  PromptOptions prompts;      // text-to-image models: prompts through the text encoder (sample_prompts.cpp)
  std::int64_t num = 1;
  std::string transport;  // empty: the model's metadata, else ot-fm
  double t_max = 0, t_min = 0;
  std::string schedule = "linspace";
  std::string mode;  // empty: the model's metadata, else transition
  std::int64_t height = 0, width = 0;
  std::string noise_path;
  std::string out_path;
  bool trajectory = false;
  std::string png_dir;
  std::string grid_path;
  std::string vae_path;          // decode the latents with this VAE before writing images
  std::int64_t vae_tile = 0;     // > 0: decode in tiles of this many latent pixels (tim::vae::decode_tiled)
  std::int64_t vae_overlap = 8;  // latent pixels neighbouring tiles share
  std::int64_t per_class = default_per_class;
  // To tell "not given" from a value.
  CLI::Option *steps_option = nullptr, *labels_option = nullptr, *class_option = nullptr, *num_option = nullptr,
              *t_max_option = nullptr, *t_min_option = nullptr, *height_option = nullptr, *width_option = nullptr,
              *per_class_option = nullptr, *cfg_option = nullptr, *guidance_low_option = nullptr,
              *guidance_high_option = nullptr, *vae_overlap_option = nullptr, *stochasticity_option = nullptr,
              *schedule_option = nullptr;
};

//! The sampling settings the options give explicitly, as the library's request (a field is set
//! exactly when its option was given); tim::resolve_sample_settings adds the metadata and defaults.
tim::SampleRequest sample_request(const SampleOptions& options);

// ---------------------------------------------------------------------------------------------
// What is sampled (sample_inputs.cpp).

//! The shipped model: $TIM_DEFAULT_MODEL when set, else the installed copy, else the source tree's.
std::string default_model_path();

//! The caption features of --captions in the network's precision (float): cap_feats [B, M, Dc]
//! and, when the file has it, the null caption null_cap_feats [1, M, Dc] (empty otherwise); the
//! captions' text when the file's __metadata__ `captions` lists B of them (tools/caption_features.py).
struct CaptionFeatures {
  tim::Tensor<float> cap_feats, null_cap_feats;
  std::vector<std::string> texts;
  std::vector<std::int64_t> lengths;  // real tokens per caption (cap_mask); empty: unknown
};

CaptionFeatures read_captions(const std::string& path, std::int64_t caption_dim);

// Prompts (sample_prompts.cpp).

//! The caption features of --prompt/--prompts-file through --text-encoder, with their lengths.
CaptionFeatures captions_from_prompts(const SampleOptions& options, std::int64_t caption_dim);

//! Whether the captions are sampled per prompt (tim::text::sample_each_prompt_alone): the default
//! --caption-batching per-prompt when the captions' lengths are known.
bool sample_per_prompt(const SampleOptions& options, const CaptionFeatures& captions);

//! What is sampled: labels (B; none for a text-to-image model, whose rows are its captions), the
//! initial noise (B, C, H, W) and each row's sample index (the noise stream its initial noise and
//! its stochastic steps draw from).
struct SampleBatch {
  std::vector<std::int64_t> labels;
  tim::Tensor<double> noise;
  std::vector<std::uint64_t> sample_indices;
  std::string noise_source;  // for the metadata: the --noise file, or how the noise was generated
};

//! The batch: for a class-conditional model its labels (num_classes checks them), for a
//! text-to-image one `captions` rows; then the noise, from --noise (whose batch must agree) or
//! generated at the settings' latent size.
SampleBatch make_batch(const SampleOptions& options, const tim::nn::BackboneConfig& c, std::int64_t num_classes,
                       std::optional<std::int64_t> captions, const tim::SampleSettings& settings);

// ---------------------------------------------------------------------------------------------
// What is written (sample_outputs.cpp).

//! The class names a model's metadata gives: `class_names` (a JSON list of num_classes strings),
//! else the Fashion-MNIST names when `dataset` says fashion-mnist; otherwise none.
std::vector<std::string> class_names_of(const std::map<std::string, std::string>& metadata, std::int64_t num_classes);

//! The PNGs of --grid and --png-dir from float images (B, C, H, W), C = 1 or 3: rows by class
//! (class-conditional), or the samples in batch order, 8 to a row, without labels (text-to-image:
//! batch.labels is empty; `caption_texts` go into each sample's parameters when known).
void write_images(const SampleOptions& options, const tim::Tensor<float>& images, const SampleBatch& batch,
                  const std::vector<std::string>& class_names, std::int64_t num_classes,
                  const std::vector<std::string>& caption_texts,
                  const std::vector<std::pair<std::string, std::string>>& parameters);

//! The latent decoder of --vae on the host, in float: the SD VAE (AutoencoderKL, C2I-256 latents)
//! or the DC-AE (AutoencoderDC, C2I-512 and T2I latents). Decodes one sample at a time, so memory
//! stays that of one image whatever the batch. With --device cuda the weights are uploaded and
//! then dropped here (drop_weights), keeping the description and sizes.
struct HostVae {
  std::optional<tim::vae::SdVaeDecoder<float>> sd;
  std::optional<tim::vae::DcAeDecoder<float>> dc;
  tim::vae::TileOptions tiles{.tile = 0};  // tile 0: untiled
  std::string description;                 // the decoder's describe(); empty: no decoder
  std::int64_t channels = 0, scale = 1;    // latent channels, image size per latent size

  bool empty() const { return description.empty(); }
  //! One sample's image (1, 3, H, W) from its latent (1, L, h, w), tiled when tiles.tile > 0.
  tim::Tensor<float> decode_one(const tim::Tensor<float>& latent) const;
  void drop_weights() {
    sd.reset();
    dc.reset();
  }
};

//! Loads --vae: the safetensors weights, an SD VAE (it has post_quant_conv.weight) or a DC-AE
//! (decoder.conv_in.weight without it), plus what the config.json beside them says when there is
//! one (the diffusers layout). Checks that the decoder takes the model's latents.
HostVae load_vae(const std::string& path, const tim::nn::BackboneConfig& c, const tim::vae::TileOptions& tiles);

//! images (B, 3, H, W) from latents (B, L, h, w), decoding one sample (1, L, h, w) at a time.
tim::Tensor<float> decode_each(const tim::Tensor<float>& latents,
                               const std::function<tim::Tensor<float>(const tim::Tensor<float>&)>& decode_one);

}  // namespace tim_cli
