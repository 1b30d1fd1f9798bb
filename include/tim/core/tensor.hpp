// Tensor<T, Backend>: a contiguous row-major block of T in the backend's memory, owning or viewing.
// Views keep their owner alive (a shared handle), so a weight viewing a memory-mapped
// checkpoint keeps the mapping open for as long as the weight exists.
#pragma once

#include <memory>
#include <type_traits>

#include "tim/core/config.hpp"
#include "tim/core/dtype.hpp"
#include "tim/core/memory.hpp"
#include "tim/core/shape.hpp"

namespace tim {

// The default backend, defined in tim/cpu/backend.hpp. The inline namespace (cpu_eigen or
// cpu_cblas, core/config.hpp) puts the GEMM configuration into every mangled name that mentions it.
inline namespace TIM_CPU_ABI {
struct cpu;
}

//! Where a backend's tensors get their memory: the backend itself, except that tim::cpu's
//! memory is HostMemory (its base), so host tensors need no CPU operations (nor Eigen). The
//! specialisation for cpu mangles with cpu's inline namespace like every other use of it.
template <class Backend>
struct backend_memory {
  using type = Backend;
};
template <>
struct backend_memory<cpu> {
  using type = HostMemory;
};

//! A contiguous row-major tensor of `T` living in `Backend`'s memory.
//!
//! Memory comes from backend_memory<Backend>::type (allocate, fill, copy; tim::Backend).
//! Copies are shallow (they share the data); use `clone()` for a deep copy.
//! Example: `auto x = tim::Tensor<float>::zeros({2, 4, 32, 32});`
template <class T, class Backend = cpu>
class Tensor {
 public:
  using value_type = T;
  using backend = Backend;

  Tensor() = default;

  //! Uninitialised owning tensor.
  static Tensor empty(Shape shape) {
    Tensor t;
    t.shape_ = std::move(shape);
    auto storage = Memory::template allocate<T>(static_cast<std::size_t>(t.shape_.numel()));
    t.data_ = storage.get();
    t.owner_ = std::move(storage);
    return t;
  }
  //! Owning tensor filled with zeros.
  static Tensor zeros(Shape shape) {
    Tensor t = empty(std::move(shape));
    Memory::fill(t.data_, static_cast<std::size_t>(t.numel()), T{});
    return t;
  }
  //! Non-owning view of `data`; `owner` (optional) is kept alive with the view.
  static Tensor view(T* data, Shape shape, std::shared_ptr<const void> owner = nullptr) {
    Tensor t;
    t.data_ = data;
    t.shape_ = std::move(shape);
    t.owner_ = std::move(owner);
    return t;
  }

  T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  std::int64_t dim(int axis) const { return shape_[axis < 0 ? axis + rank() : axis]; }
  std::int64_t numel() const { return data_ ? shape_.numel() : 0; }
  bool empty_tensor() const { return data_ == nullptr; }
  const std::shared_ptr<const void>& owner() const { return owner_; }

  //! The same data seen with another shape of the same element count.
  Tensor reshape(Shape shape) const {
    check(shape.numel() == numel(), "reshape: ", shape_, " has ", numel(), " elements, ", shape,
          " needs ", shape.numel());
    return view(data_, std::move(shape), owner_);
  }

  //! View of `count` entries along the outermost axis starting at `start`.
  Tensor slice(std::int64_t start, std::int64_t count) const {
    check(rank() >= 1 && start >= 0 && count >= 0 && start + count <= dim(0), "slice [", start, ", ",
          start + count, ") out of range for shape ", shape_);
    std::vector<std::int64_t> extents = shape_.extents();
    const std::int64_t inner = extents[0] ? numel() / extents[0] : 0;
    extents[0] = count;
    return view(data_ + start * inner, Shape(std::move(extents)), owner_);
  }

  //! Deep copy into a new owning tensor.
  Tensor clone() const {
    Tensor t = empty(shape_);
    Memory::copy(t.data_, data_, static_cast<std::size_t>(numel()));
    return t;
  }

 private:
  using Memory = typename backend_memory<Backend>::type;
  T* data_ = nullptr;
  Shape shape_;
  std::shared_ptr<const void> owner_;
};

//! The same values in `Backend`'s memory: `host` itself for the CPU backend, otherwise a new
//! owning tensor filled through Backend::copy_from_host. This is how weights read from a
//! checkpoint (host memory) reach another backend.
template <class Backend, class T>
Tensor<T, Backend> to_backend(const Tensor<T, cpu>& host) {
  if constexpr (std::is_same_v<Backend, cpu>) {
    return host;
  } else {
    auto out = Tensor<T, Backend>::empty(host.shape());
    Backend::copy_from_host(out.data(), host.data(), static_cast<std::size_t>(host.numel()));
    return out;
  }
}

//! The same values in host memory: `x` itself for the CPU backend, otherwise a new host tensor
//! filled through Backend::copy_to_host (complete on return).
template <class T, class Backend>
Tensor<T, cpu> to_host(const Tensor<T, Backend>& x) {
  if constexpr (std::is_same_v<Backend, cpu>) {
    return x;
  } else {
    auto out = Tensor<T, cpu>::empty(x.shape());
    Backend::copy_to_host(out.data(), x.data(), static_cast<std::size_t>(x.numel()));
    return out;
  }
}

}  // namespace tim
