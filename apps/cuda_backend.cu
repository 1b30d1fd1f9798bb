// The CUDA side of the `tim` program (apps/cuda_backend.hpp), compiled by nvcc into the static
// library tim_cli_cuda: the model in float32 or bfloat16 behind one non-template interface.
#include "cuda_backend.hpp"

#include <tim/cuda/tim.cuh>

#include <memory>
#include <type_traits>
#include <variant>

namespace tim_cli {

struct CudaModel::Impl {
  virtual ~Impl() = default;
  virtual bool text_to_image() const = 0;
  virtual const tim::nn::BackboneConfig& config() const = 0;
  virtual const tim::nn::C2IConfig* c2i_config() const = 0;
  virtual const tim::nn::T2IConfig* t2i_config() const = 0;
  virtual void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
                       const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>* labels,
                       const tim::Tensor<float>* cap_feats) = 0;
  virtual tim::SampleResult<> sample(const tim::AnyTransport& transport, const tim::AnySchedule& schedule,
                                     const tim::Tensor<double>& noise, const tim::Tensor<std::int64_t>* labels,
                                     const tim::Tensor<float>* cap_feats, const tim::Tensor<float>* null_cap_feats,
                                     const tim::SamplerOptions<>& options, const Progress& progress) = 0;
};

namespace {

//! A host tensor of From as a device tensor of T (same shape): uploaded, then converted there.
template <class T, class From>
tim::Tensor<T, tim::cuda> upload_as(const tim::Tensor<From>& host) {
  auto staged = tim::to_backend<tim::cuda>(host);
  if constexpr (std::is_same_v<T, From>) {
    return staged;
  } else {
    auto converted = tim::Tensor<T, tim::cuda>::empty(host.shape());
    tim::cuda::convert(converted.data(), staged.data(), static_cast<std::size_t>(host.numel()));
    return converted;
  }
}

//! A device tensor of T as a host tensor of double.
template <class T>
tim::Tensor<double> download_as_double(const tim::Tensor<T, tim::cuda>& device) {
  auto as_double = tim::Tensor<double, tim::cuda>::empty(device.shape());
  tim::cuda::convert(as_double.data(), device.data(), static_cast<std::size_t>(device.numel()));
  return tim::to_host(as_double);
}

//! The sampler's options on the GPU: the host options without the host callback, plus progress.
tim::SamplerOptions<tim::cuda> device_options(const tim::SamplerOptions<>& o, const Progress& progress) {
  tim::check(!o.on_step, "tim_cli::CudaModel::sample: options.on_step must be empty (pass a Progress)");
  tim::SamplerOptions<tim::cuda> d{.cfg_scale = o.cfg_scale,
                                   .guidance_low = o.guidance_low,
                                   .guidance_high = o.guidance_high,
                                   .stochasticity = o.stochasticity,
                                   .mode = o.mode,
                                   .seed = o.seed,
                                   .first_sample_index = o.first_sample_index,
                                   .sample_indices = o.sample_indices,
                                   .null_label = o.null_label,
                                   .keep_trajectory = o.keep_trajectory};
  if (progress)
    d.on_step = [progress](const tim::StepInfo<tim::cuda>& info) { return progress(info.step, info.steps); };
  return d;
}

//! The result of a GPU run on the host.
tim::SampleResult<> to_host_result(const tim::SampleResult<tim::cuda>& r) {
  tim::SampleResult<> host;
  host.x = tim::to_host(r.x);
  if (!r.trajectory.empty_tensor()) host.trajectory = tim::to_host(r.trajectory);
  host.times = r.times;
  host.steps_done = r.steps_done;
  host.cancelled = r.cancelled;
  return host;
}

template <class Network>
struct TypedModel final : CudaModel::Impl {
  using T = typename Network::value_type;
  static constexpr bool is_t2i = std::is_same_v<Network, tim::nn::T2IModel<T, tim::cuda>>;
  std::shared_ptr<Network> model;

  explicit TypedModel(Network m) : model(std::make_shared<Network>(std::move(m))) {}

  bool text_to_image() const override { return is_t2i; }
  const tim::nn::BackboneConfig& config() const override { return model->config; }
  const tim::nn::C2IConfig* c2i_config() const override {
    if constexpr (is_t2i) return nullptr; else return &model->config;
  }
  const tim::nn::T2IConfig* t2i_config() const override {
    if constexpr (is_t2i) return &model->config; else return nullptr;
  }

  void forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
               const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>* labels,
               const tim::Tensor<float>* cap_feats) override {
    tim::Tensor<T, tim::cuda> device_out;
    if constexpr (is_t2i) {
      tim::check(cap_feats != nullptr, "--device cuda: a text-to-image model needs caption features");
      model->forward(device_out, upload_as<T>(x), upload_as<T>(t_in), upload_as<T>(r_in), upload_as<T>(*cap_feats));
    } else {
      tim::check(labels != nullptr, "--device cuda: a class-conditional model needs labels");
      model->forward(device_out, upload_as<T>(x), upload_as<T>(t_in), upload_as<T>(r_in), *labels);
    }
    out = download_as_double(device_out);
  }

  tim::SampleResult<> sample(const tim::AnyTransport& transport, const tim::AnySchedule& schedule,
                             const tim::Tensor<double>& noise, const tim::Tensor<std::int64_t>* labels,
                             const tim::Tensor<float>* cap_feats, const tim::Tensor<float>* null_cap_feats,
                             const tim::SamplerOptions<>& options, const Progress& progress) override {
    const auto device_noise = tim::to_backend<tim::cuda>(noise);
    const auto d = device_options(options, progress);
    typename Network::Condition condition;
    if constexpr (is_t2i) {
      tim::check(cap_feats != nullptr, "--device cuda: a text-to-image model needs caption features");
      condition = upload_as<T>(*cap_feats);
      // This run's null caption, or none (a guided step then fails with the sampler's message).
      if (null_cap_feats && !null_cap_feats->empty_tensor())
        model->set_null_caption(upload_as<T>(*null_cap_feats));
      else
        model->clear_null_caption();
    } else {
      tim::check(labels != nullptr, "--device cuda: a class-conditional model needs labels");
      condition = *labels;
    }
    return std::visit(
        [&](auto chosen) {
          tim::TransitionSampler sampler{*model, chosen, schedule};
          return to_host_result(sampler.sample(device_noise, condition, d));
        },
        transport);
  }
};

}  // namespace

CudaModel CudaModel::load(const std::string& path, const std::string& precision,
                          const tim::nn::ConfigOverrides& overrides) {
  tim::check(tim::cuda::available(), "--device cuda: ", tim::cuda::device_description());
  tim::check(precision == "float32" || precision == "bfloat16", "--precision: '", precision,
             "' is not float32 or bfloat16");
  const bool t2i = tim::detect_model_kind(path) == tim::nn::ModelKind::t2i;
  CudaModel loaded;
  auto load_as = [&]<class T>() {
    if (t2i)
      loaded.impl_ = std::make_shared<TypedModel<tim::nn::T2IModel<T, tim::cuda>>>(tim::load_t2i<T, tim::cuda>(path, overrides));
    else
      loaded.impl_ = std::make_shared<TypedModel<tim::nn::C2IModel<T, tim::cuda>>>(tim::load_c2i<T, tim::cuda>(path, overrides));
  };
  if (precision == "float32")
    load_as.template operator()<float>();
  else
    load_as.template operator()<tim::bfloat16>();
  return loaded;
}

bool CudaModel::text_to_image() const { return impl_->text_to_image(); }
const tim::nn::BackboneConfig& CudaModel::config() const { return impl_->config(); }
const tim::nn::C2IConfig& CudaModel::c2i_config() const {
  const auto* c = impl_->c2i_config();
  tim::check(c != nullptr, "this model is text-to-image, not class-conditional");
  return *c;
}
const tim::nn::T2IConfig& CudaModel::t2i_config() const {
  const auto* c = impl_->t2i_config();
  tim::check(c != nullptr, "this model is class-conditional, not text-to-image");
  return *c;
}

std::string CudaModel::describe() const {
  return text_to_image() ? t2i_config().describe() : c2i_config().describe();
}

std::string CudaModel::device() const { return tim::cuda::device_description(); }

void CudaModel::forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
                        const tim::Tensor<double>& r_in, const tim::Tensor<std::int64_t>& labels) const {
  impl_->forward(out, x, t_in, r_in, &labels, nullptr);
}
void CudaModel::forward(tim::Tensor<double>& out, const tim::Tensor<double>& x, const tim::Tensor<double>& t_in,
                        const tim::Tensor<double>& r_in, const tim::Tensor<float>& cap_feats) const {
  impl_->forward(out, x, t_in, r_in, nullptr, &cap_feats);
}

tim::SampleResult<> CudaModel::sample(const tim::AnyTransport& transport, const tim::AnySchedule& schedule,
                                      const tim::Tensor<double>& noise, const tim::Tensor<std::int64_t>& labels,
                                      const tim::SamplerOptions<>& options, const Progress& progress) const {
  return impl_->sample(transport, schedule, noise, &labels, nullptr, nullptr, options, progress);
}
tim::SampleResult<> CudaModel::sample(const tim::AnyTransport& transport, const tim::AnySchedule& schedule,
                                      const tim::Tensor<double>& noise, const tim::Tensor<float>& cap_feats,
                                      const tim::Tensor<float>& null_cap_feats, const tim::SamplerOptions<>& options,
                                      const Progress& progress) const {
  return impl_->sample(transport, schedule, noise, nullptr, &cap_feats, &null_cap_feats, options, progress);
}

struct CudaVaeDecoder::Impl {
  virtual ~Impl() = default;
  virtual tim::Tensor<float> decode(const tim::Tensor<float>& latents, const tim::vae::TileOptions& tiles) const = 0;
};

namespace {

//! SdVaeDecoder<float, tim::cuda> or DcAeDecoder<float, tim::cuda> on host tensors.
template <class Decoder>
struct TypedVae final : CudaVaeDecoder::Impl {
  Decoder decoder;
  explicit TypedVae(Decoder d) : decoder(std::move(d)) {}
  tim::Tensor<float> decode(const tim::Tensor<float>& latents, const tim::vae::TileOptions& tiles) const override {
    const auto device_latents = tim::to_backend<tim::cuda>(latents);
    if (tiles.tile == 0) return tim::to_host(decoder.decode(device_latents));
    return tim::to_host(tim::vae::decode_tiled(decoder, device_latents, tiles));
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

tim::Tensor<float> CudaVaeDecoder::decode(const tim::Tensor<float>& latents, const tim::vae::TileOptions& tiles) const {
  return impl_->decode(latents, tiles);
}

struct CudaTextEncoder::Impl {
  virtual ~Impl() = default;
  virtual const tim::text::GemmaConfig& config() const = 0;
  virtual std::string weight_dtype() const = 0;
  virtual void encode(tim::Tensor<float>& out, const tim::Tensor<std::int64_t>& ids,
                      const std::vector<std::int64_t>& lengths, tim::text::HiddenState which) = 0;
};

namespace {

//! GemmaEncoder<float, tim::cuda, W> on host ids, host features out. Its workspace is reused
//! between calls, so encode is not const: one caller at a time (the program encodes once).
template <class W>
struct TypedTextEncoder final : CudaTextEncoder::Impl {
  tim::text::GemmaEncoder<float, tim::cuda, W> encoder;
  explicit TypedTextEncoder(tim::text::GemmaEncoder<float, tim::cuda, W> e) : encoder(std::move(e)) {}
  const tim::text::GemmaConfig& config() const override { return encoder.config; }
  std::string weight_dtype() const override { return std::is_same_v<W, tim::bfloat16> ? "bfloat16" : "float32"; }
  void encode(tim::Tensor<float>& out, const tim::Tensor<std::int64_t>& ids, const std::vector<std::int64_t>& lengths,
              tim::text::HiddenState which) override {
    tim::Tensor<float, tim::cuda> device_out;
    encoder.forward(device_out, ids, lengths, which);
    out = tim::to_host(device_out);
  }
};

}  // namespace

CudaTextEncoder CudaTextEncoder::load(const std::string& dir) {
  tim::check(tim::cuda::available(), "--device cuda: ", tim::cuda::device_description());
  namespace text = tim::text;
  const auto folder = text::TextEncoderFolder::at(dir, /*with_tokenizer=*/false);
  const auto config = text::parse_gemma_config(text::read_text_file(folder.config, "text encoder config"), folder.config);
  const auto file = tim::io::SafetensorsFile::open(folder.weights);
  tim::check(file.contains(text::gemma_keys::embed_tokens), folder.weights, ": tensor '", text::gemma_keys::embed_tokens,
             "' is missing (is this a Gemma-3 text decoder?)");
  CudaTextEncoder loaded;
  // As tim::text::PromptEncoder::open holds them on the CPU: bfloat16 stays bfloat16, the rest float.
  if (file.info(text::gemma_keys::embed_tokens).dtype == tim::DType::BF16)
    loaded.impl_ = std::make_shared<TypedTextEncoder<tim::bfloat16>>(text::load_gemma<float, tim::cuda, tim::bfloat16>(file, config));
  else
    loaded.impl_ = std::make_shared<TypedTextEncoder<float>>(text::load_gemma<float, tim::cuda, float>(file, config));
  return loaded;
}

const tim::text::GemmaConfig& CudaTextEncoder::config() const { return impl_->config(); }
std::string CudaTextEncoder::weight_dtype() const { return impl_->weight_dtype(); }
std::string CudaTextEncoder::device() const { return tim::cuda::device_description(); }
void CudaTextEncoder::encode(tim::Tensor<float>& out, const tim::Tensor<std::int64_t>& ids,
                             const std::vector<std::int64_t>& lengths, tim::text::HiddenState which) const {
  impl_->encode(out, ids, lengths, which);
}

int cuda_device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  tim::check(status == cudaSuccess, "--device cuda: cannot count the CUDA devices: ", cudaGetErrorString(status));
  return count;
}

void use_cuda_device(int device) {
  const cudaError_t status = cudaSetDevice(device);
  tim::check(status == cudaSuccess, "--device cuda: cannot use GPU ", device, ": ", cudaGetErrorString(status));
}

}  // namespace tim_cli
