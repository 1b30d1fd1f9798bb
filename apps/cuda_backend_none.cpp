// `tim` built without the CUDA backend (TIM_CUDA=OFF): CudaModel::load (and CudaTextEncoder::load) answers --device cuda
// with an error that says how to get a build that has it. Nothing else is reachable without a
// loaded model. The real implementation is apps/cuda_backend.cu.
#include "cuda_backend.hpp"

#include "tim/core/error.hpp"

namespace tim_cli {

namespace {
[[noreturn]] void not_built() {
  tim::fail("--device cuda: this tim was built without the CUDA backend; configure with -DTIM_CUDA=ON (needs nvcc, "
            "cuBLAS and CUB, see docs/cuda.md) and rebuild, or use --device cpu");
}
}  // namespace

CudaModel CudaModel::load(const std::string&, const std::string&, const tim::nn::ConfigOverrides&) { not_built(); }
bool CudaModel::text_to_image() const { not_built(); }
const tim::nn::BackboneConfig& CudaModel::config() const { not_built(); }
const tim::nn::C2IConfig& CudaModel::c2i_config() const { not_built(); }
const tim::nn::T2IConfig& CudaModel::t2i_config() const { not_built(); }
std::string CudaModel::describe() const { not_built(); }
std::string CudaModel::device() const { not_built(); }
void CudaModel::forward(tim::Tensor<double>&, const tim::Tensor<double>&, const tim::Tensor<double>&,
                        const tim::Tensor<double>&, const tim::Tensor<std::int64_t>&) const {
  not_built();
}
void CudaModel::forward(tim::Tensor<double>&, const tim::Tensor<double>&, const tim::Tensor<double>&,
                        const tim::Tensor<double>&, const tim::Tensor<float>&) const {
  not_built();
}
tim::SampleResult<> CudaModel::sample(const tim::AnyTransport&, const tim::AnySchedule&, const tim::Tensor<double>&,
                                      const tim::Tensor<std::int64_t>&, const tim::SamplerOptions<>&,
                                      const Progress&) const {
  not_built();
}
tim::SampleResult<> CudaModel::sample(const tim::AnyTransport&, const tim::AnySchedule&, const tim::Tensor<double>&,
                                      const tim::Tensor<float>&, const tim::Tensor<float>&, const tim::SamplerOptions<>&,
                                      const Progress&) const {
  not_built();
}

CudaVaeDecoder CudaVaeDecoder::upload(const tim::vae::SdVaeDecoder<float>&) { not_built(); }
CudaVaeDecoder CudaVaeDecoder::upload(const tim::vae::DcAeDecoder<float>&) { not_built(); }
tim::Tensor<float> CudaVaeDecoder::decode(const tim::Tensor<float>&, const tim::vae::TileOptions&) const { not_built(); }

CudaTextEncoder CudaTextEncoder::load(const std::string&) { not_built(); }
const tim::text::GemmaConfig& CudaTextEncoder::config() const { not_built(); }
std::string CudaTextEncoder::weight_dtype() const { not_built(); }
std::string CudaTextEncoder::device() const { not_built(); }
void CudaTextEncoder::encode(tim::Tensor<float>&, const tim::Tensor<std::int64_t>&, const std::vector<std::int64_t>&,
                             tim::text::HiddenState) const {
  not_built();
}

int cuda_device_count() { not_built(); }
void use_cuda_device(int) { not_built(); }

}  // namespace tim_cli
