// The floating-point work of one network evaluation, for benchmarks and `tim bench`: every
// matrix product counted as 2 M N K (the patch embedding, every Linear, and attention's QK^T and
// PV); element-wise work, norms, softmax and rotary are not counted (a few percent of the total).
#pragma once

#include <cstdint>

#include "tim/math/embedding.hpp"
#include "tim/nn/config.hpp"

namespace tim::nn {

namespace detail {

inline double gemm_flops(double m, double n, double k) { return 2.0 * m * n * k; }

//! FLOPs the C2I and T2I networks share, for batch B, latent H x W, and `modulation_chunks`
//! (6 in C2I, 9 in T2I) of D in each block's adaLN. With N = (H/p)(W/p) tokens, R = B N rows,
//! D hidden, L adaLN hidden, Hm MLP hidden, Lf final adaLN hidden:
//!   patch embedding     2 R D (C p p)
//!   time embedders      e x (2 B 256 D + 2 B D D), e = 1 + [r in E_delta] + [t-r in E_delta]
//!   per block           adaLN 2 x 2 B D L + 2 B L (K D); qkv 2 R D 3D; qkv_d 2 B D 3D;
//!                       QK^T and PV 2 x 2 B N^2 D; proj 2 R D D; MLP 2 x 2 R D Hm + 2 R Hm D
//!   final layer         2 x 2 B D Lf + 2 B Lf 2D + 2 R D (p p C_out)
inline double backbone_flops(const BackboneConfig& c, std::int64_t batch, std::int64_t height, std::int64_t width,
                             std::int64_t modulation_chunks) {
  const double B = static_cast<double>(batch);
  const double N = static_cast<double>((height / c.patch) * (width / c.patch));
  const double R = B * N;
  const double D = static_cast<double>(c.hidden), L = static_cast<double>(c.adaln_hidden);
  const double Hm = static_cast<double>(c.mlp_hidden), Lf = static_cast<double>(c.final_adaln_hidden);
  const double pp = static_cast<double>(c.patch * c.patch);
  const double F = math::timestep_features;
  double flops = gemm_flops(R, D, static_cast<double>(c.in_channels) * pp);
  const auto terms = interval_terms(c.new_condition);
  const double embeddings = 1.0 + (terms.r ? 1.0 : 0.0) + (terms.t_minus_r ? 1.0 : 0.0);
  flops += embeddings * (gemm_flops(B, D, F) + gemm_flops(B, D, D));
  double block = 2 * gemm_flops(B, L, D) + gemm_flops(B, static_cast<double>(modulation_chunks) * D, L);
  block += gemm_flops(R, 3 * D, D);
  if (c.interval_qkv) block += gemm_flops(B, 3 * D, D);
  block += 2 * B * gemm_flops(N, N, D);  // QK^T and PV, summed over heads: nh x 2 N N hd = 2 N N D each
  block += gemm_flops(R, D, D);
  block += 2 * gemm_flops(R, Hm, D) + gemm_flops(R, D, Hm);
  flops += static_cast<double>(c.depth) * block;
  flops += 2 * gemm_flops(B, Lf, D) + gemm_flops(B, 2 * D, Lf) + gemm_flops(R, pp * static_cast<double>(c.out_channels), D);
  return flops;
}

}  // namespace detail

//! FLOPs of one C2I forward of batch B at latent H x W (see detail::backbone_flops).
inline double forward_flops(const C2IConfig& c, std::int64_t batch, std::int64_t height, std::int64_t width) {
  return detail::backbone_flops(c, batch, height, width, 6);
}

//! FLOPs of one T2I forward of batch B at latent H x W with M caption tokens: the backbone
//! (nine adaLN chunks) plus the caption embedder 2 x 2 B M Dc Hc + 2 B M Hc D and, per block,
//! the cross-attention q 2 R D D, kv 2 B M D 2D, QK^T and PV 2 x 2 B N M D, proj 2 R D D.
inline double forward_flops(const T2IConfig& c, std::int64_t batch, std::int64_t height, std::int64_t width,
                            std::int64_t caption_tokens) {
  using detail::gemm_flops;
  const double B = static_cast<double>(batch), M = static_cast<double>(caption_tokens);
  const double N = static_cast<double>((height / c.patch) * (width / c.patch));
  const double R = B * N, D = static_cast<double>(c.hidden);
  const double Dc = static_cast<double>(c.caption_dim), Hc = static_cast<double>(c.caption_hidden);
  double flops = detail::backbone_flops(c, batch, height, width, 9);
  flops += 2 * gemm_flops(B * M, Hc, Dc) + gemm_flops(B * M, D, Hc);
  const double cross = gemm_flops(R, D, D) + gemm_flops(B * M, 2 * D, D) + 2 * B * gemm_flops(N, M, D) +
                       gemm_flops(R, D, D);
  return flops + static_cast<double>(c.depth) * cross;
}

}  // namespace tim::nn
