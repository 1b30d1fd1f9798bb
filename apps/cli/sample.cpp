// tim sample: latents (and images) from the any-step transition sampler (docs/cli.md,
// docs/scale.md). The run: check the options (before anything is loaded), load the model
// (tim_cli::Generator, generate.hpp) and the decoder, plan the run (plan_sample: settings, the
// run's samples, the recorded parameters), take this process's shard less what --resume finds
// written, then sample, decode and write chunk by chunk; --out and the grid at the end.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
  const bool num_per_class = given(o.num_per_class_option), random = given(o.random_labels_option),
             labels_file = !o.labels_file.empty();
  const int sources = labels + single_class + captions + grid + num_per_class + random + labels_file;
  tim::check(sources <= 1 || (grid && captions && sources == 2), "choose one of --labels, --class, --grid, "
             "--num-per-class, --random-labels, --labels-file and --captions: each says by itself what is sampled");
  tim::check(!given(o.num_option) || single_class, "--num needs --class (the class to draw --num samples of)");
  tim::check(!given(o.num_option) || o.num >= 1, "--num must be at least 1, got ", o.num);
  tim::check(!given(o.per_class_option) || grid, "--per-class needs --grid");
  tim::check(!given(o.per_class_option) || !captions,
             "--per-class cannot be used with --captions: the grid shows one sample per caption");
  tim::check(o.per_class >= 1, "--per-class must be at least 1, got ", o.per_class);
  tim::check(!num_per_class || o.num_per_class >= 1, "--num-per-class must be at least 1, got ", o.num_per_class);
  tim::check(!random || o.random_labels >= 1, "--random-labels must be at least 1 sample, got ", o.random_labels);
  tim::check(!given(o.label_seed_option) || random, "--label-seed needs --random-labels");
  tim::check(o.batch_size >= 1, "--batch-size must be at least 1 sample, got ", o.batch_size);
  if (grid && !captions)
    tim::check(o.noise_path.empty(), "--grid samples every class itself; it cannot be combined with --noise");
  if (!o.noise_path.empty()) {
    tim::check(labels || single_class || captions || labels_file,
               "--noise needs --labels or --labels-file (one label per noise sample), --class or --captions");
    tim::check(!given(o.num_option), "--num cannot be used with --noise: the batch size is the noise's");
  }
  tim::check(o.size.empty() || (!given(o.height_option) && !given(o.width_option)),
             "--size gives both the width and the height; do not add --width or --height");
  tim::check(!(given(o.latent_height_option) && given(o.height_option)) &&
                 !(given(o.latent_width_option) && given(o.width_option)) &&
                 !(o.size.size() && (given(o.latent_height_option) || given(o.latent_width_option))),
             "give a size once: in image pixels (--size, --width, --height) or in latent cells (--latent-height, "
             "--latent-width)");
  if (!o.size.empty()) parse_size(o.size);
  if (!o.shard.empty()) parse_shard(o.shard);
  if (!o.preset.empty()) {
    tim::SampleRequest ignored;
    apply_preset(o.preset, o, ignored);
  }
  // Runs at scale: what is never overwritten, and what resumes.
  tim::check(!(o.overwrite && o.resume), "--overwrite and --resume contradict each other: --overwrite replaces the "
             "PNGs already in --png-dir, --resume keeps them");
  tim::check(!o.resume || !o.png_dir.empty(), "--resume needs --png-dir (it skips the samples whose PNG is there)");
  tim::check(!o.resume || (o.out_path.empty() && o.grid_path.empty()), "--resume cannot be combined with --out or "
             "--grid: they need every sample, and the samples already written are not sampled again");
  tim::check(!o.overwrite || !o.png_dir.empty(), "--overwrite needs --png-dir");
  tim::check(sources >= 1,
             "nothing to sample: give --labels 1,2,3, --class K [--num N], --grid OUT.png, --num-per-class K, "
             "--random-labels N or --labels-file FILE (class-conditional models), or --captions FEATS.safetensors "
             "(text-to-image models)");
  // What to write.
  tim::check(!o.out_path.empty() || !o.png_dir.empty() || grid,
             "no output: give --out OUT.safetensors, --png-dir DIR or --grid OUT.png");
  tim::check(!o.trajectory || !o.out_path.empty(), "--trajectory needs --out (the trajectory is stored there)");
  if (!o.out_path.empty()) require_parent_folder(o.out_path, "--out");
  if (grid) require_parent_folder(o.grid_path, "--grid");
}

//! The progress of a whole run on stderr: on a terminal a bar redrawn after every step (samples
//! done, rate, time left); otherwise a plain line per chunk.
class RunProgress {
 public:
  //! `log_chunks`: off a terminal, a line per chunk (a run of one chunk says nothing there).
  RunProgress(std::int64_t total, std::int64_t chunks, bool log_chunks)
      : total_(total), chunks_(chunks), terminal_(::isatty(::fileno(stderr)) != 0), quiet_(!terminal_ && !log_chunks) {}

  //! During chunk `chunk` (from 0) of `size` samples, after step `step` of `steps`.
  bool step(std::int64_t chunk, std::int64_t size, int step, int steps) const {
    if (!terminal_) return true;
    const double done = static_cast<double>(done_) + static_cast<double>(size) * (step + 1) / steps;
    draw(done, chunk, " step " + std::to_string(step + 1) + "/" + std::to_string(steps));
    return true;
  }
  //! After chunk `chunk` of `size` samples.
  void chunk_done(std::int64_t chunk, std::int64_t size) {
    done_ += size;
    if (quiet_) return;
    if (terminal_) {
      draw(static_cast<double>(done_), chunk, "");
      if (done_ == total_) std::fputc('\n', stderr);
    } else {
      const double elapsed = seconds_since(start_);
      std::fprintf(stderr, "tim sample: chunk %lld/%lld: %lld/%lld samples, %.3g samples/s, %.0f s left\n",
                   static_cast<long long>(chunk + 1), static_cast<long long>(chunks_),
                   static_cast<long long>(done_), static_cast<long long>(total_), done_ / std::max(elapsed, 1e-9),
                   elapsed / done_ * (total_ - done_));
    }
    std::fflush(stderr);
  }

 private:
  void draw(double done, std::int64_t chunk, const std::string& extra) const {
    constexpr int width = 24;
    const double fraction = total_ > 0 ? done / static_cast<double>(total_) : 1;
    const int filled = static_cast<int>(fraction * width);
    const double elapsed = seconds_since(start_);
    const double rate = done / std::max(elapsed, 1e-9);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\rtim sample: [%s] %lld/%lld samples, %.3g/s, %.0f s left (chunk %lld/%lld%s)\033[K",
                 bar.c_str(), static_cast<long long>(done), static_cast<long long>(total_), rate,
                 done > 0 ? elapsed / done * (static_cast<double>(total_) - done) : 0.0,
                 static_cast<long long>(chunk + 1), static_cast<long long>(chunks_), extra.c_str());
    std::fflush(stderr);
  }

  std::int64_t total_, chunks_, done_ = 0;
  bool terminal_, quiet_;
  Clock::time_point start_ = Clock::now();
};

//! The shard of this process: --shard, else the launcher's environment, else 0/1.
LauncherRank shard_of(const SampleOptions& options) {
  LauncherRank rank = launcher_rank([](const char* name) { return std::getenv(name); });
  if (!options.shard.empty()) rank.shard = parse_shard(options.shard);
  return rank;
}

//! "out.safetensors" as shard K of N writes it: "out.shard-K-of-N.safetensors".
std::string shard_path(const std::string& path, const Shard& shard) {
  if (shard.count == 1) return path;
  const fs::path p(path);
  return (p.parent_path() / (p.stem().string() + ".shard-" + std::to_string(shard.index) + "-of-" +
                             std::to_string(shard.count) + p.extension().string()))
      .string();
}

//! Creates --png-dir; called just before sampling, so a failure before leaves nothing behind.
void create_png_dir(const SampleOptions& options) {
  if (options.png_dir.empty()) return;
  std::error_code error;
  fs::create_directories(options.png_dir, error);
  tim::check(fs::is_directory(options.png_dir, error), "--png-dir '", options.png_dir, "': cannot create the folder",
             error ? ": " + error.message() : std::string());
}

//! Copies sample b of `from` (B, ...) into row `row` of `to`.
template <class T>
void copy_row(const tim::Tensor<T>& from, std::int64_t b, tim::Tensor<T>& to, std::int64_t row) {
  const std::int64_t per = from.numel() / from.dim(0);
  std::copy_n(from.data() + b * per, per, to.data() + row * per);
}

void run_sample(const SampleOptions& options) {
  apply_threads(options.compute);
  check_compute_options(options.compute, /*cpu_network=*/true);
  check_sample_options(options);
  const LauncherRank rank = shard_of(options);
  const Shard& shard = rank.shard;
  tim::check(shard.count == 1 || options.grid_path.empty(), "--grid needs every sample in one process, but this is "
             "shard ", shard.index, "/", shard.count, " (", shard.source, "); write --png-dir from each shard instead");
  if (options.compute.cuda()) {  // each rank on its own GPU: --gpu, else the local rank modulo the devices
    const int devices = cuda_device_count();
    tim::check(devices >= 1, "--device cuda: no CUDA device is visible");
    const int gpu = given(options.gpu_option) ? options.gpu : static_cast<int>(rank.local_rank % devices);
    tim::check(gpu >= 0 && gpu < devices, "--gpu ", gpu, ": ", devices, " CUDA devices are visible (0..",
               devices - 1, ")");
    use_cuda_device(gpu);
  } else {
    tim::check(!given(options.gpu_option), "--gpu needs --device cuda");
  }

  const auto start = Clock::now();
  ModelOptions model_options = options.model;
  if (model_options.model_path.empty()) model_options.model_path = default_model_path();
  const std::string& model_path = model_options.model_path;
  const std::string out_path = options.out_path.empty() ? std::string() : shard_path(options.out_path, shard);
  for (const auto* out : {&out_path, &options.grid_path})
    tim::check(out->empty() || (!same_file(*out, model_path) && !same_file(*out, options.noise_path) &&
                                !same_file(*out, options.captions_path)),
               "'", *out, "' would overwrite the model, the noise or the captions file");

  const Generator model = Generator::load(model_options, options.compute);
  const double model_seconds = seconds_since(start);

  // The decoder, loaded (and checked against the model) before anything is planned or sampled.
  const auto vae_start = Clock::now();
  const bool cuda = model.cuda();
  HostVae vae;
  std::optional<tim_cli::CudaVaeDecoder> gpu_vae;
  if (!options.vae_path.empty()) {
    vae = load_vae(options.vae_path, model.config().in_channels, {.tile = options.vae_tile, .overlap = options.vae_overlap});
    if (cuda) {  // the weights now live on the GPU: drop the host copy (637 MB for the DC-AE)
      try {
        gpu_vae = std::visit([](const auto& d) { return tim_cli::CudaVaeDecoder::upload(d); }, vae.decoder->decoder);
      } catch (const tim::Error& e) {
        tim::fail("--vae '", options.vae_path, "': ", e.what());
      }
      vae.drop_weights();
    }
  }
  const double load_seconds = model_seconds + seconds_since(vae_start);
  const bool decoded = !vae.empty();

  SamplePlan plan = plan_sample(options, model_path, model, decoded ? vae.scale : 1);
  const tim::SampleSettings& s = plan.settings;
  const bool text = plan.captions.has_value();
  const bool per_prompt = text && sample_per_prompt(options, *plan.captions);
  tim::check(!per_prompt || !options.trajectory, "--trajectory with prompts needs --caption-batching released: "
             "per-prompt batching samples the prompts in groups by length and keeps no trajectory");
  if (decoded) {
    plan.parameters.insert(plan.parameters.begin() + 1, {"vae", options.vae_path});
    plan.parameters.insert(plan.parameters.begin() + 2, {"vae_config", vae.description});
    plan.record.settings["vae"] = options.vae_path;
    plan.record.settings["vae_config"] = vae.description;
  }

  // This process's part of the run, without what --resume finds written.
  const auto& all = plan.run.samples;
  const auto total = static_cast<std::uint64_t>(all.size());
  std::vector<std::size_t> todo;  // positions in the run
  for (std::uint64_t p = shard.begin(total); p < shard.end(total); ++p) todo.push_back(static_cast<std::size_t>(p));
  const bool png_dir = !options.png_dir.empty();
  const auto png_path = [&](std::size_t p) {
    return (fs::path(options.png_dir) / sample_file_name(all[p], plan.run.shared_indices)).string();
  };
  std::size_t skipped = 0;
  if (png_dir) {
    std::vector<std::size_t> missing;
    std::vector<std::string> existing;
    std::error_code error;
    for (const auto p : todo) {
      if (!fs::exists(png_path(p), error)) missing.push_back(p);
      else existing.push_back(png_path(p));
    }
    const std::string grid_png = (fs::path(options.png_dir) / "grid.png").string();
    if (shard.count == 1 && !options.resume && fs::exists(grid_png, error)) existing.push_back(grid_png);
    if (!existing.empty() && !options.overwrite && !options.resume)
      tim::fail("--png-dir '", options.png_dir, "': '", fs::path(existing.front()).filename().string(),
                "' already exists", existing.size() > 1 ? " (and " + std::to_string(existing.size() - 1) + " more)" : "",
                "; pass --overwrite to replace them, or --resume to keep them and write only the missing samples");
    if (options.resume) {
      skipped = todo.size() - missing.size();
      todo = std::move(missing);
    }
  }
  // A grid.png in --png-dir when this process makes every sample of the run (not when resuming).
  const bool dir_grid = png_dir && shard.count == 1 && !options.resume;
  const bool keep_images = !options.grid_path.empty() || dir_grid;
  tim::check(!options.trajectory || todo.size() <= static_cast<std::size_t>(options.batch_size),
             "--trajectory keeps every state of every sample: the run's ", todo.size(), " samples need one chunk, "
             "so give --batch-size ", todo.size(), " or more");
  if (shard.count > 1 || skipped > 0)
    std::cerr << "tim sample: " << (shard.count > 1 ? "shard " + std::to_string(shard.index) + "/" +
                                                          std::to_string(shard.count) + " (" + shard.source + "): "
                                                    : std::string())
              << "samples " << shard.begin(total) << ".." << shard.end(total) << " of " << total << " in run order"
              << (skipped > 0 ? ", " + std::to_string(skipped) + " already written (--resume)" : std::string()) << '\n';
  create_png_dir(options);

  // What --out holds: every sample of this process, in run order.
  const auto& c = model.config();
  tim::Tensor<float> all_latents, all_images;
  tim::Tensor<std::int64_t> all_labels;
  tim::SampleResult<> kept;  // the trajectory of a one-chunk run
  std::vector<tim::io::PngImage> grid_images;
  std::vector<std::int64_t> grid_labels;
  std::vector<std::uint64_t> non_finite;
  const auto count = static_cast<std::int64_t>(todo.size());
  const std::int64_t chunk_size = options.batch_size;
  const std::int64_t chunks = (count + chunk_size - 1) / chunk_size;
  RunProgress progress(count, chunks, /*log_chunks=*/chunks > 1);
  double sample_seconds = 0, decode_seconds = 0;
  std::int64_t image_h = 0, image_w = 0;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    const std::int64_t first = chunk * chunk_size, size = std::min(chunk_size, count - first);
    std::vector<SampleSpec> specs;
    for (std::int64_t i = 0; i < size; ++i) specs.push_back(all[todo[static_cast<std::size_t>(first + i)]]);
    tim::Tensor<double> noise;
    if (plan.run.noise) {
      noise = tim::Tensor<double>::empty({size, c.in_channels, plan.run.noise->dim(2), plan.run.noise->dim(3)});
      for (std::int64_t i = 0; i < size; ++i)
        copy_row(*plan.run.noise, static_cast<std::int64_t>(todo[static_cast<std::size_t>(first + i)]), noise, i);
    } else {
      noise = initial_noise_of(specs, options.seed, c, s);
    }
    const auto sample_start = Clock::now();
    const StepReport report = [&](int step, int steps) { return progress.step(chunk, size, step, steps); };
    tim::SampleResult<> result;
    if (text && !plan.captions->lengths.empty()) {
      result = generate_captioned(model, s, options.seed, specs, noise, report, *plan.captions, per_prompt,
                                  options.trajectory);
    } else {
      result = model.generate(s, options.seed, specs, noise, report, options.trajectory,
                              text ? plan.captions->cap_feats : tim::Tensor<float>{},
                              text ? plan.captions->null_cap_feats : tim::Tensor<float>{});
    }
    sample_seconds += seconds_since(sample_start);
    const tim::Tensor<float> latents = tim::cast<float>(result.x);
    const auto decode_start = Clock::now();
    tim::Tensor<float> images;
    if (gpu_vae)
      images = decode_each(latents, [&](const tim::Tensor<float>& one) { return gpu_vae->decode(one, vae.tiles); });
    else if (decoded)
      images = decode_each(latents, [&](const tim::Tensor<float>& one) { return vae.decode_one(one); });
    decode_seconds += seconds_since(decode_start);
    const tim::Tensor<float>& pictures = decoded ? images : latents;
    image_h = pictures.dim(2);
    image_w = pictures.dim(3);

    if (!out_path.empty()) {
      if (chunk == 0) {
        all_latents = tim::Tensor<float>::empty({count, latents.dim(1), latents.dim(2), latents.dim(3)});
        if (decoded) all_images = tim::Tensor<float>::empty({count, images.dim(1), images.dim(2), images.dim(3)});
        all_labels = tim::Tensor<std::int64_t>::empty({count});
      }
      for (std::int64_t i = 0; i < size; ++i) {
        copy_row(latents, i, all_latents, first + i);
        if (decoded) copy_row(images, i, all_images, first + i);
        all_labels.data()[first + i] = specs[static_cast<std::size_t>(i)].label;
      }
      if (options.trajectory) kept = std::move(result);
    }
    const std::int64_t per_image = pictures.numel() / size;
    for (std::int64_t i = 0; i < size; ++i) {
      const SampleSpec& spec = specs[static_cast<std::size_t>(i)];
      const float* values = pictures.data() + i * per_image;
      const float* raw = latents.data() + i * (latents.numel() / size);
      const bool finite = std::all_of(values, values + per_image, [](float v) { return std::isfinite(v); }) &&
                          std::all_of(raw, raw + latents.numel() / size, [](float v) { return std::isfinite(v); });
      if (!finite) non_finite.push_back(spec.index);
      if (!png_dir && !keep_images) continue;
      const tim::io::PngImage image = sample_image(pictures, i, text);
      if (keep_images) {
        grid_images.push_back(image);
        if (!text) grid_labels.push_back(spec.label);
      }
      if (!png_dir || !finite) continue;  // never a black image for NaN: reported below instead
      SampleRecord record;
      record.index = spec.index;
      if (text) {
        record.caption_row = spec.caption;
        const auto& texts = plan.captions->texts;
        if (!texts.empty()) record.prompt = truncated(texts[static_cast<std::size_t>(spec.caption)], 1000);
      } else {
        record.label = spec.label;
        record.prompt = class_label_text(spec.label, plan.class_names, plan.num_classes);
      }
      tim::io::write_png(png_path(todo[static_cast<std::size_t>(first + i)]), image,
                         sample_png_text(plan.record, record, image_w, image_h));
    }
    progress.chunk_done(chunk, size);
  }

  if (!out_path.empty() && count > 0) {
    tim::io::SafetensorsWriter writer;
    writer.add("latents", all_latents);
    if (decoded) writer.add("images", all_images);
    if (!text) writer.add("labels", all_labels);
    if (options.trajectory) {
      writer.add("trajectory", tim::cast<float>(kept.trajectory));
      writer.add("times", tim::DType::F64, tim::Shape{static_cast<std::int64_t>(kept.times.size())},
                 kept.times.data());
    }
    std::string indices_text;
    for (std::size_t i = 0; i < todo.size(); ++i) indices_text += (i ? "," : "") + std::to_string(all[todo[i]].index);
    for (const auto& [key, value] : plan.parameters) writer.set_metadata(key, value);
    writer.set_metadata("sample_indices", indices_text);
    if (shard.count > 1)
      writer.set_metadata("shard", std::to_string(shard.index) + "/" + std::to_string(shard.count));
    writer.write(out_path);
  }
  if (options.compute.verbose) {
    std::cerr << std::fixed << std::setprecision(3) << "tim sample: loaded " << model_path << " in " << load_seconds
              << " s; " << count << " samples of " << c.in_channels << " x "
              << plan.record.settings["latent_height"] << " x " << plan.record.settings["latent_width"] << ", "
              << s.steps.value << " steps in " << chunks << " chunks on " << model.device_words() << " in "
              << sample_seconds << " s"
              << (decoded ? "; decoded to " + std::to_string(image_h) + " x " + std::to_string(image_w) +
                                " images on the " + (gpu_vae ? "GPU" : "CPU") + " in " +
                                tim::shortest_decimal(std::round(decode_seconds * 1000) / 1000) + " s"
                          : std::string())
              << "; total " << seconds_since(start) << " s\n";
  }
  if (!non_finite.empty()) {
    std::string list;
    for (std::size_t i = 0; i < non_finite.size() && i < 20; ++i) list += (i ? ", " : "") + std::to_string(non_finite[i]);
    if (non_finite.size() > 20) list += ", ... (" + std::to_string(non_finite.size()) + " in all)";
    tim::fail(non_finite.size(), " of ", count, " samples came out with NaN or Inf values (sample indices ", list,
              "); their PNGs were not written", out_path.empty() ? "" : " (--out holds their values as they are)",
              ". Lower --cfg-scale or --stochasticity, or check the model and the decoder");
  }
  if (keep_images && !grid_images.empty()) {
    const auto grid = grid_image(grid_images, grid_labels, plan.class_names, plan.num_classes);
    const auto grid_text = grid_png_text(plan.record, image_w, image_h);
    if (!options.grid_path.empty()) tim::io::write_png(options.grid_path, grid, grid_text);
    if (dir_grid) tim::io::write_png((fs::path(options.png_dir) / "grid.png").string(), grid, grid_text);
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
  options.height_option = command->add_option(
      "--height", options.height,
      "Image height in pixels: with --vae a multiple of the decoder's scale (8 for the SD VAE, 32 for the DC-AE), "
      "without one the latent height (default: the model's metadata)");
  options.width_option = command->add_option("--width", options.width,
                                             "Image width in pixels, as --height (default: the model's metadata)");
  command->add_option("--size", options.size, "Image size WIDTHxHEIGHT in pixels, e.g. 256x256 (as --width and "
                      "--height)");
  options.latent_height_option = command->add_option("--latent-height", options.latent_height,
                                                     "Latent height in latent cells (instead of --height)");
  options.latent_width_option = command->add_option("--latent-width", options.latent_width,
                                                    "Latent width in latent cells (instead of --width)");
  command->add_option("--preset", options.preset,
                      "A released recipe for the settings not given: c2i-1step (1 step, cfg 1), c2i-250step (250 "
                      "steps, cfg 2.5 on [0, 0.6], stochasticity 0.2) or t2i (cfg 2.5)");
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
  // Runs at scale (docs/scale.md).
  options.batch_size_option = command->add_option(
      "--batch-size", options.batch_size,
      "Samples per chunk: the run goes in chunks of this many, memory bounded by one chunk (default " +
          std::to_string(default_batch_size) + "). On the CPU every sample's result is the same whatever the chunk");
  command->add_flag("--overwrite", options.overwrite, "Replace PNGs already in --png-dir (default: refuse to start)");
  command->add_flag("--resume", options.resume,
                    "Keep the PNGs already in --png-dir and sample only the missing ones (a killed run continues)");
  options.num_per_class_option = command->add_option(
      "--num-per-class", options.num_per_class, "Sample K of every class, class by class (e.g. 50 for an FID run)");
  options.random_labels_option = command->add_option(
      "--random-labels", options.random_labels,
      "Sample N samples of uniformly random classes; sample index i gets its class from (--label-seed, i)");
  options.label_seed_option =
      command->add_option("--label-seed", options.label_seed, "Seed of --random-labels (default 0)");
  command->add_option("--labels-file", options.labels_file,
                      "Class labels from a text file, one per sample (separated by spaces, commas or new lines; # "
                      "comments)");
  command->add_option("--shard", options.shard,
                      "Make shard K of N of the run (K from 0): its contiguous part of the sample positions. Default: "
                      "from the launcher (mpirun, srun, torchrun: OMPI_COMM_WORLD_RANK/SIZE, SLURM_PROCID/NTASKS, "
                      "RANK/WORLD_SIZE), else 0/1");
  options.gpu_option = command->add_option(
      "--gpu", options.gpu, "With --device cuda: the GPU to use (default: the launcher's local rank modulo the GPUs)");
  add_compute_options(*command, options.compute);
  return {command, [options_owner] { run_sample(*options_owner); }};
}

}  // namespace tim_cli
