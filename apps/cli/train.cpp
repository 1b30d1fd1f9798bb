// tim train: trains a class-conditional TiM with the released objective (tim/train/objective.hpp),
// AdamW, gradient clipping, the EMA, checkpoints that `tim sample` loads and a bit-exact
// --resume (docs/training.md, "tim train"; the settings: train_config.hpp).
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "tim/core/random.hpp"
#include "tim/train/checkpoint.hpp"
#include "tim/train/init.hpp"
#include "tim/train/loader.hpp"
#include "tim/train/objective.hpp"
#include "tim/train/run_log.hpp"
#include "train_config.hpp"

namespace tim_cli {

namespace train_command {

//! The `step` word of the noise streams z ("NOIS"): row b of step s draws the C H W normals of
//! the stream (seed, sample = s B + b, step = noise_stream), its global sample index. The time
//! pairs and label dropout draw from (seed, b, s) (objective.hpp), the data order from "ORDR"
//! and the initialisation from "INIT": four different streams.
constexpr std::uint32_t noise_stream = 0x4E4F4953u;

//! The flags that override the YAML (each optional: not given, the YAML or the default holds).
struct Flags {
  std::string config_path, resume_dir, out_dir, log_path, data_source, data_dir, split, lr_schedule, export_dtype,
      baseline, weight_time, weight_transform;
  std::optional<double> time_budget_seconds, time_budget_minutes, lr, beta1, beta2, adam_eps, weight_decay, grad_clip,
      ema_decay, mlp_ratio, p_mean, p_std, diffusion_ratio, consistency_ratio, dde_epsilon, label_dropout, enhance_w_gt,
      enhance_w_cond;
  std::vector<double> enhance_window;
  std::optional<std::int64_t> max_steps, checkpoint_every, log_every, batch, warmup_steps, hidden, depth, heads, patch,
      adaln_hidden, seed;
  std::optional<int> threads;
  bool no_adaptive_weight = false, directional_loss = false, no_directional_loss = false, quiet = false;
};

void apply_flags(const Flags& f, TrainSettings& s) {
  const auto set = [](auto& out, const auto& in) {
    if (in) out = static_cast<std::decay_t<decltype(out)>>(*in);
  };
  set(s.time_budget_seconds, f.time_budget_seconds);
  if (f.time_budget_minutes) s.time_budget_seconds = *f.time_budget_minutes * 60.0;
  set(s.max_steps, f.max_steps);
  set(s.checkpoint_every, f.checkpoint_every);
  set(s.log_every, f.log_every);
  set(s.batch, f.batch);
  set(s.warmup_steps, f.warmup_steps);
  set(s.hidden, f.hidden);
  set(s.depth, f.depth);
  set(s.heads, f.heads);
  set(s.patch, f.patch);
  set(s.adaln_hidden, f.adaln_hidden);
  set(s.mlp_ratio, f.mlp_ratio);
  if (f.seed) {
    tim::check(*f.seed >= 0, "--seed must be >= 0, got ", *f.seed);
    s.seed = static_cast<std::uint64_t>(*f.seed);
  }
  set(s.threads, f.threads);
  set(s.lr, f.lr);
  set(s.beta1, f.beta1);
  set(s.beta2, f.beta2);
  set(s.adam_eps, f.adam_eps);
  set(s.weight_decay, f.weight_decay);
  set(s.grad_clip, f.grad_clip);
  set(s.ema_decay, f.ema_decay);
  if (!f.lr_schedule.empty()) s.lr_schedule = f.lr_schedule;
  if (!f.export_dtype.empty()) s.export_dtype = f.export_dtype;
  if (!f.data_source.empty()) s.data_source = f.data_source;
  if (!f.data_dir.empty()) s.data_path = f.data_dir;
  if (!f.split.empty()) s.split = f.split;
  if (!f.log_path.empty()) s.log_path = f.log_path;
  // The objective (the YAML's model.transport / model.transition_loss, as train.py's flags).
  auto& o = s.objective;
  if (f.p_mean || f.p_std)
    std::visit(
        [&](auto& tr) {
          if constexpr (requires { tr.p_mean; tr.p_std; }) {
            set(tr.p_mean, f.p_mean);
            set(tr.p_std, f.p_std);
          } else {
            tim::fail("--p-mean / --p-std: the transport ", tim::transport_name(o.transport),
                      " has no log-normal time sampling");
          }
        },
        o.transport);
  set(o.diffusion_ratio, f.diffusion_ratio);
  set(o.consistency_ratio, f.consistency_ratio);
  set(o.differential_epsilon, f.dde_epsilon);
  set(o.label_dropout, f.label_dropout);
  if (!f.baseline.empty()) {
    tim::check(f.baseline == "none" || f.baseline == "flow-matching", "--baseline must be none or flow-matching, got '",
               f.baseline, "'");
    if (f.baseline == "flow-matching") {
      o.diffusion_ratio = 1.0;
      o.consistency_ratio = 0.0;
    }
  }
  if (!f.weight_time.empty()) o.weight_time = tim::train::parse_time_weighting(f.weight_time);
  if (!f.weight_transform.empty()) {
    tim::check(f.weight_transform == "none" || f.weight_transform == "tangent" || f.weight_transform == "sigmoid",
               "--weight-transform must be none, tangent or sigmoid, got '", f.weight_transform, "'");
    o.weight_time_tangent = f.weight_transform == "tangent";
    o.weight_time_sigmoid = f.weight_transform == "sigmoid";
  }
  if (f.no_adaptive_weight) o.adaptive_weight = false;
  tim::check(!(f.directional_loss && f.no_directional_loss), "--directional-loss and --no-directional-loss contradict");
  if (f.directional_loss) o.directional_loss = true;
  if (f.no_directional_loss) o.directional_loss = false;
  if (f.enhance_w_gt) {
    o.enhance.enabled = true;
    o.enhance.w_gt = *f.enhance_w_gt;
  }
  set(o.enhance.w_cond, f.enhance_w_cond);
  if (!f.enhance_window.empty()) {
    o.enhance.w_start = f.enhance_window[0];
    o.enhance.w_end = f.enhance_window[1];
  }
}

//! Fills z (B, C, H, W) for step `step`: row b from the stream (seed, step B + b, noise_stream).
void draw_noise(tim::Tensor<float>& z, std::uint64_t seed, std::int64_t step, std::vector<double>& scratch) {
  const auto B = z.dim(0);
  const auto row = static_cast<std::uint64_t>(z.numel() / B);
  scratch.resize(row);
  for (std::int64_t b = 0; b < B; ++b) {
    tim::random::fill_normal(scratch.data(), row, seed, static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(B) +
                                                            static_cast<std::uint64_t>(b),
                             noise_stream);
    float* out = z.data() + static_cast<std::uint64_t>(b) * row;
    for (std::uint64_t i = 0; i < row; ++i) out[i] = static_cast<float>(scratch[i]);
  }
}

//! The JSON of the differences between two math_json() objects, as "key: a vs b" lines.
void find_differences(const nlohmann::json& saved, const nlohmann::json& now, const std::string& prefix,
                      std::vector<std::string>& out) {
  if (saved.is_object() && now.is_object()) {
    for (const auto& [key, value] : saved.items()) {
      const std::string name = prefix.empty() ? key : prefix + "." + key;
      if (!now.contains(key)) out.push_back(name + " (missing now)");
      else find_differences(value, now[key], name, out);
    }
    for (const auto& [key, value] : now.items())
      if (!saved.contains(key)) out.push_back((prefix.empty() ? key : prefix + "." + key) + " (not in the checkpoint)");
    return;
  }
  if (saved != now) out.push_back(prefix + ": " + saved.dump() + " in the checkpoint, " + now.dump() + " now");
}

void run_train(const Flags& flags) {
  TrainSettings s;
  read_train_yaml(flags.config_path, s);
  apply_flags(flags, s);
  if (!flags.out_dir.empty()) s.output_dir = flags.out_dir;
  else if (!flags.resume_dir.empty()) s.output_dir = flags.resume_dir;
  s.validate();
  if (s.threads > 0) tim::set_num_threads(s.threads);

  const auto data = open_train_data(s);
  const tim::Shape shape = data->sample_shape();
  const auto C = shape[0], H = shape[1], W = shape[2];
  if (s.num_classes == 0) s.num_classes = data->num_classes();
  tim::check(s.num_classes == data->num_classes(), "tim train: model.network.params.num_classes is ", s.num_classes,
             ", the data set has ", data->num_classes(), " classes");
  tim::check(!s.in_channels || *s.in_channels == C, "tim train: model.network.params.in_channels is ",
             s.in_channels.value_or(0), ", the data set's samples have ", C, " channels");
  tim::check(!s.input_size || (*s.input_size == H && *s.input_size == W), "tim train: model.network.params.input_size is ",
             s.input_size.value_or(0), ", the data set's samples are ", H, " x ", W);
  // Checked before any division by them (a zero would end the process with SIGFPE).
  tim::check(s.patch >= 1, "tim train: model.network.params.patch_size (--patch) must be >= 1, got ", s.patch);
  tim::check(s.hidden >= 1 && s.depth >= 1 && s.heads >= 1 && s.hidden % s.heads == 0,
             "tim train: model.network.params needs hidden_size, depth, num_heads >= 1 with num_heads dividing "
             "hidden_size, got ", s.hidden, ", ", s.depth, ", ", s.heads);
  tim::check(H % s.patch == 0 && W % s.patch == 0, "tim train: patch_size ", s.patch, " does not divide the samples' ", H,
             " x ", W);
  tim::check(data->size() >= s.batch, "tim train: the data set has ", data->size(), " samples, fewer than a batch of ",
             s.batch);
  const auto config = tim::train::c2i_training_config(C, s.hidden, s.depth, s.heads, s.patch, s.adaln_hidden,
                                                      s.mlp_ratio, s.num_classes);
  const nlohmann::json math = s.math_json();

  // The run: fresh (the released initialisation) or restored from --resume.
  auto model = tim::train::init_c2i<float>(config, s.seed);
  tim::train::AdamW<float> adamw(model, s.adamw());
  tim::train::Ema<float> ema(model, s.ema_decay);
  tim::train::TrainingProgress progress;
  progress.seed = s.seed;
  if (!flags.resume_dir.empty()) {
    const auto metadata = tim::train::read_checkpoint_metadata(flags.resume_dir);
    const auto found = metadata.find("train_math");
    tim::check(found != metadata.end(), "--resume '", flags.resume_dir,
               "': the checkpoint has no 'train_math' metadata (not written by tim train)");
    nlohmann::json saved;
    try {
      saved = nlohmann::json::parse(found->second);
    } catch (const nlohmann::json::exception& e) {
      tim::fail("--resume '", flags.resume_dir, "': its 'train_math' metadata is not JSON: ", e.what());
    }
    std::vector<std::string> differences;
    find_differences(saved, math, "", differences);
    if (!differences.empty()) {
      std::string list;
      for (const auto& d : differences) list += "\n  " + d;
      tim::fail("--resume '", flags.resume_dir, "': the settings that fix the training arithmetic differ from the "
                "checkpoint's (a resumed run must use the same ones):", list);
    }
    progress = tim::train::load_checkpoint(flags.resume_dir, model, adamw, ema);
  }

  std::map<std::string, std::string> metadata{
      {"generator", "tim train"},
      {"model_type", "tim-c2i"},
      {"train_math", math.dump()},
      {"transport", std::string(tim::transport_name(s.objective.transport))},
      {"t_max", tim::shortest_decimal(s.objective.t_max())},
      {"t_min", tim::shortest_decimal(s.objective.t_min())},
      {"sample_type", s.objective.diffusion_ratio >= 1.0 ? "diffusion" : "transition"},
      {"image_size", std::to_string(H) + "x" + std::to_string(W) + "x" + std::to_string(C)},
      {"num_classes", std::to_string(s.num_classes)},
      {"null_class", std::to_string(s.num_classes)},
      {"mlp_ratio", tim::shortest_decimal(s.mlp_ratio)},
      {"config", s.config_path},
      {"tim_version", tim::version_string}};
  if (s.data_source == "fashion-mnist")
    metadata["class_names"] =
        R"(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])";
  const tim::train::ExportOptions export_options{.ema = true, .dtype = s.export_type()};
  const auto schedule = s.schedule();

  const std::string log_path = s.log_path.empty() ? s.output_dir + "/log.jsonl" : s.log_path;
  for (const auto& folder : {std::filesystem::path(s.output_dir), std::filesystem::path(log_path).parent_path()}) {
    std::error_code made;
    if (!folder.empty()) std::filesystem::create_directories(folder, made);
    tim::check(!made, "tim train: cannot create the folder '", folder.string(), "': ", made.message());
  }
  tim::train::JsonlLog log(log_path, progress.step);
  tim::train::BatchLoader loader(data, s.batch, s.seed, progress.data);
  tim::train::TrainingClock clock(progress.train_seconds);
  auto grads = tim::nn::zero_gradients_like(model);
  tim::train::GradientClipper<float> clipper(grads);
  tim::train::ObjectiveWorkspace<float> ws;
  tim::train::ObjectiveBatch<float> batch;
  batch.z = tim::Tensor<float>::empty({s.batch, C, H, W});
  std::vector<double> scratch;
  std::int64_t saved_step = progress.step;
  const std::int64_t first_step = progress.step;
  double log_start_seconds = clock.seconds();
  std::int64_t log_start_step = progress.step;
  double sum_loss = 0, sum_denoising = 0, sum_diffusion = 0, sum_transition = 0, sum_norm = 0;
  std::int64_t n_logged = 0, n_diffusion_rows = 0, n_transition_rows = 0;

  const auto checkpoint = [&] {
    progress.train_seconds = clock.lap();
    tim::train::save_checkpoint(s.output_dir, model, adamw, ema, progress, metadata, export_options);
    saved_step = progress.step;
  };
  const auto done = [&] {
    return (s.max_steps > 0 && progress.step >= s.max_steps) || clock.exhausted(s.time_budget_seconds);
  };
  if (!flags.quiet)
    std::cout << "tim train: " << model.config.describe() << ", " << model.parameter_count() << " parameters; data "
              << data->size() << " x " << C << " x " << H << " x " << W << ", batch " << s.batch << ", from step "
              << progress.step << "; writing " << s.output_dir << '\n'
              << std::flush;

  while (!done()) {
    const tim::train::Batch& b = loader.next();
    const std::int64_t step = progress.step;
    batch.x = b.x;
    draw_noise(batch.z, s.seed, step, scratch);
    batch.n_diffusion = tim::train::sample_time_pairs(s.objective, batch.t, batch.r, s.batch, s.seed, step);
    batch.cond_labels = b.labels;
    batch.labels = tim::train::drop_labels(b.labels, s.objective.label_dropout, model.null_label(), s.seed, step);
    tim::nn::zero_gradients(grads);
    const auto losses = tim::train::compute_loss_and_gradients(model, ema.network(), batch, s.objective, ws, grads);
    const double norm = clipper.clip(grads, s.grad_clip);
    const double lr = schedule.at(step);
    adamw.step(model, grads, lr);
    ema.update(model);
    ++progress.step;
    progress.data = b.position_after;
    clock.lap();

    sum_loss += losses.loss;
    sum_denoising += losses.denoising_loss;
    sum_norm += norm;
    ++n_logged;
    for (std::int64_t i = 0; i < s.batch; ++i) {
      if (i < batch.n_diffusion) sum_diffusion += losses.per_sample[static_cast<std::size_t>(i)];
      else sum_transition += losses.per_sample[static_cast<std::size_t>(i)];
    }
    n_diffusion_rows += batch.n_diffusion;
    n_transition_rows += s.batch - batch.n_diffusion;
    const bool last = done();
    if (progress.step % s.log_every == 0 || last) {
      const double seconds = clock.seconds();
      const double rate = seconds > log_start_seconds
                              ? static_cast<double>(progress.step - log_start_step) / (seconds - log_start_seconds)
                              : 0.0;
      const double nan = std::nan("");
      const double diffusion = n_diffusion_rows ? sum_diffusion / static_cast<double>(n_diffusion_rows) : nan;
      const double transition = n_transition_rows ? sum_transition / static_cast<double>(n_transition_rows) : nan;
      const double mean_loss = sum_denoising / static_cast<double>(n_logged);
      const double mean_norm = sum_norm / static_cast<double>(n_logged);
      nlohmann::json row{{"step", progress.step},
                         {"epoch", progress.data.epoch},
                         {"train_seconds", seconds},
                         {"lr", lr},
                         {"loss", mean_loss},
                         {"loss_weighted", sum_loss / static_cast<double>(n_logged)},
                         {"grad_norm", mean_norm},
                         {"steps_per_second", rate}};
      // JSON has no NaN: a part with no rows in the interval is null.
      row["loss_diffusion"] = n_diffusion_rows ? nlohmann::json(diffusion) : nlohmann::json(nullptr);
      row["loss_transition"] = n_transition_rows ? nlohmann::json(transition) : nlohmann::json(nullptr);
      log.write(row);
      if (!flags.quiet)
        std::cout << tim::train::progress_line(progress.step, progress.data.epoch, seconds, lr, mean_loss,
                                               {{"r=t", diffusion}, {"r<t", transition}}, mean_norm, rate)
                  << '\n'
                  << std::flush;
      log_start_seconds = seconds;
      log_start_step = progress.step;
      sum_loss = sum_denoising = sum_diffusion = sum_transition = sum_norm = 0;
      n_logged = n_diffusion_rows = n_transition_rows = 0;
    }
    if (s.checkpoint_every > 0 && progress.step % s.checkpoint_every == 0 && !last) checkpoint();
  }
  if (saved_step != progress.step || progress.step == first_step) checkpoint();
  if (!flags.quiet)
    std::cout << "tim train: " << progress.step << " steps, " << std::fixed << std::setprecision(1) << clock.seconds()
              << " s of training; checkpoint " << s.output_dir << " (model.safetensors: the EMA weights)\n";
}

}  // namespace train_command

Subcommand add_train(CLI::App& app) {
  auto f = std::make_shared<train_command::Flags>();
  auto* c = app.add_subcommand("train", "Train a class-conditional TiM with the released objective (docs/training.md)");
  c->add_option("-c,--config", f->config_path,
                "Training YAML: the released model.transport, model.transition_loss, model.network.params, plus tim's "
                "data: and train: sections (docs/training.md)")
      ->required();
  c->add_option("--resume", f->resume_dir, "Continue the run saved in this folder, bit for bit");
  c->add_option("-o,--out,--run-dir", f->out_dir, "Output folder (default: train.output_dir, or the --resume folder)");
  c->add_option("--log", f->log_path, "JSONL log (default: OUT/log.jsonl)");
  c->add_option("--max-steps,--steps", f->max_steps, "Stop (and save) at this step");
  c->add_option("--time-budget", f->time_budget_seconds, "Stop (and save) after this many seconds of training");
  c->add_option("--time-budget-minutes", f->time_budget_minutes, "The time budget in minutes (train.py's flag)");
  c->add_option("--checkpoint-every", f->checkpoint_every, "Steps between checkpoints (0: only at the end)");
  c->add_option("--log-every", f->log_every, "Steps between log rows and progress lines");
  c->add_option("-j,--threads", f->threads, "CPU threads");
  c->add_option("--seed", f->seed, "Seed of the initialisation, data order, noise, times and label dropout");
  c->add_option("--data", f->data_source, "fashion-mnist, image-folder or latent-shards");
  c->add_option("--data-dir", f->data_dir, "The data folder (or one shard file)");
  c->add_option("--split", f->split, "Fashion-MNIST split: train, test or all");
  c->add_option("--batch,--batch-size", f->batch, "Batch size");
  c->add_option("--hidden", f->hidden, "hidden_size D");
  c->add_option("--depth", f->depth, "Blocks");
  c->add_option("--heads", f->heads, "num_heads");
  c->add_option("--patch", f->patch, "patch_size");
  c->add_option("--adaln-hidden", f->adaln_hidden, "lora_hidden_size L, the block adaLN SwiGLU width");
  c->add_option("--mlp-ratio", f->mlp_ratio, "mlp_ratio");
  c->add_option("--baseline", f->baseline, "none or flow-matching (every r = t)");
  c->add_option("--p-mean", f->p_mean, "The transport's P_mean");
  c->add_option("--p-std", f->p_std, "The transport's P_std");
  c->add_option("--diffusion-ratio", f->diffusion_ratio, "Share of rows with r = t");
  c->add_option("--consistency-ratio", f->consistency_ratio, "Share of rows with r = T_min");
  c->add_option("--dde-epsilon", f->dde_epsilon, "differential_epsilon");
  c->add_option("--weight-time", f->weight_time, "constant, reciprocal, sqrt, square or Soft-Min-SNR");
  c->add_option("--weight-transform", f->weight_transform, "none, tangent or sigmoid");
  c->add_flag("--no-adaptive-weight", f->no_adaptive_weight, "No adaptive weight");
  c->add_flag("--directional-loss", f->directional_loss, "Add 1 - cos(F, F*) (use_dir_loss: True)");
  c->add_flag("--no-directional-loss", f->no_directional_loss, "No directional loss (use_dir_loss: False)");
  c->add_option("--label-dropout", f->label_dropout, "class_dropout_prob");
  c->add_option("--enhance-w-gt", f->enhance_w_gt, "Enhanced target on, with this w_gt");
  c->add_option("--enhance-w-cond", f->enhance_w_cond, "w_cond of the enhanced target");
  c->add_option("--enhance-window", f->enhance_window, "w_start w_end (absolute times)")->expected(2);
  c->add_option("--lr", f->lr, "Learning rate");
  c->add_option("--warmup-steps", f->warmup_steps, "Linear warm-up steps");
  c->add_option("--lr-schedule", f->lr_schedule, "constant, linear or cosine (after the warm-up)");
  c->add_option("--beta1", f->beta1, "AdamW beta1");
  c->add_option("--beta2", f->beta2, "AdamW beta2");
  c->add_option("--adam-eps", f->adam_eps, "AdamW eps");
  c->add_option("--weight-decay", f->weight_decay, "AdamW weight decay");
  c->add_option("--grad-clip", f->grad_clip, "Gradient-norm clip");
  c->add_option("--ema-decay", f->ema_decay, "EMA decay");
  c->add_option("--export-dtype", f->export_dtype, "model.safetensors storage: float32, bfloat16 or float16");
  c->add_flag("-q,--quiet", f->quiet, "No progress lines");
  return {c, [f] { train_command::run_train(*f); }};
}

}  // namespace tim_cli
