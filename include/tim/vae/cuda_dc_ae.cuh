// The DC-AE f32c32 decoder (tim/vae/dc_ae.hpp) on the tim::cuda backend, in float: the same
// modules and order of operations as the CPU decoder, with its weights (already in the CPU
// decoder's channels-last layouts) copied to the device. Convolutions are im2col + cuBLAS
// (tim/vae/cuda_ops.cuh), 1x1 convolutions and projections cuBLAS GEMMs; RMSNorm, the depthwise
// and grouped convolutions and the ReLU linear attention are the kernels of
// tim/vae/cuda_dc_ae_ops.cuh, which accumulate in double where the CPU does (RMSNorm's mean of
// squares, the attention's sums over pixels and their products with q).
// Include from a .cu file compiled by nvcc, after or instead of <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, L latent channels (32), h, w latent size, H, W size of a stage, C
// channels of a stage (Ci/Co in/out), P = H*W pixels, nh heads, hd head dim, inner = nh hd, S
// multi-scale branches of an attention, k kernel size.
#pragma once

#include <cstdint>
#include <vector>

#include "tim/cuda/tim.cuh"
#include "tim/vae/cuda_dc_ae_ops.cuh"
#include "tim/vae/cuda_ops.cuh"
#include "tim/vae/dc_ae.hpp"

namespace tim::vae {

//! The DC-AE decoder on the GPU, in float. Build it from a loaded CPU decoder:
//!   auto host = tim::vae::open_dc_ae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   tim::vae::CudaDcAeDecoder gpu(host);   // copies the 159.2 M weights to the device
//!   tim::Tensor<float> images = gpu.decode(latents);  // host (B, 32, h, w) -> host (B, 3, 32h, 32w)
//! decode() allocates its activations per call on the current device and stream.
class CudaDcAeDecoder {
 public:
  using Device = Tensor<float, cuda>;

  //! Throws tim::Error for a head dim the linear-attention kernel cannot hold (at most
  //! cuda_dc_ae_detail::linear_attention_max_head_dim, 64; the released decoder's is 32).
  explicit CudaDcAeDecoder(const DcAeDecoder<float>& host) : config(host.config) {
    check(config.attention_head_dim >= 1 && config.attention_head_dim <= cuda_dc_ae_detail::linear_attention_max_head_dim,
          "tim::cuda DC-AE: attention_head_dim ", config.attention_head_dim, " must be in [1, ",
          cuda_dc_ae_detail::linear_attention_max_head_dim, "] on the GPU");
    conv_in_ = upload(host.conv_in);
    for (const auto& stage : host.up_blocks) {
      StageD d;
      if (stage.upsample.present())
        d.upsample = {upload(stage.upsample.conv), stage.upsample.in_channels, stage.upsample.out_channels,
                      stage.upsample.pixel_shuffle};
      for (const auto& block : stage.res_blocks) d.res_blocks.push_back(upload(block));
      for (const auto& block : stage.vit_blocks) d.vit_blocks.push_back(upload(block));
      up_blocks_.push_back(std::move(d));
    }
    norm_out_ = upload(host.norm_out);
    conv_out_ = upload(host.conv_out);
  }

  DcAeConfig config;
  //! Largest im2col block (elements) a convolution builds at once (default 128 MiB), and the
  //! pixels per slice of the linear attention's sums (one thread block per sample, head and
  //! slice; the slices' sums are added in order). Tests make them small.
  std::int64_t im2col_block_elements = cuda_vae_detail::im2col_chunk_elements;
  std::int64_t attention_slice_pixels = cuda_dc_ae_detail::linear_attention_slice;

  //! images (B, 3, H, W) on the host from latents (B, L, h, w) on the host; see decode_device.
  Tensor<float> decode(const Tensor<float>& latents) const { return cuda_vae_detail::decode_on_host(*this, latents); }

  //! images (B, 3, H, W) from latents (B, L, h, w), both on the device, H = config.upscale() h:
  //! divides by the scaling factor and decodes, as DcAeDecoder::decode (values about [-1, 1], not
  //! clamped). Throws tim::Error on a wrong latent shape.
  Device decode_device(const Device& latents) const {
    check_latents(latents.shape());
    using namespace cuda_vae_detail;
    const std::int64_t batch = latents.dim(0), L = config.latent_channels;
    std::int64_t height = latents.dim(2), width = latents.dim(3);
    auto z = cuda_vae_detail::scratch<float>({batch, height, width, L});
    for_each(z.numel(), ToChannelsLastScaled{z.data(), latents.data(), L, height * width,
                                             1.0f / static_cast<float>(config.scaling_factor)});  // as the CPU decoder
    auto x = cuda_vae_detail::scratch<float>({batch, height, width, conv_in_.out_channels});
    conv(conv_in_, x.data(), z.data(), batch, height, width);
    if (config.in_shortcut)
      cuda_dc_ae_detail::repeat_channels_add(x.data(), z.data(), batch * height * width, L, conv_in_.out_channels / L);

    for (auto stage = up_blocks_.rbegin(); stage != up_blocks_.rend(); ++stage) {
      if (stage->upsample.conv.kernel != 0) {
        x = upsample(stage->upsample, x, batch, height, width);
        height *= 2;
        width *= 2;
      }
      for (const auto& block : stage->res_blocks) x = res_block(block, x, batch, height, width);
      for (const auto& block : stage->vit_blocks) x = vit_block(block, x, batch, height, width);
    }
    const std::int64_t rows = batch * height * width;
    norm(norm_out_, x.data(), x.data(), rows);
    cuda_dc_ae_detail::relu_inplace(x.data(), x.numel());
    auto rgb = cuda_vae_detail::scratch<float>({batch, height, width, config.out_channels});
    conv(conv_out_, rgb.data(), x.data(), batch, height, width);
    auto images = Device::empty({batch, config.out_channels, height, width});
    for_each(images.numel(), ToChannelsFirst{images.data(), rgb.data(), config.out_channels, height * width});
    return images;
  }

 private:
  struct ConvD {
    Device weight, bias;  // (Co, k, k, Ci), (Co) or empty
    std::int64_t in_channels = 0, out_channels = 0, kernel = 0;
  };
  struct DepthwiseD {
    Device weight, bias;  // (k, k, C), (C) or empty
    std::int64_t channels = 0, kernel = 0;
  };
  struct LinearD {
    Device weight, bias;  // (out, in), (out) or empty
    std::int64_t in_features = 0, out_features = 0;
  };
  struct NormD {
    Device weight, bias;  // (C) each
    std::int64_t channels = 0;
    double eps = 1e-5;
  };
  struct ResBlockD {
    ConvD conv1, conv2;
    NormD norm;
  };
  struct BranchD {
    DepthwiseD proj_in;  // over 3 inner channels
    Device proj_out;     // (3 nh, hd, hd) as (group, in, out)
    std::int64_t groups = 0, head_dim = 0;
  };
  struct AttentionD {
    LinearD to_qkv;  // (3 inner, C)
    std::vector<BranchD> branches;
    LinearD to_out;  // ((1 + S) inner -> C)
    NormD norm_out;
    std::int64_t heads = 0, head_dim = 0;
    double eps = 1e-15;
  };
  struct GluMbConvD {
    LinearD conv_inverted;  // C -> 8C, bias
    DepthwiseD conv_depth;  // 3x3 over 8C, bias
    LinearD conv_point;     // 4C -> C
    NormD norm;
  };
  struct VitBlockD {
    AttentionD attn;
    GluMbConvD conv_out;
  };
  struct UpsampleD {
    ConvD conv;  // kernel 0 in the deepest stage (no upsampling)
    std::int64_t in_channels = 0, out_channels = 0;
    bool pixel_shuffle = false;
  };
  struct StageD {
    UpsampleD upsample;
    std::vector<ResBlockD> res_blocks;
    std::vector<VitBlockD> vit_blocks;
  };

  //! The tensor on the device; an empty (absent) tensor stays empty, its data() null.
  static Device upload(const Tensor<float>& t) { return t.empty_tensor() ? Device{} : to_backend<cuda>(t); }
  static ConvD upload(const dc_ae::Conv2d<float>& c) {
    return {upload(c.weight), upload(c.bias), c.in_channels, c.out_channels, c.kernel};
  }
  static DepthwiseD upload(const dc_ae::DepthwiseConv2d<float>& c) {
    return {upload(c.weight), upload(c.bias), c.channels, c.kernel};
  }
  static LinearD upload(const nn::Linear<float, cpu>& l) {
    return {upload(l.weight), upload(l.bias), l.in_features, l.out_features};
  }
  static NormD upload(const dc_ae::RmsNorm<float>& n) { return {upload(n.weight), upload(n.bias), n.channels, n.eps}; }
  static ResBlockD upload(const dc_ae::ResBlock<float>& r) { return {upload(r.conv1), upload(r.conv2), upload(r.norm)}; }
  static VitBlockD upload(const dc_ae::EfficientViTBlock<float>& v) {
    VitBlockD d;
    const auto& a = v.attn;
    d.attn.to_qkv = upload(a.to_qkv);
    for (const auto& branch : a.to_qkv_multiscale)
      d.attn.branches.push_back({upload(branch.proj_in), upload(branch.proj_out), branch.groups, branch.head_dim});
    d.attn.to_out = upload(a.to_out);
    d.attn.norm_out = upload(a.norm_out);
    d.attn.heads = a.heads;
    d.attn.head_dim = a.head_dim;
    d.attn.eps = a.eps;
    const auto& g = v.conv_out;
    d.conv_out = {upload(g.conv_inverted), upload(g.conv_depth), upload(g.conv_point), upload(g.norm)};
    return d;
  }

  void check_latents(const Shape& s) const {
    check(s.rank() == 4 && s[1] == config.latent_channels && s[0] >= 1 && s[2] >= 1 && s[3] >= 1,
          "DC-AE decode (CUDA): latents must have shape [B, ", config.latent_channels,
          ", h, w] with B, h, w >= 1, got ", s);
  }

  //! y (B, H, W, Co) = conv(x): im2col blocks + GEMMs (a 1x1: one GEMM).
  void conv(const ConvD& c, float* y, const float* x, std::int64_t batch, std::int64_t height,
            std::int64_t width) const {
    cuda_vae_detail::conv2d(y, x, c.weight.data(), c.bias.data(), batch, height, width, c.in_channels, c.out_channels,
                            c.kernel, /*accumulate=*/false, im2col_block_elements);
  }
  static void linear(const LinearD& l, float* y, const float* x, std::int64_t rows) {
    cuda::linear_forward(y, x, l.weight.data(), l.bias.data(), rows, l.in_features, l.out_features);
  }
  static void depthwise(const DepthwiseD& c, float* y, const float* x, std::int64_t batch, std::int64_t height,
                        std::int64_t width) {
    cuda_dc_ae_detail::depthwise_conv2d(y, x, c.weight.data(), c.bias.data(), batch, height, width, c.channels,
                                        c.kernel);
  }
  //! y (P, C) = RMSNorm(x) [+ residual]; y may be x or residual.
  static void norm(const NormD& n, float* y, const float* x, std::int64_t rows, const float* residual = nullptr) {
    cuda_dc_ae_detail::rms_norm(y, x, n.weight.data(), n.bias.data(), rows, n.channels, n.eps, residual);
  }

  //! x + RMSNorm(conv2(SiLU(conv1(x)))).
  Device res_block(const ResBlockD& r, const Device& x, std::int64_t batch, std::int64_t height,
                   std::int64_t width) const {
    const std::int64_t channels = r.conv1.in_channels;
    auto hidden = cuda_vae_detail::scratch<float>({batch, height, width, channels});
    auto y = cuda_vae_detail::scratch<float>({batch, height, width, channels});
    conv(r.conv1, hidden.data(), x.data(), batch, height, width);
    cuda::silu_forward(hidden.data(), hidden.data(), hidden.numel());
    conv(r.conv2, y.data(), hidden.data(), batch, height, width);
    norm(r.norm, y.data(), y.data(), batch * height * width, x.data());
    return y;
  }

  //! The multi-scale linear attention with its residual, then GLUMBConv with its residual.
  Device vit_block(const VitBlockD& v, const Device& x, std::int64_t batch, std::int64_t height,
                   std::int64_t width) const {
    return glu_mb_conv(v.conv_out, attention(v.attn, x, batch, height, width), batch, height, width);
  }

  //! x + RMSNorm(to_out(heads)): the (1 + S) nh heads of q/k/v (B, P, 3 inner) and its S
  //! multi-scale aggregates through the ReLU linear attention into attended (B, P, (1 + S) inner).
  Device attention(const AttentionD& a, const Device& x, std::int64_t batch, std::int64_t height,
                   std::int64_t width) const {
    const std::int64_t rows = batch * height * width, pixels = height * width, inner = a.heads * a.head_dim;
    const std::int64_t branches = 1 + static_cast<std::int64_t>(a.branches.size());
    auto qkv = cuda_vae_detail::scratch<float>({batch, height, width, 3 * inner});
    // branch s: heads s nh ...
    auto attended = cuda_vae_detail::scratch<float>({batch, height, width, branches * inner});
    linear(a.to_qkv, qkv.data(), x.data(), rows);
    cuda_dc_ae_detail::relu_linear_attention(attended.data(), branches * inner, qkv.data(), batch, pixels, a.heads,
                                             a.head_dim, a.eps, attention_slice_pixels);
    if (!a.branches.empty()) {
      auto mixed = cuda_vae_detail::scratch<float>({batch, height, width, 3 * inner});       // the depthwise result
      auto aggregated = cuda_vae_detail::scratch<float>({batch, height, width, 3 * inner});  // the branch's q/k/v
      for (std::size_t s = 0; s < a.branches.size(); ++s) {
        const BranchD& branch = a.branches[s];
        depthwise(branch.proj_in, mixed.data(), qkv.data(), batch, height, width);
        cuda_dc_ae_detail::grouped_pointwise(aggregated.data(), mixed.data(), branch.proj_out.data(), rows,
                                             branch.groups, branch.head_dim);
        cuda_dc_ae_detail::relu_linear_attention(attended.data() + (1 + static_cast<std::int64_t>(s)) * inner,
                                                 branches * inner, aggregated.data(), batch, pixels, a.heads,
                                                 a.head_dim, a.eps, attention_slice_pixels);
      }
    }
    auto y = cuda_vae_detail::scratch<float>({batch, height, width, a.to_out.out_features});
    linear(a.to_out, y.data(), attended.data(), rows);
    norm(a.norm_out, y.data(), y.data(), rows, x.data());
    return y;
  }

  //! x + RMSNorm(conv_point(value * SiLU(gate))), (value, gate) the halves of
  //! conv_depth(SiLU(conv_inverted(x))).
  static Device glu_mb_conv(const GluMbConvD& g, const Device& x, std::int64_t batch, std::int64_t height,
                            std::int64_t width) {
    const std::int64_t rows = batch * height * width, hidden = g.conv_point.in_features;
    auto expanded = cuda_vae_detail::scratch<float>({batch, height, width, 2 * hidden});
    auto mixed = cuda_vae_detail::scratch<float>({batch, height, width, 2 * hidden});
    linear(g.conv_inverted, expanded.data(), x.data(), rows);
    cuda::silu_forward(expanded.data(), expanded.data(), expanded.numel());
    depthwise(g.conv_depth, mixed.data(), expanded.data(), batch, height, width);
    // value = channels [0, 4C), gate = [4C, 8C) of each row; the gated product (rows, 4C) reuses `expanded`.
    cuda::swiglu_forward(expanded.data(), mixed.data() + hidden, mixed.data(), rows, hidden, 2 * hidden, 2 * hidden);
    auto y = cuda_vae_detail::scratch<float>({batch, height, width, g.conv_point.out_features});
    linear(g.conv_point, y.data(), expanded.data(), rows);
    norm(g.norm, y.data(), y.data(), rows, x.data());
    return y;
  }

  //! y (B, 2H, 2W, Co) from x (B, H, W, Ci): conv3x3(nearest 2x(x)) or pixel_shuffle(conv3x3(x)),
  //! plus the shortcut.
  Device upsample(const UpsampleD& u, const Device& x, std::int64_t batch, std::int64_t height,
                  std::int64_t width) const {
    auto y = cuda_vae_detail::scratch<float>({batch, 2 * height, 2 * width, u.out_channels});
    if (u.pixel_shuffle) {
      auto wide = cuda_vae_detail::scratch<float>({batch, height, width, 4 * u.out_channels});
      conv(u.conv, wide.data(), x.data(), batch, height, width);
      cuda_dc_ae_detail::pixel_shuffle2x(y.data(), wide.data(), batch, height, width, u.out_channels);
    } else {
      auto up = cuda_vae_detail::scratch<float>({batch, 2 * height, 2 * width, u.in_channels});
      cuda_vae_detail::for_each_row(
          batch * 4 * height * width, u.in_channels,
          cuda_vae_detail::UpsampleNearest2x{up.data(), x.data(), height, width, static_cast<int>(u.in_channels)});
      conv(u.conv, y.data(), up.data(), batch, 2 * height, 2 * width);
    }
    cuda_dc_ae_detail::upsample_shortcut(y.data(), x.data(), batch, height, width, u.in_channels, u.out_channels);
    return y;
  }

  ConvD conv_in_;
  std::vector<StageD> up_blocks_;  // up_blocks_[0] the full-resolution stage; decode runs them in reverse
  NormD norm_out_;
  ConvD conv_out_;
};

}  // namespace tim::vae
