// tim._tim's models (tim.load, tim.Model): a checkpoint (C2I or T2I) as the `tim` program runs it,
// on the CPU in float or, in a build with CUDA, on the GPU; the settings through
// tim::resolve_sample_settings (option, else metadata, else default), the noise of `tim sample`
// (tim::initial_noise_of), prompts' caption batching as `tim sample` batches them
// (tim::text::sample_captions), the transition sampler.
//
// Shape legend: B batch, C channels, H x W latent, M caption tokens, Dc caption width.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common.hpp"
#include "cuda_backend.hpp"  // apps/: the GPU side behind a plain C++ interface (or its stub without CUDA)
#include "threads.hpp"
#include "tim/core/cast.hpp"
#include "tim/cpu/per_sample_network.hpp"
#include "tim/io/pytorch.hpp"
#include "tim/load.hpp"
#include "tim/sampler/noise.hpp"
#include "tim/sampler/options.hpp"
#include "tim/sampler/settings.hpp"
#include "tim/text/conditioning.hpp"
#include "tim/tim.hpp"

namespace tim_python {

nb::dict settings_dict(const tim::SampleSettings& s) {
  nb::dict d;
  d["steps"] = s.steps.value;
  d["cfg_scale"] = s.cfg_scale.value;
  d["guidance_low"] = s.guidance_low.value;
  d["guidance_high"] = s.guidance_high.value;
  d["stochasticity"] = s.stochasticity.value;
  d["transport"] = std::string(tim::transport_name(s.transport.value));
  d["t_max"] = s.t_max.value;
  d["t_min"] = s.t_min.value;
  d["schedule"] = s.schedule.value.describe();
  d["mode"] = std::string(tim::sample_mode_name(s.mode.value));
  d["times"] = s.times;
  if (s.latent_size) {
    d["height"] = s.latent_size->height.value;
    d["width"] = s.latent_size->width.value;
  } else {
    d["height"] = nb::none();
    d["width"] = nb::none();
  }
  nb::dict described;  // "3 (metadata 'sample_steps')": value and source, as `tim sample` records them
  for (const auto& [key, value] : s.describe()) described[key.c_str()] = value;
  d["described"] = described;
  return d;
}

namespace {

using namespace nb::literals;

using C2I = tim::nn::C2IModel<float>;
using T2I = tim::nn::T2IModel<float>;

//! What the per-step callback sees (tim::StepInfo); `x` is a copy of the state, readable only
//! during the call and only on the CPU (on the GPU the state stays on the device).
struct StepView {
  int step = 0, steps = 0;
  double t = 0, r = 0;
  bool guided = false, stochastic = false;
  const tim::Tensor<double>* state = nullptr;  // null once the callback has returned
  bool on_device = false;

  nb::ndarray<nb::numpy, double> x() const {
    tim::check(!on_device, "StepInfo.x: the state stays on the GPU during a device='cuda' run");
    tim::check(state != nullptr, "StepInfo.x: the state is only readable during the callback (copy it there)");
    return to_numpy(state->clone());
  }
};

//! A loaded checkpoint in float on the CPU, or on the GPU in float32 or bfloat16. One sampling
//! or forward at a time per model: the mutex serialises threads that share a model. forward needs
//! it (model_ has one workspace); sample runs its own copies of pristine_, one per thread, but
//! already occupies every thread of the package's count, so two runs side by side would only
//! oversubscribe the same cores.
class Model {
 public:
  Model(const std::string& path, const std::string& device, const std::string& precision,
        std::optional<std::int64_t> num_heads, std::optional<std::string> new_condition,
        std::optional<double> mlp_ratio)
      : path_(path) {
    tim::io::check_not_pytorch_checkpoint(path);
    const tim::nn::ConfigOverrides overrides{num_heads, new_condition, mlp_ratio};
    if (device == "cuda") {
      gpu_.emplace(tim_cli::CudaModel::load(path, precision, overrides));
    } else {
      tim::check(device == "cpu" && precision == "float32", "device '", device, "' in ", precision,
                 ": expected 'cpu' in float32 or 'cuda' in float32 or bfloat16");
      if (tim::detect_model_kind(path) == tim::nn::ModelKind::t2i)
        model_.emplace<T2I>(tim::load_t2i<float>(path, overrides));
      else
        model_.emplace<C2I>(tim::load_c2i<float>(path, overrides));
      pristine_ = model_;
    }
    metadata_ = tim::io::SafetensorsFile::open(path).metadata();
    device_ = cuda() ? gpu_->device() + ", " + precision : "cpu, float32";
  }

  bool cuda() const { return gpu_.has_value(); }
  bool text() const { return cuda() ? gpu_->text_to_image() : std::holds_alternative<T2I>(model_); }
  const tim::nn::BackboneConfig& backbone() const {
    if (cuda()) return gpu_->config();
    return std::visit([](const auto& m) -> const tim::nn::BackboneConfig& { return m.config; }, model_);
  }
  const std::string& path() const { return path_; }
  const std::string& device() const { return device_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::string describe() const {
    if (cuda()) return gpu_->describe();
    return std::visit([](const auto& m) { return m.config.describe(); }, model_);
  }
  std::int64_t parameter_count() const {
    tim::check(!cuda(), "parameter_count: not counted for a model on the GPU; load it with device='cpu' to count");
    return std::visit([](const auto& m) { return m.parameter_count(); }, model_);
  }
  std::int64_t num_classes() const {
    if (text()) return 0;
    return cuda() ? gpu_->c2i_config().num_classes : std::get<C2I>(model_).config.num_classes;
  }
  std::int64_t caption_dim() const {
    if (!text()) return 0;
    return cuda() ? gpu_->t2i_config().caption_dim : std::get<T2I>(model_).config.caption_dim;
  }

  nb::dict config() const {
    const auto& c = backbone();
    nb::dict d;
    d["kind"] = text() ? "t2i" : "c2i";
    d["in_channels"] = c.in_channels;
    d["out_channels"] = c.out_channels;
    d["hidden"] = c.hidden;
    d["depth"] = c.depth;
    d["num_heads"] = c.num_heads;
    d["patch"] = c.patch;
    d["qk_norm"] = c.qk_norm;
    d["interval_qkv"] = c.interval_qkv;
    d["new_condition"] = std::string(tim::nn::new_condition_name(c.new_condition));
    if (text())
      d["caption_dim"] = caption_dim();
    else
      d["num_classes"] = num_classes();
    return d;
  }

  nb::dict resolve(const Request& request) const {
    return settings_dict(tim::resolve_sample_settings(request.library(), metadata_, python_names()));
  }

  //! out (B, C_out, H, W) = F_theta(x, t_in, r_in, condition): labels (B) int64 for a C2I model,
  //! caption features (B, M, Dc) float32 for a T2I one. Times are network inputs (after c_noise).
  nb::ndarray<nb::numpy, float> forward(const InArray<float>& x, const InArray<float>& t_in,
                                        const InArray<float>& r_in, std::optional<InArray<std::int64_t>> labels,
                                        std::optional<InArray<float>> cap_feats) {
    const auto xv = view_of(x), tv = view_of(t_in), rv = view_of(r_in);
    if (text())
      tim::check(cap_feats.has_value() && !labels.has_value(),
                 "forward: a text-to-image model takes cap_feats (B, M, cap_dim), not labels");
    else
      tim::check(labels.has_value() && !cap_feats.has_value(),
                 "forward: a class-conditional model takes labels (B), not cap_feats");
    const auto cv = text() ? view_of(*cap_feats) : tim::Tensor<float>{};
    const auto lv = text() ? tim::Tensor<std::int64_t>{} : view_of(*labels);
    tim::Tensor<float> out;
    {
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      if (cuda()) {  // `tim forward --device cuda`: host tensors in double, the network in its precision
        tim::Tensor<double> device_out;
        const auto xd = tim::cast<double>(xv), td = tim::cast<double>(tv), rd = tim::cast<double>(rv);
        if (text())
          gpu_->forward(device_out, xd, td, rd, cv);
        else
          gpu_->forward(device_out, xd, td, rd, lv);
        out = tim::cast<float>(device_out);
      } else {
        apply_package_threads();
        if (text())
          std::get<T2I>(model_).forward(out, xv, tv, rv, cv);
        else
          std::get<C2I>(model_).forward(out, xv, tv, rv, lv);
      }
    }
    return to_numpy(out);
  }

  //! One sampling run as `tim sample` makes it (apps/cli/sample.cpp, sample_inputs.cpp,
  //! sample_prompts.cpp). `lengths` (T2I): the captions' real tokens, for the caption batching of
  //! prompts (per prompt, or `released`: the batch cut to its longest caption).
  nb::dict sample(const Request& request, std::optional<InArray<std::int64_t>> labels,
                  std::optional<InArray<float>> cap_feats, std::optional<InArray<float>> null_cap_feats,
                  std::optional<std::vector<std::int64_t>> lengths, bool released,
                  std::optional<InArray<double>> noise, std::uint64_t seed, std::uint64_t first_index,
                  std::optional<std::vector<std::uint64_t>> sample_indices, bool trajectory, nb::object on_step) {
    const tim::SampleSettings s = tim::resolve_sample_settings(request.library(), metadata_, python_names());
    const auto& c = backbone();

    // What is sampled: labels or caption features; the batch size B is theirs.
    std::int64_t B = 0;
    tim::Tensor<std::int64_t> label_rows;
    tim::Tensor<float> captions, null_captions;
    if (text()) {
      tim::check(!labels.has_value(), "labels: ", path_, " is a text-to-image (T2I) TiM; it samples from prompts "
                 "or caption features: pass prompts=[...] or cap_feats (B, M, ", caption_dim(), ")");
      tim::check(cap_feats.has_value(), "cap_feats: a text-to-image model needs prompts (with a text encoder) or "
                 "caption features (B, M, ", caption_dim(), ")");
      captions = view_of(*cap_feats);
      tim::check(captions.rank() == 3 && captions.dim(0) >= 1 && captions.dim(1) >= 1 &&
                     captions.dim(2) == caption_dim(),
                 "cap_feats: expected shape (B, M, ", caption_dim(), ") with B, M >= 1, got ", captions.shape());
      if (null_cap_feats) {
        null_captions = view_of(*null_cap_feats);
        tim::check(null_captions.shape() == tim::Shape{1, captions.dim(1), caption_dim()},
                   "null_cap_feats: expected shape (1, ", captions.dim(1), ", ", caption_dim(), "), got ",
                   null_captions.shape());
      }
      B = captions.dim(0);
    } else {
      tim::check(!cap_feats.has_value() && !null_cap_feats.has_value() && !lengths.has_value(), "cap_feats: ", path_,
                 " is a class-conditional (C2I) TiM; it samples from labels");
      tim::check(labels.has_value(), "labels: a class-conditional model needs labels (B) in [0, ", num_classes(),
                 "] (", num_classes(), " is the null class)");
      label_rows = view_of(*labels).clone();
      tim::check(label_rows.rank() == 1 && label_rows.dim(0) >= 1, "labels: expected shape (B) with B >= 1, got ",
                 label_rows.shape());
      B = label_rows.dim(0);
      for (std::int64_t b = 0; b < B; ++b)
        tim::check(label_rows.data()[b] >= 0 && label_rows.data()[b] <= num_classes(), "labels: label ",
                   label_rows.data()[b], " at index ", b, " is outside [0, ", num_classes(), "] (classes 0..",
                   num_classes() - 1, ", ", num_classes(), " = unconditional)");
    }

    // Each row's sample index: its initial noise and its stochastic steps draw from it.
    std::vector<std::uint64_t> indices;
    if (sample_indices) {
      tim::check(static_cast<std::int64_t>(sample_indices->size()) == B, "sample_indices: ", sample_indices->size(),
                 " entries for a batch of ", B);
      indices = *sample_indices;
    } else {
      for (std::int64_t b = 0; b < B; ++b) indices.push_back(first_index + static_cast<std::uint64_t>(b));
    }

    // The initial noise: given, or `tim sample`'s (tim::initial_noise_of) at the settings' latent size.
    tim::Tensor<double> z;
    if (noise) {
      z = view_of(*noise).clone();
      const tim::Shape& shape = z.shape();
      tim::check(shape.rank() == 4 && shape[0] == B && shape[1] == c.in_channels, "noise: expected shape (", B, ", ",
                 c.in_channels, ", H, W) (one sample per ", text() ? "caption" : "label", ", the model's channels), got ",
                 shape);
      tim::check(!request.height || *request.height == shape[2], "height ", request.height.value_or(0),
                 " disagrees with the noise shape ", shape);
      tim::check(!request.width || *request.width == shape[3], "width ", request.width.value_or(0),
                 " disagrees with the noise shape ", shape);
      tim::check(shape[2] % c.patch == 0 && shape[3] % c.patch == 0, "noise: height ", shape[2], " and width ",
                 shape[3], " must be multiples of the model's patch size ", c.patch);
      for (std::int64_t i = 0; i < z.numel(); ++i)
        tim::check(std::isfinite(z.data()[i]), "noise: non-finite value at flat index ", i);
    } else {
      z = tim::initial_noise_of(indices, seed, c.in_channels, c.patch, s);
    }

    auto options = tim::sampler_options(s, seed, indices, trajectory);
    // Every step: with the GIL, Ctrl-C (PyErr_CheckSignals) and the user's callback; either
    // stops the run (every later group of a per-prompt run too), and the Python error is raised
    // once the sampler has returned.
    std::optional<nb::python_error> python_error;
    bool stopped = false;
    const bool has_callback = !on_step.is_none();
    const auto call_back = [&](const StepView& step) {
      nb::gil_scoped_acquire acquire;
      const bool go = [&] {
        if (PyErr_CheckSignals() != 0) {
          python_error.emplace();
          return false;
        }
        if (!has_callback) return true;
        nb::object view = nb::cast(step);
        // The state is the sampler's: the view forgets it when the call ends, however it ends.
        struct Forget {
          nb::handle view;
          ~Forget() { nb::inst_ptr<StepView>(view)->state = nullptr; }
        } forget{view};
        try {
          nb::object answer = on_step(view);
          return answer.is_none() || nb::cast<bool>(answer);
        } catch (nb::python_error& e) {
          python_error.emplace(std::move(e));
          return false;
        } catch (const nb::cast_error&) {
          PyErr_SetString(PyExc_TypeError, "on_step must return None, True or False");
          python_error.emplace();
          return false;
        }
      }();
      stopped = stopped || !go;
      return go;
    };
    options.on_step = [&](const tim::StepInfo<>& info) {
      return call_back({info.step, info.steps, info.t, info.r, info.guided, info.stochastic, &info.x, false});
    };
    // On the GPU the state stays on the device: the callback sees the step and its times only.
    const tim_cli::Progress progress = [&](int step, int steps) {
      return call_back({step, steps, s.times[static_cast<std::size_t>(step)],
                        s.times[static_cast<std::size_t>(step) + 1], false, false, nullptr, true});
    };

    // One batch as given: on the GPU in one batch (`tim sample --device cuda`), on the CPU one
    // sample at a time on one thread each (tim::PerSampleNetwork), as `tim sample` does: a
    // sample's bits do not depend on the batch, batch_size or the threads. The CPU copies come
    // from `pristine_`, whose workspace no forward has touched.
    const auto sample_batch = [&](const tim::Tensor<double>& batch_noise, const tim::Tensor<float>& batch_captions,
                                  const tim::Tensor<float>& batch_null,
                                  const tim::SamplerOptions<>& batch_options) -> tim::SampleResult<> {
      if (stopped) {  // a later group of a stopped per-prompt run: not run
        tim::SampleResult<> none;
        none.x = batch_noise.clone();
        none.times = s.times;
        none.cancelled = true;
        return none;
      }
      if (cuda()) {
        auto device_options = batch_options;
        device_options.on_step = {};
        return text() ? gpu_->sample(s.transport.value, s.schedule.value, batch_noise, batch_captions, batch_null,
                                     device_options, progress)
                      : gpu_->sample(s.transport.value, s.schedule.value, batch_noise, label_rows, device_options,
                                     progress);
      }
      return std::visit(
          [&](auto transport) {
            if (text()) {
              T2I network = std::get<T2I>(pristine_);
              if (batch_null.empty_tensor())
                network.clear_null_caption();
              else
                network.set_null_caption(batch_null.clone());
              const tim::PerSampleNetwork exact{network};
              tim::TransitionSampler sampler{exact, transport, s.schedule.value};
              return sampler.sample(batch_noise, batch_captions, batch_options);
            }
            const tim::PerSampleNetwork exact{std::get<C2I>(pristine_)};
            tim::TransitionSampler sampler{exact, transport, s.schedule.value};
            return sampler.sample(batch_noise, label_rows, batch_options);
          },
          s.transport.value);
    };

    tim::SampleResult<> result;
    {
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      if (!cuda()) apply_package_threads();  // before PerSampleNetwork counts its copies
      if (lengths)  // prompts: `tim sample`'s caption batching (tim::text::sample_captions)
        result = tim::text::sample_captions(
            released ? tim::text::CaptionBatching::released : tim::text::CaptionBatching::per_prompt, z, captions,
            null_captions, *lengths, options, sample_batch);
      else
        result = sample_batch(z, captions, null_captions, options);
    }
    if (python_error) throw std::move(*python_error);

    nb::dict out;
    out["latents"] = to_numpy(tim::cast<float>(result.x));
    out["x"] = to_numpy(result.x);
    out["labels"] = text() ? nb::none() : nb::cast(to_numpy(label_rows));
    out["sample_indices"] = indices;
    out["times"] = result.times;
    out["steps_done"] = result.steps_done;
    out["cancelled"] = result.cancelled;
    out["trajectory"] = trajectory ? nb::cast(to_numpy(result.trajectory)) : nb::none();
    out["settings"] = settings_dict(s);
    return out;
  }

 private:
  std::string path_, device_;
  std::variant<C2I, T2I> model_;
  std::variant<C2I, T2I> pristine_;  // a view of the same weights that never runs forward (sample's copies)
  std::optional<tim_cli::CudaModel> gpu_;
  std::map<std::string, std::string> metadata_;
  std::mutex mutex_;
};

}  // namespace

void bind_model(nb::module_& m) {
  nb::class_<StepView>(m, "StepInfo", "What the on_step callback sees after a step moved the state from t to r.")
      .def_ro("step", &StepView::step, "0-based index i of the step t_i -> t_{i+1}")
      .def_ro("steps", &StepView::steps, "N, the steps of the grid")
      .def_ro("t", &StepView::t, "t_i")
      .def_ro("r", &StepView::r, "t_{i+1}")
      .def_ro("guided", &StepView::guided, "whether the step used classifier-free guidance (False on cuda)")
      .def_ro("stochastic", &StepView::stochastic, "whether the step drew noise (False on cuda)")
      .def_prop_ro("x", &StepView::x, nb::rv_policy::move,
                   "A copy of the state x_r (B, C, H, W) float64; only during the callback, only on the CPU");

  nb::class_<Model>(m, "NativeModel", "A checkpoint in float32 on the CPU (or on the GPU); use tim.load and tim.Model")
      .def(nb::init<const std::string&, const std::string&, const std::string&, std::optional<std::int64_t>,
                    std::optional<std::string>, std::optional<double>>(),
           "path"_a, "device"_a = "cpu", "precision"_a = "float32", "num_heads"_a = nb::none(),
           "new_condition"_a = nb::none(), "mlp_ratio"_a = nb::none())
      .def_prop_ro("path", &Model::path)
      .def_prop_ro("device", &Model::device)
      .def_prop_ro("text_to_image", &Model::text)
      .def_prop_ro("metadata", &Model::metadata)
      .def_prop_ro("config", &Model::config)
      .def_prop_ro("num_classes", &Model::num_classes)
      .def_prop_ro("caption_dim", &Model::caption_dim)
      .def_prop_ro("parameter_count", &Model::parameter_count)
      .def("describe", &Model::describe)
      .def(
          "resolve",
          [](const Model& model, std::optional<int> steps, std::optional<double> cfg_scale,
             std::optional<double> guidance_low, std::optional<double> guidance_high,
             std::optional<double> stochasticity, std::optional<std::string> transport,
             std::optional<double> t_max, std::optional<double> t_min, std::optional<std::string> schedule,
             std::optional<std::string> mode, std::optional<std::int64_t> height,
             std::optional<std::int64_t> width) {
            return model.resolve({steps, cfg_scale, guidance_low, guidance_high, stochasticity, t_max, t_min,
                                  transport, mode, schedule, height, width});
          },
          "steps"_a, "cfg_scale"_a, "guidance_low"_a, "guidance_high"_a, "stochasticity"_a, "transport"_a,
          "t_max"_a, "t_min"_a, "schedule"_a, "mode"_a, "height"_a, "width"_a)
      .def("forward", &Model::forward, "x"_a, "t_in"_a, "r_in"_a, "labels"_a = nb::none(),
           "cap_feats"_a = nb::none())
      .def(
          "sample",
          [](Model& model, std::optional<int> steps, std::optional<double> cfg_scale,
             std::optional<double> guidance_low, std::optional<double> guidance_high,
             std::optional<double> stochasticity, std::optional<std::string> transport,
             std::optional<double> t_max, std::optional<double> t_min, std::optional<std::string> schedule,
             std::optional<std::string> mode, std::optional<std::int64_t> height,
             std::optional<std::int64_t> width, std::optional<InArray<std::int64_t>> labels,
             std::optional<InArray<float>> cap_feats, std::optional<InArray<float>> null_cap_feats,
             std::optional<std::vector<std::int64_t>> lengths, bool released, std::optional<InArray<double>> noise,
             std::uint64_t seed, std::uint64_t first_index, std::optional<std::vector<std::uint64_t>> sample_indices,
             bool trajectory, nb::object on_step) {
            return model.sample({steps, cfg_scale, guidance_low, guidance_high, stochasticity, t_max, t_min,
                                 transport, mode, schedule, height, width},
                                labels, cap_feats, null_cap_feats, lengths, released, noise, seed, first_index,
                                sample_indices, trajectory, on_step);
          },
          "steps"_a, "cfg_scale"_a, "guidance_low"_a, "guidance_high"_a, "stochasticity"_a, "transport"_a,
          "t_max"_a, "t_min"_a, "schedule"_a, "mode"_a, "height"_a, "width"_a, "labels"_a.none(),
          "cap_feats"_a.none(), "null_cap_feats"_a.none(), "lengths"_a.none(), "released"_a, "noise"_a.none(),
          "seed"_a, "first_index"_a, "sample_indices"_a.none(), "trajectory"_a, "on_step"_a.none());
}

}  // namespace tim_python
