// The DC-AE f32c32 decoder (dc-ae-f32c32-sana-1.1, diffusers' AutoencoderDC decoder) on any
// backend (DcAeDecoder<T, tim::cpu> by default, DcAeDecoder<float, tim::cuda> on a GPU): turns the
// 32-channel latents of the released C2I-512 and T2I models into images (SPEC 8, docs/vae.md
// "DC-AE f32c32"). Loads the released `diffusion_pytorch_model.safetensors` under its own tensor
// names; the configuration is in tim/vae/dc_ae_config.hpp.
//
// Shape legend: B batch, L latent channels (32), h, w latent size, H, W image size (2^(n-1) h for
// n stages: 32 h for the released 6), C channels of a stage, P = H*W pixels, nh heads, hd head
// dim (attention_head_dim), inner = nh hd, S multi-scale branches of an attention.
// Activations are channels-last (B, H, W, C) inside decode, in the decoder's workspace; the
// operations are the backend's decoder operations (tim/core/backend.hpp). Every block is a
// residual x + f(x), computed in place on the current activation.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/nn/modules.hpp"
#include "tim/vae/dc_ae_config.hpp"
#include "tim/vae/modules.hpp"

namespace tim::vae {

namespace dc_ae {

//! The activations and scratch of one decode, reused by the next (DcAeDecoder owns one).
template <class T, class Backend>
struct Workspace : ConvolutionScratch<T, Backend> {
  Scratch<T, Backend> x, y;     // the current activation; the next one across an upsampling (then swapped)
  Scratch<T, Backend> hidden;   // conv1's output; the upsampling's nearest or wide input; the RGB output
  Scratch<T, Backend> out;      // a block's branch output before its RMSNorm and residual
  Scratch<T, Backend> qkv, aggregated, attended;  // the attention's q/k/v, a branch's q/k/v, the heads' outputs
  Scratch<T, Backend> mixed;    // depthwise results (the attention's 3 inner, GLUMBConv's 8C channels)
  Scratch<T, Backend> expanded; // GLUMBConv's 8C, then its gated 4C
  std::int64_t attention_slice_pixels = Backend::linear_attention_slice_pixels;
};

//! A depthwise k x k convolution (PyTorch groups = channels), bias optional; weight stored (k, k, C).
template <class T, class Backend>
struct DepthwiseConv2d {
  Tensor<T, Backend> weight;  // (k, k, C), from the checkpoint's (C, 1, k, k)
  Tensor<T, Backend> bias;    // (C), empty without bias
  std::int64_t channels = 0, kernel = 0;
  static auto fields(auto& self) { return std::tie(self.weight, self.bias, self.channels, self.kernel); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t c, std::int64_t k, bool with_bias) {
    channels = c;
    kernel = k;
    auto stored = reader.template take<T, cpu>(prefix + ".weight", {c, 1, k, k});
    if (with_bias) bias = reader.template take<T, Backend>(prefix + ".bias", {c});
    auto repacked = Tensor<T, cpu>::empty({k, k, c});
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t kk = 0; kk < k * k; ++kk) repacked.data()[kk * c + ch] = stored.data()[ch * k * k + kk];
    weight = to_backend<Backend>(repacked);
  }
  //! y (B, H, W, C) = depthwise conv of x (B, H, W, C); y != x.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t height, std::int64_t width) const {
    Backend::depthwise_conv2d_forward(y, x, weight.data(), bias.data(), batch, height, width, channels, kernel);
  }
};

//! RMSNorm over the channels (affine, with bias), eps from the config.
template <class T, class Backend>
struct RmsNorm {
  Tensor<T, Backend> weight, bias;  // (C) each
  std::int64_t channels = 0;
  double eps = 1e-5;
  static auto fields(auto& self) { return std::tie(self.weight, self.bias, self.channels, self.eps); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t c, double norm_eps) {
    channels = c;
    eps = norm_eps;
    weight = reader.template take<T, Backend>(prefix + ".weight", {c});
    bias = reader.template take<T, Backend>(prefix + ".bias", {c});
  }
  //! y (P, C) = RMSNorm(x) [+ residual]; y may be x or residual.
  void forward(T* y, const T* x, std::int64_t rows, const T* residual = nullptr) const {
    Backend::rms_norm_channels_forward(y, x, weight.data(), bias.data(), rows, channels, eps, residual);
  }
};

//! ResBlock: x + RMSNorm(conv2(SiLU(conv1(x)))), conv1 3x3 with bias, conv2 3x3 without.
template <class T, class Backend>
struct ResBlock {
  Conv2d<T, Backend> conv1, conv2;
  RmsNorm<T, Backend> norm;
  static auto fields(auto& self) { return std::tie(self.conv1, self.conv2, self.norm); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const DcAeConfig& config) {
    conv1.load(reader, prefix + ".conv1", channels, channels, 3);
    conv2.load(reader, prefix + ".conv2", channels, channels, 3, /*with_bias=*/false);
    norm.load(reader, prefix + ".norm", channels, config.norm_eps);
  }
  //! x (B, H, W, C) += RMSNorm(conv2(SiLU(conv1(x)))), in place; ws.hidden and ws.out are scratch.
  void forward(T* x, std::int64_t batch, std::int64_t height, std::int64_t width, Workspace<T, Backend>& ws) const {
    const std::int64_t rows = batch * height * width, n = rows * conv1.in_channels;
    T* hidden = ws.hidden.reserve(n);
    T* out = ws.out.reserve(n);
    conv1.forward(hidden, x, batch, height, width, ws);
    Backend::silu_forward(hidden, hidden, n);
    conv2.forward(out, hidden, batch, height, width, ws);
    norm.forward(x, out, rows, x);
  }
};

//! One multi-scale branch of the attention: a depthwise k x k convolution of the 3 inner q/k/v
//! channels, then a 1x1 convolution within each group of hd channels (3 nh groups); no biases.
template <class T, class Backend>
struct MultiscaleProjection {
  DepthwiseConv2d<T, Backend> proj_in;
  Tensor<T, Backend> proj_out;  // (3 nh, hd, hd) as (group, in, out), from the checkpoint's (3 inner, hd, 1, 1)
  std::int64_t groups = 0, head_dim = 0;
  static auto fields(auto& self) { return std::tie(self.proj_in, self.proj_out, self.groups, self.head_dim); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t inner, std::int64_t hd, std::int64_t k) {
    proj_in.load(reader, prefix + ".proj_in", 3 * inner, k, /*with_bias=*/false);
    groups = 3 * inner / hd;
    head_dim = hd;
    auto stored = reader.template take<T, cpu>(prefix + ".proj_out.weight", {3 * inner, hd, 1, 1});
    auto transposed = Tensor<T, cpu>::empty({groups, hd, hd});
    for (std::int64_t g = 0; g < groups; ++g)
      for (std::int64_t o = 0; o < hd; ++o)
        for (std::int64_t i = 0; i < hd; ++i)
          transposed.data()[(g * hd + i) * hd + o] = stored.data()[(g * hd + o) * hd + i];
    proj_out = to_backend<Backend>(transposed);
  }
  //! y (B, H, W, 3 inner) from qkv (B, H, W, 3 inner); `mixed` (same size) holds the depthwise result.
  void forward(T* y, const T* qkv, std::int64_t batch, std::int64_t height, std::int64_t width, T* mixed) const {
    proj_in.forward(mixed, qkv, batch, height, width);
    Backend::grouped_pointwise_forward(y, mixed, proj_out.data(), batch * height * width, groups, head_dim);
  }
};

//! diffusers' SanaMultiscaleLinearAttention with its residual: x + RMSNorm(to_out(heads)), where
//! the q/k/v projections (one (3 inner, C) product: to_q, to_k, to_v stacked) and their S
//! multi-scale aggregates are read as (1 + S) nh heads of 3 hd consecutive channels each
//! (q, k, v of the head), and each head runs the backend's relu_linear_attention_forward.
template <class T, class Backend>
struct MultiscaleLinearAttention {
  nn::Linear<T, Backend> to_qkv;  // (3 inner, C): the checkpoint's to_q, to_k, to_v stacked; no bias
  std::vector<MultiscaleProjection<T, Backend>> to_qkv_multiscale;
  nn::Linear<T, Backend> to_out;  // ((1 + S) inner -> C), no bias
  RmsNorm<T, Backend> norm_out;
  std::int64_t heads = 0, head_dim = 0;
  double eps = 1e-15;
  static auto fields(auto& self) {
    return std::tie(self.to_qkv, self.to_qkv_multiscale, self.to_out, self.norm_out, self.heads, self.head_dim,
                    self.eps);
  }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const std::vector<std::int64_t>& scales,
            const DcAeConfig& config) {
    head_dim = config.attention_head_dim;
    heads = channels / head_dim;
    eps = config.attention_eps;
    const std::int64_t inner = heads * head_dim;
    to_qkv.in_features = channels;
    to_qkv.out_features = 3 * inner;
    auto stacked = Tensor<T, cpu>::empty({3 * inner, channels});
    const char* names[] = {".to_q.weight", ".to_k.weight", ".to_v.weight"};
    for (int r = 0; r < 3; ++r) {
      auto part = reader.template take<T, cpu>(prefix + names[r], {inner, channels});
      HostMemory::copy(stacked.data() + r * inner * channels, part.data(), static_cast<std::size_t>(inner * channels));
    }
    to_qkv.weight = to_backend<Backend>(stacked);
    for (std::size_t s = 0; s < scales.size(); ++s) {
      to_qkv_multiscale.emplace_back();
      to_qkv_multiscale.back().load(reader, prefix + ".to_qkv_multiscale." + std::to_string(s), inner, head_dim,
                                    scales[s]);
    }
    to_out.load(reader, prefix + ".to_out", (1 + static_cast<std::int64_t>(scales.size())) * inner, channels,
                /*with_bias=*/false);
    norm_out.load(reader, prefix + ".norm_out", channels, config.norm_eps);
  }
  //! x (B, H, W, C) += RMSNorm(to_out(heads)), in place.
  void forward(T* x, std::int64_t batch, std::int64_t height, std::int64_t width, Workspace<T, Backend>& ws) const {
    const std::int64_t rows = batch * height * width, pixels = height * width, inner = heads * head_dim;
    const std::int64_t branches = 1 + static_cast<std::int64_t>(to_qkv_multiscale.size());
    const std::int64_t slice = ws.attention_slice_pixels;
    T* qkv = ws.qkv.reserve(rows * 3 * inner);
    T* attended = ws.attended.reserve(rows * branches * inner);  // branch s: heads s nh ...
    to_qkv.forward(qkv, x, rows);
    Backend::relu_linear_attention_forward(attended, branches * inner, qkv, batch, pixels, heads, head_dim, eps, slice);
    if (branches > 1) {
      T* mixed = ws.mixed.reserve(rows * 3 * inner);
      T* aggregated = ws.aggregated.reserve(rows * 3 * inner);
      for (std::int64_t s = 1; s < branches; ++s) {
        to_qkv_multiscale[static_cast<std::size_t>(s - 1)].forward(aggregated, qkv, batch, height, width, mixed);
        Backend::relu_linear_attention_forward(attended + s * inner, branches * inner, aggregated, batch, pixels,
                                               heads, head_dim, eps, slice);
      }
    }
    T* out = ws.out.reserve(rows * to_out.out_features);
    to_out.forward(out, attended, rows);
    norm_out.forward(x, out, rows, x);
  }
};

//! GLUMBConv: x + RMSNorm(conv_point(value * SiLU(gate))), where (value, gate) are the two halves
//! of conv_depth(SiLU(conv_inverted(x))): conv_inverted 1x1 C -> 8C, conv_depth depthwise 3x3,
//! conv_point 1x1 4C -> C without bias.
template <class T, class Backend>
struct GluMbConv {
  nn::Linear<T, Backend> conv_inverted;  // 1x1 as a Linear (8C, C) + bias
  DepthwiseConv2d<T, Backend> conv_depth;  // 3x3 over 8C channels, with bias
  nn::Linear<T, Backend> conv_point;     // 1x1 as a Linear (C, 4C), no bias
  RmsNorm<T, Backend> norm;
  static auto fields(auto& self) { return std::tie(self.conv_inverted, self.conv_depth, self.conv_point, self.norm); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const DcAeConfig& config) {
    const std::int64_t hidden = 4 * channels;
    conv_inverted.in_features = channels;
    conv_inverted.out_features = 2 * hidden;
    conv_inverted.weight =
        reader.template take<T, Backend>(prefix + ".conv_inverted.weight", {2 * hidden, channels, 1, 1})
            .reshape({2 * hidden, channels});
    conv_inverted.bias = reader.template take<T, Backend>(prefix + ".conv_inverted.bias", {2 * hidden});
    conv_depth.load(reader, prefix + ".conv_depth", 2 * hidden, 3, /*with_bias=*/true);
    conv_point.in_features = hidden;
    conv_point.out_features = channels;
    conv_point.weight = reader.template take<T, Backend>(prefix + ".conv_point.weight", {channels, hidden, 1, 1})
                            .reshape({channels, hidden});
    norm.load(reader, prefix + ".norm", channels, config.norm_eps);
  }
  //! x (B, H, W, C) += RMSNorm(conv_point(value * SiLU(gate))), in place.
  void forward(T* x, std::int64_t batch, std::int64_t height, std::int64_t width, Workspace<T, Backend>& ws) const {
    const std::int64_t rows = batch * height * width, hidden = conv_point.in_features;
    T* expanded = ws.expanded.reserve(rows * 2 * hidden);
    T* mixed = ws.mixed.reserve(rows * 2 * hidden);
    conv_inverted.forward(expanded, x, rows);
    Backend::silu_forward(expanded, expanded, rows * 2 * hidden);
    conv_depth.forward(mixed, expanded, batch, height, width);
    // value = channels [0, 4C), gate = [4C, 8C) of each row; the gated product reuses `expanded`.
    Backend::swiglu_forward(expanded, mixed + hidden, mixed, rows, hidden, 2 * hidden, 2 * hidden);
    T* out = ws.out.reserve(rows * conv_point.out_features);
    conv_point.forward(out, expanded, rows);
    norm.forward(x, out, rows, x);
  }
};

//! EfficientViTBlock: the multi-scale linear attention (checkpoint name attn), then GLUMBConv
//! (conv_out), each with its residual.
template <class T, class Backend>
struct EfficientViTBlock {
  MultiscaleLinearAttention<T, Backend> attn;
  GluMbConv<T, Backend> conv_out;
  static auto fields(auto& self) { return std::tie(self.attn, self.conv_out); }

  template <class Reader>
  void load(Reader& reader, const std::string& prefix, std::int64_t channels, const std::vector<std::int64_t>& scales,
            const DcAeConfig& config) {
    attn.load(reader, prefix + ".attn", channels, scales, config);
    conv_out.load(reader, prefix + ".conv_out", channels, config);
  }
  //! x (B, H, W, C) through both residual branches, in place.
  void forward(T* x, std::int64_t batch, std::int64_t height, std::int64_t width, Workspace<T, Backend>& ws) const {
    attn.forward(x, batch, height, width, ws);
    conv_out.forward(x, batch, height, width, ws);
  }
};

//! DCUpBlock2d: 2x upsampling Ci -> Co, conv3x3(nearest 2x(x)) ('interpolate') or
//! pixel_shuffle(conv3x3(x) to 4 Co) ('pixel_shuffle'), plus the shortcut
//! pixel_shuffle(x with channels repeated 4 Co / Ci times).
template <class T, class Backend>
struct UpsampleBlock {
  Conv2d<T, Backend> conv;  // (Co or 4 Co, 3, 3, Ci)
  std::int64_t in_channels = 0, out_channels = 0;
  bool pixel_shuffle = false;
  static auto fields(auto& self) {
    return std::tie(self.conv, self.in_channels, self.out_channels, self.pixel_shuffle);
  }

  //! y (B, 2H, 2W, Co) from x (B, H, W, Ci); ws.hidden is scratch.
  void forward(T* y, const T* x, std::int64_t batch, std::int64_t height, std::int64_t width,
               Workspace<T, Backend>& ws) const {
    const std::int64_t pixels = batch * height * width;
    if (pixel_shuffle) {
      T* wide = ws.hidden.reserve(pixels * 4 * out_channels);
      conv.forward(wide, x, batch, height, width, ws);
      Backend::pixel_shuffle2x_forward(y, wide, batch, height, width, out_channels);
    } else {
      T* up = ws.hidden.reserve(4 * pixels * in_channels);
      Backend::upsample_nearest2x_forward(up, x, batch, height, width, in_channels);
      conv.forward(y, up, batch, 2 * height, 2 * width, ws);
    }
    Backend::upsample_shortcut_forward(y, x, batch, height, width, in_channels, out_channels);
  }
  bool present() const { return conv.kernel != 0; }
};

//! One decoder stage (checkpoint decoder.up_blocks.{i}): the 2x upsampling from the next deeper
//! stage (all but the deepest stage; index 0), then its blocks, all ResBlocks or all EfficientViT.
template <class T, class Backend>
struct Stage {
  UpsampleBlock<T, Backend> upsample;
  std::vector<ResBlock<T, Backend>> res_blocks;
  std::vector<EfficientViTBlock<T, Backend>> vit_blocks;
  static auto fields(auto& self) { return std::tie(self.upsample, self.res_blocks, self.vit_blocks); }
};

}  // namespace dc_ae

//! The DC-AE decoder. Build it with load_dc_ae_decoder / open_dc_ae_decoder.
//! Example:
//!   auto vae = tim::vae::open_dc_ae_decoder<float>("diffusion_pytorch_model.safetensors");
//!   tim::Tensor<float> images = vae.decode(latents);  // (B, 32, 16, 16) -> (B, 3, 512, 512)
//!   auto gpu = tim::vae::open_dc_ae_decoder<float, tim::cuda>(path);  // latents, images on the device
template <class T, class Backend = cpu>
struct DcAeDecoder {
  DcAeConfig config;
  Conv2d<T, Backend> conv_in;                         // decoder.conv_in, 3x3, L -> C of the deepest stage
  std::vector<dc_ae::Stage<T, Backend>> up_blocks;    // decoder.up_blocks.{i}, i = 0 the full-resolution stage
  dc_ae::RmsNorm<T, Backend> norm_out;                // decoder.norm_out
  Conv2d<T, Backend> conv_out;                        // decoder.conv_out, 3x3, C of stage 0 -> 3
  static auto fields(auto& self) {
    return std::tie(self.config, self.conv_in, self.up_blocks, self.norm_out, self.conv_out);
  }
  //! Largest im2col block (values) a convolution builds at once, and the pixels per slice of the
  //! linear attention's sums on backends that split them (CUDA: one thread block per sample, head
  //! and slice, the slices' sums added in order); the backend's defaults. Tests make them small.
  std::int64_t im2col_block_elements = Backend::im2col_block_elements;
  std::int64_t attention_slice_pixels = Backend::linear_attention_slice_pixels;

  //! images (B, 3, H, W) from latents (B, L, h, w), H = upscale() h, both in the backend's memory:
  //! divides by the scaling factor, then runs the decoder. Values are about [-1, 1] and are NOT
  //! clamped (SPEC 8 maps them to bytes). Throws tim::Error on a wrong latent shape. The
  //! activations live in the decoder's workspace, which the next decode reuses: not re-entrant,
  //! use one decoder per thread (a copy has its own workspace).
  Tensor<T, Backend> decode(const Tensor<T, Backend>& latents) const {
    check(latents.rank() == 4 && latents.dim(1) == config.latent_channels && latents.dim(0) >= 1 &&
              latents.dim(2) >= 1 && latents.dim(3) >= 1,
          "DC-AE decode: latents must have shape [B, ", config.latent_channels, ", h, w] with B, h, w >= 1, got ",
          latents.shape());
    auto& ws = workspace_.get();
    ws.im2col_block_elements = im2col_block_elements;
    ws.attention_slice_pixels = attention_slice_pixels;
    const std::int64_t batch = latents.dim(0), L = config.latent_channels;
    std::int64_t height = latents.dim(2), width = latents.dim(3);
    const auto values = [&](std::int64_t channels) { return batch * height * width * channels; };

    T* z = ws.y.reserve(values(L));
    Backend::to_channels_last_forward(z, latents.data(), batch, L, height * width, T(1) / T(config.scaling_factor));
    T* x = ws.x.reserve(values(conv_in.out_channels));
    conv_in.forward(x, z, batch, height, width, ws);
    if (config.in_shortcut)
      Backend::repeat_channels_add_forward(x, z, batch * height * width, L, conv_in.out_channels / L);

    for (auto stage = up_blocks.rbegin(); stage != up_blocks.rend(); ++stage) {
      if (stage->upsample.present()) {
        T* y = ws.y.reserve(4 * values(stage->upsample.out_channels));
        stage->upsample.forward(y, x, batch, height, width, ws);
        std::swap(ws.x, ws.y);
        x = y;
        height *= 2;
        width *= 2;
      }
      for (const auto& block : stage->res_blocks) block.forward(x, batch, height, width, ws);
      for (const auto& block : stage->vit_blocks) block.forward(x, batch, height, width, ws);
    }
    const std::int64_t rows = batch * height * width;
    norm_out.forward(x, x, rows);
    Backend::relu_forward(x, x, rows * norm_out.channels);
    T* rgb = ws.hidden.reserve(values(config.out_channels));
    conv_out.forward(rgb, x, batch, height, width, ws);
    auto images = Tensor<T, Backend>::empty({batch, config.out_channels, height, width});
    Backend::to_channels_first_forward(images.data(), rgb, batch, config.out_channels, height * width);
    return images;
  }

  //! Parameters the decoder uses (the ignored encoder not counted): 159.2 M for the release.
  std::int64_t parameter_count() const { return detail::count_parameters(*this); }
  //! Frees the workspace (the next decode allocates it again).
  void release_workspace() const { workspace_.release(); }
  //! Throws tim::Error when the backend cannot run this decoder: a head dim above the backend's
  //! linear-attention limit (CUDA: 64; the released decoder's is 32) in an EfficientViT stage.
  void check_backend() const {
    const bool attention =
        std::find(config.block_types.begin(), config.block_types.end(), dc_ae::vit_block) != config.block_types.end();
    check(!attention || (config.attention_head_dim >= 1 &&
                         config.attention_head_dim <= Backend::linear_attention_max_head_dim),
          "DC-AE: attention_head_dim ", config.attention_head_dim, " must be in [1, ",
          Backend::linear_attention_max_head_dim, "] on this backend");
  }

 private:
  WorkspaceSlot<dc_ae::Workspace<T, Backend>> workspace_;
};

//! Loads the decoder from a safetensors source (tim::io::SafetensorsFile, or anything with the
//! same reads) with the released names (decoder.*) onto `Backend` (read and repacked on the host,
//! then copied there; a head dim the backend cannot run is refused first). The encoder (encoder.*) is ignored and
//! listed in config.ignored; any other tensor is an error. Missing tensors and wrong shapes throw
//! tim::Error naming the tensor and the expected shape.
template <class T, class Backend = cpu, class Source>
DcAeDecoder<T, Backend> load_dc_ae_decoder(const Source& source, const DcAeOptions& options = {}) {
  DcAeDecoder<T, Backend> vae;
  vae.config = infer_dc_ae_config(source, options);
  vae.check_backend();
  const DcAeConfig& c = vae.config;
  nn::ParameterReader<Source> reader{source, {}};
  const auto& widths = c.block_out_channels;
  const std::size_t stages = widths.size();

  vae.conv_in.load(reader, "decoder.conv_in", c.latent_channels, widths.back(), 3);
  for (std::size_t i = 0; i < stages; ++i) {
    dc_ae::Stage<T, Backend> stage;
    const std::string prefix = "decoder.up_blocks." + std::to_string(i);
    std::int64_t j = 0;
    if (i + 1 < stages) {
      auto& up = stage.upsample;
      up.in_channels = widths[i + 1];
      up.out_channels = widths[i];
      up.pixel_shuffle = c.upsample_block_type == "pixel_shuffle";
      up.conv.load(reader, prefix + ".0.conv", widths[i + 1], up.pixel_shuffle ? 4 * widths[i] : widths[i], 3);
      j = 1;
    }
    for (std::int64_t layer = 0; layer < c.layers_per_block[i]; ++layer, ++j) {
      const std::string name = prefix + "." + std::to_string(j);
      if (c.block_types[i] == dc_ae::res_block) {
        stage.res_blocks.emplace_back();
        stage.res_blocks.back().load(reader, name, widths[i], c);
      } else {
        stage.vit_blocks.emplace_back();
        stage.vit_blocks.back().load(reader, name, widths[i], c.qkv_multiscales[i], c);
      }
    }
    vae.up_blocks.push_back(std::move(stage));
  }
  vae.norm_out.load(reader, "decoder.norm_out", widths.front(), c.norm_eps);
  vae.conv_out.load(reader, "decoder.conv_out", widths.front(), c.out_channels, 3);

  for (const auto& info : source.tensors()) {
    if (reader.used.count(info.name)) continue;
    check(info.name.rfind("encoder.", 0) == 0, "checkpoint: unexpected tensor '", info.name, "' (not part of a ",
          c.describe(), ")");
    vae.config.ignored.push_back(info.name);
  }
  return vae;
}

//! Opens a safetensors file (memory-mapped) and loads the decoder from it; see load_dc_ae_decoder.
template <class T, class Backend = cpu>
DcAeDecoder<T, Backend> open_dc_ae_decoder(const std::string& path, const DcAeOptions& options = {}) {
  return load_dc_ae_decoder<T, Backend>(io::SafetensorsFile::open(path), options);
}

}  // namespace tim::vae
