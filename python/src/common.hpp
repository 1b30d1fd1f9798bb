// What the files of the extension tim._tim share (python/src/): NumPy arrays from and to tim
// tensors without copies, the names messages give the settings, the request of Model.sample and
// the settings as a dict, and the functions that add each file's bindings to the module.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tim/core/tensor.hpp"
#include "tim/sampler/settings.hpp"

namespace tim_python {

namespace nb = nanobind;

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
inline tim::SampleOptionNames python_names() {
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

//! The resolved settings as Model.resolve_settings returns them (model.cpp).
nb::dict settings_dict(const tim::SampleSettings& s);

// Each file adds its classes and functions to the module (module.cpp calls them).
void bind_model(nb::module_& m);    // model.cpp: NativeModel, StepInfo
void bind_decoder(nb::module_& m);  // decoder.cpp: NativeDecoder, to_uint8
void bind_text(nb::module_& m);     // text.cpp: NativeTextEncoder (when built with tim::text)

}  // namespace tim_python
