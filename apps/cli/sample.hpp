// The parts of `tim sample` (docs/cli.md, docs/scale.md) shared by its files: sample.cpp (the
// options and the chunked run), sample_plan.cpp (the plan: settings, what is sampled, the
// recorded parameters), sample_inputs.cpp (labels, captions, noise), sample_outputs.cpp (PNGs,
// their metadata, the latent decoder) and generate.hpp (the model and the sampler). The
// settings themselves are the library's (tim/sampler/settings.hpp).
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
#include "generate.hpp"
#include "parse.hpp"
#include "tim/io/png.hpp"
#include <nlohmann/json.hpp>
#include "tim/sampler/settings.hpp"
#include "tim/vae/load.hpp"

namespace tim_cli {

inline constexpr std::int64_t default_per_class = 8;
inline constexpr std::int64_t default_batch_size = 64;

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
  // Runs at scale (docs/scale.md).
  std::int64_t batch_size = default_batch_size;  // samples per chunk
  bool overwrite = false, resume = false;
  std::int64_t num_per_class = 0;                // > 0: every class, this many samples each
  std::int64_t random_labels = 0;                // > 0: this many samples of random classes
  std::uint64_t label_seed = 0;
  std::string labels_file;
  std::string shard;                             // "K/N"; empty: from the launcher, else 0/1
  int gpu = -1;                                  // --gpu; -1: the local rank modulo the devices
  std::string preset;
  std::string size;                              // --size WxH in image pixels
  std::int64_t latent_height = 0, latent_width = 0;
  // To tell "not given" from a value.
  CLI::Option *steps_option = nullptr, *labels_option = nullptr, *class_option = nullptr, *num_option = nullptr,
              *t_max_option = nullptr, *t_min_option = nullptr, *height_option = nullptr, *width_option = nullptr,
              *per_class_option = nullptr, *cfg_option = nullptr, *guidance_low_option = nullptr,
              *guidance_high_option = nullptr, *vae_overlap_option = nullptr, *stochasticity_option = nullptr,
              *schedule_option = nullptr, *batch_size_option = nullptr, *num_per_class_option = nullptr,
              *random_labels_option = nullptr, *label_seed_option = nullptr, *gpu_option = nullptr,
              *latent_height_option = nullptr, *latent_width_option = nullptr;
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

//! One chunk of a text-to-image run whose caption lengths are known: per_prompt, every prompt as
//! if sampled alone (rows grouped by length; no trajectory); otherwise the released behaviour,
//! the chunk's features and null caption cut to its longest prompt.
tim::SampleResult<> generate_captioned(const Generator& model, const tim::SampleSettings& settings, std::uint64_t seed,
                                       const std::vector<SampleSpec>& specs, const tim::Tensor<double>& noise,
                                       const StepReport& report, const CaptionFeatures& captions, bool per_prompt,
                                       bool keep_trajectory);

//! What a run samples, in run order (position p = 0, 1, ...): each sample's index and condition.
//! Sample indices are first + p, except in a class --grid, where column k of every class row
//! draws first + k (so a column shows one noise under every class; `shared_indices`).
struct RunSamples {
  std::vector<SampleSpec> samples;
  std::optional<tim::Tensor<double>> noise;  // --noise: row p is sample p's initial noise
  std::string noise_source;                  // for the metadata
  bool shared_indices = false;               // a class --grid: indices repeat across classes
  std::string labels_source;                 // for the metadata: how the labels were chosen
};

//! The run: for a class-conditional model its labels (--labels, --class/--num, --grid,
//! --num-per-class, --random-labels, --labels-file; num_classes checks them), for a text-to-image
//! one a sample per caption row; the --noise file, whose batch must agree.
RunSamples make_run(const SampleOptions& options, const tim::nn::BackboneConfig& c, std::int64_t num_classes,
                    std::optional<std::int64_t> captions);

//! The label of sample `index` under --random-labels: uniform in [0, num_classes), from the
//! Philox stream (label_seed, index, step random_label_step) by rejection (docs/scale.md).
std::int64_t random_label(std::uint64_t label_seed, std::uint64_t index, std::int64_t num_classes);
inline constexpr std::uint32_t random_label_step = 0xFFFFFFFEu;

// ---------------------------------------------------------------------------------------------
// What is written (sample_outputs.cpp).

//! The class names a model's metadata gives: `class_names` (a JSON list of num_classes strings),
//! else the Fashion-MNIST names when `dataset` says fashion-mnist, else for a 1000-class model the
//! ImageNet-1k names (apps/cli/data/imagenet_classes.txt, compiled in); otherwise none.
std::vector<std::string> class_names_of(const std::map<std::string, std::string>& metadata, std::int64_t num_classes);

//! What every image of a run records (sample_outputs.cpp): `parameters` (key, value) of the
//! whole run (model, every setting, seed, ...) and the same as typed JSON.
struct RunRecord {
  std::vector<std::pair<std::string, std::string>> parameters;
  nlohmann::json settings;   // every tim setting, typed
  std::string model_name;    // for the A1111 text: the checkpoint's file name without .safetensors
  std::string sampler_name;  // "TiM transition" or "TiM diffusion"
};

//! One sample's part of the record.
struct SampleRecord {
  std::uint64_t index = 0;
  std::optional<std::int64_t> label;  // class-conditional
  std::string prompt;                 // the class name or the caption (A1111's first line)
  std::optional<std::int64_t> caption_row;
};

//! The PNG text chunks of one sample (docs/cli.md "Images"): `parameters` in the AUTOMATIC1111
//! layout (the prompt, then "Steps: .., Sampler: .., CFG scale: .., Seed: .., Size: WxH, Model: ..,"
//! and tim's own settings), `tim` (JSON: every setting of the run and the sample's index,
//! label and caption) and Software. A server writes the same with its own RunRecord.
std::vector<tim::io::PngText> sample_png_text(const RunRecord& run, const SampleRecord& sample, std::int64_t width,
                                              std::int64_t height);

//! The text chunks of a grid: the run's parameters (A1111 layout without a prompt), `tim` JSON.
std::vector<tim::io::PngText> grid_png_text(const RunRecord& run, std::int64_t width, std::int64_t height);

//! Image b of float images (B, C, H, W), C = 1 or 3, as 8-bit pixels (SPEC 8): the C2I mapping,
//! or the T2I one for a text-to-image model.
tim::io::PngImage sample_image(const tim::Tensor<float>& images, std::int64_t b, bool text_to_image);

//! The file name of a sample in --png-dir: its index, six digits or more ("000123.png", as the
//! released FID scripts write); in a class --grid run, whose indices repeat across classes,
//! "000123_class_7.png".
std::string sample_file_name(const SampleSpec& spec, bool shared_indices);

//! The name of class `label`: names[label], "unconditional" for num_classes, else "class N".
std::string class_label_text(std::int64_t label, const std::vector<std::string>& names, std::int64_t num_classes);

//! The labelled grid of images in run order: one row per class in label order (class-conditional:
//! `labels` given), else 8 to a row.
tim::io::PngImage grid_image(const std::vector<tim::io::PngImage>& images, const std::vector<std::int64_t>& labels,
                             const std::vector<std::string>& class_names, std::int64_t num_classes);

//! The latent decoder of --vae on the host, in float: the SD VAE (AutoencoderKL, C2I-256 latents)
//! or the DC-AE (AutoencoderDC, C2I-512 and T2I latents). Decodes one sample at a time, so memory
//! stays that of one image whatever the batch. With --device cuda the weights are uploaded and
//! then dropped here (drop_weights), keeping the description and sizes.
struct HostVae {
  std::optional<tim::vae::AnyDecoder<float>> decoder;  // tim/vae/load.hpp; empty: none, or dropped
  tim::vae::TileOptions tiles{.tile = 0};              // tile 0: untiled
  std::string description;                             // the decoder's describe(); empty: no decoder
  std::int64_t channels = 0, scale = 1;                // latent channels, image size per latent size

  bool empty() const { return description.empty(); }
  //! One sample's image (1, 3, H, W) from its latent (1, L, h, w), tiled when tiles.tile > 0.
  tim::Tensor<float> decode_one(const tim::Tensor<float>& latent) const {
    tim::check(decoder.has_value(), "internal error: the host VAE decoder has no weights");
    return decoder->decode_one(latent, tiles);
  }
  void drop_weights() { decoder.reset(); }
};

//! Loads --vae: the safetensors weights, an SD VAE (it has post_quant_conv.weight) or a DC-AE
//! (decoder.conv_in.weight without it), plus what the config.json beside them says when there is
//! one (the diffusers layout). Checks that the decoder takes latents of `latent_channels`.
HostVae load_vae(const std::string& path, std::int64_t latent_channels, const tim::vae::TileOptions& tiles);

//! images (B, 3, H, W) from latents (B, L, h, w), decoding one sample (1, L, h, w) at a time.
tim::Tensor<float> decode_each(const tim::Tensor<float>& latents,
                               const std::function<tim::Tensor<float>(const tim::Tensor<float>&)>& decode_one);

}  // namespace tim_cli

namespace tim_cli {

// ---------------------------------------------------------------------------------------------
// The plan (sample_plan.cpp).

//! The released sampling recipes of --preset (SPEC.md, "Released sampling settings"), applied to
//! the settings an option does not give: c2i-1step (1 step, cfg 1), c2i-250step (250 steps, cfg
//! 2.5 on [0, 0.6], stochasticity 0.2), t2i (cfg 2.5). Empty: none. Throws on an unknown name.
void apply_preset(const std::string& preset, const SampleOptions& options, tim::SampleRequest& request);

//! Everything decided before sampling.
struct SamplePlan {
  tim::SampleSettings settings;
  std::optional<CaptionFeatures> captions;
  RunSamples run;
  std::vector<std::pair<std::string, std::string>> parameters;  // the safetensors metadata
  RunRecord record;                                             // what the PNGs record
  std::vector<std::string> class_names;
  std::int64_t num_classes = 0;  // class-conditional models
};

//! Plans the run once the model (and the decoder, `vae_scale` image pixels per latent cell, 1
//! without one) is known: the settings (option, else the model's metadata, else the default),
//! what the model samples (labels or captions), the run's samples, and every generation
//! parameter. Fails, before anything is written, on whatever does not fit the model.
SamplePlan plan_sample(const SampleOptions& options, const std::string& model_path, const Generator& model,
                       std::int64_t vae_scale);

}  // namespace tim_cli
