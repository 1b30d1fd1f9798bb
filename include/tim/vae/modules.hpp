// What the latent decoders (sd_vae.hpp, dc_ae.hpp) share: the reusable scratch buffers of their
// workspaces, the stride-1 'same' convolution module, checkpoint shape checks, and the generic
// walks over a decoder's modules (parameter counting, copying a loaded decoder to another
// backend). Modules are templates <T, Backend> like those of nn/: typed members named after the
// checkpoint keys, forward over raw-pointer backend operations (the decoder operations of
// tim/core/backend.hpp), activations channels-last (B, H, W, C).
//
// Each module lists its members once in `static auto fields(auto& self)` (a std::tie); the walks
// below recurse through those lists, nn::Linear, std::vector and tensors, so neither the parameter
// count nor the copy to another backend is written per module.
//
// Shape legend: B batch, C channels (Ci in, Co out), H, W spatial size, k kernel size, K = k*k*Ci.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/shape.hpp"
#include "tim/core/tensor.hpp"
#include "tim/math/decoder.hpp"
#include "tim/nn/modules.hpp"

namespace tim::vae {

//! One reusable buffer of a decoder workspace in the backend's memory: reserve(n) makes it hold at
//! least n values (contents not kept when it grows) and returns it. Buffers only grow, so a
//! repeated decode of the same size allocates nothing.
template <class T, class Backend>
struct Scratch {
  Tensor<T, Backend> buffer;

  T* reserve(std::int64_t n) {
    if (n > 0 && buffer.numel() < n) buffer = Tensor<T, Backend>::empty({n});
    return buffer.data();
  }
};

//! What every convolution of a workspace needs: the im2col buffer and its largest block.
template <class T, class Backend>
struct ConvolutionScratch {
  Scratch<T, Backend> columns;
  std::int64_t im2col_block_elements = Backend::im2col_block_elements;
};

//! A decoder's workspace, owned by the decoder and reused by every decode. A copy of the decoder
//! starts with an empty workspace of its own (the weights are shared, the scratch is not).
template <class Workspace>
class WorkspaceSlot {
 public:
  WorkspaceSlot() = default;
  WorkspaceSlot(const WorkspaceSlot&) {}
  WorkspaceSlot(WorkspaceSlot&&) noexcept = default;
  WorkspaceSlot& operator=(const WorkspaceSlot&) {
    value_ = Workspace{};
    return *this;
  }
  WorkspaceSlot& operator=(WorkspaceSlot&&) noexcept = default;
  Workspace& get() const { return value_; }
  void release() const { value_ = Workspace{}; }

 private:
  mutable Workspace value_;
};

//! A stride-1 'same' convolution (zero padding k/2), bias optional; weight stored (Co, k, k, Ci) for
//! channels-last im2col (the checkpoint's (Co, Ci, k, k) with the input channels moved last).
template <class T, class Backend>
struct Conv2d {
  Tensor<T, Backend> weight;  // (Co, k, k, Ci)
  Tensor<T, Backend> bias;    // (Co), empty without bias
  std::int64_t in_channels = 0, out_channels = 0, kernel = 0;
  static auto fields(auto& self) {
    return std::tie(self.weight, self.bias, self.in_channels, self.out_channels, self.kernel);
  }

  //! Reads prefix.weight (out, in, k, k) and (with_bias) prefix.bias (out). A 1x1 weight is the
  //! checkpoint tensor itself (a view of the mapped file on the CPU); a k x k one is repacked on the host.
  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t in, std::int64_t out, std::int64_t k,
            bool with_bias = true) {
    in_channels = in;
    out_channels = out;
    kernel = k;
    auto stored = reader.template take<T, cpu>(prefix + ".weight", {out, in, k, k});
    if (with_bias) bias = reader.template take<T, Backend>(prefix + ".bias", {out});
    if (k == 1) {
      weight = to_backend<Backend>(stored.reshape({out, 1, 1, in}));
      return;
    }
    auto repacked = Tensor<T, cpu>::empty({out, k, k, in});
    const T* src = stored.data();
    T* dst = repacked.data();
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t i = 0; i < in; ++i)
        for (std::int64_t kk = 0; kk < k * k; ++kk) dst[(o * k * k + kk) * in + i] = src[(o * in + i) * k * k + kk];
    weight = to_backend<Backend>(repacked);
  }
  //! y (B, H, W, Co) = conv(x (B, H, W, Ci)); with `accumulate`, added to y. A k x k convolution
  //! builds its im2col blocks in scratch.columns.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t height, std::int64_t width,
               ConvolutionScratch<T, Backend>& scratch, bool accumulate = false) const {
    const std::int64_t row_width = kernel * kernel * in_channels, block = scratch.im2col_block_elements;
    T* columns = kernel == 1 ? nullptr
                             : scratch.columns.reserve(math::rows_per_block(batch * height * width, row_width, block) *
                                                       row_width);
    Backend::conv2d_forward(y, x, weight.data(), bias.data(), batch, height, width, in_channels, out_channels, kernel,
                            accumulate, columns, block);
  }
};

namespace detail {

//! The shape of tensor `name` in a decoder checkpoint, required to have `rank` dimensions;
//! `kind` ("an SD VAE (AutoencoderKL)") names the checkpoint the loader expects, in messages.
template <class Source>
Shape checkpoint_shape(const Source& source, const std::string& name, int rank, const char* expected,
                       const char* kind) {
  check(source.contains(name), "checkpoint: missing tensor '", name, "' (expected shape ", expected, "; is this ",
        kind, " checkpoint?)");
  const Shape shape = source.info(name).shape;
  check(shape.rank() == rank, "checkpoint: tensor '", name, "' has shape ", shape, ", expected ", expected);
  return shape;
}

template <class X>
struct is_tensor : std::false_type {};
template <class T, class B>
struct is_tensor<Tensor<T, B>> : std::true_type {};
template <class X>
struct is_vector : std::false_type {};
template <class E>
struct is_vector<std::vector<E>> : std::true_type {};
template <class X>
struct is_linear : std::false_type {};
template <class T, class B>
struct is_linear<nn::Linear<T, B>> : std::true_type {};
template <class X>
concept has_fields = requires(const X& x) { X::fields(x); };

//! The parameters (tensor elements) of a module, recursively through its fields.
template <class X>
std::int64_t count_parameters(const X& x) {
  if constexpr (is_tensor<X>::value) {
    return x.numel();
  } else if constexpr (is_linear<X>::value) {
    return x.parameter_count();
  } else if constexpr (is_vector<X>::value) {
    std::int64_t n = 0;
    for (const auto& e : x) n += count_parameters(e);
    return n;
  } else if constexpr (has_fields<X>) {
    return std::apply([](const auto&... f) { return (std::int64_t{0} + ... + count_parameters(f)); }, X::fields(x));
  } else {
    return 0;
  }
}

//! `to` (a module on another backend) = `from`, member by member: tensors copied to `to`'s
//! backend (from the host, or to the host), empty tensors kept empty, everything else assigned.
template <class To, class From>
void copy_module(To& to, const From& from) {
  if constexpr (is_tensor<From>::value) {
    using Target = typename To::backend;
    if (from.empty_tensor())
      to = To{};
    else if constexpr (std::is_same_v<typename From::backend, cpu>)
      to = to_backend<Target>(from);
    else if constexpr (std::is_same_v<Target, cpu>)
      to = to_host(from);
    else
      static_assert(std::is_same_v<Target, cpu>, "copy_to_backend: copies go through the host");
  } else if constexpr (is_linear<From>::value) {
    check(from.storage == nn::WeightStorage::value, "copy_to_backend: a linear weight is held as stored (",
          nn::weight_storage_name(from.storage), "), not in the decoder's type");
    copy_module(to.weight, from.weight);
    copy_module(to.bias, from.bias);
    to.in_features = from.in_features;
    to.out_features = from.out_features;
  } else if constexpr (is_vector<From>::value) {
    to.resize(from.size());
    for (std::size_t i = 0; i < from.size(); ++i) copy_module(to[i], from[i]);
  } else if constexpr (has_fields<From>) {
    auto target = To::fields(to);
    const auto source = From::fields(from);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (copy_module(std::get<I>(target), std::get<I>(source)), ...);
    }(std::make_index_sequence<std::tuple_size_v<decltype(source)>>{});
  } else {
    to = from;
  }
}

template <class Decoder, class Backend>
struct rebound;
template <template <class, class> class Decoder, class T, class From, class Backend>
struct rebound<Decoder<T, From>, Backend> {
  using type = Decoder<T, Backend>;
};

}  // namespace detail

//! The same decoder (SdVaeDecoder, DcAeDecoder) on another backend: every weight copied there,
//! the configuration kept; block-size settings take the target backend's defaults. For a decoder
//! already loaded on the CPU; loading straight onto the backend (load_sd_vae_decoder<T, Backend>)
//! does not need the host copy. Throws tim::Error when the target backend cannot run it.
//! Example: auto gpu = tim::vae::copy_to_backend<tim::cuda>(tim::vae::open_sd_vae_decoder<float>(path));
template <class Backend, class Decoder>
typename detail::rebound<Decoder, Backend>::type copy_to_backend(const Decoder& decoder) {
  typename detail::rebound<Decoder, Backend>::type out;
  out.config = decoder.config;
  out.check_backend();
  detail::copy_module(out, decoder);
  return out;
}

}  // namespace tim::vae
