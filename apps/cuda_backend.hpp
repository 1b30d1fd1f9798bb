// What the `tim` program needs from the CUDA backend, behind a plain C++ interface so that the
// g++ translation units of apps/cli/ need no nvcc: apps/cuda_backend.cu implements it with nvcc (the
// static library tim_cli_cuda, built when TIM_CUDA is on). A TiM (class-conditional or
// text-to-image) loaded onto the GPU in float32 or bfloat16, its forward on host tensors
// (`tim forward --device cuda`), and whole sampling runs on the GPU (`tim sample --device cuda`):
// tim::TransitionSampler over the network on tim::cuda, so the state stays on the device for the
// whole run and only the result comes back. See docs/cuda.md.
//
// Example (tim sample):
//   auto gpu = tim_cli::CudaModel::load(path, "bfloat16", overrides);
//   tim::SampleResult<> result = gpu.sample(transport, schedule, noise, labels, options, progress);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tim/core/tensor.hpp"
#include "tim/nn/config.hpp"
#include "tim/sampler/sampler.hpp"
#include "tim/sampler/schedule.hpp"
#include "tim/text/gemma.hpp"
#include "tim/transport/transports.hpp"
#include "tim/vae/dc_ae.hpp"
#include "tim/vae/sd_vae.hpp"
#include "tim/vae/tiling.hpp"

namespace tim_cli {

//! Called after every step of a GPU sampling run with (step, steps); return false to stop.
using Progress = std::function<bool(int step, int steps)>;

//! A TiM on the current GPU, class-conditional or text-to-image as its tensor names say. Copies
//! share the model.
class CudaModel {
 public:
  //! Loads the checkpoint at `path` onto the GPU in `precision` ("float32" or "bfloat16").
  //! Throws tim::Error when there is no usable device, the file is not a TiM, or the precision
  //! is unknown.
  static CudaModel load(const std::string& path, const std::string& precision,
                        const tim::nn::ConfigOverrides& overrides = {});

  bool text_to_image() const;
  //! The configuration: the shared part, and each kind's whole one (tim::Error for the other kind).
  const tim::nn::BackboneConfig& config() const;
  const tim::nn::C2IConfig& c2i_config() const;
  const tim::nn::T2IConfig& t2i_config() const;
  //! The configuration in words (C2IConfig::describe or T2IConfig::describe).
  std::string describe() const;
  //! The device the model lives on, in words.
  std::string device() const;

  //! out (B, C_out, H, W) = F_theta(x (B, C, H, W), t_in (B), r_in (B), labels (B)) with the
  //! network time inputs t_in, r_in (after c_noise); host tensors in double, resized as needed.
  void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
               const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>& labels) const;
  //! The same for a text-to-image model with caption features (B, M, Dc).
  void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
               const tim::Tensor<double>& r_in, const tim::Tensor<float>& cap_feats) const;

  //! A sampling run on the GPU from host noise (B, C, H, W) under labels (B): the state, guidance,
  //! transitions, stochastic noise and trajectory stay on the device; the result (x, trajectory)
  //! comes back to the host at the end. `options.on_step` must be empty (the state is not on the
  //! host); `progress` is called after every step instead.
  tim::SampleResult<> sample(const tim::AnyTransport& transport, const tim::AnySchedule& schedule,
                             const tim::Tensor<double>& noise, const tim::Tensor<std::int64_t>& labels,
                             const tim::SamplerOptions<>& options, const Progress& progress = {}) const;
  //! The same for a text-to-image model: caption features (B, M, Dc) and, for guided steps, the
  //! null caption (1, M, Dc) (may be empty when nothing is guided).
  tim::SampleResult<> sample(const tim::AnyTransport& transport, const tim::AnySchedule& schedule,
                             const tim::Tensor<double>& noise, const tim::Tensor<float>& cap_feats,
                             const tim::Tensor<float>& null_cap_feats, const tim::SamplerOptions<>& options,
                             const Progress& progress = {}) const;

  struct Impl;  // in cuda_backend.cu

 private:
  std::shared_ptr<Impl> impl_;
};

//! A latent decoder on the current GPU in float (tim::vae::SdVaeDecoder<float, tim::cuda>,
//! DcAeDecoder<float, tim::cuda>): `tim sample --vae` with --device cuda. Copies share the decoder.
class CudaVaeDecoder {
 public:
  //! Copies a loaded decoder's weights to the GPU. Throws tim::Error when there is no usable device.
  static CudaVaeDecoder upload(const tim::vae::SdVaeDecoder<float>& host);
  static CudaVaeDecoder upload(const tim::vae::DcAeDecoder<float>& host);
  //! images (B, 3, H, W) from latents (B, L, h, w), host tensors; with tiles.tile > 0 decoded in
  //! tiles on the GPU (tim::vae::decode_tiled over the device decoder).
  tim::Tensor<float> decode(const tim::Tensor<float>& latents, const tim::vae::TileOptions& tiles = {}) const;

  struct Impl;  // in cuda_backend.cu

 private:
  std::shared_ptr<Impl> impl_;
};

//! The Gemma-3 text encoder of a text-encoder folder on the current GPU
//! (tim::text::GemmaEncoder<float, tim::cuda, W>): `tim encode` and `tim sample --text-encoder`
//! with --device cuda, as the encoder stage of tim::text::PromptEncoder::with_encoder. Weights
//! stored in bfloat16 (the released folder) stay bfloat16 on the GPU, others are held in float,
//! as the CPU encoder holds them; arithmetic is float. Copies share the encoder.
//!
//! Example:
//!   auto gpu = tim_cli::CudaTextEncoder::load("gemma-3-1b-it");
//!   gpu.encode(features, ids, lengths, tim::text::HiddenState::last);   // host (B, N, D) float
class CudaTextEncoder {
 public:
  //! Loads config.json and model.safetensors of `dir` onto the GPU. Throws tim::Error when there
  //! is no usable device or the folder is not a Gemma-3 text decoder.
  static CudaTextEncoder load(const std::string& dir);

  const tim::text::GemmaConfig& config() const;
  //! "bfloat16" or "float32": how the weights are held on the GPU.
  std::string weight_dtype() const;
  //! The device the encoder lives on, in words.
  std::string device() const;
  //! out (B, N, D) host floats = the `which` hidden state of ids (B, N) (host) whose first
  //! lengths[b] tokens are real (tim::text::GemmaEncoder::forward).
  void encode(tim::Tensor<float>& out, const tim::Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths,
              tim::text::HiddenState which) const;

  struct Impl;  // in cuda_backend.cu

 private:
  std::shared_ptr<Impl> impl_;
};

//! The CUDA devices this process sees (cudaGetDeviceCount); throws tim::Error when the driver
//! cannot be reached or the program was built without CUDA.
int cuda_device_count();
//! Makes `device` the current GPU of this process (cudaSetDevice), before anything is loaded:
//! `tim sample --gpu N`, or the launcher's local rank modulo cuda_device_count().
void use_cuda_device(int device);

}  // namespace tim_cli
