// tim._tim: the nanobind extension behind the Python package `tim` (docs/python.md). It binds the
// library as the `tim` program runs it on the CPU: a checkpoint in float (C2I or T2I), the
// settings through tim::resolve_sample_settings (option, else metadata, else default), the noise
// of `tim sample` (tim::initial_noise per sample index, VE scaled by t_0), the transition
// sampler, the latent decoders. python/tim/__init__.py turns Python values (lists, DLPack
// tensors, schedule callables) into the arrays and strings taken here.
//
// Shape legend: B batch, C channels, H x W latent, M caption tokens, Dc caption width.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "tim/core/cast.hpp"
#include "tim/cpu/per_sample_network.hpp"
#include "tim/sampler/options.hpp"
#include "tim/io/image.hpp"
#include "tim/io/pytorch.hpp"
#include "tim/load.hpp"
#include "tim/sampler/settings.hpp"
#include "tim/tim.hpp"
#include "tim/vae/diffusers_config.hpp"
#include "threads.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using tim_python::apply_package_threads;
using tim_python::set_package_threads;

using C2I = tim::nn::C2IModel<float>;
using T2I = tim::nn::T2IModel<float>;

template <class T>
using InArray = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;

//! A host tensor as a NumPy array without a copy: the array keeps the tensor's storage alive.
template <class T>
nb::ndarray<nb::numpy, T> to_numpy(const tim::Tensor<T>& tensor) {
  auto* holder = new tim::Tensor<T>(tensor);
  nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<tim::Tensor<T>*>(p); });
  std::vector<std::size_t> shape;
  for (std::int64_t e : tensor.shape().extents()) shape.push_back(static_cast<std::size_t>(e));
  return nb::ndarray<nb::numpy, T>(holder->data(), shape.size(), shape.data(), owner);
}

//! A view of a C-contiguous host array as a tim tensor (no copy; the array outlives the call).
template <class T>
tim::Tensor<T> view_of(const InArray<T>& array) {
  std::vector<std::int64_t> extents;
  for (std::size_t i = 0; i < array.ndim(); ++i) extents.push_back(static_cast<std::int64_t>(array.shape(i)));
  return tim::Tensor<T>::view(const_cast<T*>(array.data()), tim::Shape(std::move(extents)));
}

//! How messages name the settings: the keyword arguments of Model.sample.
tim::SampleOptionNames python_names() {
  tim::SampleOptionNames n;
  n.steps = "steps";
  n.cfg_scale = "cfg_scale";
  n.guidance_low = "guidance_low";
  n.guidance_high = "guidance_high";
  n.stochasticity = "stochasticity";
  n.transport = "transport";
  n.t_max = "t_max";
  n.t_min = "t_min";
  n.schedule = "schedule";
  n.mode = "mode";
  n.height = "height";
  n.width = "width";
  return n;
}

//! The request of Model.sample / Model.resolve_settings: None is "not given".
struct Request {
  std::optional<int> steps;
  std::optional<double> cfg_scale, guidance_low, guidance_high, stochasticity, t_max, t_min;
  std::optional<std::string> transport, mode, schedule;
  std::optional<std::int64_t> height, width;

  tim::SampleRequest library() const {
    return {steps, cfg_scale, guidance_low, guidance_high, stochasticity, t_max, t_min,
            transport, mode, schedule, height, width};
  }
};

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

//! What the per-step callback sees (tim::StepInfo); `x` is a copy of the state, readable only
//! during the call.
struct StepView {
  int step = 0, steps = 0;
  double t = 0, r = 0;
  bool guided = false, stochastic = false;
  const tim::Tensor<double>* state = nullptr;  // null once the callback has returned

  nb::ndarray<nb::numpy, double> x() const {
    tim::check(state != nullptr, "StepInfo.x: the state is only readable during the callback (copy it there)");
    return to_numpy(state->clone());
  }
};

//! A loaded checkpoint in float on the CPU. One sampling or forward at a time per model: the
//! mutex serialises threads that share a model. forward needs it (model_ has one workspace);
//! sample runs its own copies of pristine_, one per thread, but already occupies every thread of
//! the package's count, so two runs side by side would only oversubscribe the same cores.
class Model {
 public:
  Model(const std::string& path, std::optional<std::int64_t> num_heads, std::optional<std::string> new_condition,
        std::optional<double> mlp_ratio)
      : path_(path) {
    tim::io::check_not_pytorch_checkpoint(path);
    const tim::nn::ConfigOverrides overrides{num_heads, new_condition, mlp_ratio};
    if (tim::detect_model_kind(path) == tim::nn::ModelKind::t2i)
      model_.emplace<T2I>(tim::load_t2i<float>(path, overrides));
    else
      model_.emplace<C2I>(tim::load_c2i<float>(path, overrides));
    pristine_ = model_;
    metadata_ = tim::io::SafetensorsFile::open(path).metadata();
  }

  bool text() const { return std::holds_alternative<T2I>(model_); }
  const tim::nn::BackboneConfig& backbone() const {
    return std::visit([](const auto& m) -> const tim::nn::BackboneConfig& { return m.config; }, model_);
  }
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::string describe() const {
    return std::visit([](const auto& m) { return m.config.describe(); }, model_);
  }
  std::int64_t parameter_count() const {
    return std::visit([](const auto& m) { return m.parameter_count(); }, model_);
  }
  std::int64_t num_classes() const { return text() ? 0 : std::get<C2I>(model_).config.num_classes; }
  std::int64_t caption_dim() const { return text() ? std::get<T2I>(model_).config.caption_dim : 0; }

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
    tim::Tensor<float> out;
    if (text()) {
      tim::check(cap_feats.has_value() && !labels.has_value(),
                 "forward: a text-to-image model takes cap_feats (B, M, cap_dim), not labels");
      const auto cv = view_of(*cap_feats);
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      apply_package_threads();
      std::get<T2I>(model_).forward(out, xv, tv, rv, cv);
    } else {
      tim::check(labels.has_value() && !cap_feats.has_value(),
                 "forward: a class-conditional model takes labels (B), not cap_feats");
      const auto lv = view_of(*labels);
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      apply_package_threads();
      std::get<C2I>(model_).forward(out, xv, tv, rv, lv);
    }
    return to_numpy(out);
  }

  //! One sampling run as `tim sample` makes it (apps/cli/sample.cpp, sample_inputs.cpp).
  nb::dict sample(const Request& request, std::optional<InArray<std::int64_t>> labels,
                  std::optional<InArray<float>> cap_feats, std::optional<InArray<float>> null_cap_feats,
                  std::optional<InArray<double>> noise, std::uint64_t seed, std::uint64_t first_index,
                  std::optional<std::vector<std::uint64_t>> sample_indices, bool trajectory, nb::object on_step) {
    const tim::SampleSettings s = tim::resolve_sample_settings(request.library(), metadata_, python_names());
    const auto& c = backbone();

    // What is sampled: labels or caption features; the batch size B is theirs.
    std::int64_t B = 0;
    tim::Tensor<std::int64_t> label_rows;
    tim::Tensor<float> captions, null_captions;
    if (text()) {
      tim::check(!labels.has_value(), "labels: ", path_, " is a text-to-image (T2I) TiM; it samples from caption "
                 "features: pass cap_feats (B, M, ", caption_dim(), ")");
      tim::check(cap_feats.has_value(), "cap_feats: a text-to-image model needs caption features (B, M, ",
                 caption_dim(), ") (tim.caption_features is not available yet: docs/python.md, \"Prompts\")");
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
      tim::check(!cap_feats.has_value() && !null_cap_feats.has_value(), "cap_feats: ", path_,
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

    // The initial noise: given, or tim::initial_noise at the settings' latent size.
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
      const tim::LatentSize size = tim::require_latent_size(s.latent_size, s.names);
      const std::int64_t H = size.height.value, W = size.width.value;
      tim::check(H % c.patch == 0 && W % c.patch == 0, "height ", H, " and width ", W,
                 " must be multiples of the model's patch size ", c.patch);
      const std::int64_t per_sample = c.in_channels * H * W;
      z = tim::Tensor<double>::empty({B, c.in_channels, H, W});
      bool consecutive = true;
      for (std::int64_t b = 0; b < B; ++b) consecutive = consecutive && indices[b] == indices[0] + b;
      if (consecutive) {
        z = tim::initial_noise({B, c.in_channels, H, W}, seed, indices[0]);
      } else {  // a sample's noise depends only on its index (tim::initial_noise)
        for (std::int64_t b = 0; b < B; ++b) {
          const auto one = tim::initial_noise({1, c.in_channels, H, W}, seed, indices[b]);
          std::copy_n(one.data(), per_sample, z.data() + b * per_sample);
        }
      }
      // VE's noise has standard deviation t: start from t_0 z (docs/sampling.md, "Noise scale").
      if (std::holds_alternative<tim::VeSde>(s.transport.value))
        for (std::int64_t i = 0; i < z.numel(); ++i) z.data()[i] *= s.times.front();
    }

    auto options = tim::sampler_options(s, seed, indices, trajectory);
    // Every step: with the GIL, Ctrl-C (PyErr_CheckSignals) and the user's callback; either
    // stops the run, and the Python error is raised once the sampler has returned.
    std::optional<nb::python_error> python_error;
    const bool has_callback = !on_step.is_none();
    options.on_step = [&](const tim::StepInfo<>& info) {
      nb::gil_scoped_acquire acquire;
      if (PyErr_CheckSignals() != 0) {
        python_error.emplace();
        return false;
      }
      if (!has_callback) return true;
      nb::object view = nb::cast(StepView{info.step, info.steps, info.t, info.r, info.guided, info.stochastic,
                                          &info.x});
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
    };

    tim::SampleResult<> result;
    {
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      apply_package_threads();  // before PerSampleNetwork counts its copies
      result = std::visit(
          [&](auto transport) {
            // One sample at a time on one thread each (tim::PerSampleNetwork), as `tim sample`
            // does: a sample's bits do not depend on the batch, batch_size or the threads. The
            // copies come from `pristine_`, whose workspace no forward has touched.
            if (text()) {
              T2I network = std::get<T2I>(pristine_);
              if (null_captions.empty_tensor())
                network.clear_null_caption();
              else
                network.set_null_caption(null_captions.clone());
              const tim::PerSampleNetwork exact{network};
              tim::TransitionSampler sampler{exact, transport, s.schedule.value};
              return sampler.sample(z, captions, options);
            }
            const tim::PerSampleNetwork exact{std::get<C2I>(pristine_)};
            tim::TransitionSampler sampler{exact, transport, s.schedule.value};
            return sampler.sample(z, label_rows, options);
          },
          s.transport.value);
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
  std::string path_;
  std::variant<C2I, T2I> model_;
  std::variant<C2I, T2I> pristine_;  // a view of the same weights that never runs forward (sample's copies)
  std::map<std::string, std::string> metadata_;
  std::mutex mutex_;
};

//! A latent decoder on the CPU in float, loaded as `tim sample --vae` loads it
//! (apps/cli/sample_outputs.cpp): SD VAE or DC-AE by its tensors, options from a config.json
//! beside the weights.
class Decoder {
 public:
  Decoder(const std::string& path, std::int64_t tile, std::int64_t overlap) : tiles_{.tile = tile, .overlap = overlap} {
    tim::check(tile >= 0, "tile must be >= 0 latent pixels (0: untiled), got ", tile);
    tim::check(tile == 0 || (overlap >= 0 && overlap < tile), "overlap must be in [0, tile) = [0, ", tile, "), got ",
               overlap);
    try {
      const auto file = tim::io::SafetensorsFile::open(path);
      const bool sd_vae = file.contains("post_quant_conv.weight");
      tim::check(sd_vae || file.contains("decoder.conv_in.weight"), "not a VAE decoder: it has neither "
                 "'post_quant_conv.weight' (an SD VAE, AutoencoderKL) nor 'decoder.conv_in.weight' (a DC-AE, "
                 "AutoencoderDC)");
      const char* kind = sd_vae ? "AutoencoderKL" : "AutoencoderDC";
      const auto config = tim::vae::read_diffusers_vae_config_beside(path);
      if (config) {
        tim::check(config->class_name.empty() || config->class_name == kind, "the config.json beside it describes a ",
                   config->class_name, " but the weights are an ", kind);
        tim::check(!config->shift_factor || *config->shift_factor == 0, "the config.json beside it has shift_factor ",
                   tim::shortest_decimal(*config->shift_factor), "; tim decodes latents with zero shift only (SPEC 8)");
      }
      if (sd_vae) {
        tim::vae::SdVaeOptions options;
        if (config && config->norm_num_groups) options.groups = *config->norm_num_groups;
        if (config && config->scaling_factor) options.scaling_factor = *config->scaling_factor;
        decoder_.emplace<tim::vae::SdVaeDecoder<float>>(tim::vae::load_sd_vae_decoder<float>(file, options));
      } else {
        tim::vae::DcAeOptions options;
        if (config && config->attention_head_dim) options.attention_head_dim = *config->attention_head_dim;
        if (config && config->decoder_in_shortcut) options.in_shortcut = *config->decoder_in_shortcut;
        if (config && config->scaling_factor) options.scaling_factor = *config->scaling_factor;
        decoder_.emplace<tim::vae::DcAeDecoder<float>>(tim::vae::load_dc_ae_decoder<float>(file, options));
      }
    } catch (const tim::Error& e) {
      tim::fail("decoder '", path, "': ", e.what());
    }
  }

  std::string describe() const {
    return std::visit([](const auto& d) -> std::string {
      if constexpr (std::is_same_v<std::decay_t<decltype(d)>, std::monostate>) return "";
      else return d.config.describe();
    }, decoder_);
  }
  std::int64_t latent_channels() const {
    return std::visit([](const auto& d) -> std::int64_t {
      if constexpr (std::is_same_v<std::decay_t<decltype(d)>, std::monostate>) return 0;
      else return d.config.latent_channels;
    }, decoder_);
  }
  std::int64_t upscale() const {
    return std::visit([](const auto& d) -> std::int64_t {
      if constexpr (std::is_same_v<std::decay_t<decltype(d)>, std::monostate>) return 1;
      else return d.config.upscale();
    }, decoder_);
  }

  //! images (B, 3, H, W) in about [-1, 1] from latents (B, L, h, w), one sample at a time as
  //! `tim sample --vae` decodes (tiled when tile > 0).
  nb::ndarray<nb::numpy, float> decode(const InArray<float>& latents) {
    const auto lv = view_of(latents);
    tim::check(lv.rank() == 4 && lv.dim(0) >= 1, "decode: latents must have shape (B, L, h, w) with B >= 1, got ",
               lv.shape());
    tim::Tensor<float> images;
    {
      nb::gil_scoped_release release;
      std::lock_guard lock(mutex_);
      apply_package_threads();
      const std::int64_t B = lv.dim(0), per_latent = lv.numel() / B;
      for (std::int64_t b = 0; b < B; ++b) {
        auto one = tim::Tensor<float>::empty({1, lv.dim(1), lv.dim(2), lv.dim(3)});
        std::copy_n(lv.data() + b * per_latent, per_latent, one.data());
        const auto image = std::visit([&](const auto& d) -> tim::Tensor<float> {
          if constexpr (std::is_same_v<std::decay_t<decltype(d)>, std::monostate>) return {};
          else return tiles_.tile == 0 ? d.decode(one) : tim::vae::decode_tiled(d, one, tiles_);
        }, decoder_);
        if (b == 0) images = tim::Tensor<float>::empty({B, image.dim(1), image.dim(2), image.dim(3)});
        std::copy_n(image.data(), image.numel(), images.data() + b * image.numel());
      }
    }
    return to_numpy(images);
  }

 private:
  std::variant<std::monostate, tim::vae::SdVaeDecoder<float>, tim::vae::DcAeDecoder<float>> decoder_;
  tim::vae::TileOptions tiles_;
  std::mutex mutex_;
};

//! uint8 images (B, H, W, C) from float images (B, C, H, W), C = 1 or 3, by the SPEC 8 mapping.
nb::ndarray<nb::numpy, std::uint8_t> to_uint8(const InArray<float>& images, const std::string& mapping) {
  tim::check(mapping == "c2i" || mapping == "t2i", "mapping must be 'c2i' (clamp(255 (x + 1) / 2)) or 't2i' "
             "(clamp(127.5 x + 128)), got '", mapping, "'");
  const auto v = view_of(images);
  tim::check(v.rank() == 4 && (v.dim(1) == 1 || v.dim(1) == 3),
             "to_uint8: images must have shape (B, C, H, W) with C = 1 or 3, got ", v.shape());
  const auto m = mapping == "c2i" ? tim::io::PixelMapping::c2i : tim::io::PixelMapping::t2i;
  const std::int64_t B = v.dim(0), C = v.dim(1), H = v.dim(2), W = v.dim(3);
  auto out = tim::Tensor<std::uint8_t>::empty({B, H, W, C});
  for (std::int64_t b = 0; b < B; ++b) {
    const auto image = tim::io::latent_image(v.data() + b * C * H * W, static_cast<int>(C), static_cast<int>(H),
                                             static_cast<int>(W), m);
    std::copy(image.pixels.begin(), image.pixels.end(), out.data() + b * H * W * C);
  }
  return to_numpy(out);
}

}  // namespace

NB_MODULE(_tim, m) {
  m.doc() = "tim's C++ library (the extension behind the package tim; use tim's Python API, docs/python.md)";
  nb::exception<tim::Error>(m, "Error", PyExc_ValueError);
  m.attr("__version__") = std::to_string(TIM_VERSION_MAJOR) + "." + std::to_string(TIM_VERSION_MINOR) + "." +
                          std::to_string(TIM_VERSION_PATCH);
#ifdef TIM_USE_CBLAS
  m.attr("gemm") = "openblas";
#else
  m.attr("gemm") = "eigen";
#endif

  nb::class_<StepView>(m, "StepInfo", "What the on_step callback sees after a step moved the state from t to r.")
      .def_ro("step", &StepView::step, "0-based index i of the step t_i -> t_{i+1}")
      .def_ro("steps", &StepView::steps, "N, the steps of the grid")
      .def_ro("t", &StepView::t, "t_i")
      .def_ro("r", &StepView::r, "t_{i+1}")
      .def_ro("guided", &StepView::guided, "whether the step used classifier-free guidance")
      .def_ro("stochastic", &StepView::stochastic, "whether the step drew noise")
      .def_prop_ro("x", &StepView::x, nb::rv_policy::move, "A copy of the state x_r (B, C, H, W) float64; only during the callback");

  nb::class_<Model>(m, "NativeModel", "A checkpoint on the CPU in float32; use tim.load and tim.Model")
      .def(nb::init<const std::string&, std::optional<std::int64_t>, std::optional<std::string>,
                    std::optional<double>>(),
           "path"_a, "num_heads"_a = nb::none(), "new_condition"_a = nb::none(), "mlp_ratio"_a = nb::none())
      .def_prop_ro("path", &Model::path)
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
             std::optional<InArray<double>> noise, std::uint64_t seed, std::uint64_t first_index,
             std::optional<std::vector<std::uint64_t>> sample_indices, bool trajectory, nb::object on_step) {
            return model.sample({steps, cfg_scale, guidance_low, guidance_high, stochasticity, t_max, t_min,
                                 transport, mode, schedule, height, width},
                                labels, cap_feats, null_cap_feats, noise, seed, first_index, sample_indices,
                                trajectory, on_step);
          },
          "steps"_a, "cfg_scale"_a, "guidance_low"_a, "guidance_high"_a, "stochasticity"_a, "transport"_a,
          "t_max"_a, "t_min"_a, "schedule"_a, "mode"_a, "height"_a, "width"_a, "labels"_a.none(),
          "cap_feats"_a.none(), "null_cap_feats"_a.none(), "noise"_a.none(), "seed"_a, "first_index"_a,
          "sample_indices"_a.none(), "trajectory"_a, "on_step"_a.none());

  nb::class_<Decoder>(m, "NativeDecoder", "A latent decoder on the CPU in float32; use tim.load_decoder and tim.Decoder")
      .def(nb::init<const std::string&, std::int64_t, std::int64_t>(), "path"_a, "tile"_a = 0, "overlap"_a = 8)
      .def("describe", &Decoder::describe)
      .def_prop_ro("latent_channels", &Decoder::latent_channels)
      .def_prop_ro("upscale", &Decoder::upscale)
      .def("decode", &Decoder::decode, "latents"_a);

  m.def("to_uint8", &to_uint8, "images"_a, "mapping"_a = "c2i",
        "uint8 images (B, H, W, C) from float images (B, C, H, W) in [-1, 1], C = 1 or 3: mapping 'c2i' is "
        "clamp(255 (x + 1) / 2, 0, 255), 't2i' clamp(127.5 x + 128, 0, 255), truncated (SPEC 8).");
  m.def(
      "initial_noise",
      [](std::vector<std::int64_t> shape, std::uint64_t seed, std::uint64_t first_index) {
        return to_numpy(tim::initial_noise(tim::Shape(std::move(shape)), seed, first_index));
      },
      "shape"_a, "seed"_a = 0, "first_index"_a = 0,
      "Standard normal noise (B, ...) float64 from tim's counter-based generator: sample b is stream "
      "first_index + b of `seed`, the noise `tim sample` and Model.sample start from.");
  m.def("set_num_threads", &set_package_threads, "threads"_a,
        "Sets the CPU threads of every computation of the package, whichever Python thread starts it.");
  m.def("num_threads", &apply_package_threads,
        "The CPU threads computations use (set_num_threads, else OMP_NUM_THREADS, else the physical cores), "
        "the same in every Python thread.");
  m.def("_openmp_max_threads", [] { return omp_get_max_threads(); },
        "For the tests: OpenMP's thread count on the calling thread now (omp_get_max_threads), as left by the "
        "last computation started from it.");
}
