// The DC-AE decoder on the GPU: tim::vae::DcAeDecoder<float, tim::cuda> over tim::cuda's decoder
// operations (tim/cuda/decoder_ops.cuh, dc_ae_kernels.cuh).
// Suite "cuda-host" (runs everywhere): every functor of its kernels run on the host, in the
// order the kernels call it, against tim::cpu's decoder operations (tim/cpu/decoder_ops.hpp): exact
// where the arithmetic is the same, 1e-6 where a double sum runs in another order.
// Suite "cuda" (needs a GPU): every golden case of tests/data/dc_ae_golden against the float64
// reference within 1e-4 and against the CPU float decoder, small attention slices and im2col
// blocks giving the same images, the linear attention and RMSNorm kernels against the CPU at
// realistic sizes, and the shape error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
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

const std::string folder = "dc_ae_golden";

//! The golden case `name` of dc_ae_golden loaded onto `Backend`.
template <class Backend>
tim::vae::DcAeDecoder<float, Backend> golden_decoder(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder));
  tim_test::ParametersOnly parameters(file);
  return tim::vae::load_dc_ae_decoder<float, Backend>(parameters, tim_test::dc_ae_options_of(file));
}

//! What rms_norm_kernel does on the device, on the host: per row the double sum of squares,
//! the float rstd, then the values.
void run_rms_norm_on_host(std::int64_t rows, const detail::RmsNormChannels& op) {
  for (std::int64_t r = 0; r < rows; ++r) {
    double squares = 0;
    for (int j = 0; j < op.channels; ++j) squares += op.square(r, j);
    const float rstd = op.rstd(squares);
    for (int j = 0; j < op.channels; ++j) op(rstd, r, j);
  }
}

//! What linear_attention_partial_kernel does on the device, on the host: per (sample, head) bh
//! and slice, tiles of linear_attention_tile pixels staged (load, load_one), then every sum
//! through tile_sum, the slice's sums into op.partial.
void run_partial_sums_on_host(const detail::LinearAttentionPartial& op, std::int64_t bhs, std::int64_t slices) {
  constexpr int tile = detail::linear_attention_tile, max_hd = detail::linear_attention_max_head_dim;
  std::vector<float> keys(tile * max_hd), values(tile * (max_hd + 1));
  const int entries = op.entries();
  for (std::int64_t bh = 0; bh < bhs; ++bh)
    for (std::int64_t slice = 0; slice < slices; ++slice) {
      const std::int64_t first = slice * op.slice_pixels, last = std::min(op.pixels, first + op.slice_pixels);
      std::vector<double> sums(static_cast<std::size_t>(entries), 0.0);
      for (std::int64_t start = first; start < last; start += tile) {
        const int count = static_cast<int>(std::min<std::int64_t>(tile, last - start));
        for (int i = 0; i < count * op.head_dim; ++i) op.load(keys.data(), values.data(), op.head(bh), start, i);
        for (int t = 0; t < count; ++t) op.load_one(values.data(), t);
        for (int i = 0; i < entries; ++i) sums[i] = op.tile_sum(sums[i], keys.data(), values.data(), count, i);
      }
      std::copy(sums.begin(), sums.end(), op.partial + (bh * slices + slice) * entries);
    }
}

}  // namespace

TEST_SUITE("cuda-host") {

TEST_CASE("cuda dc ae functors: RMSNorm with double squares equals the CPU RMSNorm, with and without residual") {
  const std::int64_t rows = 13, C = 40;  // C > 32: a lane of the device warp sums two values
  const auto x = random_vector<float>(static_cast<std::size_t>(rows * C), 51, 2.0);
  const auto weight = random_vector<float>(static_cast<std::size_t>(C), 52);
  const auto bias = random_vector<float>(static_cast<std::size_t>(C), 53);
  const auto residual = random_vector<float>(x.size(), 54);
  const double eps = 1e-5;
  {
    std::vector<float> expected(x.size()), actual(x.size());
    tim::cpu::rms_norm_channels_forward(expected.data(), x.data(), weight.data(), bias.data(), rows, C, eps,
                                        static_cast<const float*>(nullptr));
    run_rms_norm_on_host(rows, {actual.data(), x.data(), weight.data(), bias.data(), nullptr, static_cast<int>(C), eps});
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-6, 1e-6);
  }
  {  // in place on the residual, as the blocks run it
    std::vector<float> expected(residual), actual(residual);
    tim::cpu::rms_norm_channels_forward(expected.data(), x.data(), weight.data(), bias.data(), rows, C, eps,
                                        expected.data());
    run_rms_norm_on_host(rows, {actual.data(), x.data(), weight.data(), bias.data(), actual.data(),
                                static_cast<int>(C), eps});
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-6, 1e-6);
  }
  {  // in place on the input with a separate residual
    std::vector<float> expected(x), actual(x);
    tim::cpu::rms_norm_channels_forward(expected.data(), expected.data(), weight.data(), bias.data(), rows, C, eps,
                                        residual.data());
    run_rms_norm_on_host(rows, {actual.data(), actual.data(), weight.data(), bias.data(), residual.data(),
                                static_cast<int>(C), eps});
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-6, 1e-6);
  }
}

TEST_CASE("cuda dc ae functors: depthwise and grouped 1x1 convolutions equal the CPU ones exactly") {
  const std::int64_t B = 2, H = 4, W = 5, C = 6, rows = B * H * W;
  const auto x = random_vector<float>(static_cast<std::size_t>(rows * C), 61);
  for (const auto& [k, with_bias] : {std::pair<std::int64_t, bool>{3, true}, {5, false}, {1, true}}) {
    CAPTURE(k);
    const auto weight = random_vector<float>(static_cast<std::size_t>(k * k * C), 62, 0.3);
    const auto bias = random_vector<float>(static_cast<std::size_t>(C), 63);
    const float* b = with_bias ? bias.data() : nullptr;
    std::vector<float> expected(x.size()), actual(x.size());
    tim::cpu::depthwise_conv2d_forward(expected.data(), x.data(), weight.data(), b, B, H, W, C, k);
    run_rows_on_host(rows, C, detail::DepthwiseConv{actual.data(), x.data(), weight.data(), b, H, W,
                                                    static_cast<int>(C), static_cast<int>(k)});
    CHECK(actual == expected);
  }
  for (const auto& [groups, n] : {std::pair<std::int64_t, std::int64_t>{3, 2}, {2, 3}, {1, 6}}) {
    CAPTURE(n);
    const auto weight_t = random_vector<float>(static_cast<std::size_t>(groups * n * n), 64);
    std::vector<float> expected(x.size()), actual(x.size());
    tim::cpu::grouped_pointwise_forward(expected.data(), x.data(), weight_t.data(), rows, groups, n);
    run_rows_on_host(rows, C, detail::GroupedPointwise{actual.data(), x.data(), weight_t.data(), static_cast<int>(C),
                                                       static_cast<int>(n)});
    CHECK(actual == expected);
  }
}

TEST_CASE("cuda dc ae functors: the linear attention's sliced sums and output equal the CPU attention") {
  // Two samples, 2 heads of several dims; output columns [offset, offset + nh hd) of wider rows.
  struct Case {
    std::int64_t pixels, head_dim, slice_pixels;
  };
  for (const Case c : {Case{7, 3, 1}, Case{7, 3, 3}, Case{150, 8, 100}, Case{150, 8, 150}, Case{130, 32, 64}}) {
    CAPTURE(c.pixels);
    CAPTURE(c.head_dim);
    CAPTURE(c.slice_pixels);
    const std::int64_t B = 2, heads = 2, hd = c.head_dim, P = c.pixels, row = heads * 3 * hd;
    const std::int64_t offset = heads * hd, stride = 3 * heads * hd, entries = (hd + 1) * hd;
    const double eps = 1e-15;
    const auto qkv = random_vector<float>(static_cast<std::size_t>(B * P * row), 71);
    std::vector<float> expected(static_cast<std::size_t>(B * P * stride), -7.0f), actual(expected);
    tim::cpu::relu_linear_attention_forward(expected.data() + offset, stride, qkv.data(), B, P, heads, hd, eps, 0);

    const std::int64_t slices = (P + c.slice_pixels - 1) / c.slice_pixels;
    std::vector<double> partial(static_cast<std::size_t>(B * heads * slices * entries), -1.0);
    std::vector<double> state(static_cast<std::size_t>(B * heads * entries), -1.0);
    run_partial_sums_on_host({partial.data(), qkv.data(), P, c.slice_pixels, static_cast<int>(heads),
                              static_cast<int>(hd)},
                             B * heads, slices);
    run_rows_on_host(B * heads, entries,
                     detail::LinearAttentionFinish{state.data(), partial.data(), slices, static_cast<int>(hd)});
    run_rows_on_host(B * P, heads * hd,
                     detail::LinearAttentionApply{actual.data() + offset, qkv.data(), state.data(), P, stride,
                                                  static_cast<int>(heads), static_cast<int>(hd), eps});
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-6, 1e-7);  // other columns untouched (-7)

    // The state of sample 1, head 1: V^T K and ksum against direct sums.
    const std::int64_t b = 1, h = 1;
    const double* s = state.data() + (b * heads + h) * entries;
    double largest = 0;
    for (std::int64_t d = 0; d < hd; ++d)
      for (std::int64_t e = 0; e <= hd; ++e) {
        double sum = 0;
        for (std::int64_t p = 0; p < P; ++p) {
          const float* at = qkv.data() + (b * P + p) * row + h * 3 * hd;
          sum += (e < hd ? static_cast<double>(at[2 * hd + e]) : 1.0) * std::max(0.0, static_cast<double>(at[hd + d]));
        }
        largest = std::max(largest, std::abs(s[d * (hd + 1) + e] - sum));
      }
    CHECK(largest <= 1e-12);
  }
}

TEST_CASE("cuda dc ae functors: pixel shuffle, the shortcuts and ReLU equal the CPU operations exactly") {
  const std::int64_t B = 2, H = 3, W = 2, C = 3;
  const auto wide = random_vector<float>(static_cast<std::size_t>(B * H * W * 4 * C), 81);
  {
    std::vector<float> expected(static_cast<std::size_t>(B * 4 * H * W * C)), actual(expected.size());
    tim::cpu::pixel_shuffle2x_forward(expected.data(), wide.data(), B, H, W, C);
    run_rows_on_host(B * 4 * H * W, C,
                     detail::PixelShuffle2x{actual.data(), wide.data(), H, W, static_cast<int>(C)});
    CHECK(actual == expected);
  }
  for (const auto& [Ci, Co] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {8, 4}, {6, 3}, {2, 4}}) {
    CAPTURE(Ci);
    CAPTURE(Co);
    const auto low = random_vector<float>(static_cast<std::size_t>(B * H * W * Ci), 82);
    const auto start = random_vector<float>(static_cast<std::size_t>(B * 4 * H * W * Co), 83);
    std::vector<float> expected(start), actual(start);
    tim::cpu::upsample_shortcut_forward(expected.data(), low.data(), B, H, W, Ci, Co);
    run_rows_on_host(B * 4 * H * W, Co,
                     detail::UpsampleShortcut{actual.data(), low.data(), H, W, static_cast<int>(Ci),
                                              static_cast<int>(Co), static_cast<int>(4 * Co / Ci)});
    CHECK(actual == expected);
  }
  {
    const std::int64_t rows = B * H * W, Ci = 3, repeats = 4;
    const auto z = random_vector<float>(static_cast<std::size_t>(rows * Ci), 84);
    const auto start = random_vector<float>(static_cast<std::size_t>(rows * Ci * repeats), 85);
    std::vector<float> expected(start), actual(start);
    tim::cpu::repeat_channels_add_forward(expected.data(), z.data(), rows, Ci, repeats);
    run_rows_on_host(rows, Ci * repeats,
                     detail::RepeatChannelsAdd{actual.data(), z.data(), static_cast<int>(Ci),
                                               static_cast<int>(Ci * repeats), static_cast<int>(repeats)});
    CHECK(actual == expected);
  }
  {
    std::vector<float> expected(wide), actual(wide);
    tim::cpu::relu_forward(expected.data(), expected.data(), static_cast<std::int64_t>(expected.size()));
    run_on_host(static_cast<std::int64_t>(actual.size()), detail::Relu{actual.data(), actual.data()});
    CHECK(actual == expected);
  }
}

TEST_CASE("cuda dc ae ops: unsupported shapes are refused before any launch") {
  const std::string too_wide = tim_test::error_of(
      [] { tim::cuda::relu_linear_attention_forward(nullptr, 65, nullptr, 1, 4, 1, 65, 1e-15, 256); });
  CHECK(too_wide.find("head dim 65 must be in [1, 64]") != std::string::npos);
  const std::string shortcut =
      tim_test::error_of([] { tim::cuda::upsample_shortcut_forward(nullptr, nullptr, 1, 1, 1, 3, 2); });
  CHECK(shortcut.find("3 input channels do not divide 4 x 2 output channels") != std::string::npos);
}

TEST_CASE("cuda dc ae (host): a head dim over 64 is refused when the GPU decoder is built") {
  auto host = golden_decoder<tim::cpu>("nonsquare");
  host.config.attention_head_dim = 65;
  CHECK_NOTHROW(host.check_backend());  // the CPU takes any head dim
  const std::string message = tim_test::error_of([&] { tim::vae::copy_to_backend<tim::cuda>(host); });
  CHECK(message.find("attention_head_dim 65 must be in [1, 64] on this backend") != std::string::npos);
}

}  // TEST_SUITE("cuda-host")

TEST_SUITE("cuda") {

TEST_CASE("cuda dc ae: every golden case within 1e-4 of the float64 reference and of the CPU decoder") {
  const auto names = tim_test::golden_cases(folder);
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder));
    const auto host = golden_decoder<tim::cpu>(name);
    tim_test::check_gpu_decoder_golden(host, golden_decoder<tim::cuda>(name), file, name);
    tim_test::check_gpu_decoder_golden(host, tim::vae::copy_to_backend<tim::cuda>(host), file, name);
  }
}

TEST_CASE("cuda dc ae: small attention slices and im2col blocks give the same images") {
  for (const std::string name : {"sana_layout", "nonsquare", "variants"}) {
    CAPTURE(name);
    auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder));
    auto gpu = golden_decoder<tim::cuda>(name);
    const auto latents = tim::to_backend<tim::cuda>(file.load<float>("input.latents"));
    const auto whole = tim::to_host(gpu.decode(latents));
    gpu.attention_slice_pixels = 5;   // several slices per head at every attention stage, the last partial
    gpu.im2col_block_elements = 1000;  // a few pixels per block, with a partial last block
    const auto sliced = tim::to_host(gpu.decode(latents));
    REQUIRE(sliced.shape() == whole.shape());
    const auto n = static_cast<std::size_t>(whole.numel());
    // Other block sizes change the GEMMs' and sums' rounding, which these narrow stages amplify:
    // on an H200 sana_layout differed by 1.2e-6 (its float decode is 2.5e-6 from float64).
    CHECK(tim_test::relative_error(sliced.data(), whole.data(), n) <= 1e-5);
    const auto expected = file.load<double>("output.images");
    CHECK(tim_test::relative_error(sliced.data(), expected.data(), n) <= 1e-4);
  }
}

TEST_CASE("cuda dc ae: tim::vae::decode_tiled over the GPU decoder equals it over the CPU decoder") {
  const auto host = golden_decoder<tim::cpu>("nonsquare");
  const auto gpu = golden_decoder<tim::cuda>("nonsquare");
  auto latents = tim::Tensor<float>::empty({1, host.config.latent_channels, 5, 7});
  const auto values = random_vector<float>(static_cast<std::size_t>(latents.numel()), 61);
  std::copy(values.begin(), values.end(), latents.data());
  const tim::vae::TileOptions options{.tile = 3, .overlap = 1, .tiles_per_call = 2};
  const auto on_gpu = tim::to_host(tim::vae::decode_tiled(gpu, tim::to_backend<tim::cuda>(latents), options));
  const auto on_cpu = tim::vae::decode_tiled(host, latents, options);
  REQUIRE(on_gpu.shape() == on_cpu.shape());
  CHECK(tim_test::relative_error(on_gpu.data(), on_cpu.data(), static_cast<std::size_t>(on_cpu.numel())) <= 1e-4);
}

TEST_CASE("cuda dc ae ops: linear attention and RMSNorm kernels at released widths equal the CPU operations") {
  // Linear attention: 3000 pixels (several 64-pixel tiles per slice, a partial last tile), head
  // dims 32 (released) and 64 (the largest), default and small slices.
  for (const std::int64_t hd : {32, 64}) {
    for (const std::int64_t slice : {std::int64_t{256}, std::int64_t{1000}, std::int64_t{7}}) {
      CAPTURE(hd);
      CAPTURE(slice);
      const std::int64_t B = 2, heads = 3, P = 3000, row = heads * 3 * hd, stride = 2 * heads * hd;
      const auto qkv = random_vector<float>(static_cast<std::size_t>(B * P * row), 91);
      std::vector<float> expected(static_cast<std::size_t>(B * P * stride), -7.0f);
      tim::cpu::relu_linear_attention_forward(expected.data() + heads * hd, stride, qkv.data(), B, P, heads, hd,
                                              1e-15, 0);
      const auto qkv_device = to_device<float>(qkv);
      auto out_device = to_device<float>(std::vector<float>(expected.size(), -7.0f));
      tim::cuda::relu_linear_attention_forward(out_device.data() + heads * hd, stride, qkv_device.data(), B, P, heads,
                                               hd, 1e-15, slice);
      const auto actual = to_host(out_device.data(), expected.size());
      TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-5, 1e-6);
    }
  }
  // RMSNorm at 1024 channels, in place on the residual.
  const std::int64_t rows = 37, C = 1024;
  const auto x = random_vector<float>(static_cast<std::size_t>(rows * C), 92, 3.0);
  const auto weight = random_vector<float>(static_cast<std::size_t>(C), 93);
  const auto bias = random_vector<float>(static_cast<std::size_t>(C), 94);
  const auto residual = random_vector<float>(x.size(), 95);
  std::vector<float> expected(residual);
  tim::cpu::rms_norm_channels_forward(expected.data(), x.data(), weight.data(), bias.data(), rows, C, 1e-5,
                                      expected.data());
  const auto x_device = to_device<float>(x), w_device = to_device<float>(weight), b_device = to_device<float>(bias);
  auto y_device = to_device<float>(residual);
  tim::cuda::rms_norm_channels_forward(y_device.data(), x_device.data(), w_device.data(), b_device.data(), rows, C, 1e-5,
                                       y_device.data());
  const auto actual = to_host(y_device.data(), expected.size());
  TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-5, 1e-6);
}

TEST_CASE("cuda dc ae: latents of the wrong shape are a tim::Error") {
  const auto gpu = golden_decoder<tim::cuda>("nonsquare");
  const std::string message =
      tim_test::error_of([&] { gpu.decode(tim::Tensor<float, tim::cuda>::zeros({1, 4, 2, 2})); });
  CHECK(message.find("DC-AE decode: latents must have shape [B, 8, h, w]") != std::string::npos);
  CHECK(message.find("[1, 4, 2, 2]") != std::string::npos);
}

}  // TEST_SUITE("cuda")
