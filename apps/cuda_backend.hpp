// What the `tim` program needs from the CUDA backend, behind a plain C++ interface so that
// apps/tim.cpp stays a g++ translation unit: apps/cuda_backend.cu implements it with nvcc (the
// static library tim_cli_cuda, built when TIM_CUDA is on). A class-conditional model loaded onto
// the GPU in float32 or bfloat16, its forward in double on the host (`tim forward --device cuda`),
// and its sampler model, a tim::FlowFunction (`tim sample --device cuda`). See docs/cuda.md.
//
// Example (tim sample):
//   auto gpu = tim_cli::CudaC2IModel::load(path, "bfloat16", overrides);
//   tim::TransitionSampler sampler{gpu.flow(transport, 2 * B, H, W), transport, schedule};
//   auto result = sampler.sample(noise, labels, {.cfg_scale = ..., .null_label = gpu.config().num_classes});
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tim/core/tensor.hpp"
#include "tim/nn/config.hpp"
#include "tim/transport/transports.hpp"
#include "tim/vae/dc_ae.hpp"
#include "tim/vae/sd_vae.hpp"

namespace tim_cli {

//! The sampler's model in transport time, as tim::FlowFunction accepts it.
using DoubleFlow = std::function<void(tim::Tensor<double>& F, const tim::Tensor<double>& x, double t, double r,
                                      const tim::Tensor<std::int64_t>& labels)>;

//! A class-conditional TiM on the current GPU. Copies share the model.
class CudaC2IModel {
 public:
  //! Loads the checkpoint at `path` onto the GPU in `precision` ("float32" or "bfloat16").
  //! Throws tim::Error when there is no usable device, the file is not a C2I TiM, or the
  //! precision is unknown.
  static CudaC2IModel load(const std::string& path, const std::string& precision,
                           const tim::nn::ConfigOverrides& overrides = {});

  const tim::nn::C2IConfig& config() const;
  //! The device the model lives on, in words.
  std::string device() const;

  //! out (B, C_out, H, W) = F_theta(x (B, C, H, W), t_in (B), r_in (B), labels (B)) with the
  //! network time inputs t_in, r_in (after c_noise); host tensors in double, resized as needed.
  void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
               const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>& labels) const;

  //! The model as the sampler's FlowFunction under `transport` (c_noise applied inside), with
  //! its buffers reserved for up to `rows` samples of H x W (2B for a guided run).
  DoubleFlow flow(const tim::AnyTransport& transport, std::int64_t rows, std::int64_t height,
                  std::int64_t width) const;

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
  //! images (B, 3, H, W) from latents (B, L, h, w), host tensors.
  tim::Tensor<float> decode(const tim::Tensor<float>& latents) const;

  struct Impl;  // in cuda_backend.cu

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tim_cli
