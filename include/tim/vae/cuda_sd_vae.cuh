// The SD VAE decoder (tim/vae/sd_vae.hpp) on the tim::cuda backend, in float: the same modules
// and order of operations as the CPU decoder, with its weights (already in the CPU decoder's
// channels-last layouts) copied to the device, over the operations of tim/vae/cuda_ops.cuh
// (im2col convolutions through cuBLAS, GroupNorm with double statistics over slices of pixels
// added in a fixed order). The mid block's single-head attention is two cuBLAS GEMMs around a
// row softmax, a block of query rows at a time.
// Include from a .cu file compiled by nvcc, after or instead of <tim/cuda/tim.cuh>.
//
// Shape legend: B batch, L latent channels, h, w latent size, H, W image size, C channels,
// Ci/Co in/out channels, G groups, P = H*W pixels, k kernel size, K = k*k*Ci im2col row width.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tim/cuda/tim.cuh"
#include "tim/vae/cuda_ops.cuh"
#include "tim/vae/sd_vae.hpp"

namespace tim::vae {

//! The SD VAE decoder on the GPU, in float. Build it from a loaded CPU decoder:
//!   auto host = tim::vae::open_sd_vae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   tim::vae::CudaSdVaeDecoder gpu(host);   // copies the 49.5 M weights to the device
//!   tim::Tensor<float> images = gpu.decode(latents);  // host (B, 4, h, w) -> host (B, 3, 8h, 8w)
//! decode() allocates its activations per call on the current device and stream.
class CudaSdVaeDecoder {
 public:
  using Device = Tensor<float, cuda>;

  explicit CudaSdVaeDecoder(const SdVaeDecoder<float>& host) : config(host.config) {
    post_quant_conv_ = upload(host.post_quant_conv);
    conv_in_ = upload(host.conv_in);
    mid_resnet_0_ = upload(host.mid_resnet_0);
    mid_attention_ = upload(host.mid_attention);
    mid_resnet_1_ = upload(host.mid_resnet_1);
    for (const auto& block : host.up_blocks) {
      UpBlockD up;
      for (const auto& r : block.resnets) up.resnets.push_back(upload(r));
      if (block.upsamples()) up.upsampler = upload(block.upsampler);
      up_blocks_.push_back(std::move(up));
    }
    conv_norm_out_ = upload(host.conv_norm_out);
    conv_out_ = upload(host.conv_out);
  }

  SdVaeConfig config;
  //! Largest im2col block (elements) and block of attention scores (query rows x keys) built at
  //! once; the defaults bound them to 128 and 256 MiB. Tests make them small.
  std::int64_t im2col_block_elements = cuda_vae_detail::im2col_chunk_elements;
  std::int64_t score_block_elements = cuda_vae_detail::score_chunk_elements;

  //! images (B, 3, H, W) on the host from latents (B, L, h, w) on the host; see decode_device.
  Tensor<float> decode(const Tensor<float>& latents) const { return cuda_vae_detail::decode_on_host(*this, latents); }

  //! images (B, 3, H, W) from latents (B, L, h, w), both on the device: divides by the scaling
  //! factor and decodes, as SdVaeDecoder::decode. Throws tim::Error on a wrong latent shape.
  Device decode_device(const Device& latents) const {
    check_latents(latents.shape());
    using namespace cuda_vae_detail;
    const std::int64_t batch = latents.dim(0), L = config.latent_channels;
    std::int64_t height = latents.dim(2), width = latents.dim(3);
    auto z = cuda_vae_detail::scratch<float>({batch, height, width, L});
    for_each(z.numel(), ToChannelsLastScaled{z.data(), latents.data(), L, height * width,
                                             1.0f / static_cast<float>(config.scaling_factor)});  // as the CPU decoder
    auto moments = cuda_vae_detail::scratch<float>({batch, height, width, L});
    conv(post_quant_conv_, moments.data(), z.data(), batch, height, width, false);
    auto x = cuda_vae_detail::scratch<float>({batch, height, width, conv_in_.out_channels});
    conv(conv_in_, x.data(), moments.data(), batch, height, width, false);

    x = resnet(mid_resnet_0_, x, batch, height, width);
    x = attention(mid_attention_, x, batch, height * width);
    x = resnet(mid_resnet_1_, x, batch, height, width);
    for (const auto& block : up_blocks_) {
      for (const auto& r : block.resnets) x = resnet(r, x, batch, height, width);
      if (block.upsampler.kernel == 0) continue;
      const std::int64_t channels = block.upsampler.in_channels;
      auto up = cuda_vae_detail::scratch<float>({batch, 2 * height, 2 * width, channels});
      for_each_row(batch * 4 * height * width, channels,
                   UpsampleNearest2x{up.data(), x.data(), height, width, static_cast<int>(channels)});
      height *= 2;
      width *= 2;
      x = cuda_vae_detail::scratch<float>({batch, height, width, channels});
      conv(block.upsampler, x.data(), up.data(), batch, height, width, false);
    }
    norm(conv_norm_out_, x.data(), x.data(), batch, height * width, true);
    auto rgb = cuda_vae_detail::scratch<float>({batch, height, width, config.out_channels});
    conv(conv_out_, rgb.data(), x.data(), batch, height, width, false);
    auto images = Device::empty({batch, config.out_channels, height, width});
    for_each(images.numel(), ToChannelsFirst{images.data(), rgb.data(), config.out_channels, height * width});
    return images;
  }

 private:
  struct ConvD {
    Device weight, bias;  // (Co, k, k, Ci), (Co)
    std::int64_t in_channels = 0, out_channels = 0, kernel = 0;
  };
  struct NormD {
    Device weight, bias;
    std::int64_t channels = 0, groups = 1;
    double eps = 1e-6;
  };
  struct ResnetD {
    NormD norm1, norm2;
    ConvD conv1, conv2, conv_shortcut;
  };
  struct LinearD {
    Device weight, bias;  // (C, C), (C)
  };
  struct AttentionD {
    NormD group_norm;
    LinearD to_q, to_k, to_v, to_out;
    std::int64_t channels = 0;
  };
  struct UpBlockD {
    std::vector<ResnetD> resnets;
    ConvD upsampler;  // kernel 0 in the last block
  };

  static ConvD upload(const Conv2d<float>& c) {
    return {to_backend<cuda>(c.weight), to_backend<cuda>(c.bias), c.in_channels, c.out_channels, c.kernel};
  }
  static NormD upload(const GroupNorm<float>& n) {
    return {to_backend<cuda>(n.weight), to_backend<cuda>(n.bias), n.channels, n.groups, n.eps};
  }
  static ResnetD upload(const ResnetBlock<float>& r) {
    ResnetD d{upload(r.norm1), upload(r.norm2), upload(r.conv1), upload(r.conv2), {}};
    if (r.conv_shortcut.kernel) d.conv_shortcut = upload(r.conv_shortcut);
    return d;
  }
  static LinearD upload(const nn::Linear<float, cpu>& l) { return {to_backend<cuda>(l.weight), to_backend<cuda>(l.bias)}; }
  static AttentionD upload(const AttentionBlock<float>& a) {
    return {upload(a.group_norm), upload(a.to_q), upload(a.to_k), upload(a.to_v), upload(a.to_out), a.group_norm.channels};
  }

  void check_latents(const Shape& s) const {
    check(s.rank() == 4 && s[1] == config.latent_channels && s[0] >= 1 && s[2] >= 1 && s[3] >= 1,
          "SD VAE decode (CUDA): latents must have shape [B, ", config.latent_channels, ", h, w] with B, h, w >= 1, got ",
          s);
  }

  //! y (B, H, W, Co) = conv(x) (+= with accumulate): a 1x1 is one GEMM, a k x k one im2col blocks + GEMMs.
  void conv(const ConvD& c, float* y, const float* x, std::int64_t batch, std::int64_t height, std::int64_t width,
            bool accumulate) const {
    cuda_vae_detail::conv2d(y, x, c.weight.data(), c.bias.data(), batch, height, width, c.in_channels, c.out_channels,
                            c.kernel, accumulate, im2col_block_elements);
  }

  //! y (B, P, C) = GroupNorm(x) [then SiLU]; y may be x.
  static void norm(const NormD& n, float* y, const float* x, std::int64_t batch, std::int64_t pixels, bool silu) {
    cuda_vae_detail::group_norm(y, x, n.weight.data(), n.bias.data(), batch, pixels, n.channels, n.groups, n.eps, silu);
  }

  Device resnet(const ResnetD& r, const Device& x, std::int64_t batch, std::int64_t height, std::int64_t width) const {
    const std::int64_t pixels = height * width, ci = r.conv1.in_channels, co = r.conv1.out_channels;
    auto normed = cuda_vae_detail::scratch<float>({batch, height, width, std::max(ci, co)});
    auto hidden = cuda_vae_detail::scratch<float>({batch, height, width, co});
    auto y = cuda_vae_detail::scratch<float>({batch, height, width, co});
    norm(r.norm1, normed.data(), x.data(), batch, pixels, true);
    conv(r.conv1, hidden.data(), normed.data(), batch, height, width, false);
    norm(r.norm2, normed.data(), hidden.data(), batch, pixels, true);
    if (r.conv_shortcut.kernel)
      conv(r.conv_shortcut, y.data(), x.data(), batch, height, width, false);
    else
      cuda::copy(y.data(), x.data(), static_cast<std::size_t>(y.numel()));
    conv(r.conv2, y.data(), normed.data(), batch, height, width, true);
    return y;
  }

  //! y (B, P, C) = x + to_out(softmax(q k^T / sqrt(C)) v), q, k, v projections of GroupNorm(x).
  //! Per sample, a block of query rows at a time: scores (rows, P) = q k^T by one cuBLAS GEMM,
  //! the row softmax, then out (rows, C) = scores v by another.
  Device attention(const AttentionD& a, const Device& x, std::int64_t batch, std::int64_t pixels) const {
    using cuda_vae_detail::as_int;
    const std::int64_t C = a.channels, rows = batch * pixels;
    auto normed = cuda_vae_detail::scratch<float>({batch, pixels, C});
    auto q = cuda_vae_detail::scratch<float>({batch, pixels, C});
    auto k = cuda_vae_detail::scratch<float>({batch, pixels, C});
    auto v = cuda_vae_detail::scratch<float>({batch, pixels, C});
    norm(a.group_norm, normed.data(), x.data(), batch, pixels, false);
    cuda::linear_forward(q.data(), normed.data(), a.to_q.weight.data(), a.to_q.bias.data(), rows, C, C);
    cuda::linear_forward(k.data(), normed.data(), a.to_k.weight.data(), a.to_k.bias.data(), rows, C, C);
    cuda::linear_forward(v.data(), normed.data(), a.to_v.weight.data(), a.to_v.bias.data(), rows, C, C);
    const std::int64_t block = std::max<std::int64_t>(1, std::min(pixels, score_block_elements / pixels));
    auto scores = cuda_vae_detail::scratch<float>({block, pixels});
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(C))), one = 1, zero = 0;
    const int n_keys = as_int(pixels, "pixels"), c_int = as_int(C, "channels");
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t first = 0; first < pixels; first += block) {
        const std::int64_t m = std::min(block, pixels - first);
        const float* qb = q.data() + (b * pixels + first) * C;
        const float* kb = k.data() + b * pixels * C;
        const float* vb = v.data() + b * pixels * C;
        float* ob = normed.data() + (b * pixels + first) * C;  // the attention output reuses `normed`
        // Row-major scores (m, P) = q_block (m, C) k^T, i.e. column-major (P x m) = k (P x C) q^T.
        cuda_detail::check_cublas(
            cublasSgemm(cuda_detail::cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, n_keys, as_int(m, "rows"), c_int,
                        &scale, kb, c_int, qb, c_int, &zero, scores.data(), n_keys),
            "cublasSgemm (SD VAE attention scores)");
        cuda_vae_detail::softmax_rows_kernel<cuda_vae_detail::softmax_threads><<<static_cast<unsigned>(m), cuda_vae_detail::softmax_threads, 0,
                                               cuda::stream()>>>(scores.data(), pixels);
        cuda_detail::check_launch("tim::cuda SD VAE softmax");
        // Row-major out (m, C) = scores (m, P) v (P, C), i.e. column-major (C x m) = v^T (C x P) scores^T.
        cuda_detail::check_cublas(
            cublasSgemm(cuda_detail::cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, c_int, as_int(m, "rows"), n_keys,
                        &one, vb, c_int, scores.data(), n_keys, &zero, ob, c_int),
            "cublasSgemm (SD VAE attention output)");
      }
    auto y = cuda_vae_detail::scratch<float>(x.shape());
    cuda::copy(y.data(), x.data(), static_cast<std::size_t>(x.numel()));
    cuda::linear_forward(y.data(), normed.data(), a.to_out.weight.data(), a.to_out.bias.data(), rows, C, C,
                         /*accumulate=*/true);
    return y;
  }

  ConvD post_quant_conv_, conv_in_;
  ResnetD mid_resnet_0_, mid_resnet_1_;
  AttentionD mid_attention_;
  std::vector<UpBlockD> up_blocks_;
  NormD conv_norm_out_;
  ConvD conv_out_;
};

}  // namespace tim::vae
