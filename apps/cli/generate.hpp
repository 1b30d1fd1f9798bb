// Generating samples by sample index with a model loaded once (`tim sample`, and what a server
// reuses): Generator loads a TiM on the CPU (float) or with --device cuda on the GPU, and
// generate() samples any set of samples, each given by its sample index (its noise stream) and
// its condition (a class label or a caption row). On the CPU every network evaluation runs one
// sample at a time (PerSampleNetwork), so a sample's latents are the same bits whatever chunk,
// shard or request it is generated with (given the model, the settings, the CPU kernels and the
// thread count); docs/scale.md. On the GPU a chunk is one forward batch (compiled, not run here;
// cuBLAS may round another batch size differently).
//
// Example:
//   auto generator = tim_cli::Generator::load(model_options, compute_options);
//   tim::SampleSettings settings = tim::resolve_sample_settings(request, generator.metadata());
//   std::vector<tim_cli::SampleSpec> specs{{.index = 7, .label = 3}, {.index = 8, .label = 3}};
//   auto noise = tim_cli::initial_noise_of(specs, seed, generator.config(), settings);
//   tim::SampleResult<> result = generator.generate(settings, seed, specs, noise, {});
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "tim/sampler/settings.hpp"

namespace tim_cli {

//! One sample to generate: its sample index (the stream of its initial noise and of its
//! stochastic steps) and its condition.
struct SampleSpec {
  std::uint64_t index = 0;
  std::int64_t label = 0;     // class-conditional models: the class (num_classes: unconditional)
  std::int64_t caption = -1;  // text-to-image models: the row of the caption features
};

//! The initial noise (B, C, H, W) of `specs`, row b the stream of specs[b].index, at the
//! settings' latent size, times t_0 for VE: tim::initial_noise_of (tim/sampler/noise.hpp).
tim::Tensor<double> initial_noise_of(const std::vector<SampleSpec>& specs, std::uint64_t seed,
                                     const tim::nn::BackboneConfig& config, const tim::SampleSettings& settings);

//! Called after every sampling step with (step, steps); false stops the run.
using StepReport = std::function<bool(int step, int steps)>;

//! A model, loaded once, that generates samples.
class Generator {
 public:
  //! Loads the model (options.model_path must be set) on the CPU, or with compute.cuda() on the
  //! current GPU in compute.precision. Throws tim::Error with what is wrong.
  static Generator load(const ModelOptions& options, const ComputeOptions& compute);

  const tim::nn::BackboneConfig& config() const;
  bool text_to_image() const;
  std::int64_t num_classes() const;   // class-conditional models, else 0
  std::int64_t caption_dim() const;   // text-to-image models, else 0
  std::string device() const;         // "cpu, float32", or the GPU and its precision
  std::string device_words() const;   // "N threads", or the GPU in its precision
  bool cuda() const;
  std::string describe() const;       // the configuration in words (C2IConfig/T2IConfig::describe)
  const std::map<std::string, std::string>& metadata() const;  // the checkpoint's __metadata__

  //! The latents of `specs` (B = specs.size()) from `noise` (B, C, H, W) (initial_noise_of, or
  //! rows of a --noise file): labels from specs (class-conditional), caption rows from
  //! `cap_feats` (text-to-image; `null_cap_feats` for guidance, may be empty). The result holds
  //! x in double (and the trajectory with keep_trajectory).
  tim::SampleResult<> generate(const tim::SampleSettings& settings, std::uint64_t seed,
                               const std::vector<SampleSpec>& specs, const tim::Tensor<double>& noise,
                               const StepReport& report, bool keep_trajectory = false,
                               const tim::Tensor<float>& cap_feats = {},
                               const tim::Tensor<float>& null_cap_feats = {}) const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace tim_cli
