// tim sample: latents (and images) from the any-step transition sampler (docs/cli.md). The run
// has three stages: check the options (before anything is loaded), plan the run once the model is
// known (settings from tim::resolve_sample_settings, the batch, the recorded parameters; nothing
// device-specific), then load_sample_decode, the one function that holds the network, the
// sampler and the GPU types; finally the files are written.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "sample.hpp"
#include "tim/core/cast.hpp"

namespace tim_cli {

namespace fs = std::filesystem;

tim::SampleRequest sample_request(const SampleOptions& o) {
  tim::SampleRequest request;
  if (given(o.steps_option)) request.steps = o.steps;
  if (given(o.cfg_option)) request.cfg_scale = o.cfg_scale;
  if (given(o.guidance_low_option)) request.guidance_low = o.guidance_low;
  if (given(o.guidance_high_option)) request.guidance_high = o.guidance_high;
  if (given(o.stochasticity_option)) request.stochasticity = o.stochasticity;
  if (given(o.t_max_option)) request.t_max = o.t_max;
  if (given(o.t_min_option)) request.t_min = o.t_min;
  if (!o.transport.empty()) request.transport = o.transport;
  if (!o.mode.empty()) request.mode = o.mode;
  if (given(o.schedule_option)) request.schedule = o.schedule;
  if (given(o.height_option)) request.height = o.height;
  if (given(o.width_option)) request.width = o.width;
  return request;
}

namespace {

//! Fails unless the folder `path` would be written into exists (so a long run does not end in a
//! write error).
void require_parent_folder(const std::string& path, const char* option) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code error;
  tim::check(parent.empty() || fs::is_directory(parent, error), option, " '", path, "': the folder '", parent.string(),
             "' does not exist");
}

//! Checks the options that need no model, so mistakes fail before anything is loaded.
void check_sample_options(const SampleOptions& o) {
  tim::validate_sample_request(sample_request(o));  // the sampling settings, by the library's rules
  const bool grid = !o.grid_path.empty(), labels = given(o.labels_option), single_class = given(o.class_option);
  const bool captions = !o.captions_path.empty() || o.prompts.given();
  check_prompt_options(o.prompts);
  tim::check(o.captions_path.empty() || !o.prompts.given(), "--captions and --prompt/--prompts-file cannot be used "
             "together: give caption features or prompts");
  tim::check(o.vae_tile >= 0, "--vae-tile must be >= 0 latent pixels (0: untiled), got ", o.vae_tile);
  tim::check(o.vae_tile == 0 || !o.vae_path.empty(), "--vae-tile needs --vae");
  tim::check(!given(o.vae_overlap_option) || o.vae_tile > 0, "--vae-overlap needs --vae-tile");
  tim::check(o.vae_tile == 0 || (o.vae_overlap >= 0 && o.vae_overlap < o.vae_tile), "--vae-overlap must be in [0, ",
             "--vae-tile) = [0, ", o.vae_tile, "), got ", o.vae_overlap);
  // What to sample: labels or classes (class-conditional models), captions (text-to-image models).
  tim::check(!(labels && single_class), "--labels and --class cannot be used together: give a list or one class");
  tim::check(!(captions && (labels || single_class)), "--captions cannot be combined with --labels or --class: a "
             "text-to-image model draws one sample per caption, a class-conditional one per label");
  tim::check(!given(o.num_option) || single_class, "--num needs --class (the class to draw --num samples of)");
  tim::check(!given(o.num_option) || o.num >= 1, "--num must be at least 1, got ", o.num);
  tim::check(!given(o.per_class_option) || grid, "--per-class needs --grid");
  tim::check(!given(o.per_class_option) || !captions,
             "--per-class cannot be used with --captions: the grid shows one sample per caption");
  tim::check(o.per_class >= 1, "--per-class must be at least 1, got ", o.per_class);
  if (grid && !captions)
    tim::check(!labels && !single_class && o.noise_path.empty(), "--grid samples every class itself; "
               "it cannot be combined with --labels, --class or --noise");
  if (!o.noise_path.empty()) {
    tim::check(labels || single_class || captions,
               "--noise needs --labels (one label per noise sample), --class or --captions");
    tim::check(!given(o.num_option), "--num cannot be used with --noise: the batch size is the noise's");
  }
  tim::check(grid || labels || single_class || captions,
             "nothing to sample: give --labels 1,2,3, --class K [--num N] or --grid OUT.png (class-conditional "
             "models), or --captions FEATS.safetensors (text-to-image models)");
  // What to write.
  tim::check(!o.out_path.empty() || !o.png_dir.empty() || grid,
             "no output: give --out OUT.safetensors, --png-dir DIR or --grid OUT.png");
  tim::check(!o.trajectory || !o.out_path.empty(), "--trajectory needs --out (the trajectory is stored there)");
  if (!o.out_path.empty()) require_parent_folder(o.out_path, "--out");
  if (grid) require_parent_folder(o.grid_path, "--grid");
}

//! Shows "step i/N" on stderr while sampling, only when stderr is a terminal.
struct Progress {
  bool enabled = ::isatty(::fileno(stderr)) != 0;
  Clock::time_point start = Clock::now();

  bool operator()(const tim::StepInfo<>& info) const {
    if (!enabled) return true;
    std::fprintf(stderr, "\rtim sample: step %d/%d  t %.4g -> %.4g%s  %.1f s\033[K", info.step + 1, info.steps,
                 info.t, info.r, info.guided ? " (guided)" : "", seconds_since(start));
    if (info.step + 1 == info.steps) std::fputc('\n', stderr);
    std::fflush(stderr);
    return true;
  }
  //! The same line without the step's times (a GPU run reports only its position).
  bool operator()(int step, int steps) const {
    if (!enabled) return true;
    std::fprintf(stderr, "\rtim sample: step %d/%d  %.1f s\033[K", step + 1, steps, seconds_since(start));
    if (step + 1 == steps) std::fputc('\n', stderr);
    std::fflush(stderr);
    return true;
  }
};

//! What the plan needs to know of the loaded model (no weights).
struct ModelFacts {
  const tim::nn::BackboneConfig* config = nullptr;
  bool text = false;             // a text-to-image model
  std::int64_t num_classes = 0;  // class-conditional models
  std::int64_t caption_dim = 0;  // text-to-image models
  std::string device;            // for the parameters: "cpu, float32", or the GPU and --precision
};

//! Everything decided before sampling.
struct SamplePlan {
  tim::SampleSettings settings;
  std::optional<CaptionFeatures> captions;
  SampleBatch batch;
  tim::Tensor<std::int64_t> labels;                             // (B), empty for a text-to-image model
  std::vector<std::pair<std::string, std::string>> parameters;  // the safetensors metadata and PNG text
  std::vector<std::string> class_names;
  std::int64_t num_classes = 0;  // class-conditional models
};

//! Plans the run once the model is known: the settings (option, else the model's metadata, else
//! the default), what the model samples (labels or captions), the batch and noise, and every
//! generation parameter. Fails, before anything is written, on whatever does not fit the model.
SamplePlan plan_sample(const SampleOptions& options, const std::string& model_path, const ModelFacts& model,
                       const std::map<std::string, std::string>& metadata) {
  SamplePlan plan;
  plan.settings = tim::resolve_sample_settings(sample_request(options), metadata);
  const tim::SampleSettings& s = plan.settings;

  // A class-conditional model samples labels, a text-to-image one captions.
  if (model.text) {
    const char* given_instead = given(options.labels_option)  ? "--labels"
                                : given(options.class_option) ? "--class"
                                                              : "a class --grid";
    tim::check(!options.captions_path.empty() || options.prompts.given(), model_path, " is a text-to-image (T2I) TiM: "
               "it samples from prompts or caption features, not from ", given_instead, "; give --text-encoder DIR "
               "--prompt TEXT, or --captions FEATS.safetensors (cap_feats [B, M, cap_dim], and null_cap_feats "
               "[1, M, cap_dim] for guidance; tim encode writes them)");
    plan.captions = options.prompts.given() ? captions_from_prompts(options, model.caption_dim)
                                            : read_captions(options.captions_path, model.caption_dim);
    tim::check(s.cfg_scale.value <= 1 || !plan.captions->null_cap_feats.empty_tensor(), "--cfg-scale ",
               tim::shortest_decimal(s.cfg_scale.value), " needs the null caption for guidance, but the --captions "
               "file '", options.captions_path, "' has no tensor 'null_cap_feats' [1, M, cap_dim] "
               "(tools/caption_features.py writes it: the features of the empty caption)");
  } else {
    tim::check(options.captions_path.empty() && !options.prompts.given(), "--captions and --prompt need a "
               "text-to-image model; ", model_path,
               " is a class-conditional (C2I) TiM: give --labels, --class or --grid");
    plan.class_names = class_names_of(metadata, model.num_classes);
    plan.num_classes = model.num_classes;
  }

  // Images: the latents themselves (1 or 3 channels), or what --vae decodes them into.
  const auto& c = *model.config;
  const bool images = !options.png_dir.empty() || !options.grid_path.empty();
  tim::check(!images || !options.vae_path.empty() || c.in_channels == 1 || c.in_channels == 3,
             "PNG output (--png-dir, --grid) needs latents with 1 (gray) or 3 (RGB) channels; this model's have ",
             c.in_channels, ", which need a VAE decoder to become images: give --vae "
             "diffusion_pytorch_model.safetensors (docs/vae.md)");

  const std::optional<std::int64_t> caption_count =
      plan.captions ? std::optional<std::int64_t>(plan.captions->cap_feats.dim(0)) : std::nullopt;
  plan.batch = make_batch(options, c, model.num_classes, caption_count, s);
  plan.labels = tim::Tensor<std::int64_t>::empty({static_cast<std::int64_t>(plan.batch.labels.size())});
  std::copy(plan.batch.labels.begin(), plan.batch.labels.end(), plan.labels.data());

  // Every generation parameter, for the safetensors metadata and the PNG text chunks.
  std::string indices_text;
  for (std::size_t b = 0; b < plan.batch.sample_indices.size(); ++b) {
    if (b > 0) indices_text += ',';
    indices_text += std::to_string(plan.batch.sample_indices[b]);
  }
  plan.parameters = {
      {"model", model_path},
      {"steps", std::to_string(s.steps.value)},
      {"cfg_scale", tim::shortest_decimal(s.cfg_scale.value)},
      {"guidance_low", tim::shortest_decimal(s.guidance_low.value)},
      {"guidance_high", tim::shortest_decimal(s.guidance_high.value)},
      {"stochasticity", tim::shortest_decimal(s.stochasticity.value)},
      {"seed", std::to_string(options.seed)},
      {"first_sample_index", std::to_string(options.first_index)},
      {"sample_indices", indices_text},
      {"transport", std::string(tim::transport_name(s.transport.value))},
      {"t_max", tim::shortest_decimal(s.t_max.value)},
      {"t_min", tim::shortest_decimal(s.t_min.value)},
      {"schedule", s.schedule.value.describe()},
      {"mode", std::string(tim::sample_mode_name(s.mode.value))},
      {"noise", plan.batch.noise_source},
      {"height", std::to_string(plan.batch.noise.dim(2))},
      {"width", std::to_string(plan.batch.noise.dim(3))},
      {"device", model.device},
      {"tim_version", tim::version_string},
  };
  if (!options.model.config_path.empty())
    plan.parameters.insert(plan.parameters.begin() + 1, {"config", options.model.config_path});
  if (model.text && options.prompts.given()) {
    plan.parameters.insert(plan.parameters.begin() + 1, {"text_encoder", options.prompts.text_encoder});
    plan.parameters.insert(plan.parameters.begin() + 2, {"caption_batching", options.prompts.caption_batching});
  } else if (model.text) {
    plan.parameters.insert(plan.parameters.begin() + 1, {"captions", options.captions_path});
  }

  if (options.compute.verbose)  // where each setting came from
    for (const auto& [key, value] : s.describe()) std::cerr << "tim sample: " << key << " " << value << '\n';
  return plan;
}

//! Creates --png-dir; called just before sampling, so a failure before leaves nothing behind.
void create_png_dir(const SampleOptions& options) {
  if (options.png_dir.empty()) return;
  std::error_code error;
  fs::create_directories(options.png_dir, error);
  tim::check(fs::is_directory(options.png_dir, error), "--png-dir '", options.png_dir, "': cannot create the folder",
             error ? ": " + error.message() : std::string());
}

//! What load_sample_decode hands back.
struct SampleOutcome {
  SamplePlan plan;
  tim::SampleResult<> result;   // the state in double: x, and trajectory and times when kept
  tim::Tensor<float> latents;   // result.x in float
  tim::Tensor<float> decoded;   // the --vae images (B, 3, H, W); empty without --vae
  std::string vae_description;  // empty without --vae
  bool decoded_on_gpu = false;
  std::string device_words;     // for --verbose: "N threads", or the GPU and --precision
  double load_seconds = 0, sample_seconds = 0, decode_seconds = 0;
};

//! The only code of `tim sample` that touches the network, the sampler and the GPU types
//! (tim_cli::CudaModel, tim_cli::CudaVaeDecoder): loads the model on the CPU, or with
//! --device cuda on the GPU; lets plan_sample decide the rest; loads the --vae decoder (uploaded
//! to the GPU with --device cuda); creates --png-dir; samples; decodes the latents.
SampleOutcome load_sample_decode(const SampleOptions& options, const ModelOptions& model_options,
                                 Clock::time_point start) {
  // Any TiM: on the CPU in float, with --device cuda on the GPU in --precision.
  const bool cuda = options.compute.cuda();
  std::optional<LoadedModel> loaded;
  std::optional<tim_cli::CudaModel> gpu;
  if (cuda)
    gpu.emplace(load_cuda_model(model_options, options.compute.precision));
  else
    loaded.emplace(load_model(model_options));
  ModelFacts facts;
  facts.config = cuda ? &gpu->config() : &loaded->backbone();
  facts.text = cuda ? gpu->text_to_image() : loaded->text_to_image();
  if (facts.text)
    facts.caption_dim = cuda ? gpu->t2i_config().caption_dim : std::get<T2IModel>(loaded->model).config.caption_dim;
  else
    facts.num_classes = cuda ? gpu->c2i_config().num_classes : std::get<C2IModel>(loaded->model).config.num_classes;
  facts.device = cuda ? gpu->device() + ", " + options.compute.precision : std::string("cpu, float32");
  const auto metadata = tim::io::SafetensorsFile::open(model_options.model_path).metadata();
  const double model_seconds = seconds_since(start);

  SampleOutcome outcome;
  outcome.plan = plan_sample(options, model_options.model_path, facts, metadata);
  const SamplePlan& plan = outcome.plan;
  const tim::SampleSettings& s = plan.settings;

  // The decoder, loaded (and checked against the model) before anything is sampled.
  const auto vae_start = Clock::now();
  HostVae vae;
  std::optional<tim_cli::CudaVaeDecoder> gpu_vae;
  if (!options.vae_path.empty()) {
    vae = load_vae(options.vae_path, *facts.config, {.tile = options.vae_tile, .overlap = options.vae_overlap});
    if (cuda) {  // the weights now live on the GPU: drop the host copy (637 MB for the DC-AE)
      try {
        gpu_vae = vae.sd ? tim_cli::CudaVaeDecoder::upload(*vae.sd) : tim_cli::CudaVaeDecoder::upload(*vae.dc);
      } catch (const tim::Error& e) {
        tim::fail("--vae '", options.vae_path, "': ", e.what());
      }
      vae.drop_weights();
    }
  }
  outcome.vae_description = vae.description;
  outcome.load_seconds = model_seconds + seconds_since(vae_start);  // the model and the decoder, not the plan
  create_png_dir(options);

  const auto sample_start = Clock::now();
  const tim::SamplerOptions<> sampler_options{.cfg_scale = s.cfg_scale.value,
                                              .guidance_low = s.guidance_low.value,
                                              .guidance_high = s.guidance_high.value,
                                              .stochasticity = s.stochasticity.value,
                                              .mode = s.mode.value,
                                              .seed = options.seed,
                                              .sample_indices = plan.batch.sample_indices,
                                              .keep_trajectory = options.trajectory};
  const tim::AnySchedule& schedule = s.schedule.value;
  const Progress progress;
  // One sampling run over rows of noise (and, for a T2I model, their captions and null caption).
  const auto sample_rows = [&](const tim::Tensor<double>& noise, const tim::Tensor<float>& cap_feats,
                               const tim::Tensor<float>& null_cap_feats,
                               const tim::SamplerOptions<>& run_options) -> tim::SampleResult<> {
    if (cuda) {
      // The whole run on the GPU (tim::TransitionSampler over the network on tim::cuda): the state
      // stays on the device; the progress line instead of a host on_step.
      const auto report = [progress](int step, int steps) { return progress(step, steps); };
      return facts.text ? gpu->sample(s.transport.value, schedule, noise, cap_feats, null_cap_feats, run_options, report)
                        : gpu->sample(s.transport.value, schedule, noise, plan.labels, run_options, report);
    }
    auto host_options = run_options;
    host_options.on_step = progress;
    return std::visit(
        [&](auto chosen) {
          if (facts.text) {
            auto& network = std::get<T2IModel>(loaded->model);
            if (null_cap_feats.empty_tensor())
              network.clear_null_caption();
            else
              network.set_null_caption(null_cap_feats);
            tim::TransitionSampler sampler{network, chosen, schedule};
            return sampler.sample(noise, cap_feats, host_options);
          }
          tim::TransitionSampler sampler{std::get<C2IModel>(loaded->model), chosen, schedule};
          return sampler.sample(noise, plan.labels, host_options);
        },
        s.transport.value);
  };
  if (facts.text && sample_per_prompt(options, *plan.captions))  // each prompt as if sampled alone
    outcome.result = tim::text::sample_each_prompt_alone(plan.batch.noise, plan.captions->cap_feats,
                                                         plan.captions->null_cap_feats, plan.captions->lengths,
                                                         sampler_options, sample_rows);
  else
    outcome.result = sample_rows(plan.batch.noise, facts.text ? plan.captions->cap_feats : tim::Tensor<float>{},
                                 facts.text ? plan.captions->null_cap_feats : tim::Tensor<float>{}, sampler_options);
  outcome.sample_seconds = seconds_since(sample_start);
  outcome.latents = tim::cast<float>(outcome.result.x);

  const auto decode_start = Clock::now();
  if (gpu_vae) {
    outcome.decoded = decode_each(outcome.latents, [&](const tim::Tensor<float>& one) {
      return gpu_vae->decode(one, vae.tiles);
    });
    outcome.decoded_on_gpu = true;
  } else if (!vae.empty()) {
    outcome.decoded = decode_each(outcome.latents, [&](const tim::Tensor<float>& one) { return vae.decode_one(one); });
  }
  outcome.decode_seconds = seconds_since(decode_start);
  outcome.device_words = cuda ? gpu->device() + " in " + options.compute.precision
                              : std::to_string(tim::num_threads()) + " threads";
  return outcome;
}

void run_sample(const SampleOptions& options) {
  apply_threads(options.compute);
  check_compute_options(options.compute);
  check_sample_options(options);

  const auto start = Clock::now();
  ModelOptions model_options = options.model;
  if (model_options.model_path.empty()) model_options.model_path = default_model_path();
  const std::string& model_path = model_options.model_path;
  for (const auto* out : {&options.out_path, &options.grid_path})
    tim::check(out->empty() || (!same_file(*out, model_path) && !same_file(*out, options.noise_path) &&
                                !same_file(*out, options.captions_path)),
               "'", *out, "' would overwrite the model, the noise or the captions file");

  const SampleOutcome outcome = load_sample_decode(options, model_options, start);
  const SamplePlan& plan = outcome.plan;
  const bool text = plan.captions.has_value();
  const bool decoded = !outcome.vae_description.empty();
  auto parameters = plan.parameters;
  if (decoded) {
    parameters.insert(parameters.begin() + 1, {"vae", options.vae_path});
    parameters.insert(parameters.begin() + 2, {"vae_config", outcome.vae_description});
  }

  if (!options.out_path.empty()) {
    tim::io::SafetensorsWriter writer;
    writer.add("latents", outcome.latents);
    if (decoded) writer.add("images", outcome.decoded);
    if (!text) writer.add("labels", plan.labels);
    if (options.trajectory) {
      writer.add("trajectory", tim::cast<float>(outcome.result.trajectory));
      writer.add("times", tim::DType::F64, tim::Shape{static_cast<std::int64_t>(outcome.result.times.size())},
                 outcome.result.times.data());
    }
    for (const auto& [key, value] : parameters) writer.set_metadata(key, value);
    writer.write(options.out_path);
  }
  if (!options.png_dir.empty() || !options.grid_path.empty())
    write_images(options, decoded ? outcome.decoded : outcome.latents, plan.batch, plan.class_names,
                 plan.num_classes, text ? plan.captions->texts : std::vector<std::string>{}, parameters);

  if (options.compute.verbose) {
    const auto& latents = outcome.latents;
    std::cerr << std::fixed << std::setprecision(3) << "tim sample: loaded " << model_path << " in "
              << outcome.load_seconds << " s; " << latents.dim(0) << " samples of " << latents.dim(1) << " x "
              << latents.dim(2) << " x " << latents.dim(3) << ", " << plan.settings.steps.value << " steps on "
              << outcome.device_words << " in " << outcome.sample_seconds << " s"
              << (decoded ? "; decoded to " + std::to_string(outcome.decoded.dim(2)) + " x " +
                                std::to_string(outcome.decoded.dim(3)) + " images on the " +
                                (outcome.decoded_on_gpu ? "GPU" : "CPU") + " in " +
                                tim::shortest_decimal(std::round(outcome.decode_seconds * 1000) / 1000) + " s"
                          : std::string())
              << "; total " << seconds_since(start) << " s\n";
  }
}

}  // namespace

Subcommand add_sample(CLI::App& app) {
  auto options_owner = std::make_shared<SampleOptions>();
  SampleOptions& options = *options_owner;
  auto* command = app.add_subcommand(
      "sample", "Generate latents (and images, for 1- or 3-channel models) with the any-step transition sampler");
  add_model_options(*command, options.model, ModelArgument::optional_option);
  options.steps_option = command->add_option("-n,--steps", options.steps,
                                             "Sampling steps N >= 1 (default: the model's metadata, else " +
                                                 std::to_string(tim::default_sample_steps) +
                                                 "; a listed --schedule gives its own)");
  options.cfg_option = command->add_option(
      "--cfg-scale", options.cfg_scale,
      "Classifier-free guidance scale; guidance only when > 1 (default: the model's metadata, else 1)");
  options.guidance_low_option = command->add_option(
      "--guidance-low", options.guidance_low,
      "Guidance window start, a fraction of t_max (default: the model's metadata, else 0)");
  options.guidance_high_option = command->add_option(
      "--guidance-high", options.guidance_high,
      "Guidance window end, a fraction of t_max; above 1 guides the first step too (default: the model's metadata, "
      "else 1)");
  options.stochasticity_option = command->add_option("--stochasticity", options.stochasticity,
                                                     "OT-FM stochasticity s >= 0 (default 0: deterministic)");
  command->add_option("--seed", options.seed, "Seed of the noise generator (default 0)");
  command->add_option("--first-index", options.first_index,
                      "Sample index of the first batch row: row b draws noise stream first + b (default 0)");
  options.labels_option = command->add_option("--labels", options.labels, "Class labels, one per sample: 1,2,3");
  options.class_option = command->add_option("--class", options.class_label, "One class for every sample");
  options.num_option = command->add_option("--num", options.num, "Number of samples of --class (default 1)");
  command->add_option("--captions", options.captions_path,
                      "Text-to-image models: caption features, a safetensors file with cap_feats [B,M,cap_dim] (one "
                      "sample per caption) and null_cap_feats [1,M,cap_dim] (needed for --cfg-scale > 1)");
  add_prompt_options(*command, options.prompts, /*sampling=*/true);
  command->add_option("--transport", options.transport,
                      "ot-fm, trigflow, edm, vp or ve (default: the model's metadata, else ot-fm)");
  options.t_max_option = command->add_option("--t-max", options.t_max, "Largest time (default: the transport's)");
  options.t_min_option = command->add_option("--t-min", options.t_min, "Smallest time (default: the transport's)");
  options.schedule_option =
      command->add_option("--schedule", options.schedule,
                          "linspace (default), shift:S, karras:RHO, or a decreasing list of times 1,0.5,0");
  command->add_option("--mode", options.mode,
                      "transition or diffusion (ddiffusion) (default: the model's metadata, else transition)");
  options.height_option =
      command->add_option("--height", options.height, "Latent height (default: the model's metadata)");
  options.width_option =
      command->add_option("--width", options.width, "Latent width (default: the model's metadata)");
  command->add_option("--noise", options.noise_path,
                      "Initial noise: a safetensors file with z [B,C,H,W] F32/F64 (default: generated from --seed)");
  command->add_option("-o,--out", options.out_path,
                      "Output: latents [B,C,H,W] F32, labels [B] I64 (class-conditional models) and the parameters "
                      "in __metadata__");
  command->add_flag("--trajectory", options.trajectory,
                    "Also store trajectory [N+1,B,C,H,W] F32 and times [N+1] F64 in --out");
  command->add_option("--vae", options.vae_path,
                      "Decode the latents into images with this VAE before writing --png-dir/--grid (and 'images' "
                      "into --out): a diffusion_pytorch_model.safetensors of an SD VAE (AutoencoderKL, e.g. "
                      "sd-vae-ft-ema) or a DC-AE (AutoencoderDC, e.g. dc-ae-f32c32-sana-1.1); a config.json beside "
                      "it gives norm_num_groups, attention_head_dim, decoder_in_shortcut and scaling_factor "
                      "(default: the released decoders' values). Decodes in float, on the GPU with --device cuda");
  command->add_option("--vae-tile", options.vae_tile,
                      "Decode in tiles of this many latent pixels with blended seams (bounded memory for large "
                      "images; tiles see only themselves, so the image differs slightly; docs/vae.md). Default 0: "
                      "untiled");
  options.vae_overlap_option = command->add_option("--vae-overlap", options.vae_overlap,
                      "With --vae-tile: latent pixels neighbouring tiles share, in [0, tile) (default 8)");
  command->add_option("--png-dir", options.png_dir,
                      "Write one PNG per sample and a labelled grid.png into this folder");
  command->add_option("--grid", options.grid_path,
                      "Sample --per-class images of every class and write a labelled grid PNG (with --captions: "
                      "a grid of the caption samples, 8 to a row)");
  options.per_class_option = command->add_option(
      "--per-class", options.per_class,
      "Samples per class for --grid (default " + std::to_string(default_per_class) + ")");
  add_compute_options(*command, options.compute);
  return {command, [options_owner] { run_sample(*options_owner); }};
}

}  // namespace tim_cli
