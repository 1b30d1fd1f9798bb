// A class-conditional network on the GPU as the sampler's model: CudaFlow wraps an
// nn::C2IModel<T, tim::cuda> into a tim::FlowFunction, so tim::TransitionSampler drives it
// unchanged (time grid, guidance window, stochasticity and the trajectory stay on the host, in
// double). Each evaluation uploads x_t (B, S) in double, converts it to T on the device, runs
// the network at c_noise(t), c_noise(r), and brings F back in double. Buffers only grow; the
// first evaluation sizes them (and the network's workspace) for twice its rows, the size of a
// guided step, so a sampling run allocates nothing on the device after its first step.
// Internal: include <tim/cuda/tim.cuh>.
//
// Shape legend: B batch (2B rows inside the guidance window), S = C x H x W per sample.
#pragma once

#include <cstdint>
#include <vector>

#include "tim/core/tensor.hpp"
#include "tim/cuda/backend.cuh"
#include "tim/nn/c2i.hpp"
#include "tim/transport/transports.hpp"

namespace tim {

//! The FlowFunction of a C2I network on the GPU. Holds the network by reference (it must outlive
//! the flow). Not re-entrant (the network's workspace is shared).
//!
//! Example:
//!   auto model = tim::load_c2i<tim::bfloat16, tim::cuda>("c2i_model_256.safetensors");
//!   tim::TransitionSampler sampler{tim::cuda_flow(model, tim::OtFm{}), tim::OtFm{}, tim::linspace_schedule(4)};
//!   auto result = sampler.sample(noise, labels, {.cfg_scale = 2.5, .null_label = model.config.num_classes});
template <class T, Transport Tr>
class CudaFlow {
 public:
  //! `reserve_for_guidance` (default true): the first evaluation of B rows reserves 2B, so the
  //! first guided step allocates nothing; false reserves only what each call needs.
  CudaFlow(const nn::C2IModel<T, cuda>& network, Tr transport, bool reserve_for_guidance = true)
      : network_(&network), transport_(transport), reserve_for_guidance_(reserve_for_guidance) {}

  const nn::C2IModel<T, cuda>& network() const { return *network_; }

  //! Sizes every buffer (and the network's workspace) for up to `rows` samples of latent
  //! H x W now; call with 2B before a guided run so that no step allocates.
  void reserve(std::int64_t rows, std::int64_t height, std::int64_t width) {
    const auto& c = network_->config;
    grow(rows, rows * std::max(c.in_channels, c.out_channels) * height * width);
    network_->reserve(rows, height, width);
  }

  //! F (B, C_out, H, W) = the network's output at x (B, C, H, W), times (t, r) in transport
  //! time (c_noise applied here) and labels (B) on the host.
  void operator()(Tensor<double>& F, const Tensor<double>& x, double t, double r, const Tensor<std::int64_t>& labels) {
    const auto& c = network_->config;
    check(x.rank() == 4, "CudaFlow: x must be (B, C, H, W), got ", x.shape());
    const std::int64_t rows = x.dim(0), height = x.dim(2), width = x.dim(3);
    const std::int64_t out_numel = rows * c.out_channels * height * width;
    check(F.numel() == out_numel, "CudaFlow: F has ", F.numel(), " elements, the network gives ", out_numel);
    if (!reserved_ && reserve_for_guidance_) reserve(2 * rows, height, width);
    reserved_ = true;
    grow(rows, std::max(x.numel(), out_numel));
    Views& views = views_for(x);
    const auto n = static_cast<std::size_t>(x.numel());
    cuda::copy(state_.data(), x.data(), n);
    cuda::convert(views.x.data(), state_.data(), n);
    cuda::fill(views.t_in.data(), static_cast<std::size_t>(rows), static_cast<T>(transport_.c_noise(t)));
    cuda::fill(views.r_in.data(), static_cast<std::size_t>(rows), static_cast<T>(transport_.c_noise(r)));
    network_->forward(views.out, views.x, views.t_in, views.r_in, labels);
    cuda::convert(state_.data(), views.out.data(), static_cast<std::size_t>(out_numel));
    cuda::copy(F.data(), state_.data(), static_cast<std::size_t>(out_numel));
  }

 private:
  //! Tensors of one row count, views into the shared buffers.
  struct Views {
    std::int64_t rows = -1;
    std::vector<std::int64_t> extents;  // of x
    Tensor<T, cuda> x, out, t_in, r_in;
  };

  void grow(std::int64_t rows, std::int64_t values) {
    if (rows <= rows_capacity_ && values <= values_capacity_) return;
    rows_capacity_ = std::max(rows, rows_capacity_);
    values_capacity_ = std::max(values, values_capacity_);
    state_ = Tensor<double, cuda>::empty({values_capacity_});
    x_all_ = Tensor<T, cuda>::empty({values_capacity_});
    out_all_ = Tensor<T, cuda>::empty({values_capacity_});
    times_ = Tensor<T, cuda>::empty({2 * rows_capacity_});
    for (auto& v : views_) v = Views{};  // they pointed into the old buffers
  }

  Views& views_for(const Tensor<double>& x) {
    const std::int64_t rows = x.dim(0);
    for (auto& v : views_)
      if (v.rows == rows && v.extents == x.shape().extents()) return v;
    Views& v = views_[next_view_];
    next_view_ = (next_view_ + 1) % 2;
    const auto& c = network_->config;
    v.rows = rows;
    v.extents = x.shape().extents();
    v.x = x_all_.slice(0, x.numel()).reshape(x.shape());
    v.out = out_all_.slice(0, rows * c.out_channels * x.dim(2) * x.dim(3))
                .reshape({rows, c.out_channels, x.dim(2), x.dim(3)});
    v.t_in = times_.slice(0, rows);
    v.r_in = times_.slice(rows_capacity_, rows);
    return v;
  }

  const nn::C2IModel<T, cuda>* network_;
  Tr transport_;
  bool reserve_for_guidance_ = true, reserved_ = false;
  std::int64_t rows_capacity_ = 0, values_capacity_ = 0;
  Tensor<double, cuda> state_;  // x_t and F in double on the device
  Tensor<T, cuda> x_all_, out_all_, times_;
  Views views_[2];  // B and 2B rows, the two sizes a guided run alternates between
  int next_view_ = 0;
};

template <class T, class Tr>
CudaFlow(const nn::C2IModel<T, cuda>&, Tr, bool = true) -> CudaFlow<T, Tr>;

//! The CudaFlow of `network` under `transport` (the same as the class's deduction, spelled as a
//! function for contexts where class template argument deduction is not available).
template <class T, Transport Tr>
CudaFlow<T, Tr> cuda_flow(const nn::C2IModel<T, cuda>& network, Tr transport, bool reserve_for_guidance = true) {
  return CudaFlow<T, Tr>(network, transport, reserve_for_guidance);
}

}  // namespace tim
