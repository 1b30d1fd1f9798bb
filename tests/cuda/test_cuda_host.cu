// Host-side logic of the CUDA backend, verified without a GPU (suite "cuda-host"): the launch
// shapes, the mapping of the row-major Linear onto cuBLAS's column-major GEMM (checked by
// emulating the column-major call), and every element-wise functor of the kernels run on the
// host over the same inputs as tim::cpu's operation, which they must reproduce exactly (same
// math/ code, same compiler) -- so the index arithmetic of each kernel is tested here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "compare.hpp"
#include "device_helpers.cuh"
#include "tim/cuda/tim.cuh"

namespace {

using tim_test::random_vector;
using tim_test::run_on_host;

template <class T>
void check_equal(const std::vector<T>& actual, const std::vector<T>& expected) {
  REQUIRE(actual.size() == expected.size());
  TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 0.0, 0.0);
}

//! Rotary tables (N, hd/2) as nn::Workspace builds them.
void rotary_tables(std::vector<float>& cos_table, std::vector<float>& sin_table, std::int64_t tokens,
                   std::int64_t grid_h, std::int64_t head_dim) {
  cos_table.resize(static_cast<std::size_t>(tokens * head_dim / 2));
  sin_table.resize(cos_table.size());
  for (std::int64_t n = 0; n < tokens; ++n)
    for (std::int64_t pair = 0; pair < head_dim / 2; ++pair) {
      const double angle = tim::math::rotary_angle<double>(n, grid_h, static_cast<int>(head_dim), static_cast<int>(pair));
      cos_table[n * (head_dim / 2) + pair] = static_cast<float>(std::cos(angle));
      sin_table[n * (head_dim / 2) + pair] = static_cast<float>(std::sin(angle));
    }
}

//! C (m x n, ldc) = op(A) op(B), column-major, as cuBLAS computes it from GemmArguments.
std::vector<double> emulate_column_major(const tim::cuda_detail::GemmArguments& g, const float* a, const float* b) {
  std::vector<double> c(static_cast<std::size_t>(g.ldc) * g.n);
  for (int i = 0; i < g.m; ++i)
    for (int j = 0; j < g.n; ++j) {
      double sum = 0;
      for (int p = 0; p < g.k; ++p) {
        const double op_a = g.transpose_a ? a[p + static_cast<std::size_t>(i) * g.lda] : a[i + static_cast<std::size_t>(p) * g.lda];
        const double op_b = g.transpose_b ? b[j + static_cast<std::size_t>(p) * g.ldb] : b[p + static_cast<std::size_t>(j) * g.ldb];
        sum += op_a * op_b;
      }
      c[i + static_cast<std::size_t>(j) * g.ldc] = sum;
    }
  return c;
}

}  // namespace

TEST_SUITE("cuda-host") {

TEST_CASE("cuda host: the device query answers without a device and without throwing") {
  int count = -1;
  CHECK_NOTHROW(count = tim::cuda::device_count());
  CHECK(count >= 0);
  CHECK(!tim::cuda::device_description().empty());
  MESSAGE("device: ", tim::cuda::device_description());
  using DeviceTensor = tim::Tensor<float, tim::cuda>;
  if (count == 0) CHECK_THROWS_AS(DeviceTensor::empty({4}), tim::Error);
}

TEST_CASE("cuda host: the Linear maps onto cuBLAS's column-major GEMM") {
  for (auto [rows, in, out] : {std::tuple{1, 1, 1}, std::tuple{3, 5, 7}, std::tuple{16, 8, 24}, std::tuple{7, 33, 2}}) {
    CAPTURE(rows);
    CAPTURE(in);
    CAPTURE(out);
    const auto x = random_vector<float>(static_cast<std::size_t>(rows * in), 1);
    const auto w = random_vector<float>(static_cast<std::size_t>(out * in), 2);
    const auto g = tim::cuda_detail::gemm_arguments(rows, in, out);
    const auto c = emulate_column_major(g, w.data(), x.data());  // A = W, B = x
    std::vector<double> expected(static_cast<std::size_t>(rows * out));
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) {
        double sum = 0;
        for (int i = 0; i < in; ++i) sum += double(x[r * in + i]) * w[o * in + i];
        expected[r * out + o] = sum;
      }
    // Column-major C (out x rows, ld out) is row-major y (rows, out) in memory.
    REQUIRE(c.size() == expected.size());
    TIM_CHECK_CLOSE(c.data(), expected.data(), c.size(), 1e-12, 1e-12);
  }
  CHECK_THROWS_AS(tim::cuda_detail::gemm_arguments(std::int64_t{1} << 31, 4, 4), tim::Error);
  CHECK_THROWS_AS(tim::cuda_detail::gemm_arguments(0, 4, 4), tim::Error);
}

TEST_CASE_TEMPLATE("cuda host: attention launch shapes", T, float, tim::bfloat16) {
  using tim::cuda_detail::attention_launch;
  const std::pair<int, int> capacities[] = {{4, 32}, {8, 32}, {16, 32}, {32, 32}, {48, 64}, {64, 64},
                                            {72, 80}, {80, 80}, {88, 96}, {96, 96}, {128, 128}};
  for (auto [head_dim, capacity] : capacities) {
    CAPTURE(head_dim);
    const auto launch = attention_launch<T>(2, 16, 256, 256, head_dim);
    CHECK(launch.capacity == capacity);
    CHECK(launch.query_tiles == 256 / tim::cuda_detail::attention_query_tile);
    CHECK(launch.blocks == 2 * 16 * launch.query_tiles);
    CHECK(launch.threads == 32 * tim::cuda_detail::attention_warps);
    // Dynamic shared memory of a block must fit what compute capability 8.0 (A100: 163 KiB)
    // lets one block opt in to, the smallest of the devices the kernel supports.
    CHECK(launch.shared_bytes <= 163 * 1024);
    // Every region starts 32-byte aligned, as WMMA's loads and stores need.
    CHECK(launch.shared_bytes % 32 == 0);
  }
  // The layout by hand for bfloat16 at hd 72 (capacity 80, rows of 88 elements, 64-key tiles):
  // Q 64 rows + K and V 64 rows each of 176 bytes, then 4 warps of S 16 x 68 floats, P 16 x 72
  // bf16 and O 16 x 84 floats.
  if constexpr (std::is_same_v<T, tim::bfloat16>)
    CHECK(attention_launch<T>(1, 1, 1, 1, 72).shared_bytes == 192u * 176u + 4u * 16u * (68u * 4u + 72u * 2u + 84u * 4u));
  CHECK(attention_launch<T>(1, 1, 65, 5, 64).query_tiles == 2);  // 64 + 1 queries
  CHECK(attention_launch<T>(3, 2, 1, 300, 8).blocks == 6);
  CHECK_THROWS_AS(attention_launch<T>(1, 1, 16, 16, 130), tim::Error);
  CHECK_THROWS_AS(attention_launch<T>(1, 1, 0, 16, 64), tim::Error);
}

TEST_CASE("cuda host: element-wise grid sizes") {
  using tim::cuda_detail::grid_blocks;
  CHECK(grid_blocks(1) == 1);
  CHECK(grid_blocks(256) == 1);
  CHECK(grid_blocks(257) == 2);
  CHECK(grid_blocks(std::int64_t{1} << 40) == tim::cuda_detail::elementwise_max_blocks);
  CHECK(tim::cuda_detail::layernorm_blocks(16384) == 16384u);
  CHECK(tim::cuda_detail::layernorm_blocks(std::int64_t{1} << 30) == (1u << 20));
}

TEST_CASE("cuda host: the element-wise functors reproduce tim::cpu exactly") {
  using namespace tim::cuda_detail;
  const std::int64_t B = 2, N = 6, D = 10, stride = 3 * D;

  SUBCASE("swiglu with row strides, silu, add, difference") {
    const std::int64_t rows = 3, cols = 5;
    const auto gate = random_vector<float>(rows * 7, 3), value = random_vector<float>(rows * 9, 4);
    std::vector<float> out(rows * cols), expected(rows * cols);
    run_on_host(rows * cols, SwigluOp<float>{out.data(), gate.data(), value.data(), cols, 7, 9});
    tim::cpu::swiglu_forward(expected.data(), gate.data(), value.data(), rows, cols, 7, 9);
    // tim::cpu evaluates exp with Eigen's vectorised exp, the functor with std::exp: equal to
    // a few ulp (the index arithmetic is what this checks).
    for (std::size_t i = 0; i < out.size(); ++i)
      CHECK(out[i] == doctest::Approx(expected[i]).epsilon(1e-6));

    std::vector<float> silu(rows * 7), cpu_silu(rows * 7);
    run_on_host(rows * 7, SiluOp<float>{silu.data(), gate.data()});
    tim::cpu::silu_forward(cpu_silu.data(), gate.data(), rows * 7);
    check_equal(silu, cpu_silu);

    const auto a = random_vector<float>(9, 5), b = random_vector<float>(9, 6);
    auto sum = a;
    std::vector<float> difference(9), cpu_difference(9);
    run_on_host(9, AddOp<float>{sum.data(), b.data()});
    auto cpu_sum = a;
    tim::cpu::add_forward(cpu_sum.data(), b.data(), 9);
    check_equal(sum, cpu_sum);
    run_on_host(9, DifferenceOp<float>{difference.data(), a.data(), b.data()});
    tim::cpu::difference_forward(cpu_difference.data(), a.data(), b.data(), 9);
    check_equal(difference, cpu_difference);
  }

  SUBCASE("timestep features") {
    const std::vector<float> s = {0.0f, 0.37f, 999.0f};
    std::vector<float> out(3 * 256), expected(3 * 256);
    run_on_host(3 * 256, TimestepFeaturesOp<float>{out.data(), s.data()});
    tim::cpu::timestep_features_forward(expected.data(), s.data(), 3);
    check_equal(out, expected);
  }

  SUBCASE("modulate and gated residual read the chunks of the adaLN output") {
    const auto x = random_vector<float>(B * N * D, 7), modulation = random_vector<float>(B * stride, 8);
    auto out = x, expected = x;
    run_on_host(B * N * D, ModulateOp<float>{out.data(), modulation.data(), modulation.data() + D, N, D, stride});
    tim::cpu::modulate_forward(expected.data(), modulation.data(), modulation.data() + D, B, N, D, stride);
    check_equal(out, expected);

    const auto update = random_vector<float>(B * N * D, 9);
    run_on_host(B * N * D, GatedResidualOp<float>{out.data(), modulation.data() + 2 * D, update.data(), N, D, stride});
    tim::cpu::gated_residual_forward(expected.data(), modulation.data() + 2 * D, update.data(), B, N, D, stride);
    check_equal(out, expected);
  }

  SUBCASE("patchify and unpatchify on a non-square latent") {
    const std::int64_t C = 3, H = 4, W = 6, p = 2, tokens = B * (H / p) * (W / p);
    const auto x = random_vector<float>(B * C * H * W, 10);
    std::vector<float> patches(tokens * C * p * p), expected(patches.size());
    run_on_host(B * C * H * W, PatchifyOp<float>{patches.data(), x.data(), C, H, W, p});
    tim::cpu::patchify_forward(expected.data(), x.data(), B, C, H, W, p);
    check_equal(patches, expected);

    std::vector<float> image(B * C * H * W), expected_image(image.size());
    run_on_host(B * C * H * W, UnpatchifyOp<float>{image.data(), patches.data(), C, H, W, p});
    tim::cpu::unpatchify_forward(expected_image.data(), patches.data(), B, C, H, W, p);
    check_equal(image, expected_image);
  }

  SUBCASE("embedding gather") {
    const auto table = random_vector<float>(5 * D, 11);
    const std::int64_t labels[] = {4, 0, 2};
    EmbeddingOp<float> op{nullptr, table.data(), D, {}};
    for (int b = 0; b < 3; ++b) op.index[b] = labels[b];
    std::vector<float> out(3 * D), expected(3 * D);
    op.out = out.data();
    run_on_host(3 * D, op);
    tim::cpu::embedding_forward(expected.data(), table.data(), labels, 3, D);
    check_equal(out, expected);
  }

  SUBCASE("qkv split and head split: the per-head items read and write where tim::cpu does") {
    // The device kernels run one warp per item (the warp arithmetic is checked on a GPU by the
    // "cuda" suite); here each item's offsets drive a host copy through math::prepare_head,
    // which must reproduce tim::cpu exactly.
    for (std::int64_t head_dim : {8, 72}) {
      CAPTURE(head_dim);
      const std::int64_t heads = 3, dim = heads * head_dim, tokens = 6, grid_h = 2;
      const auto qkv = random_vector<float>(B * tokens * 3 * dim, 12);
      const auto bias = random_vector<float>(B * 3 * dim, 13);
      const auto qw = random_vector<float>(head_dim, 14), qb = random_vector<float>(head_dim, 15);
      const auto kw = random_vector<float>(head_dim, 16), kb = random_vector<float>(head_dim, 17);
      std::vector<float> cos_table, sin_table;
      rotary_tables(cos_table, sin_table, tokens, grid_h, head_dim);
      const float scale = tim::nn::attention_query_scale<float>(head_dim);
      const std::size_t n = B * tokens * dim;
      std::vector<float> q(n), k(n), v(n), eq(n), ek(n), ev(n);
      for (std::int64_t i = 0; i < B * tokens * 3 * heads; ++i) {
        const HeadItem item = qkv_split_item(i, tokens, heads, head_dim);
        float* dst = (item.part == 0 ? q : item.part == 1 ? k : v).data() + item.target;
        for (std::int64_t j = 0; j < head_dim; ++j) dst[j] = qkv[item.source + j] + bias[item.bias + j];
        if (item.part == 2) continue;
        tim::math::prepare_head(dst, head_dim, item.part == 0 ? qw.data() : kw.data(),
                                item.part == 0 ? qb.data() : kb.data(), 1e-5,
                                cos_table.data() + item.token * (head_dim / 2),
                                sin_table.data() + item.token * (head_dim / 2), item.part == 0 ? scale : 1.0f);
      }
      tim::cpu::qkv_split_forward(eq.data(), ek.data(), ev.data(), qkv.data(), bias.data(), qw.data(), qb.data(),
                                  kw.data(), kb.data(), 1e-5, cos_table.data(), sin_table.data(), B, tokens, heads,
                                  head_dim, scale);
      check_equal(q, eq);
      check_equal(k, ek);
      check_equal(v, ev);

      // k of a fused (rows, 2D) projection: norm only, row stride 2D.
      std::vector<float> heads_out(n), expected(n);
      for (std::int64_t i = 0; i < B * tokens * heads; ++i) {
        const HeadItem item = split_heads_item(i, tokens, heads, head_dim, 2 * dim);
        float* dst = heads_out.data() + item.target;
        for (std::int64_t j = 0; j < head_dim; ++j) dst[j] = qkv[item.source + j];
        tim::math::prepare_head(dst, head_dim, kw.data(), kb.data(), 1e-5, static_cast<const float*>(nullptr),
                                static_cast<const float*>(nullptr), 1.0f);
      }
      tim::cpu::split_heads_forward(expected.data(), qkv.data(), 2 * dim, kw.data(), kb.data(), 1e-5,
                                    static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), B, tokens,
                                    heads, head_dim, 1.0f);
      check_equal(heads_out, expected);
    }
  }

  SUBCASE("bfloat16 storage: float arithmetic, one rounding at the store") {
    const auto x = random_vector<float>(B * N * D, 18), modulation = random_vector<float>(B * stride, 19);
    std::vector<tim::bfloat16> xb(x.size()), mb(modulation.size());
    std::vector<float> xr(x.size()), mr(modulation.size());  // the bfloat16 values, in float
    for (std::size_t i = 0; i < x.size(); ++i) xr[i] = float(xb[i] = tim::bfloat16(x[i]));
    for (std::size_t i = 0; i < modulation.size(); ++i) mr[i] = float(mb[i] = tim::bfloat16(modulation[i]));
    run_on_host(B * N * D, ModulateOp<tim::bfloat16>{xb.data(), mb.data(), mb.data() + D, N, D, stride});
    tim::cpu::modulate_forward(xr.data(), mr.data(), mr.data() + D, B, N, D, stride);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CAPTURE(i);
      CHECK(xb[i].bits == tim::bfloat16(xr[i]).bits);  // the float result rounded once
    }
  }
}

TEST_CASE("cuda host: the tiling functors cut and blend tiles as the CPU's tiled decoding loops did") {
  // Latents (B, L, h, w); one tile of th x tw at (y0, x0); then an image tile (B, C, th', tw') blended
  // into images (B, C, H, W) at (Y0, X0) with weights wy (th'), wx (tw').
  const std::int64_t B = 2, L = 3, h = 5, w = 7, th = 3, tw = 4, y0 = 2, x0 = 3;
  const auto latents = random_vector<float>(static_cast<std::size_t>(B * L * h * w), 91);
  std::vector<float> tile(static_cast<std::size_t>(B * L * th * tw), -1.0f), expected(tile.size());
  run_on_host(B * L * th * tw, tim::vae::TileExtractOp<float>{tile.data(), latents.data(), h, w, th, tw, y0, x0});
  for (std::int64_t plane = 0; plane < B * L; ++plane)
    for (std::int64_t y = 0; y < th; ++y)
      std::copy_n(latents.data() + (plane * h + y0 + y) * w + x0, tw, expected.data() + (plane * th + y) * tw);
  check_equal(tile, expected);

  const std::int64_t C = 2, H = 9, W = 11, tile_h = 4, tile_w = 6, Y0 = 5, X0 = 3;
  const auto image_tile = random_vector<float>(static_cast<std::size_t>(B * C * tile_h * tile_w), 92);
  const auto wy = random_vector<double>(static_cast<std::size_t>(tile_h), 93);
  const auto wx = random_vector<double>(static_cast<std::size_t>(tile_w), 94);
  auto images = random_vector<float>(static_cast<std::size_t>(B * C * H * W), 95);
  auto blended = images;
  run_on_host(B * C * tile_h * tile_w, tim::vae::TileBlendOp<float>{blended.data(), image_tile.data(), wy.data(),
                                                                    wx.data(), H, W, tile_h, tile_w, Y0, X0});
  for (std::int64_t plane = 0; plane < B * C; ++plane)  // the loop of the CPU's decode_tiled before the functor
    for (std::int64_t y = 0; y < tile_h; ++y) {
      const float* source = image_tile.data() + (plane * tile_h + y) * tile_w;
      float* target = images.data() + (plane * H + Y0 + y) * W + X0;
      for (std::int64_t x = 0; x < tile_w; ++x) target[x] += static_cast<float>(wy[y] * wx[x]) * source[x];
    }
  check_equal(blended, images);
}

}  // TEST_SUITE
