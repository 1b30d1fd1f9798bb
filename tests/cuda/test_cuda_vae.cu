// The SD VAE decoder on the GPU: tim::vae::SdVaeDecoder<float, tim::cuda> over tim::cuda's decoder
// operations (tim/cuda/decoder_ops.cuh, decoder_kernels.cuh).
// Suite "cuda-host" (runs everywhere): the element-wise functors of its kernels run on the host
// against tim::cpu's decoder operations (tim/cpu/decoder_ops.hpp), which test their index arithmetic.
// Suite "cuda" (needs a GPU): every golden case of tests/data/vae_golden against the float64
// reference within 1e-4 and against the CPU float decoder (loaded onto the GPU directly and copied
// there from the CPU decoder), small im2col and score blocks giving the same images, a second
// decode allocating only its images (the workspace reused) and giving the same images, decode_tiled
// on the device, and the shape error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "compare.hpp"
#include "device_helpers.cuh"
#include "golden_source.hpp"
#include "vae_golden.hpp"
#include "tim/cuda/tim.cuh"

namespace {

using tim_test::random_vector;
using tim_test::run_on_host;
using tim_test::run_rows_on_host;
using tim_test::to_device;
using tim_test::to_host;
namespace detail = tim::cuda_detail::decoder;
using GpuDecoder = tim::vae::SdVaeDecoder<float, tim::cuda>;

//! The golden case `name` of vae_golden loaded onto `Backend`.
template <class Backend>
tim::vae::SdVaeDecoder<float, Backend> golden_decoder(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, "vae_golden"));
  tim_test::ParametersOnly parameters(file);
  return tim::vae::load_sd_vae_decoder<float, Backend>(parameters, tim_test::sd_vae_options_of(file));
}

}  // namespace

TEST_SUITE("cuda-host") {

TEST_CASE("cuda sd vae functors: layouts, scaling and upsampling equal the CPU decoder's operations") {
  const std::int64_t B = 2, C = 3, H = 5, W = 7, P = H * W;
  const auto in = random_vector<float>(static_cast<std::size_t>(B * C * P), 11);

  std::vector<float> expected(in.size()), actual(in.size());
  const float inverse = 1.0f / 0.18215f;
  tim::cpu::to_channels_last_forward(expected.data(), in.data(), B, C, P, inverse);
  run_on_host(B * P * C, detail::ToChannelsLastScaled{actual.data(), in.data(), C, P, inverse});
  CHECK(actual == expected);

  tim::cpu::to_channels_first_forward(expected.data(), in.data(), B, C, P);
  run_on_host(B * P * C, detail::ToChannelsFirst{actual.data(), in.data(), C, P});
  CHECK(actual == expected);

  std::vector<float> up_expected(in.size() * 4), up_actual(in.size() * 4);
  tim::cpu::upsample_nearest2x_forward(up_expected.data(), in.data(), B, H, W, C);
  run_rows_on_host(B * 4 * P, C, detail::UpsampleNearest2x{up_actual.data(), in.data(), H, W, static_cast<int>(C)});
  CHECK(up_actual == up_expected);
}

TEST_CASE("cuda sd vae functors: im2col blocks times the weights equal the CPU convolution") {
  const std::int64_t B = 2, H = 4, W = 6, Ci = 3, Co = 5, k = 3, P = B * H * W, K = k * k * Ci;
  const auto x = random_vector<float>(static_cast<std::size_t>(P * Ci), 21);
  const auto weight = random_vector<float>(static_cast<std::size_t>(Co * K), 22);
  const auto bias = random_vector<float>(static_cast<std::size_t>(Co), 23);
  // The CPU convolution in double on the same values.
  const std::vector<double> xd(x.begin(), x.end()), wd(weight.begin(), weight.end()), bd(bias.begin(), bias.end());
  std::vector<double> expected(static_cast<std::size_t>(P * Co));
  std::vector<double> scratch(static_cast<std::size_t>(P * K));
  tim::cpu::conv2d_forward(expected.data(), xd.data(), wd.data(), bd.data(), B, H, W, Ci, Co, k, false, scratch.data(),
                           P * K);
  // The functor's columns, built in two blocks of rows as the GPU decoder does with small blocks.
  std::vector<float> columns(static_cast<std::size_t>(P * K));
  const std::int64_t first_rows = 17;
  run_rows_on_host(first_rows, K, detail::Im2col{columns.data(), x.data(), 0, H, W, static_cast<int>(Ci), static_cast<int>(k)});
  run_rows_on_host(P - first_rows, K, detail::Im2col{columns.data() + first_rows * K, x.data(), first_rows, H, W,
                                                    static_cast<int>(Ci), static_cast<int>(k)});
  std::vector<double> actual(expected.size());
  for (std::int64_t p = 0; p < P; ++p)
    for (std::int64_t o = 0; o < Co; ++o) {
      double sum = bd[static_cast<std::size_t>(o)];
      for (std::int64_t j = 0; j < K; ++j)
        sum += static_cast<double>(columns[static_cast<std::size_t>(p * K + j)]) * wd[static_cast<std::size_t>(o * K + j)];
      actual[static_cast<std::size_t>(p * Co + o)] = sum;
    }
  TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-12, 1e-12);
}

TEST_CASE("cuda sd vae functors: GroupNorm (and SiLU) with double statistics equal the CPU GroupNorm") {
  const std::int64_t B = 2, P = 9, C = 12, G = 3, per = C / G;
  const auto x = random_vector<float>(static_cast<std::size_t>(B * P * C), 31, 2.0);
  const auto weight = random_vector<float>(static_cast<std::size_t>(C), 32);
  const auto bias = random_vector<float>(static_cast<std::size_t>(C), 33);
  // The statistics as the GPU computes them: two passes in double.
  std::vector<float> mean(static_cast<std::size_t>(B * G)), rstd(mean.size());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t g = 0; g < G; ++g) {
      double sum = 0, squares = 0;
      for (std::int64_t p = 0; p < P; ++p)
        for (std::int64_t c = g * per; c < (g + 1) * per; ++c) sum += x[static_cast<std::size_t>((b * P + p) * C + c)];
      const double m = sum / static_cast<double>(P * per);
      for (std::int64_t p = 0; p < P; ++p)
        for (std::int64_t c = g * per; c < (g + 1) * per; ++c) {
          const double d = x[static_cast<std::size_t>((b * P + p) * C + c)] - m;
          squares += d * d;
        }
      mean[static_cast<std::size_t>(b * G + g)] = static_cast<float>(m);
      rstd[static_cast<std::size_t>(b * G + g)] =
          static_cast<float>(tim::math::layernorm_rstd(squares / static_cast<double>(P * per), 1e-6));
    }
  for (const bool silu : {false, true}) {
    CAPTURE(silu);
    std::vector<float> expected(x.size()), actual(x.size());
    tim::cpu::group_norm_forward(expected.data(), x.data(), weight.data(), bias.data(), B, P, C, G, 1e-6, silu);
    run_rows_on_host(B * P, C, detail::GroupNormApply{actual.data(), x.data(), weight.data(), bias.data(), mean.data(),
                                                      rstd.data(), P, static_cast<int>(C), static_cast<int>(G), silu});
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-6, 1e-6);
  }
}

}  // TEST_SUITE("cuda-host")

TEST_SUITE("cuda") {

TEST_CASE("cuda sd vae: every golden case within 1e-4 of the float64 reference and of the CPU decoder") {
  const auto names = tim_test::golden_cases("vae_golden");
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, "vae_golden"));
    const auto host = golden_decoder<tim::cpu>(name);
    tim_test::check_gpu_decoder_golden(host, golden_decoder<tim::cuda>(name), file, name);
    tim_test::check_gpu_decoder_golden(host, tim::vae::copy_to_backend<tim::cuda>(host), file, name);
  }
}

TEST_CASE("cuda sd vae: GroupNorm statistics over many pixel slices equal the CPU GroupNorm") {
  // 3 x 700 pixels and 2 samples x 4 groups: several slices of >= 256 pixels, the last partial.
  const std::int64_t B = 2, P = 2100, C = 16, G = 4;
  const auto x = random_vector<float>(static_cast<std::size_t>(B * P * C), 41, 3.0);
  std::vector<float> shifted(x);
  for (auto& v : shifted) v += 5.0f;  // a mean far from 0: the two-pass variance must not cancel
  const auto weight = random_vector<float>(static_cast<std::size_t>(C), 42);
  const auto bias = random_vector<float>(static_cast<std::size_t>(C), 43);
  for (const auto& input : {x, shifted}) {
    std::vector<float> expected(input.size());
    tim::cpu::group_norm_forward(expected.data(), input.data(), weight.data(), bias.data(), B, P, C, G, 1e-6, true);
    const auto x_device = to_device<float>(input), w_device = to_device<float>(weight), b_device = to_device<float>(bias);
    auto y_device = tim::Tensor<float, tim::cuda>::empty({B * P * C});
    tim::cuda::group_norm_forward(y_device.data(), x_device.data(), w_device.data(), b_device.data(), B, P, C, G, 1e-6,
                                  true);
    const auto actual = to_host(y_device.data(), input.size());
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-5, 1e-6);
  }
  CHECK(detail::group_norm_slices(8, 2100, 132) == 8);  // 2100 / 256 pixels caps the 66 wanted
  CHECK(detail::group_norm_slices(8, 65536, 132) == 66);
  CHECK(detail::group_norm_slices(1024, 65536, 132) == 1);
}

TEST_CASE("cuda sd vae: small im2col and attention-score blocks give the same images; a second decode allocates only its images") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", "vae_golden"));
  auto gpu = golden_decoder<tim::cuda>("nonsquare");
  const auto latents = tim::to_backend<tim::cuda>(file.load<float>("input.latents"));
  const auto whole = tim::to_host(gpu.decode(latents));
  const std::int64_t allocations = tim::cuda::allocation_count();
  const auto again = tim::to_host(gpu.decode(latents));  // the workspace is reused: only the images are new
  CHECK(tim::cuda::allocation_count() == allocations + 1);
  CHECK(tim_test::relative_error(again.data(), whole.data(), static_cast<std::size_t>(whole.numel())) == 0.0);
  gpu.im2col_block_elements = 1000;  // a few dozen pixels per block, with a partial last block
  gpu.score_block_elements = 40;     // 2 query rows of the 15 per sample, the last block 1 row
  const auto blocked = tim::to_host(gpu.decode(latents));
  REQUIRE(blocked.shape() == whole.shape());
  CHECK(tim_test::relative_error(blocked.data(), whole.data(), static_cast<std::size_t>(whole.numel())) <= 1e-6);
  const auto expected = file.load<double>("output.images");
  CHECK(tim_test::relative_error(blocked.data(), expected.data(), static_cast<std::size_t>(whole.numel())) <= 1e-4);
}

TEST_CASE("cuda sd vae: the row softmax over more keys than threads equals a double softmax") {
  const std::int64_t rows = 3, cols = 1000;  // 4 strided passes of 256 threads, the last partial
  auto scores = random_vector<float>(static_cast<std::size_t>(rows * cols), 51, 4.0);
  scores[7] = 40.0f;  // one dominant score: the max subtraction matters
  auto device = to_device<float>(scores);
  detail::softmax_rows_kernel<detail::softmax_threads>
      <<<static_cast<unsigned>(rows), detail::softmax_threads, 0, tim::cuda::stream()>>>(device.data(), cols);
  const auto actual = to_host(device.data(), scores.size());
  std::vector<double> expected(scores.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    double largest = -1e300, sum = 0;
    for (std::int64_t j = 0; j < cols; ++j) largest = std::max(largest, double(scores[r * cols + j]));
    for (std::int64_t j = 0; j < cols; ++j) sum += std::exp(double(scores[r * cols + j]) - largest);
    for (std::int64_t j = 0; j < cols; ++j) expected[r * cols + j] = std::exp(double(scores[r * cols + j]) - largest) / sum;
  }
  TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-5, 1e-9);
}

TEST_CASE("cuda sd vae: tim::vae::decode_tiled over the GPU decoder equals it over the CPU decoder") {
  const auto host = golden_decoder<tim::cpu>("nonsquare");
  const auto gpu = golden_decoder<tim::cuda>("nonsquare");
  auto latents = tim::Tensor<float>::empty({2, 4, 7, 9});
  const auto values = random_vector<float>(static_cast<std::size_t>(latents.numel()), 52);
  std::copy(values.begin(), values.end(), latents.data());
  for (const std::int64_t per_call : {1, 3}) {
    CAPTURE(per_call);
    const tim::vae::TileOptions options{.tile = 4, .overlap = 2, .tiles_per_call = per_call};
    const auto on_gpu = tim::to_host(tim::vae::decode_tiled(gpu, tim::to_backend<tim::cuda>(latents), options));
    const auto on_cpu = tim::vae::decode_tiled(host, latents, options);
    REQUIRE(on_gpu.shape() == on_cpu.shape());
    CHECK(tim_test::relative_error(on_gpu.data(), on_cpu.data(), static_cast<std::size_t>(on_cpu.numel())) <= 1e-4);
  }
}

TEST_CASE("cuda sd vae: latents of the wrong shape are a tim::Error") {
  const auto gpu = golden_decoder<tim::cuda>("sd_layout");
  const std::string message =
      tim_test::error_of([&] { gpu.decode(tim::Tensor<float, tim::cuda>::zeros({1, 3, 4, 4})); });
  CHECK(message.find("SD VAE decode: latents must have shape [B, 4, h, w]") != std::string::npos);
}

}  // TEST_SUITE("cuda")
