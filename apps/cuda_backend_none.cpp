// `tim` built without the CUDA backend (TIM_CUDA=OFF): CudaC2IModel::load answers --device cuda
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

CudaC2IModel CudaC2IModel::load(const std::string&, const std::string&, const tim::nn::ConfigOverrides&) {
  not_built();
}
const tim::nn::C2IConfig& CudaC2IModel::config() const { not_built(); }
std::string CudaC2IModel::device() const { not_built(); }
void CudaC2IModel::forward(tim::Tensor<double>&, const tim::Tensor<double>&, const tim::Tensor<double>&,
                           const tim::Tensor<double>&, const tim::Tensor<std::int64_t>&) const {
  not_built();
}
DoubleFlow CudaC2IModel::flow(const tim::AnyTransport&, std::int64_t, std::int64_t, std::int64_t) const {
  not_built();
}

CudaVaeDecoder CudaVaeDecoder::upload(const tim::vae::SdVaeDecoder<float>&) { not_built(); }
CudaVaeDecoder CudaVaeDecoder::upload(const tim::vae::DcAeDecoder<float>&) { not_built(); }
tim::Tensor<float> CudaVaeDecoder::decode(const tim::Tensor<float>&) const { not_built(); }

}  // namespace tim_cli
