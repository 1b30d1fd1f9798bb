// Generator (generate.hpp): the only code of `tim sample` that holds the network, the sampler and
// the GPU model type.
#include "generate.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "tim/cpu/per_sample_network.hpp"
#include "tim/sampler/noise.hpp"
#include "tim/sampler/options.hpp"

namespace tim_cli {

tim::Tensor<double> initial_noise_of(const std::vector<SampleSpec>& specs, std::uint64_t seed,
                                     const tim::nn::BackboneConfig& c, const tim::SampleSettings& settings) {
  std::vector<std::uint64_t> indices;
  for (const auto& spec : specs) indices.push_back(spec.index);
  return tim::initial_noise_of(indices, seed, c.in_channels, c.patch, settings);
}

struct Generator::State {
  std::optional<LoadedModel> cpu;
  std::optional<CudaModel> gpu;
  std::map<std::string, std::string> metadata;
  std::string precision;
};

Generator Generator::load(const ModelOptions& options, const ComputeOptions& compute) {
  Generator generator;
  generator.state_ = std::make_shared<State>();
  State& s = *generator.state_;
  if (compute.cuda())
    s.gpu.emplace(load_cuda_model(options, compute.precision));
  else
    s.cpu.emplace(load_model(options, cpu_precision(compute)));
  s.metadata = tim::io::SafetensorsFile::open(options.model_path).metadata();
  s.precision = compute.precision;
  return generator;
}

bool Generator::cuda() const { return state_->gpu.has_value(); }
const tim::nn::BackboneConfig& Generator::config() const {
  return cuda() ? state_->gpu->config() : state_->cpu->backbone();
}
bool Generator::text_to_image() const { return cuda() ? state_->gpu->text_to_image() : state_->cpu->text_to_image(); }
std::int64_t Generator::num_classes() const {
  if (text_to_image()) return 0;
  return cuda() ? state_->gpu->c2i_config().num_classes : std::get<C2IModel>(state_->cpu->model).config.num_classes;
}
std::int64_t Generator::caption_dim() const {
  if (!text_to_image()) return 0;
  return cuda() ? state_->gpu->t2i_config().caption_dim : std::get<T2IModel>(state_->cpu->model).config.caption_dim;
}
std::string Generator::device() const {
  return cuda() ? state_->gpu->device() + ", " + state_->precision : state_->cpu->device();
}
std::string Generator::device_words() const {
  return cuda() ? state_->gpu->device() + " in " + state_->precision : std::to_string(tim::num_threads()) + " threads";
}
std::string Generator::describe() const { return cuda() ? state_->gpu->describe() : state_->cpu->describe(); }
const std::map<std::string, std::string>& Generator::metadata() const { return state_->metadata; }

tim::SampleResult<> Generator::generate(const tim::SampleSettings& s, std::uint64_t seed,
                                        const std::vector<SampleSpec>& specs, const tim::Tensor<double>& noise,
                                        const StepReport& report, bool keep_trajectory,
                                        const tim::Tensor<float>& cap_feats,
                                        const tim::Tensor<float>& null_cap_feats) const {
  const auto B = static_cast<std::int64_t>(specs.size());
  tim::check(noise.rank() == 4 && noise.dim(0) == B, "generate: noise ", noise.shape(), " for ", B, " samples");
  std::vector<std::uint64_t> indices;
  for (const auto& spec : specs) indices.push_back(spec.index);
  const bool text = text_to_image();
  auto labels = tim::Tensor<std::int64_t>::empty({B});
  tim::Tensor<float> captions;
  if (text) {
    captions = tim::Tensor<float>::empty({B, cap_feats.dim(1), cap_feats.dim(2)});
    const std::int64_t per_caption = cap_feats.dim(1) * cap_feats.dim(2);
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t row = specs[static_cast<std::size_t>(b)].caption;
      tim::check(row >= 0 && row < cap_feats.dim(0), "generate: caption row ", row, " outside the ",
                 cap_feats.dim(0), " captions");
      std::copy_n(cap_feats.data() + row * per_caption, per_caption, captions.data() + b * per_caption);
    }
  } else {
    for (std::int64_t b = 0; b < B; ++b) labels.data()[b] = specs[static_cast<std::size_t>(b)].label;
  }
  const auto options = tim::sampler_options(s, seed, indices, keep_trajectory);
  const tim::AnySchedule& schedule = s.schedule.value;
  if (cuda()) {
    // The whole chunk on the GPU in one batch (tim::TransitionSampler over the network on
    // tim::cuda): the state stays on the device; `report` instead of a host on_step.
    const auto& gpu = *state_->gpu;
    return text ? gpu.sample(s.transport.value, schedule, noise, captions, null_cap_feats, options, report)
                : gpu.sample(s.transport.value, schedule, noise, labels, options, report);
  }
  auto host_options = options;
  if (report) host_options.on_step = [&report](const tim::StepInfo<>& info) { return report(info.step, info.steps); };
  return std::visit(
      [&](auto chosen) {
        if (text) {
          auto& network = std::get<T2IModel>(state_->cpu->model);
          if (null_cap_feats.empty_tensor())
            network.clear_null_caption();
          else
            network.set_null_caption(null_cap_feats);
          const tim::PerSampleNetwork exact{network};
          tim::TransitionSampler sampler{exact, chosen, schedule};
          return sampler.sample(noise, captions, host_options);
        }
        const tim::PerSampleNetwork exact{std::get<C2IModel>(state_->cpu->model)};
        tim::TransitionSampler sampler{exact, chosen, schedule};
        return sampler.sample(noise, labels, host_options);
      },
      s.transport.value);
}

}  // namespace tim_cli
