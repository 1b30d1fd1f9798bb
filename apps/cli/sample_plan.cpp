// The plan of `tim sample` (sample.hpp): settings, what is sampled, the recorded parameters.
#include <filesystem>
#include <iostream>
#include <string>

#include "sample.hpp"

namespace tim_cli {

void apply_preset(const std::string& preset, const SampleOptions& o, tim::SampleRequest& request) {
  if (preset.empty()) return;
  const auto set = [](auto& field, const CLI::Option* option, auto value) {
    if (!given(option)) field = value;
  };
  if (preset == "c2i-1step") {
    set(request.steps, o.steps_option, 1);
    set(request.cfg_scale, o.cfg_option, 1.0);
  } else if (preset == "c2i-250step") {
    set(request.steps, o.steps_option, 250);
    set(request.cfg_scale, o.cfg_option, 2.5);
    set(request.guidance_low, o.guidance_low_option, 0.0);
    set(request.guidance_high, o.guidance_high_option, 0.6);
    set(request.stochasticity, o.stochasticity_option, 0.2);
  } else if (preset == "t2i") {
    set(request.cfg_scale, o.cfg_option, 2.5);
  } else {
    tim::fail("--preset '", preset, "': expected c2i-1step (1 step, cfg 1), c2i-250step (250 steps, cfg 2.5 on [0, "
              "0.6], stochasticity 0.2) or t2i (cfg 2.5)");
  }
}

namespace {

//! The latent size an image size in pixels asks for: pixels / scale, which must divide.
std::int64_t latent_cells(std::int64_t pixels, std::int64_t scale, const char* what) {
  tim::check(pixels % scale == 0, what, " ", pixels, " pixels is not a multiple of the decoder's ", scale,
             " pixels per latent cell");
  return pixels / scale;
}

}  // namespace

SamplePlan plan_sample(const SampleOptions& options, const std::string& model_path, const Generator& model,
                       std::int64_t vae_scale) {
  SamplePlan plan;
  // Sizes: --size/--width/--height in image pixels (divided by the decoder's scale), or
  // --latent-height/--latent-width in latent cells.
  tim::SampleRequest request = sample_request(options);
  request.height.reset();
  request.width.reset();
  if (!options.size.empty()) {
    const ImageSize size = parse_size(options.size);
    request.width = latent_cells(size.width, vae_scale, "--size width");
    request.height = latent_cells(size.height, vae_scale, "--size height");
  }
  if (given(options.height_option)) request.height = latent_cells(options.height, vae_scale, "--height");
  if (given(options.width_option)) request.width = latent_cells(options.width, vae_scale, "--width");
  if (given(options.latent_height_option)) request.height = options.latent_height;
  if (given(options.latent_width_option)) request.width = options.latent_width;
  apply_preset(options.preset, options, request);
  plan.settings = tim::resolve_sample_settings(request, model.metadata());
  const tim::SampleSettings& s = plan.settings;

  // A class-conditional model samples labels, a text-to-image one captions.
  const bool text = model.text_to_image();
  if (text) {
    const char* given_instead = given(options.labels_option)  ? "--labels"
                                : given(options.class_option) ? "--class"
                                : !options.grid_path.empty()  ? "a class --grid"
                                                              : "class labels";
    tim::check(!options.captions_path.empty() || options.prompts.given(), model_path, " is a text-to-image (T2I) TiM: "
               "it samples from prompts or caption features, not from ", given_instead, "; give --text-encoder DIR "
               "--prompt TEXT, or --captions FEATS.safetensors (cap_feats [B, M, cap_dim], and null_cap_feats "
               "[1, M, cap_dim] for guidance; tim encode writes them)");
    plan.captions = options.prompts.given() ? captions_from_prompts(options, model.caption_dim())
                                            : read_captions(options.captions_path, model.caption_dim());
    tim::check(s.cfg_scale.value <= 1 || !plan.captions->null_cap_feats.empty_tensor(), "--cfg-scale ",
               tim::shortest_decimal(s.cfg_scale.value), " needs the null caption for guidance, but the --captions "
               "file '", options.captions_path, "' has no tensor 'null_cap_feats' [1, M, cap_dim] "
               "(tools/caption_features.py writes it: the features of the empty caption)");
  } else {
    tim::check(options.captions_path.empty() && !options.prompts.given(), "--captions and --prompt need a "
               "text-to-image model; ", model_path,
               " is a class-conditional (C2I) TiM: give --labels, --class or --grid");
    plan.class_names = class_names_of(model.metadata(), model.num_classes());
    plan.num_classes = model.num_classes();
  }

  // Images: the latents themselves (1 or 3 channels), or what --vae decodes them into.
  const auto& c = model.config();
  const bool images = !options.png_dir.empty() || !options.grid_path.empty();
  tim::check(!images || !options.vae_path.empty() || c.in_channels == 1 || c.in_channels == 3,
             "PNG output (--png-dir, --grid) needs latents with 1 (gray) or 3 (RGB) channels; this model's have ",
             c.in_channels, ", which need a VAE decoder to become images: give --vae "
             "diffusion_pytorch_model.safetensors (docs/vae.md)");

  const std::optional<std::int64_t> caption_count =
      plan.captions ? std::optional<std::int64_t>(plan.captions->cap_feats.dim(0)) : std::nullopt;
  plan.run = make_run(options, c, model.num_classes(), caption_count);
  std::int64_t H = 0, W = 0;
  if (plan.run.noise) {
    H = plan.run.noise->dim(2);
    W = plan.run.noise->dim(3);
  } else {
    const tim::LatentSize size = tim::require_latent_size(s.latent_size, s.names);
    H = size.height.value;
    W = size.width.value;
    tim::check(H % c.patch == 0 && W % c.patch == 0, "height ", H, " and width ", W,
               " must be multiples of the model's patch size ", c.patch);
    if (std::holds_alternative<tim::VeSde>(s.transport.value))
      plan.run.noise_source += ", times t_0 = " + tim::shortest_decimal(s.times.front());
  }

  // Every generation parameter, for the safetensors metadata and the PNG text chunks.
  plan.parameters = {
      {"model", model_path},
      {"steps", std::to_string(s.steps.value)},
      {"cfg_scale", tim::shortest_decimal(s.cfg_scale.value)},
      {"guidance_low", tim::shortest_decimal(s.guidance_low.value)},
      {"guidance_high", tim::shortest_decimal(s.guidance_high.value)},
      {"stochasticity", tim::shortest_decimal(s.stochasticity.value)},
      {"seed", std::to_string(options.seed)},
      {"first_sample_index", std::to_string(options.first_index)},
      {"transport", std::string(tim::transport_name(s.transport.value))},
      {"t_max", tim::shortest_decimal(s.t_max.value)},
      {"t_min", tim::shortest_decimal(s.t_min.value)},
      {"schedule", s.schedule.value.describe()},
      {"mode", std::string(tim::sample_mode_name(s.mode.value))},
      {"noise", plan.run.noise_source},
      {"labels_source", plan.run.labels_source},
      {"height", std::to_string(H)},
      {"width", std::to_string(W)},
      {"device", model.device()},
      {"tim_version", tim::version_string},
  };
  if (!options.model.config_path.empty())
    plan.parameters.insert(plan.parameters.begin() + 1, {"config", options.model.config_path});
  if (text && options.prompts.given()) {
    plan.parameters.insert(plan.parameters.begin() + 1, {"text_encoder", options.prompts.text_encoder});
    plan.parameters.insert(plan.parameters.begin() + 2, {"caption_batching", options.prompts.caption_batching});
  } else if (text) {
    plan.parameters.insert(plan.parameters.begin() + 1, {"captions", options.captions_path});
  }
  if (!options.preset.empty()) plan.parameters.emplace_back("preset", options.preset);

  // The same, typed, for the PNGs' JSON chunk.
  nlohmann::json& j = plan.record.settings;
  for (const auto& [key, value] : plan.parameters) j[key] = value;
  j["steps"] = s.steps.value;
  j["cfg_scale"] = s.cfg_scale.value;
  j["guidance_low"] = s.guidance_low.value;
  j["guidance_high"] = s.guidance_high.value;
  j["stochasticity"] = s.stochasticity.value;
  j["seed"] = options.seed;
  j["first_sample_index"] = options.first_index;
  j["t_max"] = s.t_max.value;
  j["t_min"] = s.t_min.value;
  j["latent_height"] = H;
  j["latent_width"] = W;
  j.erase("height");
  j.erase("width");
  j["times"] = s.times;
  plan.record.parameters = plan.parameters;
  plan.record.model_name = std::filesystem::path(model_path).stem().string();
  plan.record.sampler_name = s.mode.value == tim::SampleMode::transition ? "TiM transition" : "TiM diffusion";

  if (options.compute.verbose)  // where each setting came from
    for (const auto& [key, value] : s.describe()) std::cerr << "tim sample: " << key << " " << value << '\n';
  return plan;
}

}  // namespace tim_cli
