// The CUDA side of the `tim` program (apps/cuda_backend.hpp), compiled by nvcc into the static
// library tim_cli_cuda: the model in float32 or bfloat16 behind one non-template interface.
#include "cuda_backend.hpp"

#include <tim/cuda/tim.cuh>

#include <memory>
#include <variant>

namespace tim_cli {

struct CudaC2IModel::Impl {
  virtual ~Impl() = default;
  virtual const tim::nn::C2IConfig& config() const = 0;
  virtual void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
                       const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>& labels) = 0;
  virtual DoubleFlow flow(const tim::AnyTransport& transport, std::int64_t rows, std::int64_t height,
                          std::int64_t width) = 0;
};

namespace {

//! A host tensor of doubles as a device tensor of T (same shape).
template <class T>
tim::Tensor<T, tim::cuda> upload_as(const tim::Tensor<double>& host) {
  auto staged = tim::Tensor<double, tim::cuda>::empty(host.shape());
  tim::cuda::copy(staged.data(), host.data(), static_cast<std::size_t>(host.numel()));
  auto converted = tim::Tensor<T, tim::cuda>::empty(host.shape());
  tim::cuda::convert(converted.data(), staged.data(), static_cast<std::size_t>(host.numel()));
  return converted;
}

template <class T>
struct TypedModel final : CudaC2IModel::Impl {
  std::shared_ptr<tim::nn::C2IModel<T, tim::cuda>> model;

  explicit TypedModel(tim::nn::C2IModel<T, tim::cuda> m)
      : model(std::make_shared<tim::nn::C2IModel<T, tim::cuda>>(std::move(m))) {}

  const tim::nn::C2IConfig& config() const override { return model->config; }

  void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
               const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>& labels) override {
    tim::Tensor<T, tim::cuda> device_out;
    model->forward(device_out, upload_as<T>(x), upload_as<T>(t_in), upload_as<T>(r_in), labels);
    auto as_double = tim::Tensor<double, tim::cuda>::empty(device_out.shape());
    tim::cuda::convert(as_double.data(), device_out.data(), static_cast<std::size_t>(device_out.numel()));
    if (out.empty_tensor() || out.shape() != device_out.shape()) out = tim::Tensor<double>::empty(device_out.shape());
    tim::cuda::copy(out.data(), as_double.data(), static_cast<std::size_t>(out.numel()));
  }

  DoubleFlow flow(const tim::AnyTransport& transport, std::int64_t rows, std::int64_t height,
                  std::int64_t width) override {
    return std::visit(
        [&](auto chosen) -> DoubleFlow {
          // The flow keeps the model alive through the shared pointer it captures.
          auto flow = std::make_shared<tim::CudaFlow<T, decltype(chosen)>>(*model, chosen);
          flow->reserve(rows, height, width);
          return [flow, keep = model](tim::Tensor<double>& F, const tim::Tensor<double>& x, double t, double r,
                                      const tim::Tensor<std::int64_t>& labels) { (*flow)(F, x, t, r, labels); };
        },
        transport);
  }
};

}  // namespace

CudaC2IModel CudaC2IModel::load(const std::string& path, const std::string& precision,
                                const tim::nn::ConfigOverrides& overrides) {
  tim::check(tim::cuda::available(), "--device cuda: ", tim::cuda::device_description());
  CudaC2IModel loaded;
  if (precision == "float32")
    loaded.impl_ = std::make_shared<TypedModel<float>>(tim::load_c2i<float, tim::cuda>(path, overrides));
  else if (precision == "bfloat16")
    loaded.impl_ = std::make_shared<TypedModel<tim::bfloat16>>(tim::load_c2i<tim::bfloat16, tim::cuda>(path, overrides));
  else
    tim::fail("--precision: '", precision, "' is not float32 or bfloat16");
  return loaded;
}

const tim::nn::C2IConfig& CudaC2IModel::config() const { return impl_->config(); }

std::string CudaC2IModel::device() const { return tim::cuda::device_description(); }

void CudaC2IModel::forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
                           const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>& labels) const {
  impl_->forward(out, x, t_in, r_in, labels);
}

DoubleFlow CudaC2IModel::flow(const tim::AnyTransport& transport, std::int64_t rows, std::int64_t height,
                              std::int64_t width) const {
  return impl_->flow(transport, rows, height, width);
}

struct CudaVaeDecoder::Impl {
  virtual ~Impl() = default;
  virtual tim::Tensor<float> decode(const tim::Tensor<float>& latents) const = 0;
};

namespace {

//! SdVaeDecoder<float, tim::cuda> or DcAeDecoder<float, tim::cuda> on host tensors.
template <class Decoder>
struct TypedVae final : CudaVaeDecoder::Impl {
  Decoder decoder;
  explicit TypedVae(Decoder d) : decoder(std::move(d)) {}
  tim::Tensor<float> decode(const tim::Tensor<float>& latents) const override {
    return tim::to_host(decoder.decode(tim::to_backend<tim::cuda>(latents)));
  }
};

//! The decoder's weights copied to the GPU (tim::vae::copy_to_backend).
template <class HostDecoder>
std::shared_ptr<CudaVaeDecoder::Impl> upload_decoder(const HostDecoder& host) {
  tim::check(tim::cuda::available(), "--device cuda: ", tim::cuda::device_description());
  auto gpu = tim::vae::copy_to_backend<tim::cuda>(host);
  return std::make_shared<TypedVae<decltype(gpu)>>(std::move(gpu));
}

}  // namespace

CudaVaeDecoder CudaVaeDecoder::upload(const tim::vae::SdVaeDecoder<float>& host) {
  CudaVaeDecoder uploaded;
  uploaded.impl_ = upload_decoder(host);
  return uploaded;
}

CudaVaeDecoder CudaVaeDecoder::upload(const tim::vae::DcAeDecoder<float>& host) {
  CudaVaeDecoder uploaded;
  uploaded.impl_ = upload_decoder(host);
  return uploaded;
}

tim::Tensor<float> CudaVaeDecoder::decode(const tim::Tensor<float>& latents) const { return impl_->decode(latents); }

}  // namespace tim_cli
